#!/usr/bin/env bash
# Generates the TEST-ONLY certificate authority and loopback server certificate used by the local
# simulators in dev/simulators. Nothing here is a secret: the keys are committed on purpose and
# the server certificate is only valid for 127.0.0.1 / localhost. Re-run to rotate (then commit the output).
#
# Usage: bash dev/certs/generate.sh [all|tls|app]   (default all; `app` keeps the TLS files as they are)
set -euo pipefail
what="${1:-all}"

cd "$(dirname "$0")"
DAYS=18262 # ~50 years, so the committed files never expire under a long-lived checkout.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ "$what" = all ] || [ "$what" = tls ]; then
# CA: self-signed, allowed to sign certificates only.
openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
  -keyout ca-key.pem -out ca.pem \
  -subj '/CN=mde-unisolate TEST-ONLY loopback CA' \
  -addext 'basicConstraints=critical,CA:TRUE,pathlen:0' \
  -addext 'keyUsage=critical,keyCertSign,cRLSign' \
  -addext 'subjectKeyIdentifier=hash'

# Server leaf: SAN is what TLS clients check (Node ignores CN), so it must list the loopback names.
cat >"$tmp/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EXT
openssl req -new -newkey rsa:2048 -nodes -sha256 \
  -keyout server-key.pem -out "$tmp/server.csr" \
  -subj '/CN=localhost'
openssl x509 -req -in "$tmp/server.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
  -CAserial "$tmp/ca.srl" -sha256 -days "$DAYS" -extfile "$tmp/server.ext" -out server.pem

chmod 644 ./*.pem
openssl verify -CAfile ca.pem server.pem
fi

if [ "$what" = all ] || [ "$what" = app ]; then
# Client certificates of the simulated MDE app registration (certificate credentials, MDE_CREDENTIAL=certificate):
# self-signed, as `az keyvault certificate create` with the default policy makes them. `mde-app-1` is the one
# registered on the app; `mde-app-2` is its rotation (registered when a test rotates, else the "wrong"
# certificate). Key Vault serves a certificate's secret as PEM (private key, then certificate) or as base64
# PKCS#12 without a password; both PKCS#12 flavours are here: legacy (3DES key bag, RC2-40 certificate bag, as
# older exporters still write them) and OpenSSL 3's default (PBES2, AES-256-CBC).
for n in 1 2; do
  openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" \
    -subj "/CN=mde-unisolate TEST-ONLY MDE app certificate $n" \
    -addext 'basicConstraints=critical,CA:FALSE' \
    -addext 'keyUsage=critical,digitalSignature' \
    -addext 'extendedKeyUsage=clientAuth'
  openssl pkey -in "$tmp/key.pem" -out "$tmp/key8.pem" # PKCS#8, like Key Vault's PEM
  cat "$tmp/key8.pem" "$tmp/cert.pem" >"mde-app-$n.pem"
  openssl pkcs12 -export -inkey "$tmp/key8.pem" -in "$tmp/cert.pem" -passout pass: -out "mde-app-$n-aes.pfx"
  openssl pkcs12 -export -legacy -inkey "$tmp/key8.pem" -in "$tmp/cert.pem" -passout pass: -out "mde-app-$n-legacy.pfx"
done
chmod 644 ./mde-app-*
fi
