/**
 * Azurite's Table service, started from `node_modules` for tests and the local sandbox: a child process on a
 * random free port of 127.0.0.1, in-memory persistence, a temporary working folder, stopped afterwards.
 *
 * The child uses Azurite's programmatic `TableServer` (not `azurite-table`'s CLI) so it can listen on port 0
 * and report the port it got (no free-port race), and so Azurite's own usage telemetry, which the CLI entry
 * point starts, never runs. `loose` and `skipApiVersionCheck` are on so any `@azure/data-tables` version works.
 * See https://github.com/Azure/Azurite#command-line-options.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Azurite's well-known development account (public, documented; not a secret). */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

/** A running Azurite Table service. */
export interface AzuriteTables {
  /** Account URL, e.g. `http://127.0.0.1:51234/devstoreaccount1` (append `/<table>` for a table URL). */
  url: string;
  /** Connection string for `TableClient.fromConnectionString` / `STATE_TABLE_CONNECTION_STRING`. */
  connectionString: string;
  /** Stops the process and removes the temporary folder. Idempotent. */
  stop(): Promise<void>;
}

// Runs in the child: start TableServer on 127.0.0.1:0 and send the bound address to the parent.
const CHILD = `
const path = require('node:path');
const root = process.env.AZURITE_TABLE_DIR;
const TableServer = require(path.join(root, 'TableServer')).default;
const TableConfiguration = require(path.join(root, 'TableConfiguration')).default;
const config = new TableConfiguration('127.0.0.1', 0, undefined, path.join(process.cwd(), '__azurite_table__.json'),
  false, false, undefined, undefined, true, true, '', '', '', undefined, false, true);
const server = new TableServer(config);
const stop = () => server.close().catch(() => undefined).then(() => process.exit(0));
process.on('message', (m) => { if (m === 'shutdown') void stop(); });
process.on('disconnect', () => void stop());
server.start().then(
  () => process.send({ address: server.getHttpServerAddress() }),
  (e) => { console.error(String(e && e.message)); process.exit(1); });
`;

/** Starts Azurite's Table service. Rejects (with Azurite's output) when it does not come up within 20 s. */
export async function startAzuriteTables(): Promise<AzuriteTables> {
  const tableDir = path.dirname(require.resolve('azurite/dist/src/table/TableServer.js'));
  const workDir = mkdtempSync(path.join(tmpdir(), 'azurite-'));
  const child = spawn(process.execPath, ['-e', CHILD], {
    cwd: workDir,
    env: { ...process.env, AZURITE_TABLE_DIR: tableDir, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
  child.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      if (child.connected) child.send('shutdown');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(workDir, { recursive: true, force: true });
  };

  try {
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('Azurite did not start within 20 s')), 20_000);
      child.once('message', (m: unknown) => {
        clearTimeout(timer);
        const value = (m as { address?: unknown } | null)?.address;
        if (typeof value === 'string' && value.startsWith('http://')) resolve(value);
        else reject(new Error(`Azurite sent an unexpected start message: ${JSON.stringify(m)}`));
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`Azurite exited with code ${code}: ${output.trim()}`));
      });
    });
    const url = `${address}/${AZURITE_ACCOUNT}`;
    return {
      url,
      connectionString:
        `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
        `TableEndpoint=${url};`,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
