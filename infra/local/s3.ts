/** The local S3: s3rver on loopback, its data in a folder, with the buckets the CDK app defines. */
import type { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import S3rver from 's3rver';

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
  let server = make(opts.port ?? 0);
  let info;
  try {
    info = await server.run();
  } catch (err) {
    // A busy fixed port falls back to any free one: the endpoint is printed, not assumed.
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || !opts.port) throw err;
    server = make(0);
    info = await server.run();
  }
  const endpoint = `http://${address}:${info.port}`;
  return {
    endpoint,
    port: info.port,
    onEvent: (listener) => (server as unknown as EventEmitter).on('event', listener),
    close: () => server.close(),
  };
}
