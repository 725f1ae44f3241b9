/**
 * Experiment, not a test: trains the cell classifier on crops cut from the bundled SegPC sample and reports
 * seconds per epoch (and, as a sanity check, test metrics on held-out images).
 *
 *   node --import tsx functions/cli/train-smoke.ts [--backend wasm|cpu] [--epochs 5] [--jitter 2]
 *        [--filters 16,32,64,128] [--lr 0.001] [--limit N] [--batch 32] [--seed 7]
 *
 * Crops (a quick stand-in for the segmentation stage, good enough for timing):
 *   plasma (1): each connected component of the plasma-cell mask, a square around its bounding box;
 *   other  (0): each dark (nucleus-like, green < 100) component of >= 300 px that lies outside the mask,
 *               a square of 1.6x its bounding box (nucleus plus some cytoplasm).
 * `--jitter k` adds k shifted/scaled copies of every crop (same source image, so no leakage across the
 * split) to reach the ~2000 crops of a realistic training set. `--limit N` only times training on the first
 * N crops (no split, no validation) and extrapolates to 2000 crops: use a small N for the slow cpu backend.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { buildCellModel } from '../../layers/core/src/ml/model.ts';
import { cropsToTensor, labelsToTensor, type CellCrop, type CellSample } from '../../layers/core/src/ml/data.ts';
import { splitBySource } from '../../layers/core/src/ml/split.ts';
import { trainCellModel } from '../../layers/core/src/ml/train.ts';
import { predictScores } from '../../layers/core/src/ml/evaluate.ts';
import { balancedAccuracy, confusionMatrix, rocAuc, thresholdScores } from '../../layers/core/src/ml/metrics.ts';
import { mulberry32 } from '../../layers/core/src/ml/random.ts';

const DATA_DIR = path.resolve(import.meta.dirname, '../../test/data/segpc2021');
const SIZE = 64;

interface Sample extends CellSample {
  crop: CellCrop;
  /** false for the jittered copies: test metrics use originals only */
  original: boolean;
}

