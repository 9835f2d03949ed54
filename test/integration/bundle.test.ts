/**
 * The deployed bundle, not the sources: `scripts/build.mjs` builds its own copy, and the registered functions
 * of that copy release devices against the simulators with the real SDKs. It holds what only the build can
 * break: the files loaded lazily beside `index.js` (`telemetrySdk.js`, the part of Application Insights the
 * app uses, and `jsonwebtoken.js` for certificate assertions) and the packages left outside it
 * (`node-forge`).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import {
  CERTIFICATE_NAME,
  MDE_APP,
  startEnvironment,
  testCertificate,
  type LocalEnvironment,
} from '../../dev/environment';
import { invokeHttp, loadApp, type HttpResult } from '../../dev/host';
import { decodeJwt, JWT_BEARER, machineIdFor } from '../../dev/simulators';

/** Inside the repository, so the files the bundle leaves to node_modules resolve as they do in dist/. */
const OUT = path.join(__dirname, '..', '..', 'build', `bundle-test-${process.pid}`);

interface Deps {
  release: object;
  telemetry: { flush(): Promise<void> };
}
interface Bundle {
  buildDependencies(env: NodeJS.ProcessEnv): Deps;
  setDependencies(deps?: Deps): void;
}

let bundle: Bundle;
let env: LocalEnvironment;
const installed: Deps[] = [];

beforeAll(async () => {
  const build = spawnSync(process.execPath, ['scripts/build.mjs', `--outdir=${OUT}`], {
    cwd: path.join(__dirname, '..', '..'),
    encoding: 'utf8',
  });
  expect({ status: build.status, stderr: build.stderr }).toEqual({ status: 0, stderr: '' });
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  await loadApp(() => (bundle = require(path.join(OUT, 'index.js')) as Bundle));
  env = await startEnvironment();
});
afterAll(async () => {
  // Every installed app's telemetry loads telemetrySdk.js from OUT: let each finish before OUT goes.
  await Promise.all(installed.map((deps) => deps.telemetry.flush()));
  bundle?.setDependencies();
  await env?.close();
  rmSync(OUT, { recursive: true, force: true });
});

function install(overrides: Record<string, string>): Deps {
  const deps = bundle.buildDependencies({ ...env.settings, CHECK_ISOLATION_STATE: 'false', ...overrides });
  installed.push(deps);
  bundle.setDependencies(deps);
  return deps;
}

let counter = 0;
async function release(): Promise<HttpResult> {
  counter += 1;
  const name = `bundle-${counter}.contoso.local`;
  const id = env.defender.addMachine({ id: machineIdFor(name), computerDnsName: name, isolated: true }).id;
  return invokeHttp('unisolateMachine', {
    params: { machineId: id },
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ Comment: 'Released by the bundle test', correlationId: `INC-BUNDLE-${counter}` }),
  });
}

const statusOf = (r: HttpResult) => [r.status, (r.body as { status?: string }).status];

/** The last token request Entra received, as a form. */
function lastTokenRequest(): URLSearchParams {
  const request = env.entra.requests.filter((r) => r.path.includes('/oauth2/v2.0/token')).at(-1);
  return new URLSearchParams(request?.body ?? '');
}

it('builds index.js with the files it loads lazily beside it', () => {
  for (const file of ['index.js', 'jsonwebtoken.js', 'telemetrySdk.js']) {
    expect({ file, exists: existsSync(path.join(OUT, file)) }).toEqual({ file, exists: true });
  }
});

it('releases with a client secret, and the outcome reaches Application Insights through telemetrySdk.js', async () => {
  const deps = install({});
  const released = await release();
  expect(statusOf(released)).toEqual([201, 'Accepted']);
  expect(lastTokenRequest().get('client_secret')).toBe(MDE_APP.clientSecret);
  await deps.telemetry.flush();
  const correlationId = (released.body as { correlationId: string }).correlationId;
  const [event] = await env.ingestion.waitFor(
    (e) =>
      e.data?.baseData?.name === 'UnisolateOutcome' &&
      e.data.baseData.properties?.correlationId === correlationId,
  );
  expect(event?.data?.baseData?.properties).toMatchObject({ status: 'Accepted', trigger: 'http' });
});

it.each([
  ['PEM', () => ({ pem: testCertificate.pem(1) })],
  ['PKCS#12 (node-forge, outside the bundle)', () => ({ pfx: testCertificate.pfx(1, 'aes') })],
])(
  'releases with a Key Vault certificate stored as %s: the assertion is signed by jsonwebtoken.js',
  async (_, content) => {
    env.keyVault.setCertificate(CERTIFICATE_NAME, content());
    install({ MDE_CREDENTIAL: 'certificate' });
    expect(statusOf(await release())).toEqual([201, 'Accepted']);
    const form = lastTokenRequest();
    expect([form.get('client_secret'), form.get('client_assertion_type')]).toEqual([null, JWT_BEARER]);
    const assertion = decodeJwt(form.get('client_assertion') ?? '');
    expect(assertion?.header).toMatchObject({ alg: 'PS256', typ: 'JWT' });
  },
);
