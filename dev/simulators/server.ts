/**
 * Shared HTTP(S) plumbing for the local service simulators: listening on 127.0.0.1, request recording, fault
 * injection (status / connection reset / hang / down) and clean shutdown.
 *
 * Each simulator supplies only a {@link SimHandler}; everything a test needs to break the network is here so
 * all simulators fail the same way.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { serverTls } from './tls';

const gunzip = promisify(zlib.gunzip);
const inflate = promisify(zlib.inflate);
const brotliDecompress = promisify(zlib.brotliDecompress);

/** One request as the simulator received it. */
export interface RecordedRequest {
  /** Upper-case HTTP method. */
  method: string;
  /** Path including the query string, exactly as sent (still percent-encoded). */
  path: string;
  /**
   * Request headers, names lower-cased, repeated headers joined with `, `. `authorization` is kept so tests
   * can assert a token was sent; tests must not print it.
   */
  headers: Record<string, string>;
  /** Body as UTF-8 text, after undoing any `content-encoding` (gzip/deflate/br). */
  body: string;
  /** `Date.now()` when the body was fully received. */
  at: number;
}

/**
 * A fault applied to the next request that matches {@link Fault.route} (any request when omitted). Each
 * queued fault is used once; queue the same fault n times with `failNext(n, fault)`.
 *
 * Kinds (checked in this order): `reset` destroys the connection (the client sees `ECONNRESET`); `hang` never
 * answers; `hangMs`
 * waits before answering (then answers with `status` if given, otherwise normally); `status` answers with
 * that status, `headers` and `body` instead of the real handler.
 */
export interface Fault {
  /**
   * Which requests this fault applies to: `'METHOD /path/pattern'` or just `'/path/pattern'`, where `*`
   * matches one path segment and `**` any number of them (query string ignored), e.g.
   * `'POST /api/machines/*\/unisolate'`. A RegExp is tested against `'METHOD /path'`.
   */
  route?: string | RegExp;
  /** Status code to answer with, e.g. 503, or 429 together with `headers: { 'Retry-After': '2' }`. */
  status?: number;
  /** Response body: objects are sent as JSON, strings as-is. Defaults to a service-shaped error body. */
  body?: unknown;
  /** Extra response headers. */
  headers?: Record<string, string>;
  /** Destroy the socket instead of answering (connection reset). */
  reset?: boolean;
  /** Delay before answering, in milliseconds. Cancelled by `close()` / `setDown(true)`. */
  hangMs?: number;
  /**
   * Accept the request and never answer (a service that holds connections open): the client waits until its
   * own timeout or abort. Released only by `close()` / `setDown(true)`, which drop the connection.
   */
  hang?: boolean;
}

/** Parsed request handed to a simulator's handler. */
export interface SimRequest extends RecordedRequest {
  /** Path without the query string, percent-decoding NOT applied. */
  pathname: string;
  /** Parsed query string. */
  query: URLSearchParams;
}

/** What a handler answers. Objects in `body` are serialised as JSON. */
export interface SimResponse {
  status: number;
  headers?: Record<string, string | number>;
  body?: unknown;
}

/** A simulator's request handler. */
export type SimHandler = (req: SimRequest) => SimResponse | Promise<SimResponse>;

/** Options common to every `startX()` function. */
export interface CommonSimOptions {
  /** Port to listen on (127.0.0.1 only). Default 0 = a random free port. */
  port?: number;
}

/** The part of every simulator handle that {@link SimServer} provides. */
export interface SimulatorHandle {
  /** Base URL without trailing slash, e.g. `https://127.0.0.1:51234`. */
  readonly url: string;
  /** The port actually bound (stable across `setDown(true)` / `setDown(false)`). */
  readonly port: number;
  /** Every request received, in arrival order (including faulted ones). Cleared by `reset()`. */
  readonly requests: RecordedRequest[];
  /** Pending faults; push to add one. Each is consumed by the first matching request. */
  readonly faults: Fault[];
  /**
   * Queues `fault` for the next `n` matching requests; `route` (same syntax as {@link Fault.route}) overrides
   * the fault's own route.
   */
  failNext(n: number, fault: Fault, route?: string | RegExp): void;
  /**
   * `true`: stop listening and drop every open connection, so new connections get `ECONNREFUSED` (a request
   * already in flight, or racing on a pooled keep-alive socket, sees `ECONNRESET`, as with a real outage).
   * `false`: listen again on the same port.
   */
  setDown(down: boolean): Promise<void>;
  /** Whether the simulator is currently down. */
  readonly isDown: boolean;
  /** Clears recorded requests, pending faults and the simulator's counters (seeded data is kept). */
  reset(): void;
  /** Stops listening, destroys all open sockets and cancels pending hangs. Idempotent. */
  close(): Promise<void>;
}

