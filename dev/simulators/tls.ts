/**
 * Test-only TLS material for the HTTPS simulators (see dev/certs/README.md).
 *
 * Read once and cached so starting many simulators (or restarting one) does no repeated file I/O.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Directory holding the committed test CA and loopback server certificate. `SIMULATOR_CERTS_DIR` overrides it
 * for bundled copies of the simulators (sandbox, benchmarks), whose `__dirname` is elsewhere.
 */
export const CERTS_DIR = process.env.SIMULATOR_CERTS_DIR ?? path.resolve(__dirname, '..', 'certs');

/** Absolute path of the test CA certificate (what `NODE_EXTRA_CA_CERTS` must point at). */
export const CA_CERT_PATH = path.join(CERTS_DIR, 'ca.pem');

/** PEM server certificate + key, as `https.createServer` takes them. */
export interface ServerTlsMaterial {
  cert: Buffer;
  key: Buffer;
}

let cached: ServerTlsMaterial | undefined;
let cachedCa: Buffer | undefined;

/**
 * Returns the loopback server certificate (SAN `IP:127.0.0.1, DNS:localhost`) and its key, signed by the test
 * CA in {@link CA_CERT_PATH}.
 */
export function serverTls(): ServerTlsMaterial {
  cached ??= {
    cert: readFileSync(path.join(CERTS_DIR, 'server.pem')),
    key: readFileSync(path.join(CERTS_DIR, 'server-key.pem')),
  };
  return cached;
}

/**
 * Returns the test CA certificate, for clients in processes that were not started with
 * `NODE_EXTRA_CA_CERTS` (e.g. `new https.Agent({ ca: testCa() })`).
 */
export function testCa(): Buffer {
  cachedCa ??= readFileSync(CA_CERT_PATH);
  return cachedCa;
}
