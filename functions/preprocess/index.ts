/**
 * preprocess: raw/<dataset>/<label>/[masks/]<file> -> processed/...png (oriented, 8-bit sRGB, resized, CLAHE).
 * Every raw object ends processed or quarantined with a reason; input errors are never retried, other errors
 * are rethrown so the platform retries. Idempotent: an output already made from the same source ETag is kept.
 * Raw files that would make the same processed file (a.jpg, a.png in one folder) all end quarantined
 * (name-conflict), whatever order or concurrency their events come in.
 *
 * Limits, from the environment (a bad value fails at load: it is a deployment error):
 * - PREPROCESS_MAX_SIZE: longest side of the processed image, pixels. @default 512
 * - PREPROCESS_MAX_PIXELS: largest accepted source width x height. @default 50000000 (DEFAULT_MAX_PIXELS)
 * - PREPROCESS_MAX_BYTES: largest accepted raw object, checked on HEAD before download. @default 104857600
 */
import { createHash } from 'node:crypto';
import type { S3Event } from 'aws-lambda';
import { ImageLimitError, InvalidInputError, isInputError, MyeloscopeError } from '../../layers/core/src/errors.ts';
import { keyBytes, MAX_KEY_BYTES, parseRawKey, processedKeyFor, segmentedKeys, type RawKeyParts } from '../../layers/core/src/keys.ts';
import { DEFAULT_MAX_PIXELS, preprocessImage, preprocessMask } from '../../layers/core/src/image/index.ts';
import { bucketName, maxKeySegmentBytes } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { createdObjects, log } from '../../layers/aws/src/events.ts';
import { logKey, longestDerivedKeyBytes, longestDerivedSegmentBytes, quarantineRecordKey } from './outcome-keys.ts';

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
    checkDerivedKeys(key, parts);
    // Before any check of the content: every file of a conflict must end with the same code, whichever runs first.
    const siblings = await rawSiblings(key, outKey);
    if (siblings.length > 1) return await quarantineConflict(key, siblings, parts, outKey);
    // Checked before download: a Lambda holds the whole object in memory.
    if (head.size > limits.maxBytes) {
      throw new ImageLimitError(`the file is ${head.size} bytes, above the limit of ${limits.maxBytes} bytes`);
    }
    const existing = await work.head(outKey);
    if (existing?.metadata['source-key'] === sourceKeyMeta(key) && existing.metadata['source-etag'] === head.etag) {
      return { key, status: 'unchanged', output: outKey };
    }
    const source = await raw.getObject(key);
    const meta = { 'source-key': sourceKeyMeta(key), 'source-etag': source.etag };
    const opts = { maxSize: limits.maxSize, maxPixels: limits.maxPixels };
    const png = parts.isMask ? (await preprocessMask(source.body, opts)).png : (await preprocessImage(source.body, opts)).png;
    await work.put(outKey, png, 'image/png', meta);
    // A re-upload that now works clears an older quarantine record, keeping raw = processed + quarantined.
    await work.delete(quarantineRecordKey(key));
    // A sibling that landed while this one was processed saw no output yet, or this write came after its
    // cleanup: listing again after the write means one of the two invocations always sees both.
    const now = await rawSiblings(key, outKey);
    if (now.length > 1) return await quarantineConflict(key, now, parts, outKey);
    log('info', 'processed', { key: logKey(key), output: logKey(outKey) });
    return { key, status: 'processed', output: outKey };
  } catch (err) {
    if (!(isInputError(err) || err instanceof KeyTooLongError)) throw err;
    return quarantine(key, parts, head.etag, head.size, err);
  }
}

