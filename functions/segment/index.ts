/**
 * segment: processed/<dataset>/<label>/<name>.png (and its mask) -> segmented/<dataset>/<label>/<name>/:
 * roi-mask.png, roi.png, overlay.png, crops/NNNN.png and cells.json (written last: its presence means done).
 * Triggered by the image or by its mask, whichever lands second gives the labelled result; idempotent via the
 * ETags recorded in cells.json.
 */
import type { S3Event } from 'aws-lambda';
import { isInputError } from '../../layers/core/src/errors.ts';
import { parseProcessedKey, segmentedKeys } from '../../layers/core/src/keys.ts';
import { analyseCells, type CellsRecord } from '../../layers/core/src/pipeline.ts';
import { decodeMask, rgbFromPng } from '../../layers/core/src/image/index.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { createdObjects, log, redactKey } from '../../layers/aws/src/events.ts';

const work = new S3Store(bucketName('work'));
const cropSize = Number(process.env.CROP_SIZE ?? 64);

export type SegmentOutcome =
  | { key: string; status: 'segmented' | 'unchanged'; cells: string; cellCount: number; plasmaCount?: number }
  | { key: string; status: 'waiting-for-image' | 'gone' }
  | { key: string; status: 'failed'; code: string; reason: string };

export async function handler(event: S3Event): Promise<{ results: SegmentOutcome[] }> {
  const results: SegmentOutcome[] = [];
  for (const obj of createdObjects(event)) results.push(await segmentOne(obj.key));
  return { results };
}

async function segmentOne(key: string): Promise<SegmentOutcome> {
  const pair = parseProcessedKey(key);
  const out = segmentedKeys(pair);
  const imageHead = await work.head(pair.imageKey);
  if (!imageHead) return { key, status: pair.isMask ? 'waiting-for-image' : 'gone' };
  const maskHead = await work.head(pair.maskKey);
  const previous = await readRecord(out.cells);
  if (previous && previous.imageEtag === imageHead.etag && previous.maskEtag === (maskHead?.etag ?? null)) {
    return { key, status: 'unchanged', cells: out.cells, cellCount: previous.cells.length };
  }
  try {
    const image = await rgbFromPng(await work.get(pair.imageKey));
    const mask = maskHead ? await decodeMask(await work.get(pair.maskKey), image.width, image.height) : undefined;
    const result = await analyseCells(image, mask, { cropSize });
    const [, , , ...cropEtags] = await Promise.all([
      work.put(out.roiMask, result.roiMaskPng, 'image/png'),
      work.put(out.roiImage, result.roiImagePng, 'image/png'),
      work.put(out.overlay, result.overlayPng, 'image/png'),
      ...result.crops.map((c) => work.put(out.crop(c.id), c.png, 'image/png')),
    ]);
    const cropEtag = new Map(result.crops.map((c, i) => [c.id, cropEtags[i] as string]));
    const record: CellsRecord = {
      dataset: pair.dataset,
      label: pair.label,
      name: pair.name,
      imageKey: pair.imageKey,
      imageEtag: imageHead.etag,
      maskKey: maskHead ? pair.maskKey : null,
      maskEtag: maskHead?.etag ?? null,
      sourceKey: imageHead.metadata['source-key'] ? decodeURIComponent(imageHead.metadata['source-key']) : null,
      width: result.width,
      height: result.height,
      cropSize,
      cells: result.cells.map((c) => ({ ...c, crop: out.crop(c.id), cropEtag: cropEtag.get(c.id) ?? '' })),
      outputs: { roiMask: out.roiMask, roiImage: out.roiImage, overlay: out.overlay },
    };
    await work.putJson(out.cells, record);
    const plasmaCount = maskHead ? result.cells.filter((c) => c.label === 'plasma').length : undefined;
    log('info', 'segmented', { key: redactKey(key), cells: result.cells.length, plasmaCount });
    return { key, status: 'segmented', cells: out.cells, cellCount: result.cells.length, ...(plasmaCount !== undefined ? { plasmaCount } : {}) };
  } catch (err) {
    // A processed object that still cannot be segmented (e.g. a mask of another size) is recorded, not retried.
    if (!isInputError(err)) throw err;
    await work.putJson(`${out.dir}error.json`, { key, code: err.code, reason: err.message });
    log('warn', 'segment failed', { key: redactKey(key), code: err.code, reason: err.message });
    return { key, status: 'failed', code: err.code, reason: err.message };
  }
}

async function readRecord(key: string): Promise<CellsRecord | undefined> {
  return (await work.exists(key)) ? work.getJson<CellsRecord>(key) : undefined;
}
