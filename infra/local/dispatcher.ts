/**
 * Delivers the local S3's object events to the handlers the way S3 notifications deliver them on AWS: the
 * exact S3 event record format, keys URL-encoded as S3 encodes them, and only for the bucket, event type,
 * prefix and suffix of a notification the CDK app declares (s3rver itself emits an event for every write).
 * Like Lambda's asynchronous invocation, a failed delivery is retried twice, then recorded as failed.
 */
import type { S3Event, S3EventRecord } from 'aws-lambda';
import { objectCreatedRecord } from '../../layers/aws/src/events.ts';
import type { S3rverEvent } from './s3.ts';

export interface Notification {
  bucketName: string;
  /** e.g. "s3:ObjectCreated:*" */
  events: string[];
  prefix?: string;
  suffix?: string;
  function: string;
}

export type EventHandler = (event: S3Event) => Promise<unknown>;

export interface DeliveryStats {
  delivered: number;
  failed: number;
  retried: number;
  ms: number;
}

export interface FailedDelivery {
  function: string;
  bucket: string;
  key: string;
  error: string;
}

export class EventDispatcher {
  readonly stats = new Map<string, DeliveryStats>();
  readonly failures: FailedDelivery[] = [];
  private inFlight = 0;
  private readonly queue: (() => Promise<void>)[] = [];
  private waiters: (() => void)[] = [];

  constructor(
    private readonly notifications: Notification[],
    private readonly handlers: Record<string, EventHandler>,
    private readonly opts: { concurrency?: number; retries?: number; onDelivered?: (fn: string, key: string, result: unknown) => void } = {},
  ) {}

  /** Feed one s3rver event. */
  accept(raw: S3rverEvent): void {
    for (const rec of raw.Records) {
      const key = rec.s3.object.key;
      for (const n of this.notifications) {
        if (n.bucketName !== rec.s3.bucket.name) continue;
        if (!n.events.some((e) => eventMatches(e, rec.eventName))) continue;
        if (n.prefix && !key.startsWith(n.prefix)) continue;
        if (n.suffix && !key.endsWith(n.suffix)) continue;
        this.enqueue(n.function, toAwsRecord(rec, key));
      }
    }
  }

  isIdle(): boolean {
    return this.inFlight === 0 && this.queue.length === 0;
  }

  /** Resolves when no delivery is queued or running. */
  idle(): Promise<void> {
    if (this.inFlight === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private enqueue(fn: string, record: S3EventRecord): void {
    const handler = this.handlers[fn];
    if (!handler) throw new Error(`no local handler for function "${fn}"`);
    const stats = this.stats.get(fn) ?? { delivered: 0, failed: 0, retried: 0, ms: 0 };
    this.stats.set(fn, stats);
    const key = decodeURIComponent(record.s3.object.key.replace(/\+/g, ' '));
    this.queue.push(async () => {
      const retries = this.opts.retries ?? 2;
      for (let attempt = 0; ; attempt++) {
        const t0 = performance.now();
        try {
          const result = await handler({ Records: [record] });
          stats.ms += performance.now() - t0;
          stats.delivered++;
          this.opts.onDelivered?.(fn, key, result);
          return;
        } catch (err) {
          stats.ms += performance.now() - t0;
          if (attempt < retries) {
            stats.retried++;
            await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
            continue;
          }
          stats.failed++;
          this.failures.push({ function: fn, bucket: record.s3.bucket.name, key, error: err instanceof Error ? err.message : String(err) });
          return;
        }
      }
    });
    this.pump();
  }

  private pump(): void {
    const limit = this.opts.concurrency ?? 2;
    while (this.inFlight < limit && this.queue.length) {
      const job = this.queue.shift() as () => Promise<void>;
      this.inFlight++;
      void job().finally(() => {
        this.inFlight--;
        this.pump();
        if (this.inFlight === 0 && this.queue.length === 0) {
          const waiters = this.waiters;
          this.waiters = [];
          for (const w of waiters) w();
        }
      });
    }
  }
}

/** "s3:ObjectCreated:*" matches "ObjectCreated:Put". */
function eventMatches(pattern: string, eventName: string): boolean {
  const p = pattern.replace(/^s3:/, '');
  return p.endsWith('*') ? eventName.startsWith(p.slice(0, -1)) : p === eventName;
}

function toAwsRecord(rec: S3rverEvent['Records'][number], key: string): S3EventRecord {
  return objectCreatedRecord(rec.s3.bucket.name, key, {
    eventName: rec.eventName as S3EventRecord['eventName'],
    eventTime: rec.eventTime,
    ...(rec.s3.object.size !== undefined ? { size: rec.s3.object.size } : {}),
    ...(rec.s3.object.eTag !== undefined ? { eTag: rec.s3.object.eTag } : {}),
    ...(rec.s3.object.sequencer !== undefined ? { sequencer: rec.s3.object.sequencer } : {}),
  });
}