/** Options for {@link SimServer}. */
export interface SimServerOptions extends CommonSimOptions {
  /** Serve HTTPS with the test certificate (default true). */
  tls?: boolean;
  /** The simulator's request handler. */
  handler: SimHandler;
  /** Body for a `status` fault that did not specify one. */
  defaultFaultBody?: (status: number) => unknown;
  /** Called by `reset()` after the common state is cleared. */
  onReset?: () => void;
  /** Called by `close()` (e.g. to stop the simulator's own timers). */
  onClose?: () => void;
}

/** Compiles a route matcher string into a predicate over (method, pathname). */
export function compileRoute(route: string | RegExp): (method: string, pathname: string) => boolean {
  if (route instanceof RegExp) return (method, pathname) => route.test(`${method} ${pathname}`);
  const space = route.indexOf(' ');
  const method = space > 0 ? route.slice(0, space).toUpperCase() : '*';
  const pattern = space > 0 ? route.slice(space + 1).trim() : route.trim();
  if (pattern === '*' || pattern === '**') return (m) => method === '*' || m === method;
  const source = pattern
    .split(/(\*\*|\*)/)
    .map((part) =>
      part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'),
    )
    .join('');
  const re = new RegExp(`^${source}/?$`, 'i');
  return (m, pathname) => (method === '*' || m === method) && re.test(pathname);
}

function defaultErrorBody(status: number): unknown {
  return {
    error: { code: http.STATUS_CODES[status] ?? 'Error', message: 'Simulated fault', target: randomUUID() },
  };
}

function serialise(body: unknown): { data: Buffer | string | undefined; json: boolean } {
  if (body === undefined || body === null) return { data: undefined, json: false };
  if (typeof body === 'string' || Buffer.isBuffer(body)) return { data: body, json: false };
  return { data: JSON.stringify(body), json: true };
}

async function decodeBody(raw: Buffer, encoding: string | undefined): Promise<Buffer> {
  switch ((encoding ?? '').trim().toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return gunzip(raw);
    case 'deflate':
      return inflate(raw);
    case 'br':
      return brotliDecompress(raw);
    default:
      return raw;
  }
}

/**
 * An HTTP or HTTPS server bound to 127.0.0.1 with recording, faults and down mode. Simulators compose one
 * and spread {@link SimServer.handle} into their own handle.
 */
export class SimServer {
  readonly requests: RecordedRequest[] = [];
  readonly faults: Fault[] = [];
  private readonly server: http.Server | https.Server;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly pendingWakeups = new Set<() => void>();
  private readonly options: SimServerOptions;
  private readonly routeCache = new Map<string, (method: string, pathname: string) => boolean>();
  private boundPort = 0;
  private down = false;
  private closed = false;
  readonly protocol: 'http' | 'https';

  constructor(options: SimServerOptions) {
    this.options = options;
    const useTls = options.tls ?? true;
    this.protocol = useTls ? 'https' : 'http';
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => this.onRequest(req, res);
    this.server = useTls ? https.createServer({ ...serverTls() }, onRequest) : http.createServer(onRequest);
    // 'connection' carries the raw TCP socket for both http and https, so destroying it also tears down TLS.
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    // A client that drops the TLS handshake (e.g. an untrusted CA) must not crash the test process.
    this.server.on('tlsClientError', () => undefined);
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  /** Starts listening on 127.0.0.1 (random port unless `options.port`). */
  async start(): Promise<this> {
    await this.listen(this.options.port ?? 0);
    return this;
  }

  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    return `${this.protocol}://127.0.0.1:${this.boundPort}`;
  }

  get isDown(): boolean {
    return this.down;
  }

  /** The generic part of a simulator handle, bound to this server. */
  get handle(): SimulatorHandle {
    const handle: Omit<SimulatorHandle, 'url' | 'port' | 'isDown'> = {
      requests: this.requests,
      faults: this.faults,
      failNext: (n, fault, route) => this.failNext(n, fault, route),
      setDown: (down) => this.setDown(down),
      reset: () => this.reset(),
      close: () => this.close(),
    };
    return Object.defineProperties(handle as SimulatorHandle, {
      url: { enumerable: true, get: () => this.url },
      port: { enumerable: true, get: () => this.port },
      isDown: { enumerable: true, get: () => this.isDown },
    });
  }

  failNext(n: number, fault: Fault, route?: string | RegExp): void {
    for (let i = 0; i < n; i++) this.faults.push(route === undefined ? { ...fault } : { ...fault, route });
  }

  reset(): void {
    this.requests.length = 0;
    this.faults.length = 0;
    this.options.onReset?.();
  }

