/**
 * segment: processed/<dataset>/<label>/<name>.png (and its mask) -> segmented/<dataset>/<label>/<name>/:
 * roi-mask.png, roi.png, overlay.png, crops/NNNN.png and cells.json (written last: its presence means done).
 * Triggered by the image or by its mask, whichever lands second gives the labelled result; idempotent via the
 * ETags recorded in cells.json. Two invocations can overlap (image and mask landing together): one that read
 * an image/mask pair that has since changed writes nothing and reads the pair again (up to 3 times, then
 * 'superseded': the newer object's own event brings an invocation). A failure leaves error.json (the ledger's
 * 'segment-failed'); a success removes it.
 */
import type { S3Event } from 'aws-lambda';
import { isInputError } from '../../layers/core/src/errors.ts';
import { parseProcessedKey, segmentedKeys } from '../../layers/core/src/keys.ts';
import { analyseCells, CROP_OPTIONS, sameCropOptions, type CellsRecord } from '../../layers/core/src/pipeline.ts';
import { decodeMask, rgbFromPng } from '../../layers/core/src/image/index.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { createdObjects, log } from '../../layers/aws/src/events.ts';
import { logKey } from '../preprocess/outcome-keys.ts';

const work = new S3Store(bucketName('work'));
const cropSize = Number(process.env.CROP_SIZE ?? 64);

export type SegmentOutcome =
  | { key: string; status: 'segmented' | 'unchanged'; cells: string; cellCount: number; plasmaCount?: number }
  | { key: string; status: 'waiting-for-image' | 'gone' | 'superseded' }
  | { key: string; status: 'failed'; code: string; reason: string };

export async function handler(event: S3Event): Promise<{ results: SegmentOutcome[] }> {
  const results: SegmentOutcome[] = [];
  for (const obj of createdObjects(event)) results.push(await segmentOne(obj.key));
  return { results };
}

/**
 * A pair that changed while it was being segmented is read again: the change may be a deletion (a mask
 * quarantined after a bad re-upload), which brings no event of its own.
 */
async function segmentOne(key: string): Promise<SegmentOutcome> {
  let outcome = await segmentAttempt(key);
  for (let i = 0; i < 2 && outcome.status === 'superseded'; i++) outcome = await segmentAttempt(key);
  return outcome;
}

async function segmentAttempt(key: string): Promise<SegmentOutcome> {
  const pair = parseProcessedKey(key);
  const out = segmentedKeys(pair);
  const imageHead = await work.head(pair.imageKey);
  if (!imageHead) return { key, status: pair.isMask ? 'waiting-for-image' : 'gone' };
  const maskHead = await work.head(pair.maskKey);
  const errorKey = `${out.dir}error.json`;
  const previous = await readRecord(out.cells);
  // Crops cut another way (an older release, another CROP_SIZE) are redone, or training would mix them.
  const sameCrops = previous !== undefined && previous.cropSize === cropSize && sameCropOptions(previous.cropOptions, CROP_OPTIONS);
  if (previous && sameCrops && previous.imageEtag === imageHead.etag && previous.maskEtag === (maskHead?.etag ?? null)) {
    if (!(await work.exists(errorKey))) return { key, status: 'unchanged', cells: out.cells, cellCount: previous.cells.length };
  }
  // The pair as read; compared again before writing so an older invocation never overwrites a newer result.
  const stillCurrent = async (): Promise<boolean> =>
    (await work.head(pair.imageKey))?.etag === imageHead.etag && ((await work.head(pair.maskKey))?.etag ?? null) === (maskHead?.etag ?? null);
  try {
    const imageObj = await work.getObject(pair.imageKey);
    const maskObj = maskHead ? await work.getObject(pair.maskKey) : undefined;
    // What was downloaded must be what the heads described, or the record would pair bytes with wrong ETags.
    if (imageObj.etag !== imageHead.etag || (maskObj && maskObj.etag !== maskHead?.etag)) return { key, status: 'superseded' };
    const image = await rgbFromPng(imageObj.body);
    const mask = maskObj ? await decodeMask(maskObj.body, image.width, image.height) : undefined;
    const result = await analyseCells(image, mask, { cropSize });
    if (!(await stillCurrent())) {
      log('info', 'segment superseded', { key: logKey(key) });
      return { key, status: 'superseded' };
    }
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
      cropOptions: CROP_OPTIONS,
      cells: result.cells.map((c) => ({ ...c, crop: out.crop(c.id), cropEtag: cropEtag.get(c.id) ?? '' })),
      outputs: { roiMask: out.roiMask, roiImage: out.roiImage, overlay: out.overlay },
    };
    await work.putJson(out.cells, record);
    // Fewer cells than a previous run: its extra crops would be duplicates no record points to.
    const keep = new Set(result.crops.map((c) => out.crop(c.id)));
    for (const stale of await work.list(`${out.dir}crops/`)) if (!keep.has(stale)) await work.delete(stale);
    await work.delete(errorKey);
    const plasmaCount = maskHead ? result.cells.filter((c) => c.label === 'plasma').length : undefined;
    log('info', 'segmented', { key: logKey(key), cells: result.cells.length, plasmaCount });
    return { key, status: 'segmented', cells: out.cells, cellCount: result.cells.length, ...(plasmaCount !== undefined ? { plasmaCount } : {}) };
  } catch (err) {
    // A processed object that still cannot be segmented (e.g. a mask of another size) is recorded, not retried.
    if (!isInputError(err)) throw err;
    if (!(await stillCurrent())) return { key, status: 'superseded' };
    // The pair, not the triggering key: the image's and the mask's events must write the same bytes.
    await work.putJson(errorKey, { imageKey: pair.imageKey, maskKey: maskHead ? pair.maskKey : null, code: err.code, reason: err.message });
    log('warn', 'segment failed', { key: logKey(key), code: err.code, reason: err.message });
    return { key, status: 'failed', code: err.code, reason: err.message };
  }
}

async function readRecord(key: string): Promise<CellsRecord | undefined> {
  return (await work.exists(key)) ? work.getJson<CellsRecord>(key) : undefined;
}
