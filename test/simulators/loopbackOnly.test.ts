/**
 * The loopback-only guard: tests and benches reach 127.0.0.1 and nothing else.
 */
import dns from 'node:dns';
import http from 'node:http';
import net from 'node:net';
import axios from 'axios';
import {
  LOOPBACK_REFUSED_CODE,
  TELEMETRY_ENV_DEFAULTS,
  installLoopbackGuard,
  isLoopbackGuardInstalled,
  isLoopbackHost,
  refusedConnections,
} from '../../dev/loopbackOnly';

const REFUSAL = /^Refusing non-loopback connection to .+ \(tests may only talk to 127\.0\.0\.1\)$/;

/** Connects with raw net and resolves with the error (or 'connected'). */
function tryConnect(options: net.NetConnectOpts): Promise<NodeJS.ErrnoException | 'connected'> {
  return new Promise((resolve) => {
    const socket = net.connect(options);
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err) => resolve(err));
  });
}

describe('loopback-only guard', () => {
  // Safety first: never attempt a non-loopback connection unless the guard is provably active, so a broken
  // setup fails here instead of sending a packet off the machine.
  beforeAll(() => {
    if (!isLoopbackGuardInstalled()) throw new Error('loopback guard is not installed; refusing to run');
  });

  test('is installed by the jest setup file and stays the same function when installed again', () => {
    const before = net.Socket.prototype.connect;
    installLoopbackGuard();
    expect(isLoopbackGuardInstalled()).toBe(true);
    expect(net.Socket.prototype.connect).toBe(before);
  });

  test('refuses a raw TCP connection to a private address before sending anything', async () => {
    const refusedBefore = refusedConnections().length;
    const result = await tryConnect({ host: '10.255.255.1', port: 443 });
    expect(result).not.toBe('connected');
    const err = result as NodeJS.ErrnoException;
    expect(err.code).toBe(LOOPBACK_REFUSED_CODE);
    expect(err.message).toMatch(REFUSAL);
    expect(err.message).toContain('10.255.255.1:443');
    expect(refusedConnections().length).toBe(refusedBefore + 1);
  });

  test('refuses http to a public hostname (the connect is refused, no DNS query is made)', async () => {
    const err = await new Promise<NodeJS.ErrnoException>((resolve, reject) => {
      const req = http.get('http://example.com/', () => reject(new Error('got a response')));
      req.on('error', resolve);
    });
    expect(err.message).toMatch(REFUSAL);
    expect(err.message).toContain('example.com:80');
  });

  test('refuses axios and fetch to non-loopback hosts', async () => {
    const axiosErr: unknown = await axios
      .get('https://10.255.255.1/', { timeout: 2000 })
      .catch((e: unknown) => e);
    expect(axios.isAxiosError(axiosErr)).toBe(true);
    expect((axiosErr as Error).message).toMatch(REFUSAL);

    const fetchErr: unknown = await fetch('http://10.255.255.1:8080/').catch((e: unknown) => e);
    // undici's TypeError comes from another realm than jest's, so check its shape rather than instanceof.
    expect((fetchErr as Error).message).toBe('fetch failed');
    expect(String((fetchErr as Error & { cause?: unknown }).cause)).toMatch(
      /Refusing non-loopback connection/,
    );
  });

  test('DNS lookups of anything but localhost fail with ENOTFOUND', async () => {
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) =>
      dns.lookup('example.com', (e) => resolve(e)),
    );
    expect(err?.code).toBe('ENOTFOUND');
    await expect(dns.promises.lookup('login.microsoftonline.com')).rejects.toMatchObject({
      code: 'ENOTFOUND',
    });
    const local = await dns.promises.lookup('localhost');
    expect(isLoopbackHost(local.address)).toBe(true);
  });

  test('allows 127.0.0.1 and localhost', async () => {
    const server = net.createServer((s) => s.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    try {
      expect(await tryConnect({ host: '127.0.0.1', port })).toBe('connected');
      expect(await tryConnect({ port })).toBe('connected'); // host defaults to localhost
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test.each([
    ['localhost', true],
    ['127.0.0.1', true],
    ['127.8.9.10', true],
    ['::1', true],
    ['[::1]', true],
    ['::ffff:127.0.0.1', true],
    [undefined, true],
    ['10.255.255.1', false],
    ['169.254.169.254', false],
    ['128.0.0.1', false],
    ['::ffff:10.0.0.1', false],
    ['example.com', false],
    ['localhost.example.com', false],
  ])('isLoopbackHost(%p) === %p', (host, expected) => {
    expect(isLoopbackHost(host)).toBe(expected);
  });

  test('sets telemetry-silencing environment defaults', () => {
    for (const [key, value] of Object.entries(TELEMETRY_ENV_DEFAULTS)) {
      expect(process.env[key]).toBe(value);
    }
  });
});
