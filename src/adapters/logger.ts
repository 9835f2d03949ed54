/**
 * Logger over the Functions `InvocationContext` (or the console). Every value is rendered with
 * JSON.stringify, so caller text can never inject a raw CR/LF into a log line.
 */
import type { Logger } from '../core/ports';

/** Minimal shape of `InvocationContext` logging. */
export interface LogSink {
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

/** Renders `message key=value ...` on one line. */
export function formatLogLine(message: string, properties?: Record<string, unknown>): string {
  const parts = [message.replace(/[\r\n\u2028\u2029]+/g, ' ')];
  for (const [key, value] of Object.entries(properties ?? {})) {
    if (value === undefined) continue;
    parts.push(`${key}=${JSON.stringify(value)?.replace(/[\u2028\u2029]/g, ' ') ?? 'null'}`);
  }
  return parts.join(' ');
}

/** A {@link Logger} writing single-line, sanitised messages to `sink`. */
export function createLogger(sink: LogSink): Logger {
  return {
    info: (message, properties) => sink.info(formatLogLine(message, properties)),
    warn: (message, properties) => sink.warn(formatLogLine(message, properties)),
    error: (message, properties) => sink.error(formatLogLine(message, properties)),
  };
}
