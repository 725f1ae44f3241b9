import type { S3Event, S3EventRecord } from 'aws-lambda';
import { decodeEventKey, encodeEventKey } from './s3.ts';

export interface ObjectRef {
  bucket: string;
  /** Decoded key. */
  key: string;
  eTag?: string;
  size?: number;
}

/** The created objects of an S3 event, keys decoded. Other records (removals, tests) are ignored. */
export function createdObjects(event: S3Event): ObjectRef[] {
  return (event.Records ?? [])
    .filter((r) => r.eventSource === 'aws:s3' && r.eventName.startsWith('ObjectCreated:'))
    .map((r) => ({
      bucket: r.s3.bucket.name,
      key: decodeEventKey(r.s3.object.key),
      ...(r.s3.object.eTag ? { eTag: r.s3.object.eTag } : {}),
      ...(typeof r.s3.object.size === 'number' ? { size: r.s3.object.size } : {}),
    }));
}

/** A short form of a key for logs: operators need the folder and a hint of the name, not full patient-ish names. */
export function redactKey(key: string): string {
  const slash = key.lastIndexOf('/');
  const dir = key.slice(0, slash + 1);
  const name = key.slice(slash + 1);
  return name.length <= 12 ? key : `${dir}${name.slice(0, 6)}…${name.slice(-4)}`;
}

export type LogLevel = 'info' | 'warn' | 'error';
export type LogSink = (level: LogLevel, message: string, fields: Record<string, unknown>) => void;

/** Where log records go: stdout/stderr as JSON lines (CloudWatch Logs), or a sink the local cloud installs. */
let sink: LogSink = (level, message, fields) => {
  const line = JSON.stringify({ level, message, ...fields });
  if (level === 'error') console.error(line);
  else if (level === 'warn') console.warn(line);
  else console.log(line);
};

export function setLogSink(next: LogSink): LogSink {
  const previous = sink;
  sink = next;
  return previous;
}

/** One JSON line per log record, so CloudWatch Logs Insights can query it. */
export function log(level: LogLevel, message: string, fields: Record<string, unknown> = {}): void {
  sink(level, message, fields);
}

/**
 * An S3 object-created event record in AWS's exact shape, key URL-encoded as S3 encodes it: what the local
 * dispatcher delivers, and what a redrive or a test hands a handler directly.
 */
export function objectCreatedRecord(
  bucket: string,
  key: string,
  opts: { eventName?: S3EventRecord['eventName']; eventTime?: string; size?: number; eTag?: string; sequencer?: string; source?: string } = {},
): S3EventRecord {
  const source = opts.source ?? 'myeloscope-local';
  return {
    eventVersion: '2.1',
    eventSource: 'aws:s3',
    awsRegion: process.env.AWS_REGION ?? 'us-east-1',
    eventTime: opts.eventTime ?? new Date().toISOString(),
    eventName: opts.eventName ?? 'ObjectCreated:Put',
    userIdentity: { principalId: `AWS:${source}` },
    requestParameters: { sourceIPAddress: '127.0.0.1' },
    responseElements: { 'x-amz-request-id': source, 'x-amz-id-2': source },
    s3: {
      s3SchemaVersion: '1.0',
      configurationId: source,
      bucket: { name: bucket, ownerIdentity: { principalId: source }, arn: `arn:aws:s3:::${bucket}` },
      object: { key: encodeEventKey(key), size: opts.size ?? 0, eTag: opts.eTag ?? '', sequencer: opts.sequencer ?? '0' },
    },
  };
}
