/**
 * A local stand-in for one Service Bus queue, for the benchmarks, the sandbox and multi-instance tests (there
 * is no Service Bus emulator here). It keeps what the app relies on: peek-lock receive, complete, abandon with
 * immediate redelivery (`deliveryCount` + 1, no delay), dead-lettering once `maxDeliveryCount` is exceeded, and
 * a message id per message. https://learn.microsoft.com/azure/service-bus-messaging/message-transfers-locks-settlement
 */

/** A message as a receiver gets it. */
export interface QueuedMessage {
  /** Lock token of this delivery. */
  lock: number;
  messageId: string;
  /** The body as sent (JSON text). */
  body: string;
  /** 1 on the first delivery. */
  deliveryCount: number;
}

/** Counters of a queue. */
export interface QueueStats {
  sent: number;
  completed: number;
  abandoned: number;
  deadLettered: number;
  /** Highest delivery count any message reached. */
  maxDeliveryCount: number;
}

/** One queue. */
export class LocalQueue {
  private readonly ready: { messageId: string; body: string; deliveryCount: number }[] = [];
  private readonly locked = new Map<number, { messageId: string; body: string; deliveryCount: number }>();
  private nextLock = 1;
  private nextId = 1;
  readonly deadLetters: { messageId: string; body: string; deliveryCount: number }[] = [];
  readonly stats: QueueStats = { sent: 0, completed: 0, abandoned: 0, deadLettered: 0, maxDeliveryCount: 0 };

  constructor(
    readonly name: string,
    /** The queue's max delivery count (infra: 10). */
    readonly maxDeliveryCount = 10,
  ) {}

  /** Sends a message (a body is serialised as the Functions output binding does: JSON). */
  send(body: unknown, messageId = `${this.name}-${this.nextId++}`): void {
    this.ready.push({
      messageId,
      body: typeof body === 'string' ? body : JSON.stringify(body),
      deliveryCount: 0,
    });
    this.stats.sent += 1;
  }

  /** Locks and returns up to `max` messages, oldest first. */
  receive(max: number): QueuedMessage[] {
    const out: QueuedMessage[] = [];
    while (out.length < max && this.ready.length > 0) {
      const message = this.ready.shift()!;
      message.deliveryCount += 1;
      this.stats.maxDeliveryCount = Math.max(this.stats.maxDeliveryCount, message.deliveryCount);
      const lock = this.nextLock++;
      this.locked.set(lock, message);
      out.push({ lock, ...message });
    }
    return out;
  }

  /** The invocation succeeded: the message is gone. */
  complete(lock: number): void {
    if (this.locked.delete(lock)) this.stats.completed += 1;
  }

  /** The invocation failed: redelivered at once, or dead-lettered after its last delivery. */
  abandon(lock: number): void {
    const message = this.locked.get(lock);
    if (!message) return;
    this.locked.delete(lock);
    this.stats.abandoned += 1;
    if (message.deliveryCount >= this.maxDeliveryCount) {
      this.deadLetters.push(message);
      this.stats.deadLettered += 1;
    } else this.ready.unshift(message);
  }

  /** Messages waiting or locked. */
  get size(): number {
    return this.ready.length + this.locked.size;
  }
}
