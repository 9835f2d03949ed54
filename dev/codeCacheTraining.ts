/**
 * The first requests a cold instance answers, run once at build time so that the V8 code cache of dist/app.js
 * holds the bytecode of the code they run (scripts/codeCache.cjs, `produce` with training). Without it the cache
 * holds only what the bundle's module initialisers ran, and a cold instance compiles the release path (the Key
 * Vault and Entra ID clients, MSAL, axios, the pipeline) lazily while it answers its first request.
 *
 * It starts the managed identity, Key Vault, Entra ID and Defender simulators on 127.0.0.1 in this process
 * (the build process's child, started with `NODE_EXTRA_CA_CERTS` set to the simulators' test CA), loads the
 * app through the local Functions host, and releases one device over HTTP and one from a Service Bus message,
 * as a cold instance would first do. Nothing of this reaches the cache but bytecode: no state, no secrets.
 * The build bundles this file (scripts/build.mjs) and falls back to an untrained cache if it fails.
 */
import './loopbackOnly';
import { randomBytes } from 'node:crypto';
import { invokeHttp, invokeServiceBus, loadApp } from './host';
import { startDefender } from './simulators/defender';
import { startEntra } from './simulators/entra';
import { startKeyVault } from './simulators/keyVault';
import { startManagedIdentity } from './simulators/managedIdentity';

/** Test values of the simulators only. */
const TENANT = '7ea10000-0000-4000-8000-00000000c0de';
const CLIENT_ID = '7ea10000-0000-4000-8000-0000000a99c1';
const CLIENT_SECRET = randomBytes(24).toString('base64url');

/**
 * Runs the app's first requests against the simulators.
 * @param load - evaluates the app (its module initialisers register the functions), as the worker loads it
 * @returns what each request ended in (`Accepted` when the release path ran to its end)
 */
export async function train(load: () => void): Promise<string[]> {
  const devices = [0, 1].map(() => randomBytes(20).toString('hex'));
  const mi = await startManagedIdentity();
  const [entra, keyVault, defender] = await Promise.all([
    startEntra({
      tenantId: TENANT,
      clients: { [CLIENT_ID]: CLIENT_SECRET },
      roles: { [CLIENT_ID]: ['Machine.Isolate', 'Machine.Read.All'] },
    }),
    startKeyVault({
      secrets: { 'mde-tenant-id': TENANT, 'mde-client-id': CLIENT_ID, 'mde-client-secret': CLIENT_SECRET },
    }),
    startDefender({
      limits: false,
      machines: devices.map((id) => ({
        id,
        computerDnsName: `${id.slice(0, 8)}.training.local`,
        isolated: true,
      })),
    }),
  ]);
  try {
    Object.assign(process.env, {
      ...mi.env,
      KEY_VAULT_URL: keyVault.url,
      MDE_API_BASE_URL: defender.url,
      MDE_AUTHORITY_HOST: entra.url,
      REQUEST_QUEUE_NAME: 'unisolate-requests',
      RESPONSE_QUEUE_NAME: 'unisolate-responses',
    });
    await loadApp(load);
    const comment = 'Code cache training: clean and validated';
    const http = await invokeHttp('unisolateMachine', {
      params: { machineId: devices[0]! },
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ Comment: comment }),
    });
    const queued = await invokeServiceBus('unisolateServiceBus', { machineId: devices[1], comment });
    const statusOf = (body: unknown) => (body as { status?: string } | undefined)?.status ?? 'no outcome';
    return [statusOf(http.body), statusOf(queued.messages[0])];
  } finally {
    await Promise.all([mi, entra, keyVault, defender].map((sim) => sim.close()));
  }
}
