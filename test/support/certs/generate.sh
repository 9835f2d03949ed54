#!/usr/bin/env bash
# Generates the TEST-ONLY certificate authority and loopback server certificate used by the local
# simulators in test/support/simulators. Nothing here is a secret: the keys are committed on purpose and
# the server certificate is only valid for 127.0.0.1 / localhost. Re-run to rotate (then commit the output).
#
# Usage: bash test/support/certs/generate.sh
set -euo pipefail

cd "$(dirname "$0")"
DAYS=18262 # ~50 years, so the committed files never expire under a long-lived checkout.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

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
