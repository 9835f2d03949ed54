/**
 * Loopback-only network guard for tests, benchmarks and the local sandbox.
 *
 * Listed in jest `setupFiles`, so it runs in every test file before any SDK is loaded. Importing it anywhere
 * else (e.g. the sandbox entry point) installs the same guard. It makes a mistake loud instead of silent: a
 * test that forgot to point an SDK at a simulator would otherwise try to reach login.microsoftonline.com,
 * the Defender API or the Azure Instance Metadata Service (169.254.169.254), hang on a timeout, or worse,
 * send traffic off this machine.
 *
 * What it does:
 * - patches `net.Socket.prototype.connect` (used by `http`, `https`, `tls`, undici/`fetch` and raw `net`)
 *   so a connection to anything but 127.0.0.0/8, ::1 or `localhost` fails with
 *   `Refusing non-loopback connection to <host>:<port> (tests may only talk to 127.0.0.1)` before a packet is
 *   sent;
 * - patches `dns.lookup` and `dns.promises.lookup` so names other than `localhost` fail with `ENOTFOUND`
 *   instead of asking a resolver;
 * - sets environment defaults (only when unset) that stop the Application Insights SDK from phoning home:
 *   statsbeat/SDK-stats off, and `WEBSITE_SITE_NAME` so resource detection treats the process as App Service
 *   and skips the Azure VM metadata probe.
 *
 * Jest shares core modules (`net`, `dns`) between the test files of one worker while re-evaluating this file
 * for each of them, so idempotence is keyed on a marker stored on the patched objects, not on module state.
 */
import dns from 'node:dns';
import net from 'node:net';

/** Error code carried by the error a refused connection emits. */
export const LOOPBACK_REFUSED_CODE = 'ERR_LOOPBACK_ONLY';

const MARK = Symbol.for('mde-unisolate.loopbackGuard');

/**
 * Environment defaults applied (only if unset) when the guard is installed.
 * - `APPLICATIONINSIGHTS_STATSBEAT_DISABLED` / `APPLICATIONINSIGHTS_SDKSTATS_DISABLED`: the SDK otherwise sends
 *   its own usage metrics to a fixed Microsoft endpoint, whatever the connection string says.
 *   https://learn.microsoft.com/azure/azure-monitor/app/statsbeat
 * - `WEBSITE_SITE_NAME`: OpenTelemetry resource detection then recognises App Service and does not probe the
 *   VM metadata endpoint at 169.254.169.254.
 */
export const TELEMETRY_ENV_DEFAULTS: Readonly<Record<string, string>> = {
  APPLICATIONINSIGHTS_STATSBEAT_DISABLED: 'true',
  APPLICATIONINSIGHTS_SDKSTATS_DISABLED: 'true',
  WEBSITE_SITE_NAME: 'mde-unisolate-test',
};

/**
 * True when `host` is a loopback name or address: `localhost`, anything in 127.0.0.0/8, `::1` (also written
 * out in full or bracketed) or an IPv4-mapped 127.x address. An empty/undefined host counts as loopback
 * because Node defaults it to `localhost`.
 */
export function isLoopbackHost(host: string | undefined | null): boolean {
  if (host === undefined || host === null || host === '') return true;
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h === 'localhost' || h === 'localhost.') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) {
    if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
    const mapped = /^(?:0:0:0:0:0:|::)ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
    return mapped?.[1] !== undefined && mapped[1].startsWith('127.');
  }
  return false;
}

interface ConnectTarget {
  host: string | undefined;
  port: unknown;
  /** Unix socket / named pipe: local IPC, always allowed. */
  isPipe: boolean;
}

/** Extracts host/port from the several `socket.connect()` call shapes Node supports. */
function connectTarget(args: unknown[]): ConnectTarget {
  let first: unknown = args[0];
  // net.createConnection() / tls.connect() pass an already-normalised [options, cb] array.
  if (Array.isArray(first)) first = (first as unknown[])[0];
  if (first !== null && typeof first === 'object') {
    const o = first as { host?: unknown; hostname?: unknown; port?: unknown; path?: unknown };
    if (typeof o.path === 'string' && o.path !== '')
      return { host: undefined, port: undefined, isPipe: true };
    const host =
      typeof o.host === 'string' ? o.host : typeof o.hostname === 'string' ? o.hostname : undefined;
    return { host, port: o.port, isPipe: false };
  }
  if (typeof first === 'string' && !/^\d+$/.test(first))
    return { host: undefined, port: undefined, isPipe: true };
  return { host: typeof args[1] === 'string' ? args[1] : undefined, port: first, isPipe: false };
}

function refusalError(host: string | undefined, port: unknown): Error {
  const portText = typeof port === 'number' || typeof port === 'string' ? String(port) : '?';
  return Object.assign(
    new Error(`Refusing non-loopback connection to ${host}:${portText} (tests may only talk to 127.0.0.1)`),
    { code: LOOPBACK_REFUSED_CODE, host, port },
  );
}

function notFoundError(hostname: string): Error {
  // Same shape as a real getaddrinfo failure so callers' error handling treats it like an unknown host.
  return Object.assign(
    new Error(`getaddrinfo ENOTFOUND ${hostname} (loopback-only test guard: only localhost resolves)`),
    { code: 'ENOTFOUND', errno: -3008, syscall: 'getaddrinfo', hostname },
  );
}

