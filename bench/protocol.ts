/** What the benchmark harness and its child processes share: IPC commands and device ids. */
import { createHash } from 'node:crypto';

/** Commands from the harness to a child. */
export type Command =
  | { cmd: 'app'; ids: string[] }
  | { cmd: 'bare'; ids: string[] }
  | { cmd: 'client'; ids: string[] }
  | { cmd: 'stubbed'; ids: string[] }
  | { cmd: 'stats' }
  | { cmd: 'finish' }
  | { cmd: 'drain'; ids: string[]; concurrency: number; scale: number; t0: number; timeoutMs: number };

/** Device ids the simulators are seeded with: SHA-1 of a name, like real MDE device ids. */
export function machineId(name: string): string {
  return createHash('sha1').update(name).digest('hex');
}
