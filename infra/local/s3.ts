/** The local S3: s3rver on loopback, its data in a folder, with the buckets the CDK app defines. */
import type { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import S3rver from 's3rver';

/** Bucket names of the local cloud, one per bucket role of the CDK app. */
export const LOCAL_BUCKET_NAMES = { raw: 'myeloscope-raw', work: 'myeloscope-work', models: 'myeloscope-models' } as const;

/** s3rver's event: AWS's record shape, but keys not URL-encoded and a made-up ARN. */
export interface S3rverEvent {
  Records: {
    eventName: string;
    eventTime: string;
    s3: { bucket: { name: string }; object: { key: string; size?: number; eTag?: string; sequencer?: string } };
  }[];
}

export interface LocalS3 {
  endpoint: string;
  port: number;
  onEvent(listener: (event: S3rverEvent) => void): void;
  close(): Promise<void>;
}

export async function startLocalS3(opts: { directory: string; buckets: string[]; port?: number; address?: string }): Promise<LocalS3> {
  await mkdir(opts.directory, { recursive: true });
  const address = opts.address ?? '127.0.0.1';
  const make = (port: number) =>
    new S3rver({
      address,
      port,
      silent: true,
      directory: opts.directory,
      configureBuckets: opts.buckets.map((name) => ({ name, configs: [] })),
    });
  // s3rver reports a busy port as an unhandled 'error' event, not a rejection: probe the port first, and
  // fall back to any free one (the endpoint is printed, not assumed).
  const port = opts.port && (await portIsFree(opts.port, address)) ? opts.port : 0;
  const server = make(port);
  const info = await server.run();
  const endpoint = `http://${address}:${info.port}`;
  return {
    endpoint,
    port: info.port,
    onEvent: (listener) => (server as unknown as EventEmitter).on('event', listener),
    close: () => server.close(),
  };
}

function portIsFree(port: number, address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, address, () => probe.close(() => resolve(true)));
  });
}