/** Throws KeyTooLongError when an output key of this raw object could not be stored. */
function checkDerivedKeys(key: string, parts: RawKeyParts): void {
  const longest = longestDerivedKeyBytes(parts);
  if (longest > MAX_KEY_BYTES) {
    throw new KeyTooLongError(`the key is ${keyBytes(key)} bytes; its outputs would need ${longest}, above S3's ${MAX_KEY_BYTES}: use a shorter name`);
  }
  const segmentLimit = maxKeySegmentBytes();
  const segment = longestDerivedSegmentBytes(parts);
  if (segmentLimit !== undefined && segment > segmentLimit) {
    throw new KeyTooLongError(
      `its outputs would need a key segment (file or folder name) of ${segment} bytes; this S3 store (the local S3 server) ` +
        `holds at most ${segmentLimit} (AWS S3 allows it): use a shorter name`,
    );
  }
}

/**
 * The raw objects (this one included, while it exists) that preprocess to the same processed key: same folder
 * and name, another extension (a.jpg, a.png, a.JPG). Listed from the raw bucket, so the answer does not depend
 * on which of them was processed first.
 */
async function rawSiblings(key: string, outKey: string): Promise<string[]> {
  const parts = parseRawKey(key);
  const stem = parts.ext ? key.slice(0, key.length - parts.ext.length - 1) : key;
  const same: string[] = [];
  for (const k of await raw.list(stem)) {
    let p: RawKeyParts;
    try {
      p = parseRawKey(k);
    } catch {
      continue;
    }
    if (processedKeyFor(p) === outKey) same.push(k);
  }
  return same.sort();
}

/**
 * Several raw files would make one processed file: none of them wins (which one is meant is the user's call).
 * Each gets a name-conflict record, with the same bytes whichever invocation writes it, and the shared outputs
 * go. Deterministic: the same set of files gives the same objects in any order, any number of times.
 */
async function quarantineConflict(key: string, siblings: string[], parts: RawKeyParts, outKey: string): Promise<PreprocessOutcome> {
  const shown = siblings.map(logKey).join(', ');
  const err = new NameConflictError(
    `${siblings.length} raw files (${shown}) would all become ${logKey(outKey)}: names in one folder must differ by more than ` +
      'the extension; rename or delete all but one, then upload that one again',
  );
  for (const k of siblings) {
    const h = await raw.head(k);
    if (h) await writeRecord(k, h.etag, h.size, err);
  }
  // Processed output first: a segment run that reads the image after this finds it gone and writes nothing.
  await work.delete(outKey);
  if (!parts.isMask) for (const k of await work.list(segmentedKeys(parts).dir)) await work.delete(k);
  log('warn', 'quarantined', { key: logKey(key), code: err.code, reason: err.message });
  return { key, status: 'quarantined', code: err.code, reason: err.message };
}

/**
 * The raw key as object metadata: URL-encoded (metadata is ASCII), or its SHA-256 when that would not fit S3's
 * 2 KB of user metadata (a long non-ASCII key encodes to 3x its bytes).
 */
function sourceKeyMeta(key: string): string {
  const encoded = encodeURIComponent(key);
  return encoded.length <= MAX_SOURCE_KEY_META ? encoded : `sha256:${createHash('sha256').update(key, 'utf8').digest('hex')}`;
}

const MAX_SOURCE_KEY_META = 1536;

async function writeRecord(key: string, etag: string, size: number, err: MyeloscopeError): Promise<void> {
  // No timestamp: a redelivered event rewrites the same bytes (same ETag), so duplicates cannot be told apart.
  await work.putJson(quarantineRecordKey(key), {
    rawBucket: raw.bucket,
    rawKey: key,
    etag,
    size,
    stage: 'preprocess',
    code: err.code,
    reason: err.message,
  });
}

async function quarantine(
  key: string,
  parts: RawKeyParts | undefined,
  etag: string,
  size: number,
  err: MyeloscopeError,
): Promise<PreprocessOutcome> {
  await writeRecord(key, etag, size, err);
  // An older version of this raw object may have been processed: its outputs no longer match the raw file, and
  // the dataset step would still read its cells.json. (A mask's old labels stay in its image's cells.json.)
  if (parts && err.code !== 'key-too-long') {
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