type AnyFn = (...args: unknown[]) => unknown;

/** Copies symbol-keyed metadata (e.g. Node's custom promisify args) so `util.promisify` keeps working. */
function copySymbols(from: object, to: object): void {
  for (const sym of Object.getOwnPropertySymbols(from)) {
    const desc = Object.getOwnPropertyDescriptor(from, sym);
    if (desc) Object.defineProperty(to, sym, desc);
  }
}

function isMarked(target: object): boolean {
  return (target as Record<symbol, unknown>)[MARK] === true;
}

function mark(target: object): void {
  Object.defineProperty(target, MARK, { value: true, enumerable: false });
}

/** A refused connection attempt, as recorded by the guard. */
export interface RefusedConnection {
  host: string | undefined;
  port: unknown;
  at: number;
}

const REFUSALS = Symbol.for('mde-unisolate.loopbackGuard.refusals');

function patchSocketConnect(): void {
  const proto = net.Socket.prototype as unknown as Record<string, unknown>;
  const original = proto.connect as AnyFn;
  if (isMarked(original)) return;
  // Kept on the patched function (shared by every jest module registry in the worker), not in module state.
  const refusals: RefusedConnection[] = [];
  const guarded = function connect(this: net.Socket, ...args: unknown[]): unknown {
    const target = connectTarget(args);
    if (target.isPipe || isLoopbackHost(target.host)) return original.apply(this, args);
    const err = refusalError(target.host, target.port);
    refusals.push({ host: target.host, port: target.port, at: Date.now() });
    // Fail the way a real connection failure does (an 'error' event on the socket, which http/https turn into
    // a request error), on the next tick so callers can still attach listeners after connect() returns.
    process.nextTick(() => this.destroy(err));
    return this;
  };
  copySymbols(original, guarded);
  mark(guarded);
  Object.defineProperty(guarded, REFUSALS, { value: refusals, enumerable: false });
  proto.connect = guarded;
}

function patchDnsLookup(): void {
  const dnsObj = dns as unknown as Record<string, unknown>;
  const original = dnsObj.lookup as AnyFn;
  if (!isMarked(original)) {
    const guarded = function lookup(this: unknown, hostname: unknown, ...rest: unknown[]): unknown {
      if (typeof hostname === 'string' && isLoopbackHost(hostname)) {
        return original.call(this, hostname, ...rest);
      }
      const callback = rest[rest.length - 1];
      if (typeof callback !== 'function') return original.call(this, hostname, ...rest); // let Node throw
      process.nextTick(callback, notFoundError(String(hostname)));
      return undefined;
    };
    copySymbols(original, guarded);
    mark(guarded);
    dnsObj.lookup = guarded;
  }

  const promises = dns.promises as unknown as Record<string, unknown>;
  const originalP = promises.lookup as AnyFn;
  if (!isMarked(originalP)) {
    const guardedP = function lookup(this: unknown, hostname: unknown, ...rest: unknown[]): unknown {
      if (typeof hostname === 'string' && isLoopbackHost(hostname))
        return originalP.call(this, hostname, ...rest);
      return Promise.reject(notFoundError(String(hostname)));
    };
    mark(guardedP);
    promises.lookup = guardedP;
  }
}

/** Applies {@link TELEMETRY_ENV_DEFAULTS} to `process.env` where a variable is not already set. */
export function applyTelemetryEnvDefaults(env: NodeJS.ProcessEnv = process.env): void {
  for (const [key, value] of Object.entries(TELEMETRY_ENV_DEFAULTS)) {
    if (env[key] === undefined) env[key] = value;
  }
}

/**
 * Installs the loopback-only guard (socket connect + DNS lookup patches) and the telemetry environment
 * defaults. Idempotent: safe to call from several setup files, test files or the sandbox.
 */
export function installLoopbackGuard(): void {
  patchSocketConnect();
  patchDnsLookup();
  applyTelemetryEnvDefaults();
}

/** True when the guard is active on `net.Socket.prototype.connect`, `dns.lookup` and `dns.promises.lookup`. */
export function isLoopbackGuardInstalled(): boolean {
  const proto = net.Socket.prototype as unknown as Record<string, unknown>;
  const dnsObj = dns as unknown as Record<string, unknown>;
  const promises = dns.promises as unknown as Record<string, unknown>;
  return [proto.connect, dnsObj.lookup, promises.lookup].every(
    (fn) => typeof fn === 'function' && isMarked(fn),
  );
}

/**
 * Non-loopback connection attempts refused so far in this process (jest: this worker), oldest first. Lets a
 * test assert that an SDK did not try to reach anything it was not pointed at, even if the SDK swallowed the
 * error. The returned array is live; `length = 0` clears it.
 */
export function refusedConnections(): RefusedConnection[] {
  const connect = (net.Socket.prototype as unknown as Record<string, unknown>).connect as Record<
    symbol,
    unknown
  >;
  const list = connect[REFUSALS];
  return Array.isArray(list) ? (list as RefusedConnection[]) : [];
}

installLoopbackGuard();
