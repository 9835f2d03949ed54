/**
 * The Defender for Endpoint API over axios: one attempt per call (retries are the core's), keep-alive
 * connections, no redirects, and errors mapped to `TransportError` without request details (axios errors
 * carry the Authorization header in `config`: they are never logged or rethrown).
 */
import http from 'node:http';
import https from 'node:https';
import axios, { type AxiosInstance, type AxiosResponse } from 'axios';
import type { ApiResponse, AttemptOptions, DefenderApi } from '../core/ports';
import { TransportError } from '../core/ports';
import { isMachineId } from '../core/request';

/** Source of bearer tokens for the Defender API; `remainingMs` bounds how long a call may wait. */
export interface TokenSource {
  getToken(options?: Pick<AttemptOptions, 'remainingMs'>): Promise<string>;
  refresh(options?: Pick<AttemptOptions, 'remainingMs'>): Promise<void>;
}

const USER_AGENT = 'mde-unisolate/0.1 (+azure-functions)';

function toApiResponse(response: AxiosResponse<unknown>): ApiResponse {
  const retryAfter = response.headers['retry-after'] as unknown;
  return {
    status: response.status,
    retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
    body: response.data,
  };
}

/**
 * Maps an axios failure to a {@link TransportError} without request details: axios' timeout and abort codes
 * become `timeout`, every other code (ECONNRESET, ENOTFOUND, ...) a `network` failure with that code.
 */
export function toTransportError(error: unknown): TransportError {
  const code = (error as { code?: unknown }).code;
  const text = typeof code === 'string' ? code : 'UNKNOWN';
  if (text === 'ETIMEDOUT' || text === 'ECONNABORTED' || text === 'ERR_CANCELED') {
    return new TransportError('timeout', 'ETIMEDOUT', 'The Defender API did not answer before the timeout');
  }
  return new TransportError('network', text, `Network error calling the Defender API (${text})`);
}

/** {@link DefenderApi} implementation. */
export class DefenderClient implements DefenderApi {
  private readonly http: AxiosInstance;
  /** Calls made, for diagnostics and benchmarks. */
  calls = 0;

  constructor(
    baseUrl: string,
    private readonly tokens: TokenSource,
  ) {
    this.http = axios.create({
      baseURL: baseUrl,
      maxRedirects: 0,
      validateStatus: () => true,
      transitional: { clarifyTimeoutError: true, silentJSONParsing: true, forcedJSONParsing: true },
      httpAgent: new http.Agent({ keepAlive: true, maxSockets: 50 }),
      httpsAgent: new https.Agent({ keepAlive: true, maxSockets: 50 }),
      headers: { 'User-Agent': USER_AGENT, Accept: 'application/json' },
      // Bodies of outgoing requests are tiny; a huge answer is not MDE.
      maxContentLength: 5 * 1024 * 1024,
      proxy: false,
    });
  }

  async unisolate(machineId: string, comment: string, options: AttemptOptions): Promise<ApiResponse> {
    if (!isMachineId(machineId)) throw new Error('machineId must be validated before building a URL');
    return this.send('POST', `/api/machines/${machineId}/unisolate`, options, { Comment: comment });
  }

  async listMachineActions(
    filter: string,
    options: AttemptOptions,
    top = 10,
    skip = 0,
  ): Promise<ApiResponse> {
    const query = new URLSearchParams({
      $filter: filter,
      $orderby: 'creationDateTimeUtc desc',
      $top: String(top),
    });
    if (skip > 0) query.set('$skip', String(skip));
    return this.send('GET', `/api/machineactions?${query.toString().replace(/\+/g, '%20')}`, options);
  }

  async listMachines(filter: string, options: AttemptOptions, top = 100): Promise<ApiResponse> {
    // URLSearchParams percent-encodes the whole filter (quotes included): the value cannot leave the
    // $filter parameter; escaping string literals inside it is the caller's job.
    const query = new URLSearchParams({ $filter: filter, $top: String(top) });
    return this.send('GET', `/api/machines?${query.toString().replace(/\+/g, '%20')}`, options);
  }

  async getMachine(machineId: string, options: AttemptOptions): Promise<ApiResponse> {
    if (!isMachineId(machineId)) throw new Error('machineId must be validated before building a URL');
    return this.send('GET', `/api/machines/${machineId}`, options);
  }

  async getMachineAlerts(machineId: string, options: AttemptOptions): Promise<ApiResponse> {
    if (!isMachineId(machineId)) throw new Error('machineId must be validated before building a URL');
    return this.send('GET', `/api/machines/${machineId}/alerts`, options);
  }

  async ensureCredentials(options: Pick<AttemptOptions, 'remainingMs'> = {}): Promise<void> {
    // The token source caches: the call that follows gets the same token without waiting.
    await this.tokens.getToken(options);
  }

  async refreshCredentials(options: Pick<AttemptOptions, 'remainingMs'> = {}): Promise<void> {
    await this.tokens.refresh(options);
  }

  private async send(
    method: 'GET' | 'POST',
    url: string,
    options: AttemptOptions,
    data?: unknown,
  ): Promise<ApiResponse> {
    const waitStarted = Date.now();
    const token = await this.tokens.getToken({ remainingMs: options.remainingMs });
    // Time spent waiting for the token comes out of the budget, never out of the request timeout alone.
    const left =
      options.remainingMs === undefined ? Infinity : options.remainingMs - (Date.now() - waitStarted);
    this.calls += 1;
    try {
      const response = await this.http.request<unknown>({
        method,
        url,
        data,
        timeout: Math.max(1, Math.min(options.timeoutMs, left)),
        headers: {
          Authorization: `Bearer ${token}`,
          ...(data === undefined ? {} : { 'Content-Type': 'application/json' }),
        },
      });
      return toApiResponse(response);
    } catch (error) {
      throw toTransportError(error);
    }
  }
}
