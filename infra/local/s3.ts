/** The local S3: s3rver on loopback, its data in a folder, with the buckets the CDK app defines. */
import type { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import S3rver from 's3rver';

/** Bucket names of the local cloud, one per bucket role of the CDK app. */
export const LOCAL_BUCKET_NAMES = { raw: 'myeloscope-raw', work: 'myeloscope-work', models: 'myeloscope-models' } as const;

/**
 * Points this process's AWS clients at the local S3, as the handlers expect their environment: the endpoint,
 * s3rver's fixed credentials (it checks signatures against them), path-style URLs and the bucket names.
 * Handlers read it at module load, as on Lambda: call before importing them.
 */
export function useLocalS3Environment(endpoint: string): void {
  Object.assign(process.env, {
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: process.env.AWS_REGION ?? 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    S3_FORCE_PATH_STYLE: 'true',
    // Node 20 is supported here; the SDK's 9-line notice about Node 22 would repeat on every local run.
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ?? 'true',
    RAW_BUCKET: LOCAL_BUCKET_NAMES.raw,
    WORK_BUCKET: LOCAL_BUCKET_NAMES.work,
    MODELS_BUCKET: LOCAL_BUCKET_NAMES.models,
  });
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
}

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