  async setDown(down: boolean): Promise<void> {
    if (this.closed) throw new Error('simulator is closed');
    if (down === this.down) return;
    this.down = down;
    if (down) {
      await this.stopListening();
      // Give in-process keep-alive clients a few event-loop turns (each setImmediate runs after an I/O poll)
      // to see the FIN and drop their pooled sockets, so the next request opens a new connection
      // (ECONNREFUSED) instead of writing to a dead one (ECONNRESET). A timer alone is not enough on a busy
      // machine: it can fire before the poll phase that delivers the FIN.
      for (let i = 0; i < 4; i++) await new Promise((resolve) => setImmediate(resolve));
    } else {
      await this.listen(this.boundPort);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.options.onClose?.();
    await this.stopListening();
  }

  /**
   * Waits `ms` (timer unref'd so it never keeps the process alive) or until the simulator closes/goes down.
   * Resolves `false` when cut short.
   */
  sleep(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.timers.delete(timer);
        this.pendingWakeups.delete(wake);
        resolve(false);
      };
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.pendingWakeups.delete(wake);
        resolve(true);
      }, ms);
      timer.unref();
      this.timers.add(timer);
      this.pendingWakeups.add(wake);
    });
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
        this.server.off('error', onError);
        this.boundPort = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private async stopListening(): Promise<void> {
    for (const wake of [...this.pendingWakeups]) wake();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const closed = this.server.listening
      ? new Promise<void>((resolve) => this.server.close(() => resolve()))
      : Promise.resolve();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closed;
  }

  private matcher(route: string | RegExp): (method: string, pathname: string) => boolean {
    if (route instanceof RegExp) return compileRoute(route);
    let fn = this.routeCache.get(route);
    if (!fn) {
      fn = compileRoute(route);
      this.routeCache.set(route, fn);
    }
    return fn;
  }

  private takeFault(method: string, pathname: string): Fault | undefined {
    if (this.faults.length === 0) return undefined;
    const index = this.faults.findIndex(
      (f) => f.route === undefined || this.matcher(f.route)(method, pathname),
    );
    if (index < 0) return undefined;
    return this.faults.splice(index, 1)[0];
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      this.dispatch(req, res, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).catch(() => {
        if (!res.headersSent)
          this.write(res, { status: 500, body: { error: { code: 'InternalServerError' } } });
        else res.destroy();
      });
    });
    req.on('error', () => res.destroy());
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse, raw: Buffer): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const path = req.url ?? '/';
    const q = path.indexOf('?');
    const pathname = q < 0 ? path : path.slice(0, q);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
    }
    let decoded: Buffer;
    try {
      decoded = await decodeBody(raw, headers['content-encoding']);
    } catch {
      this.requests.push({ method, path, headers, body: raw.toString('latin1'), at: Date.now() });
      this.write(res, { status: 400, body: { error: { code: 'BadRequest', message: 'Undecodable body' } } });
      return;
    }
    const record: RecordedRequest = { method, path, headers, body: decoded.toString('utf8'), at: Date.now() };
    this.requests.push(record);

    const fault = this.takeFault(method, pathname);
    if (fault?.reset) {
      this.resetConnection(req.socket);
      return;
    }
    if (fault?.hang) {
      // Held until close()/setDown(true) destroys the socket; nothing is ever written.
      return;
    }
    if (fault?.hangMs !== undefined && fault.hangMs > 0) {
      const completed = await this.sleep(fault.hangMs);
      if (!completed || res.destroyed) return;
    }
    if (fault?.status !== undefined) {
      const body =
        fault.body !== undefined
          ? fault.body
          : (this.options.defaultFaultBody ?? defaultErrorBody)(fault.status);
      this.write(res, { status: fault.status, headers: fault.headers, body });
      return;
    }
    const simReq: SimRequest = {
      ...record,
      pathname,
      query: new URLSearchParams(q < 0 ? '' : path.slice(q + 1)),
    };
    const response = await this.options.handler(simReq);
    if (res.destroyed) return;
    this.write(
      res,
      fault?.headers ? { ...response, headers: { ...response.headers, ...fault.headers } } : response,
    );
  }

  private resetConnection(socket: Socket): void {
    // For TLS, req.socket is the TLSSocket; find the raw TCP socket (same remote port) to send a real RST.
    const raw = [...this.sockets].find((s) => s.remotePort === socket.remotePort) ?? socket;
    try {
      raw.resetAndDestroy();
    } catch {
      raw.destroy();
    }
  }

  private write(res: http.ServerResponse, response: SimResponse): void {
    const { data, json } = serialise(response.body);
    const headers: Record<string, string | number> = { ...response.headers };
    const hasType = Object.keys(headers).some((h) => h.toLowerCase() === 'content-type');
    if (json && !hasType) headers['content-type'] = 'application/json; charset=utf-8';
    headers['content-length'] = data === undefined ? 0 : Buffer.byteLength(data);
    res.writeHead(response.status, headers);
    res.end(data);
  }
}

/** Creates and starts a {@link SimServer}. */
export async function startSimServer(options: SimServerOptions): Promise<SimServer> {
  return new SimServer(options).start();
}
