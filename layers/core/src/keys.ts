/**
 * Object key layout shared by every stage. Keys are plain S3 keys (decoded, not URL-encoded).
 *
 * raw bucket:
 *   raw/<dataset>/<label>/<name>.<ext>          an image; <label> is the image-level label
 *   raw/<dataset>/<label>/masks/<name>.<ext>    its plasma-cell mask (white = plasma cell), optional
 * work bucket:
 *   processed/<dataset>/<label>/<name>.png       preprocessed image (oriented, sRGB, resized, CLAHE)
 *   processed/<dataset>/<label>/masks/<name>.png binarised mask resized like its image
 *   segmented/<dataset>/<label>/<name>/...       segmentation outputs (see segmentedKeys)
 *   quarantine/<raw key>.json                    why a raw object could not be processed
 *   runs/<runId>/...                             training workflow intermediates
 * models bucket:
 *   models/<runId>/...                           published model and report (never overwritten)
 *   models/latest.json                           pointer to the newest published run
 */
import { InvalidInputError } from './errors.ts';

export const RAW_PREFIX = 'raw/';
export const PROCESSED_PREFIX = 'processed/';
export const SEGMENTED_PREFIX = 'segmented/';
export const QUARANTINE_PREFIX = 'quarantine/';
export const RUNS_PREFIX = 'runs/';
export const MODELS_PREFIX = 'models/';
export const LATEST_POINTER_KEY = 'models/latest.json';
/** S3's limit on a key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;

export function keyBytes(key: string): number {
  return Buffer.byteLength(key, 'utf8');
}

/** The longest `/`-separated segment of a key, in UTF-8 bytes. */
export function longestSegmentBytes(key: string): number {
  return Math.max(0, ...key.split('/').map(keyBytes));
}

/** Processed objects all end in .png: the segment notification filters on it. */
export const PROCESSED_SUFFIX = '.png';
const MASKS_DIR = 'masks';

export interface RawKeyParts {
  dataset: string;
  label: string;
  /** File name without extension; may contain further '/' for nested folders. */
  name: string;
  ext: string;
  isMask: boolean;
}

/** Parses `raw/<dataset>/<label>/[masks/]<name>.<ext>`. Throws InvalidInputError for any other shape. */
export function parseRawKey(key: string): RawKeyParts {
  if (!key.startsWith(RAW_PREFIX)) throw new InvalidInputError(`key does not start with ${RAW_PREFIX}`);
  const parts = key.slice(RAW_PREFIX.length).split('/');
  if (parts.length < 3 || parts.some((p) => p === '')) {
    throw new InvalidInputError('expected raw/<dataset>/<label>/<file>');
  }
  const [dataset, label, ...rest] = parts as [string, string, ...string[]];
  const isMask = rest.length >= 2 && rest[0] === MASKS_DIR;
  const fileParts = isMask ? rest.slice(1) : rest;
  const file = fileParts.join('/');
  const base = fileParts[fileParts.length - 1] as string;
  const dot = base.lastIndexOf('.');
  const ext = dot > 0 ? base.slice(dot + 1).toLowerCase() : '';
  const name = dot > 0 ? file.slice(0, file.length - (base.length - dot)) : file;
  return { dataset, label, name, ext, isMask };
}

/** Where preprocess writes the processed image or mask for a raw key. */
export function processedKeyFor(raw: RawKeyParts): string {
  const dir = `${PROCESSED_PREFIX}${raw.dataset}/${raw.label}/`;
  return raw.isMask ? `${dir}${MASKS_DIR}/${raw.name}${PROCESSED_SUFFIX}` : `${dir}${raw.name}${PROCESSED_SUFFIX}`;
}

export interface ProcessedKeyParts {
  dataset: string;
  label: string;
  name: string;
  isMask: boolean;
  /** Key of the processed image of this pair. */
  imageKey: string;
  /** Key of the processed mask of this pair (may not exist). */
  maskKey: string;
}

/** Parses a processed key (image or mask) into the image/mask pair it belongs to. */
export function parseProcessedKey(key: string): ProcessedKeyParts {
  if (!key.startsWith(PROCESSED_PREFIX) || !key.endsWith(PROCESSED_SUFFIX)) {
    throw new InvalidInputError(`not a processed key: expected ${PROCESSED_PREFIX}...${PROCESSED_SUFFIX}`);
  }
  const parts = key.slice(PROCESSED_PREFIX.length, -PROCESSED_SUFFIX.length).split('/');
  if (parts.length < 3) throw new InvalidInputError('expected processed/<dataset>/<label>/<file>');
  const [dataset, label, ...rest] = parts as [string, string, ...string[]];
  const isMask = rest.length >= 2 && rest[0] === MASKS_DIR;
  const name = (isMask ? rest.slice(1) : rest).join('/');
  const dir = `${PROCESSED_PREFIX}${dataset}/${label}/`;
  return {
    dataset,
    label,
    name,
    isMask,
    imageKey: `${dir}${name}${PROCESSED_SUFFIX}`,
    maskKey: `${dir}${MASKS_DIR}/${name}${PROCESSED_SUFFIX}`,
  };
}

/** Keys of the segmentation outputs of one processed image. */
export function segmentedKeys(p: { dataset: string; label: string; name: string }) {
  const dir = `${SEGMENTED_PREFIX}${p.dataset}/${p.label}/${p.name}/`;
  return {
    dir,
    roiMask: `${dir}roi-mask.png`,
    roiImage: `${dir}roi.png`,
    overlay: `${dir}overlay.png`,
    cells: `${dir}cells.json`,
    crop: (cellId: number) => `${dir}crops/${String(cellId).padStart(4, '0')}.png`,
  };
}

export function quarantineKeyFor(rawKey: string): string {
  return `${QUARANTINE_PREFIX}${rawKey}.json`;
}

/** Run ids are used in keys: keep them to a safe alphabet. */
export const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/;

export function runKeys(runId: string) {
  if (!RUN_ID_PATTERN.test(runId)) throw new InvalidInputError(`invalid run id: ${JSON.stringify(runId)}`);
  const dir = `${RUNS_PREFIX}${runId}/`;
  return {
    dir,
    manifest: `${dir}manifest.json`,
    modelDir: `${dir}model/`,
    training: `${dir}training.json`,
    evaluation: `${dir}evaluation.json`,
  };
}

export function modelKeys(runId: string) {
  if (!RUN_ID_PATTERN.test(runId)) throw new InvalidInputError(`invalid run id: ${JSON.stringify(runId)}`);
  const dir = `${MODELS_PREFIX}${runId}/`;
  return {
    dir,
    modelJson: `${dir}model.json`,
    evaluation: `${dir}evaluation.json`,
    report: `${dir}report.json`,
    /** Written last by Publish: its presence means the run id is taken, for good. */
    published: `${dir}published.json`,
  };
}
