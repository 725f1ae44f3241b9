/**
 * preprocess: raw/<dataset>/<label>/[masks/]<file> -> processed/...png (oriented, 8-bit sRGB, resized, CLAHE).
 * Every raw object ends processed or quarantined with a reason; input errors are never retried, other errors
 * are rethrown so the platform retries. Idempotent: an output already made from the same source ETag is kept.
 */
import type { S3Event } from 'aws-lambda';
import { isInputError, MyeloscopeError } from '../../layers/core/src/errors.ts';
import { parseRawKey, processedKeyFor, quarantineKeyFor } from '../../layers/core/src/keys.ts';
import { preprocessImage, preprocessMask } from '../../layers/core/src/image/index.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { createdObjects, log, redactKey } from '../../layers/aws/src/events.ts';

const raw = new S3Store(bucketName('raw'));
const work = new S3Store(bucketName('work'));
const maxSize = Number(process.env.PREPROCESS_MAX_SIZE ?? 512);

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
  const source = await getOrUndefined(key);
  // A later delete or overwrite wins; an event for an object that is gone has nothing left to process.
  if (!source) return { key, status: 'gone' };
  try {
    const parts = parseRawKey(key);
    const outKey = processedKeyFor(parts);
    const existing = await work.head(outKey);
    if (existing?.metadata['source-etag'] === source.etag) {
      return { key, status: 'unchanged', output: outKey };
    }
    const meta = { 'source-key': encodeURIComponent(key), 'source-etag': source.etag };
    const png = parts.isMask
      ? (await preprocessMask(source.body, { maxSize })).png
      : (await preprocessImage(source.body, { maxSize })).png;
    await work.put(outKey, png, 'image/png', meta);
    // A re-upload that now works clears an older quarantine record, keeping raw = processed + quarantined.
    await work.delete(quarantineKeyFor(key));
    log('info', 'processed', { key: redactKey(key), output: redactKey(outKey) });
    return { key, status: 'processed', output: outKey };
  } catch (err) {
    if (!isInputError(err)) throw err;
    return quarantine(key, source.etag, source.body.length, err);
  }
}

async function quarantine(key: string, etag: string, size: number, err: MyeloscopeError): Promise<PreprocessOutcome> {
  await work.putJson(quarantineKeyFor(key), {
    rawBucket: raw.bucket,
    rawKey: key,
    etag,
    size,
    stage: 'preprocess',
    code: err.code,
    reason: err.message,
  });
  log('warn', 'quarantined', { key: redactKey(key), code: err.code, reason: err.message });
  return { key, status: 'quarantined', code: err.code, reason: err.message };
}

async function getOrUndefined(key: string) {
  const head = await raw.head(key);
  return head ? raw.getObject(key) : undefined;
}
