/**
 * preprocess: raw/<dataset>/<label>/[masks/]<file> -> processed/...png (oriented, 8-bit sRGB, resized, CLAHE).
 * Every raw object ends processed or quarantined with a reason; input errors are never retried, other errors
 * are rethrown so the platform retries. Idempotent: an output already made from the same source ETag is kept.
 *
 * Limits, from the environment (a bad value fails at load: it is a deployment error):
 * - PREPROCESS_MAX_SIZE: longest side of the processed image, pixels. @default 512
 * - PREPROCESS_MAX_PIXELS: largest accepted source width x height. @default 50000000 (DEFAULT_MAX_PIXELS)
 * - PREPROCESS_MAX_BYTES: largest accepted raw object, checked on HEAD before download. @default 104857600
 */
import { createHash } from 'node:crypto';
import type { S3Event } from 'aws-lambda';
import { ImageLimitError, InvalidInputError, isInputError, MyeloscopeError } from '../../layers/core/src/errors.ts';
import { parseRawKey, processedKeyFor, segmentedKeys, type RawKeyParts } from '../../layers/core/src/keys.ts';
import { DEFAULT_MAX_PIXELS, preprocessImage, preprocessMask } from '../../layers/core/src/image/index.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { createdObjects, log } from '../../layers/aws/src/events.ts';
import { keyBytes, logKey, longestDerivedKeyBytes, MAX_KEY_BYTES, quarantineRecordKey } from './outcome-keys.ts';

/** A positive integer from the environment, or the default when unset. */
export function envLimit(name: string, fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const text = env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidInputError(`environment variable ${name} must be a positive integer, got ${JSON.stringify(text)}`);
  }
  return value;
}

export const limits = {
  maxSize: envLimit('PREPROCESS_MAX_SIZE', 512),
  maxPixels: envLimit('PREPROCESS_MAX_PIXELS', DEFAULT_MAX_PIXELS),
  maxBytes: envLimit('PREPROCESS_MAX_BYTES', 100 * 1024 * 1024),
};

const raw = new S3Store(bucketName('raw'));
const work = new S3Store(bucketName('work'));

/** Two raw files that differ only in extension (a.jpg, a.tif) would overwrite one processed a.png. */
class NameConflictError extends MyeloscopeError {
  constructor(message: string) {
    super('name-conflict', message);
  }
}

/** Outputs derived from the key would exceed S3's 1024-byte key limit. */
class KeyTooLongError extends MyeloscopeError {
  constructor(message: string) {
    super('key-too-long', message);
  }
}

export type PreprocessOutcome =
  | { key: string; status: 'processed' | 'unchanged'; output: string }
  | { key: string; status: 'quarantined'; reason: string; code: string }
  | { key: string; status: 'gone' };

export async function handler(event: S3Event): Promise<{ results: PreprocessOutcome[] }> {
  const results: PreprocessOutcome[] = [];
  for (const obj of createdObjects(event)) results.push(await processOne(obj.key));
  return { results };
}

async function processOne(key: string): Promise<PreprocessOutcome> {
  const head = await raw.head(key);
  // A later delete or overwrite wins; an event for an object that is gone has nothing left to process.
  if (!head) return { key, status: 'gone' };
  let parts: RawKeyParts | undefined;
  try {
    parts = parseRawKey(key);
    const outKey = processedKeyFor(parts);
    const longest = longestDerivedKeyBytes(parts);
    if (longest > MAX_KEY_BYTES) {
      throw new KeyTooLongError(
        `the key is ${keyBytes(key)} bytes; its outputs would need ${longest}, above S3's ${MAX_KEY_BYTES}: use a shorter name`,
      );
    }
    // Checked before download: a Lambda holds the whole object in memory.
    if (head.size > limits.maxBytes) {
      throw new ImageLimitError(`the file is ${head.size} bytes, above the limit of ${limits.maxBytes} bytes`);
    }
    const existing = await work.head(outKey);
    if (existing?.metadata['source-etag'] === head.etag && existing.metadata['source-key'] === sourceKeyMeta(key)) {
      return { key, status: 'unchanged', output: outKey };
    }
    const owner = existing ? sourceKeyOf(existing.metadata) : undefined;
    if (owner !== undefined && owner !== key && (await raw.exists(owner))) {
      throw new NameConflictError(
        `another raw file (${logKey(owner)}) already produced ${logKey(outKey)}: names must differ by more than the extension`,
      );
    }
    const source = await raw.getObject(key);
    const meta = { 'source-key': sourceKeyMeta(key), 'source-etag': source.etag };
    const opts = { maxSize: limits.maxSize, maxPixels: limits.maxPixels };
    const png = parts.isMask ? (await preprocessMask(source.body, opts)).png : (await preprocessImage(source.body, opts)).png;
    await work.put(outKey, png, 'image/png', meta);
    // A re-upload that now works clears an older quarantine record, keeping raw = processed + quarantined.
    await work.delete(quarantineRecordKey(key));
    log('info', 'processed', { key: logKey(key), output: logKey(outKey) });
    return { key, status: 'processed', output: outKey };
  } catch (err) {
    if (!(isInputError(err) || err instanceof NameConflictError || err instanceof KeyTooLongError)) throw err;
    return quarantine(key, parts, head.etag, head.size, err);
  }
}

/**
 * The raw key as object metadata: URL-encoded (metadata is ASCII), or its SHA-256 when that would not fit S3's
 * 2 KB of user metadata (a long non-ASCII key encodes to 3x its bytes). A hashed owner cannot be looked up,
 * so name conflicts are not detected for such keys.
 */
function sourceKeyMeta(key: string): string {
  const encoded = encodeURIComponent(key);
  return encoded.length <= MAX_SOURCE_KEY_META ? encoded : `sha256:${createHash('sha256').update(key, 'utf8').digest('hex')}`;
}

const MAX_SOURCE_KEY_META = 1536;

function sourceKeyOf(metadata: Record<string, string>): string | undefined {
  const v = metadata['source-key'];
  if (v === undefined || v.startsWith('sha256:')) return undefined;
  try {
    return decodeURIComponent(v);
  } catch {
    return undefined;
  }
}

async function quarantine(
  key: string,
  parts: RawKeyParts | undefined,
  etag: string,
  size: number,
  err: MyeloscopeError,
): Promise<PreprocessOutcome> {
  const recordKey = quarantineRecordKey(key);
  // No timestamp: a redelivered event rewrites the same bytes (same ETag), so duplicates cannot be told apart.
  await work.putJson(recordKey, {
    rawBucket: raw.bucket,
    rawKey: key,
    etag,
    size,
    stage: 'preprocess',
    code: err.code,
    reason: err.message,
  });
  // An older version of this raw object may have been processed: its outputs no longer match the raw file, and
  // the dataset step would still read its cells.json. (A mask's old labels stay in its image's cells.json.)
  if (parts && err.code !== 'name-conflict' && longestDerivedKeyBytes(parts) <= MAX_KEY_BYTES) {
    const outKey = processedKeyFor(parts);
    const existing = await work.head(outKey);
    if (existing && existing.metadata['source-key'] === sourceKeyMeta(key)) {
      await work.delete(outKey);
      if (!parts.isMask) for (const k of await work.list(segmentedKeys(parts).dir)) await work.delete(k);
    }
  }
  log('warn', 'quarantined', { key: logKey(key), code: err.code, reason: err.message });
  return { key, status: 'quarantined', code: err.code, reason: err.message };
}