interface Rgb {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Bilinear crop of the square centred on (cx, cy) with side `side`, resized to SIZE; edges clamped. */
function cropSquare(img: Rgb, cx: number, cy: number, side: number): CellCrop {
  const out = new Uint8Array(SIZE * SIZE * 3);
  const scale = side / SIZE;
  for (let y = 0; y < SIZE; y++) {
    const sy = Math.min(img.height - 1, Math.max(0, cy - side / 2 + (y + 0.5) * scale - 0.5));
    const y0 = Math.floor(sy);
    const y1 = Math.min(img.height - 1, y0 + 1);
    const fy = sy - y0;
    for (let x = 0; x < SIZE; x++) {
      const sx = Math.min(img.width - 1, Math.max(0, cx - side / 2 + (x + 0.5) * scale - 0.5));
      const x0 = Math.floor(sx);
      const x1 = Math.min(img.width - 1, x0 + 1);
      const fx = sx - x0;
      for (let c = 0; c < 3; c++) {
        const p = (yy: number, xx: number): number => img.data[(yy * img.width + xx) * 3 + c];
        const v = (1 - fy) * ((1 - fx) * p(y0, x0) + fx * p(y0, x1)) + fy * ((1 - fx) * p(y1, x0) + fx * p(y1, x1));
        out[(y * SIZE + x) * 3 + c] = Math.round(v);
      }
    }
  }
  return { data: out, width: SIZE, height: SIZE };
}

interface Component {
  area: number;
  inMask: number;
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/** 4-connected components of `on`, with bounding boxes and overlap with `mask`. */
function components(on: Uint8Array, mask: Uint8Array, width: number, height: number): Component[] {
  const seen = new Uint8Array(on.length);
  const out: Component[] = [];
  const stack: number[] = [];
  for (let i = 0; i < on.length; i++) {
    if (!on[i] || seen[i]) continue;
    const c: Component = { area: 0, inMask: 0, x0: width, y0: height, x1: 0, y1: 0 };
    seen[i] = 1;
    stack.push(i);
    while (stack.length > 0) {
      const p = stack.pop() as number;
      const x = p % width;
      const y = (p - x) / width;
      c.area++;
      if (mask[p]) c.inMask++;
      c.x0 = Math.min(c.x0, x);
      c.x1 = Math.max(c.x1, x);
      c.y0 = Math.min(c.y0, y);
      c.y1 = Math.max(c.y1, y);
      const next = [x > 0 ? p - 1 : -1, x < width - 1 ? p + 1 : -1, y > 0 ? p - width : -1, y < height - 1 ? p + width : -1];
      for (const q of next) {
        if (q >= 0 && on[q] && !seen[q]) {
          seen[q] = 1;
          stack.push(q);
        }
      }
    }
    out.push(c);
  }
  return out;
}

async function loadSamples(jitter: number, seed: number): Promise<Sample[]> {
  const rng = mulberry32(seed);
  const samples: Sample[] = [];
  const names = readdirSync(path.join(DATA_DIR, 'images')).filter((n) => n.endsWith('.jpg')).sort();
  for (const name of names) {
    const img = await sharp(path.join(DATA_DIR, 'images', name)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const msk = await sharp(path.join(DATA_DIR, 'masks', name)).greyscale().raw().toBuffer({ resolveWithObject: true });
    const { width, height } = img.info;
    const rgb: Rgb = { data: new Uint8Array(img.data), width, height };
    const mask = new Uint8Array(width * height);
    const dark = new Uint8Array(width * height);
    for (let i = 0; i < width * height; i++) {
      mask[i] = msk.data[i] > 127 ? 1 : 0; // lossy JPEG masks: threshold at 127
      dark[i] = img.data[i * 3 + 1] < 100 ? 1 : 0;
    }
    const cells: { comp: Component; label: 0 | 1; margin: number }[] = [];
    for (const comp of components(mask, mask, width, height)) {
      if (comp.area >= 300) cells.push({ comp, label: 1, margin: 1.15 });
    }
    for (const comp of components(dark, mask, width, height)) {
      if (comp.area >= 300 && comp.inMask / comp.area < 0.1) cells.push({ comp, label: 0, margin: 1.6 });
    }
    cells.forEach(({ comp, label, margin }, k) => {
      const cx = (comp.x0 + comp.x1 + 1) / 2;
      const cy = (comp.y0 + comp.y1 + 1) / 2;
      const side = Math.max(32, Math.max(comp.x1 - comp.x0 + 1, comp.y1 - comp.y0 + 1) * margin);
      for (let j = 0; j <= jitter; j++) {
        const dx = j === 0 ? 0 : (rng() - 0.5) * 0.2 * side;
        const dy = j === 0 ? 0 : (rng() - 0.5) * 0.2 * side;
        const s = j === 0 ? side : side * (0.9 + 0.2 * rng());
        samples.push({
          id: `${name}#${k}.${j}`,
          sourceImage: name,
          label,
          crop: cropSquare(rgb, cx + dx, cy + dy, s),
          original: j === 0,
        });
      }
    });
  }
  return samples;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'wasm' },
      epochs: { type: 'string', default: '5' },
      jitter: { type: 'string', default: '0' },
      filters: { type: 'string' },
      limit: { type: 'string' },
      batch: { type: 'string', default: '32' },
      seed: { type: 'string', default: '7' },
      lr: { type: 'string' },
    },
  });
  const seed = Number(values.seed);
  const batchSize = Number(values.batch);
  const backend = await initBackend(values.backend);
  const t0 = performance.now();
  const samples = await loadSamples(Number(values.jitter), seed);
  const positives = samples.filter((s) => s.label === 1).length;
  console.log(
    `crops: ${samples.length} (${positives} plasma, ${samples.length - positives} other) from ` +
      `${new Set(samples.map((s) => s.sourceImage)).size} images in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  const filters = values.filters?.split(',').map(Number);
  const learningRate = values.lr !== undefined ? Number(values.lr) : undefined;
  const model = buildCellModel({ seed, ...(filters ? { filters } : {}), ...(learningRate ? { learningRate } : {}) });
  console.log(`model: ${model.countParams()} parameters, filters ${filters?.join(',') ?? 'default'}; backend ${backend.name}`);

  if (values.limit !== undefined) {
    // Timing only: --epochs epochs on the first N crops (no validation), extrapolated to the whole set.
    const subset = samples.slice(0, Number(values.limit));
    const x = cropsToTensor(subset.map((s) => s.crop));
    const y = labelsToTensor(subset.map((s) => s.label));
    const h = await trainCellModel(model, { x, y }, undefined, { epochs: Number(values.epochs), batchSize, seed });
    for (const e of h.epochs) {
      console.log(
        `${backend.name} epoch ${e.epoch}: ${e.seconds.toFixed(1)} s for ${subset.length} crops ` +
          `(${((e.seconds * 1000 * batchSize) / subset.length).toFixed(0)} ms per batch of ${batchSize}) -> ` +
          `${((e.seconds * 2000) / subset.length).toFixed(1)} s per 2000 crops`,
      );
    }
    tf.dispose([x, y]);
    return;
  }

  const split = splitBySource(samples, { seed });
  const toTensors = (list: Sample[]): { x: tf.Tensor4D; y: tf.Tensor2D } => ({
    x: cropsToTensor(list.map((s) => s.crop)),
    y: labelsToTensor(list.map((s) => s.label)),
  });
  const train = toTensors(split.train);
  const val = toTensors(split.val.filter((s) => s.original));
  const testSamples = split.test.filter((s) => s.original);
  const test = toTensors(testSamples);
  console.log(`split by image: train ${split.train.length} crops, val ${val.y.shape[0]}, test ${testSamples.length}`);
  const history = await trainCellModel(model, train, val, {
    epochs: Number(values.epochs),
    batchSize,
    seed,
    onEpoch: (e) =>
      console.log(
        `epoch ${e.epoch}: ${e.seconds.toFixed(1)} s, loss ${e.loss.toFixed(3)} acc ${e.acc.toFixed(3)}, ` +
          `val loss ${e.valLoss?.toFixed(3)} acc ${e.valAcc?.toFixed(3)}  (tensors ${tf.memory().numTensors})`,
      ),
  });
  const perEpoch = history.epochs.map((e) => e.seconds);
  const steady = perEpoch.length > 1 ? perEpoch.slice(1) : perEpoch;
  console.log(
    `${backend.name}: ${(steady.reduce((a, b) => a + b, 0) / steady.length).toFixed(1)} s per epoch of ` +
      `${split.train.length} crops, batch ${batchSize} (first epoch ${perEpoch[0]?.toFixed(1)} s)`,
  );
  const yTest = testSamples.map((s) => s.label);
  const scores = Array.from(await predictScores(model, test.x, 64));
  const pred = thresholdScores(scores);
  const cm = confusionMatrix(yTest, pred);
  console.log(
    `test (${new Set(testSamples.map((s) => s.sourceImage)).size} unseen images): AUC ${rocAuc(yTest, scores).toFixed(3)}, ` +
      `balanced accuracy ${balancedAccuracy(yTest, pred).toFixed(3)}, confusion [[tn ${cm.tn}, fp ${cm.fp}], [fn ${cm.fn}, tp ${cm.tp}]]`,
  );
  tf.dispose([train.x, train.y, val.x, val.y, test.x, test.y]);
  model.dispose();
}

await main();
