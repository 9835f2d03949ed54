/**
 * The first requests a cold instance answers, run once at build time so that the V8 code cache of dist/app.js
 * holds the bytecode of the code they run (scripts/codeCache.cjs, `produce` with training). Without it the cache
 * holds only what the bundle's module initialisers ran, and a cold instance compiles the release path (the Key
 * Vault and Entra ID clients, MSAL, axios, the pipeline) lazily while it answers its first request.
 *
 * It starts the local environment of the tests (`environment.ts`: the simulators on 127.0.0.1, in this process,
 * the build process's child, started with `NODE_EXTRA_CA_CERTS` set to their test CA), loads the app through
 * the local Functions host with its settings, and releases two isolated devices, one over HTTP and one from a
 * Service Bus message, as a cold instance would first do. Nothing of this reaches the cache but bytecode: no state, no secrets.
 * The build bundles this file (scripts/build.mjs) and falls back to an untrained cache if it fails.
 */
import './loopbackOnly';
import { startEnvironment } from './environment';
import { invokeHttp, invokeServiceBus, loadApp } from './host';
import { defaultMachines } from './simulators/defender';

/**
 * Runs the app's first requests against the simulators.
 * @param load - evaluates the app (its module initialisers register the functions), as the worker loads it
 * @returns what each request ended in (`Accepted` when the release path ran to its end)
 */
export async function train(load: () => void): Promise<string[]> {
  const machines = defaultMachines().filter((machine) => machine.isolated);
  const env = await startEnvironment({ telemetry: false, defender: { limits: false, machines } });
  try {
    Object.assign(process.env, env.settings);
    await loadApp(load);
    const comment = 'Code cache training: clean and validated';
    const http = await invokeHttp('unisolateMachine', {
      params: { machineId: machines[0]!.id },
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ Comment: comment }),
    });
    const queued = await invokeServiceBus('unisolateServiceBus', { machineId: machines[1]!.id, comment });
    const statusOf = (body: unknown) => (body as { status?: string } | undefined)?.status ?? 'no outcome';
    return [statusOf(http.body), statusOf(queued.messages[0])];
  } finally {
    await env.close();
  }
}
