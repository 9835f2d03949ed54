/**
 * PKCS#12 (PFX) to PEM, for a Key Vault certificate whose policy stores `application/x-pkcs12`:
 * `ClientCertificateCredential` takes PEM only, Node's crypto has no PKCS#12 parser, and PFX files still
 * commonly use the legacy PBE algorithms (RC2-40 for the certificate bag, 3DES for the key) that Node's
 * OpenSSL 3 does not load. node-forge (pure JavaScript, no install scripts) reads all of them; it is loaded on
 * first use only, so the secret and federated modes never pay for it.
 * Key Vault's PFX has no password: https://learn.microsoft.com/azure/key-vault/certificates/how-to-export-certificate
 */
import type * as Forge from 'node-forge';

/** PEM of a PKCS#12 file: the private key (PKCS#8), the certificate that matches it, then the rest. */
export function pkcs12ToPem(der: Buffer, password = ''): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const forge = require('node-forge') as typeof Forge;
  const p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(der.toString('binary')), false, password);
  const bags = (oid: string | undefined): Forge.pkcs12.Bag[] =>
    oid === undefined ? [] : (p12.getBags({ bagType: oid })[oid] ?? []);
  const { oids } = forge.pki;
  const key = [...bags(oids.pkcs8ShroudedKeyBag), ...bags(oids.keyBag)].find((bag) => bag.key)?.key;
  if (!key) throw new Error('the PKCS#12 file holds no RSA private key');
  const certificates = bags(oids.certBag)
    .map((bag) => bag.cert)
    .filter((cert): cert is Forge.pki.Certificate => cert !== undefined);
  const matches = (cert: Forge.pki.Certificate): boolean =>
    (cert.publicKey as Forge.pki.rsa.PublicKey).n?.equals(key.n) === true;
  const leaf = certificates.find(matches);
  if (!leaf) throw new Error('the PKCS#12 file holds no certificate for its private key');
  const keyPem = forge.pki.privateKeyInfoToPem(forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(key)));
  return [
    keyPem,
    ...[leaf, ...certificates.filter((c) => c !== leaf)].map((c) => forge.pki.certificateToPem(c)),
  ]
    .map((pem) => pem.trim())
    .join('\n')
    .concat('\n');
}
