/** A scaled clock: virtual time runs `scale` times faster than real time (sleeps shrink accordingly). */
import type { Clock } from '../src/core/ports';

/** Virtual clock shared by the app and the simulators, so rate windows and Retry-After waits stay consistent. */
export class ScaledClock implements Clock {
  private readonly realStart = Date.now();
  readonly sleeps: number[] = [];
  constructor(
    readonly scale: number,
    private readonly virtualStart = Date.now(),
  ) {}
  now = (): number => this.virtualStart + (Date.now() - this.realStart) * this.scale;
  sleep = (ms: number): Promise<void> => {
    this.sleeps.push(ms);
    return new Promise((resolve) => setTimeout(resolve, Math.ceil(ms / this.scale)));
  };
}
