/**
 * Where preprocess records a raw object's outcome when the usual key (layers/core/src/keys.ts) cannot hold
 * it: S3 keys are at most 1024 UTF-8 bytes, and quarantine/<raw key>.json is 16 bytes longer than the raw key;
 * the local S3 also caps each key segment (S3_MAX_KEY_SEGMENT_BYTES), and `<file>.json` is 5 bytes longer.
 * Shared by the preprocess handler and the ledger, so both agree on where to look. No AWS SDK here.
 */
import { createHash } from 'node:crypto';
import { maxKeySegmentBytes } from '../../layers/aws/src/config.ts';
import { redactKey } from '../../layers/aws/src/events.ts';
import {
  keyBytes,
  longestSegmentBytes,
  MAX_KEY_BYTES,
  processedKeyFor,
  quarantineKeyFor,
  QUARANTINE_PREFIX,
  segmentedKeys,
  type RawKeyParts,
} from '../../layers/core/src/keys.ts';

/** Whether this S3 store can hold the key (S3's 1024 bytes, and the local S3's segment limit when set). */
export function storable(key: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const segmentLimit = maxKeySegmentBytes(env);
  return keyBytes(key) <= MAX_KEY_BYTES && (segmentLimit === undefined || longestSegmentBytes(key) <= segmentLimit);
}

function hashedRecordKey(rawKey: string): string {
  return `${QUARANTINE_PREFIX}_long-keys/${createHash('sha256').update(rawKey, 'utf8').digest('hex')}.json`;
}

/** quarantine/<raw key>.json, or quarantine/_long-keys/<sha256 of the raw key>.json when this store cannot hold that. */
export function quarantineRecordKey(rawKey: string, env: NodeJS.ProcessEnv = process.env): string {
  const plain = quarantineKeyFor(rawKey);
  return storable(plain, env) ? plain : hashedRecordKey(rawKey);
}

/**
 * Every key a raw object's quarantine record can have, whatever the store's segment limit: the ledger may read
 * the local S3 with or without S3_MAX_KEY_SEGMENT_BYTES set (--local, or the lines `serve` prints).
 */
export function quarantineRecordKeys(rawKey: string): string[] {
  const plain = quarantineKeyFor(rawKey);
  return keyBytes(plain) <= MAX_KEY_BYTES ? [plain, hashedRecordKey(rawKey)] : [hashedRecordKey(rawKey)];
}

/** The longest keys preprocess and segment would write for this raw object. */
function derivedKeys(parts: RawKeyParts): string[] {
  const seg = segmentedKeys(parts);
  // Crop ids are padded to 4 digits; 'crops/0000.png' is the longest file name segment writes.
  return [processedKeyFor(parts), ...(parts.isMask ? [] : [seg.crop(0), `${seg.dir}error.json`])];
}

/** The longest key preprocess and segment would write for this raw object, in bytes. */
export function longestDerivedKeyBytes(parts: RawKeyParts): number {
  return Math.max(...derivedKeys(parts).map(keyBytes));
}

/** The longest key segment preprocess and segment would write for this raw object, in bytes. */
export function longestDerivedSegmentBytes(parts: RawKeyParts): number {
  return Math.max(...derivedKeys(parts).map(longestSegmentBytes));
}

/**
 * A key as logs show it: redactKey shortens the file name; folder names are user-chosen too (and can be
 * hundreds of bytes), so long ones are cut the same way. The shape (dataset/label/masks) stays readable.
 */
export function logKey(key: string): string {
  const short = redactKey(key);
  const slash = short.lastIndexOf('/');
  const dirs = short.slice(0, slash).split('/').map((d) => (d.length > 24 ? `${d.slice(0, 6)}…` : d));
  return slash < 0 ? short : `${dirs.join('/')}${short.slice(slash)}`;
}
