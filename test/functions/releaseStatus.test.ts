/**
 * `GET /api/unisolate/{correlationId}`: which ids the route accepts. Releases are listed by their request's
 * correlation id (the request's rule: 1-128 printable ASCII characters); nothing else can name them.
 */
import { setDependencies, type AppDependencies } from '../../src/composition';
import { parseSettings } from '../../src/config';
import { FakeDefender, fakeDeps, stateDeps } from '../support/fakes';
import { invokeHttp, loadApp } from '../../dev/host';

beforeAll(() => loadApp());
afterEach(() => setDependencies());

function install() {
  const { deps, telemetry } = fakeDeps(new FakeDefender());
  const app: AppDependencies = {
    release: deps,
    config: parseSettings({ KEY_VAULT_URL: 'https://kv.example/' }).config,
    maxDeliveryCount: 10,
    telemetry,
    state: stateDeps(),
  };
  setDependencies(app);
}

const status = (correlationId: string) =>
  invokeHttp('releaseStatus', {
    method: 'GET',
    url: `http://localhost:7071/api/unisolate/${encodeURIComponent(correlationId)}`,
    params: { correlationId },
    headers: {},
  });

describe('status route ids', () => {
  it.each([
    ['a correlation id of 128 characters', 'a'.repeat(128)],
    ['a correlation id with a colon', 'INC:42'],
  ])('looks up %s', async (_, id) => {
    install();
    const result = await status(id);
    expect(result.status).toBe(404);
    expect(result.body).toMatchObject({ error: { code: 'ReleaseNotFound' } });
  });

  it.each([
    ['129 characters', 'a'.repeat(129)],
    ['140 characters', 'a'.repeat(140)],
    ['a correlation id with an index appended', `${'a'.repeat(128)}:1`],
    ['a control character', 'INC\n1'],
  ])('refuses %s as the message says', async (_, id) => {
    install();
    const result = await status(id);
    expect(result.status).toBe(400);
    expect(result.body).toMatchObject({
      error: { code: 'InvalidRequest', message: expect.stringMatching(/1-128 printable ASCII characters/) },
    });
  });
});
