/** The local S3: s3rver on loopback, its data in a folder, with the buckets the CDK app defines. */
import type { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import S3rver from 's3rver';
import { listenWithFallback, localServerOptions, type LocalServerOptions } from './listen.ts';
import type { LocalCorsRule } from './template.ts';
// S3's key limit, which s3rver does not check (long keys also hit the file system's).
import { keyBytes, longestSegmentBytes, MAX_KEY_BYTES } from '../../layers/core/src/keys.ts';

/** Bucket names of the local cloud, one per bucket role of the CDK app. */
export const LOCAL_BUCKET_NAMES = { raw: 'myeloscope-raw', work: 'myeloscope-work', models: 'myeloscope-models' } as const;

/**
 * s3rver keeps an object as files named `<last key segment>._S3rver_<resource>` (the longest resource being
 * `metadata.json`), in folders named after the other segments; Linux file names are at most 255 bytes. A
 * longer segment made s3rver throw ENAMETOOLONG mid-write (an unhandled stream error: the process died, or a
 * half-written object broke every later listing), so such keys are refused before s3rver sees them.
 */
export const LOCAL_S3_MAX_SEGMENT_BYTES = 255 - Buffer.byteLength('._S3rver_metadata.json');

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
    // The handlers quarantine keys whose outputs this store could not hold (key-too-long), not crash on them.
    S3_MAX_KEY_SEGMENT_BYTES: String(LOCAL_S3_MAX_SEGMENT_BYTES),
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

/** CORS rules of the template's buckets, by local bucket name (the web page PUTs to presigned URLs). */
export type LocalBucketCors = Record<string, LocalCorsRule[]>;

/** A CloudFormation CORS rule list as the S3 XML document s3rver takes (PutBucketCors' body). */
export function corsXml(rules: readonly LocalCorsRule[]): string {
  const esc = (v: string | number) => String(v).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const many = (tag: string, values: readonly (string | number)[] | undefined) => (values ?? []).map((v) => `<${tag}>${esc(v)}</${tag}>`).join('');
  const rule = (r: LocalCorsRule) =>
    `<CORSRule>${many('AllowedOrigin', r.AllowedOrigins)}${many('AllowedMethod', r.AllowedMethods)}${many('AllowedHeader', r.AllowedHeaders)}` +
    `${many('ExposeHeader', r.ExposedHeaders)}${r.MaxAge !== undefined ? `<MaxAgeSeconds>${esc(r.MaxAge)}</MaxAgeSeconds>` : ''}</CORSRule>`;
  return `<CORSConfiguration>${rules.map(rule).join('')}</CORSConfiguration>`;
}

export async function startLocalS3(
  opts: { directory: string; buckets: string[]; cors?: LocalBucketCors; port?: number; address?: string } & LocalServerOptions,
): Promise<LocalS3> {
  await mkdir(opts.directory, { recursive: true });
  const address = opts.address ?? '127.0.0.1';
  const s3rver = new S3rver({
    silent: true,
    directory: opts.directory,
    configureBuckets: opts.buckets.map((name) => {
      const rules = opts.cors?.[name] ?? [];
      return { name, configs: rules.length ? [corsXml(rules)] : [] };
    }),
  });
  await s3rver.configureBuckets();
  // Our own server in front of s3rver's request handler: it filters keys s3rver cannot store, applies the
  // local servers' timeouts, and reports a busy port as a rejection (s3rver's run() emits an unhandled 'error').
  const app = s3rver.callback();
  const server = createServer(localServerOptions(opts), (req, res) => {
    if (!refuseUnstorableKey(req, res)) app(req, res);
  });
  const port = await listenWithFallback(server, opts.port, address);
  return {
    endpoint: `http://${address}:${port}`,
    port,
    onEvent: (listener) => (s3rver as unknown as EventEmitter).on('event', listener),
    close: () => new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  };
}

/** The key of a path-style request's URL, in UTF-8 bytes, and its longest `/`-separated segment. */
export function keySize(rawUrl: string): { bytes: number; longestSegment: number } {
  const pathname = rawUrl.split('?')[0] ?? '';
  let path: string;
  try {
    path = decodeURIComponent(pathname);
  } catch {
    return { bytes: 0, longestSegment: 0 }; // not a key s3rver would find either; let it answer
  }
  const key = path.split('/').slice(2).join('/'); // '', bucket, key segments
  return { bytes: keyBytes(key), longestSegment: longestSegmentBytes(key) };
}

/**
 * Answers a request for a key with a segment s3rver cannot store, as S3 would answer for a key it cannot
 * take: writes get 400 KeyTooLongError (S3's XML error shape), reads 404 (no such object can exist here),
 * deletes 204. True when answered.
 */
function refuseUnstorableKey(req: IncomingMessage, res: ServerResponse): boolean {
  const { bytes, longestSegment: longest } = keySize(req.url ?? '/');
  if (longest <= LOCAL_S3_MAX_SEGMENT_BYTES && bytes <= MAX_KEY_BYTES) return false;
  const method = req.method ?? 'GET';
  if (method === 'DELETE') {
    res.writeHead(204).end();
    return true;
  }
  const [code, status, message] =
    method === 'GET' || method === 'HEAD'
      ? ['NoSuchKey', 404, 'The specified key does not exist.']
      : bytes > MAX_KEY_BYTES
        ? ['KeyTooLongError', 400, `Your key is too long: ${bytes} bytes; S3 allows at most ${MAX_KEY_BYTES}.`]
        : [
          'KeyTooLongError',
          400,
          `The local S3 server (s3rver) cannot store a path segment over ${LOCAL_S3_MAX_SEGMENT_BYTES} bytes ` +
            `(it keeps each object in files named after the key); this key has one of ${longest} bytes. ` +
            'AWS S3 allows it (keys up to 1024 bytes): use a shorter file or folder name to use it locally.',
        ];
  const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  // Answered once the body is read: a client still sending it would otherwise see a reset, not the error.
  req.resume();
  req.once('end', () => {
    res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
    res.end(method === 'HEAD' ? undefined : xml);
  });
  return true;
}
