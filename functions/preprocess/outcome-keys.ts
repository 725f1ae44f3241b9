/**
 * Where preprocess records a raw object's outcome when the usual key (layers/core/src/keys.ts) cannot hold
 * it: S3 keys are at most 1024 UTF-8 bytes, and quarantine/<raw key>.json is 16 bytes longer than the raw key.
 * Shared by the preprocess handler and the ledger, so both agree on where to look. No AWS SDK here.
 */
import { createHash } from 'node:crypto';
import { redactKey } from '../../layers/aws/src/events.ts';
import { quarantineKeyFor, segmentedKeys, processedKeyFor, QUARANTINE_PREFIX, type RawKeyParts } from '../../layers/core/src/keys.ts';

/** S3's limit on a key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;

export function keyBytes(key: string): number {
  return Buffer.byteLength(key, 'utf8');
}

/** quarantine/<raw key>.json, or quarantine/_long-keys/<sha256 of the raw key>.json when that is too long. */
export function quarantineRecordKey(rawKey: string): string {
  const plain = quarantineKeyFor(rawKey);
  if (keyBytes(plain) <= MAX_KEY_BYTES) return plain;
  return `${QUARANTINE_PREFIX}_long-keys/${createHash('sha256').update(rawKey, 'utf8').digest('hex')}.json`;
}

/** The longest key preprocess and segment would write for this raw object, in bytes. */
export function longestDerivedKeyBytes(parts: RawKeyParts): number {
  const seg = segmentedKeys(parts);
  // Crop ids are padded to 4 digits; 'crops/0000.png' is the longest file name segment writes.
  return Math.max(keyBytes(processedKeyFor(parts)), ...(parts.isMask ? [] : [keyBytes(seg.crop(0)), keyBytes(`${seg.dir}error.json`)]));
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
