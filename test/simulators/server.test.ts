/**
 * The simulators' shared server plumbing: route matching, recording requests, gzip bodies, and closing.
 */
import http from 'node:http';
import axios from 'axios';
import { compileRoute, startSimServer, type SimServer } from '../../dev/simulators';

describe('SimServer plumbing', () => {
  let sim: SimServer | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  test.each([
    ['POST /api/machines/*/unisolate', 'POST', '/api/machines/abc/unisolate', true],
    ['POST /api/machines/*/unisolate', 'POST', '/api/machines/abc/unisolate/', true],
    ['POST /api/machines/*/unisolate', 'GET', '/api/machines/abc/unisolate', false],
    ['POST /api/machines/*/unisolate', 'POST', '/api/machines/a/b/unisolate', false],
    ['/api/machines/**', 'GET', '/api/machines/a/b/alerts', true],
    ['GET *', 'GET', '/anything', true],
    ['*', 'DELETE', '/anything', true],
    ['get /API/Machines', 'GET', '/api/machines', true],
  ])('route %p matches %s %s: %p', (route, method, path, expected) => {
    expect(compileRoute(route)(method, path)).toBe(expected);
  });

  test('records requests, decodes gzip bodies, and close() drops keep-alive sockets', async () => {
    sim = await startSimServer({ tls: false, handler: (req) => ({ status: 200, body: { echo: req.body } }) });
    const agent = new http.Agent({ keepAlive: true });
    const res = await axios.post(
      `${sim.url}/x?y=1`,
      { a: 1 },
      { httpAgent: agent, headers: { 'X-Custom': 'v' } },
    );
    expect(res.data).toEqual({ echo: '{"a":1}' });
    expect(sim.requests[0]).toMatchObject({ method: 'POST', path: '/x?y=1', body: '{"a":1}' });
    expect(sim.requests[0]!.headers['x-custom']).toBe('v');
    // The keep-alive socket is still open; close() must not wait for it.
    expect(Object.values(agent.freeSockets).flat()).toHaveLength(1);
    const t0 = Date.now();
    await sim.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    agent.destroy();
  });

  test('a handler that throws yields 500, not a hung request', async () => {
    sim = await startSimServer({
      tls: false,
      handler: () => {
        throw new Error('boom');
      },
    });
    const res = await axios.get(`${sim.url}/`, { validateStatus: () => true });
    expect(res.status).toBe(500);
  });

  test('a hang fault accepts the request and never answers; close() releases the client', async () => {
    sim = await startSimServer({ tls: false, handler: () => ({ status: 204 }) });
    sim.failNext(1, { hang: true });
    const pending = axios.get(`${sim.url}/held`).then(
      () => 'answered',
      (error: { code?: string }) => error.code,
    );
    // Another request is answered meanwhile: only the faulted one is held.
    expect((await axios.get(`${sim.url}/other`)).status).toBe(204);
    expect(sim.requests.map((r) => r.path)).toEqual(['/held', '/other']);
    await sim.close();
    expect(await pending).toBe('ECONNRESET');
  });

  test('listens on 127.0.0.1 and honours a fixed port', async () => {
    const first = await startSimServer({ tls: false, handler: () => ({ status: 204 }) });
    const port = first.port;
    await first.close();
    sim = await startSimServer({ tls: false, port, handler: () => ({ status: 204 }) });
    expect(sim.url).toBe(`http://127.0.0.1:${port}`);
    expect((await axios.get(sim.url)).status).toBe(204);
  });
});
