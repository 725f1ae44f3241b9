/**
 * Measure the classical segmenter against the bundled SegPC-2021 plasma-cell masks.
 *
 *   npx tsx functions/cli/seg-quality.ts [--dir test/data/segpc2021] [--json out.json] [--no-clahe] [--verbose]
 *
 * For each <dir>/images/<name> with a <dir>/masks/<name>: segment (after CLAHE unless --no-clahe), label
 * the cells by mask overlap and score them. Prints the means over all images; progress goes to stderr.
 * Exit code 1 on any error, 2 on bad arguments.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { decodeMask as decodeMaskBytes, preprocessImage } from '../../layers/core/src/image/index.ts';
import type { GrayImage, RgbImage } from '../../layers/core/src/types.ts';
import { segmentationQuality, type SegmentationQuality } from '../../layers/core/src/segment/quality.ts';
import { getCv } from '../../layers/core/src/segment/opencv.ts';
import { segmentCells } from '../../layers/core/src/segment/segment.ts';

const USAGE = `usage: npx tsx functions/cli/seg-quality.ts [options]
  --dir DIR      folder with images/ and masks/ (default test/data/segpc2021)
  --json FILE    also write the full report (per-image rows included) as JSON
  --no-clahe     segment the raw images (default: after CLAHE, as the pipeline does)
  --verbose, -v  print one row per image
  --help, -h`;

interface ImageRow extends Omit<SegmentationQuality, 'instances'> {
  id: string;
  ms: number;
}

interface SegQualityReport {
  dir: string;
  clahe: boolean;
  images: number;
  meanIou: number;
  meanDice: number;
  /** Mask components matched by one cell with IoU >= 0.5, over all components (pooled over images). */
  instanceRecall50: number;
  /** Mask components matched by the group of cells inside them with IoU >= 0.5 (pooled). */
  groupRecall50: number;
  meanInstanceIou: number;
  meanAbsCountError: number;
  meanCountError: number;
  maskComponents: number;
  meanNucleatedCells: number;
  msPerImage: number;
  rows: ImageRow[];
}

class UsageError extends Error {}

/** The pipeline's own preprocessing (functions/preprocess), so the numbers describe what the product does. */
async function decodeRgb(path: string, clahe: boolean): Promise<RgbImage> {
  const bytes = await readFile(path);
  return (await preprocessImage(bytes, clahe ? {} : { clahe: false })).image;
}

async function decodeMask(path: string, width: number, height: number): Promise<GrayImage> {
  return decodeMaskBytes(await readFile(path), width, height);
}

const mean = (xs: number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
const f3 = (x: number) => x.toFixed(3);

async function run(dir: string, clahe: boolean, onProgress: (done: number, total: number) => void): Promise<SegQualityReport> {
  const images = (await readdir(join(dir, 'images'))).filter((f) => /\.(jpe?g|png|tiff?|bmp)$/i.test(f));
  const masks = new Set(await readdir(join(dir, 'masks')));
  const files = images.filter((f) => masks.has(f)).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  if (files.length === 0) throw new Error(`no image in ${dir}/images has a mask of the same name in ${dir}/masks`);
  await getCv(); // load the wasm runtime before timing
  const rows: ImageRow[] = [];
  let components = 0;
  let matched = 0;
  let groupMatched = 0;
  for (const [i, file] of files.entries()) {
    const img = await decodeRgb(join(dir, 'images', file), clahe);
    const mask = await decodeMask(join(dir, 'masks', file), img.width, img.height);
    const t0 = performance.now();
    const seg = await segmentCells(img);
    const ms = performance.now() - t0;
    const { instances, ...q } = segmentationQuality(seg, mask);
    components += instances.length;
    matched += q.matched;
    groupMatched += instances.filter((m) => m.groupIou >= 0.5).length;
    rows.push({ id: file.replace(/\.[^.]+$/, ''), ms, ...q });
    onProgress(i + 1, files.length);
  }
  return {
    dir,
    clahe,
    images: rows.length,
    meanIou: mean(rows.map((r) => r.iou)),
    meanDice: mean(rows.map((r) => r.dice)),
    instanceRecall50: components === 0 ? 1 : matched / components,
    groupRecall50: components === 0 ? 1 : groupMatched / components,
    meanInstanceIou: mean(rows.map((r) => r.meanInstanceIou)),
    meanAbsCountError: mean(rows.map((r) => r.absCountError)),
    meanCountError: mean(rows.map((r) => r.countError)),
    maskComponents: components,
    meanNucleatedCells: mean(rows.map((r) => r.nucleatedCells)),
    msPerImage: mean(rows.map((r) => r.ms)),
    rows,
  };
}

function parse(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      options: {
        dir: { type: 'string', default: 'test/data/segpc2021' },
        json: { type: 'string' },
        'no-clahe': { type: 'boolean', default: false },
        verbose: { type: 'boolean', short: 'v', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      allowPositionals: false,
      strict: true,
    }).values;
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  if (args.help) {
    console.log(USAGE);
    return;
  }
  const tty = process.stderr.isTTY === true;
  const report = await run(args.dir, !args['no-clahe'], (done, total) => {
    if (tty) process.stderr.write(`\rsegmenting ${done}/${total}${done === total ? '\n' : ''}`);
    else if (done === total || done % 10 === 0) process.stderr.write(`segmented ${done}/${total}\n`);
  });
  if (args.verbose) {
    console.log(['id', 'iou', 'dice', 'instIoU', 'recall50', 'group50', 'plasma', 'comps', 'countErr', 'cells', 'ms'].join('\t'));
    for (const r of report.rows) {
      console.log(
        [r.id, f3(r.iou), f3(r.dice), f3(r.meanInstanceIou), f3(r.recall50), f3(r.groupRecall50), r.plasmaCells, r.maskComponents, r.countError, r.nucleatedCells, r.ms.toFixed(1)].join('\t'),
      );
    }
  }
  console.log(`images: ${report.images} (${report.dir}, ${report.clahe ? 'after CLAHE' : 'raw'}), mask components: ${report.maskComponents}`);
  console.log(`mean IoU  (plasma-labelled cells vs mask): ${f3(report.meanIou)}`);
  console.log(`mean Dice (plasma-labelled cells vs mask): ${f3(report.meanDice)}`);
  console.log(`instance recall @ IoU>=0.5: ${f3(report.instanceRecall50)}  (mean best IoU per component ${f3(report.meanInstanceIou)})`);
  console.log(`group recall @ IoU>=0.5 (cells inside a component taken together): ${f3(report.groupRecall50)}`);
  console.log(`mean |count error| (plasma cells - mask components): ${report.meanAbsCountError.toFixed(2)}  (signed ${report.meanCountError.toFixed(2)})`);
  console.log(`mean nucleated cells per image: ${report.meanNucleatedCells.toFixed(1)}`);
  console.log(`segmentation time: ${report.msPerImage.toFixed(1)} ms/image`);
  if (args.json !== undefined) {
    await writeFile(args.json, JSON.stringify(report, null, 2) + '\n');
    process.stderr.write(`wrote ${args.json}\n`);
  }
}

main().catch((err: unknown) => {
  if (err instanceof UsageError) {
    console.error(`${err.message}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  console.error(`seg-quality: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
