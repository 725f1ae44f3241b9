/** S3 helpers shared by the handlers: one client per process, a BlobStore over one bucket, S3 URIs. */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  NoSuchKey,
  NotFound,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import type { BlobStore } from '../../core/src/store.ts';
import { InvalidInputError } from '../../core/src/errors.ts';
import { clientConfig } from './config.ts';

let shared: S3Client | undefined;

/** The process-wide S3 client (module scope: reused across warm Lambda invocations). */
export function s3Client(): S3Client {
  shared ??= new S3Client(clientConfig('S3'));
  return shared;
}

let presigning: S3Client | undefined;

/**
 * The client for presigned URLs: checksums only where an operation requires one. By default the SDK puts the
 * CRC32 of the (empty) body it signs into the URL (x-amz-checksum-crc32=AAAAAA==), which S3 then checks
 * against the real upload and refuses.
 */
export function presignClient(): S3Client {
  presigning ??= new S3Client({ ...clientConfig('S3'), requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  return presigning;
}

export function isNotFound(err: unknown): boolean {
  return (
    err instanceof NoSuchKey ||
    err instanceof NotFound ||
    (err instanceof S3ServiceException && (err.$metadata.httpStatusCode === 404 || err.name === 'NoSuchKey'))
  );
}

export interface ObjectHead {
  etag: string;
  size: number;
  metadata: Record<string, string>;
}

export interface StoredObject extends ObjectHead {
  body: Uint8Array;
  contentType?: string;
}

/** A BlobStore over one bucket, plus the object metadata the handlers use for idempotency. */
export class S3Store implements BlobStore {
  constructor(
    readonly bucket: string,
    private readonly client: S3Client = s3Client(),
  ) {}

  uri(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  async getObject(key: string): Promise<StoredObject> {
    const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
    if (!out.Body) throw new Error(`empty body for s3://${this.bucket}/${key}`);
    const body = await out.Body.transformToByteArray();
    return {
      body,
      etag: stripQuotes(out.ETag),
      size: out.ContentLength ?? body.length,
      metadata: out.Metadata ?? {},
      ...(out.ContentType ? { contentType: out.ContentType } : {}),
    };
  }

  async get(key: string): Promise<Uint8Array> {
    return (await this.getObject(key)).body;
  }

  async getJson<T>(key: string): Promise<T> {
    return JSON.parse(Buffer.from(await this.get(key)).toString('utf8')) as T;
  }

  /** Resolves undefined when the object does not exist. */
  async head(key: string): Promise<ObjectHead | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { etag: stripQuotes(out.ETag), size: out.ContentLength ?? 0, metadata: out.Metadata ?? {} };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.head(key)) !== undefined;
  }

  /** Writes an object; resolves its ETag. */
  async put(key: string, body: Uint8Array | string, contentType?: string, metadata?: Record<string, string>): Promise<string> {
    const out = await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Body: body,
        ContentType: contentType ?? guessContentType(key),
        ...(metadata ? { Metadata: metadata } : {}),
      }),
    );
    return stripQuotes(out.ETag);
  }

  async putJson(key: string, value: unknown, metadata?: Record<string, string>): Promise<string> {
    return this.put(key, JSON.stringify(value, null, 2), 'application/json', metadata);
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  /**
   * Every key under a prefix. Uses ListObjects (v1) with the last key as marker: the local S3 (s3rver) cannot
   * make ListObjectsV2 continuation tokens on Node 17+ (its DES cipher is gone from OpenSSL 3), and v1 pages
   * the same way on AWS and LocalStack.
   */
  async list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let marker: string | undefined;
    for (;;) {
      const out = await this.client.send(
        new ListObjectsCommand({ Bucket: this.bucket, Prefix: prefix, ...(marker ? { Marker: marker } : {}) }),
      );
      for (const o of out.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
      const last = keys[keys.length - 1];
      if (!out.IsTruncated || last === undefined || last === marker) break;
      marker = last;
    }
    return keys.sort();
  }
}

function stripQuotes(etag: string | undefined): string {
  return (etag ?? '').replace(/^"|"$/g, '');
}

function guessContentType(key: string): string {
  if (key.endsWith('.png')) return 'image/png';
  if (key.endsWith('.json')) return 'application/json';
  if (key.endsWith('.html')) return 'text/html; charset=utf-8';
  if (key.endsWith('.svg')) return 'image/svg+xml';
  return 'application/octet-stream';
}

/** Parses `s3://bucket/key`. */
export function parseS3Uri(uri: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!m) throw new InvalidInputError(`not an S3 URI: ${JSON.stringify(uri)}`);
  return { bucket: m[1] as string, key: m[2] as string };
}

/** S3 event notifications carry keys URL-encoded as in a form (space as '+'): decode them. */
export function decodeEventKey(key: string): string {
  return decodeURIComponent(key.replace(/\+/g, ' '));
}

/**
 * The inverse of decodeEventKey, as S3 encodes keys in event notifications: form encoding (like Java's
 * URLEncoder: letters, digits and `.-*_` kept, space as '+', all else as UTF-8 %XX), with '/' kept.
 */
export function encodeEventKey(key: string): string {
  let out = '';
  for (const byte of Buffer.from(key, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9.\-*_/]/.test(c)) out += c;
    else if (c === ' ') out += '+';
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
