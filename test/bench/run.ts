/**
 * Side-by-side benchmarks of Myeloscope and its alternatives, in one run, on the same inputs:
 *   (a) preprocessing (decode, resize to 512, CLAHE 1.0 / 8x8 on Lab L) vs OpenCV in Python, 2 threads each;
 *   (b) segmentation (segmentCells, OpenCV.js) vs a native-OpenCV (Python cv2) port of the same steps;
 *   (c) CNN training seconds per epoch (TF.js wasm) vs PyTorch on CPU (1 and 2 threads) and Keras if present;
 *   (d) inference through the local HTTP API: cold start, latency p50/p99, throughput, peak RSS.
 * Alternatives that are not installed are reported as 'skipped (not installed: ...)', never estimated.
 * Every measurement alternates Myeloscope and the alternative, repeated; medians are reported with the load.
 *
 *   npm run bench -- [--images 24] [--upscaled 8] [--repeats 3] [--train-samples 1000] [--epochs 2]
 *                    [--requests 40] [--torch-threads 1,2] [--out test/bench/results] [--smoke]
 * Writes <out>/latest.json and <out>/latest.md.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import autocannon from 'autocannon';
import {
  claheGray,
  encodePng,
  fitInside,
  labToRgb,
  openImage,
  preprocessImage,
  rawRgb,
  rgbToLab,
} from '../../layers/core/src/image/index.ts';
import { segmentCells } from '../../layers/core/src/segment/index.ts';
import { proposedPreprocess, proposedPreprocessCvJs } from './proposed-preprocess.ts';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { buildCellModel } from '../../layers/core/src/ml/model.ts';
import { trainCellModel } from '../../layers/core/src/ml/train.ts';
import { defaultShards } from '../../layers/core/src/ml/shards.ts';
import { startLocalCloud } from '../../infra/local/cloud.ts';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { setLogSink } from '../../layers/aws/src/events.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { LATEST_POINTER_KEY } from '../../layers/core/src/keys.ts';
import { saveModel } from '../../layers/core/src/ml/io.ts';
import type { RgbImage } from '../../layers/core/src/types.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DATA = path.join(ROOT, 'test/data/segpc2021');
const PY_DIR = path.join(import.meta.dirname, 'py');
const PYTHON = process.env['BENCH_PYTHON'] ?? '/usr/bin/python3';

// ---------------------------------------------------------------------------------------------------
// Options

export interface BenchConfig {
  images: number;
  upscaled: number;
  repeats: number;
  trainSamples: number;
  epochs: number;
  requests: number;
  torchThreads: number[];
  workflowImages: number;
  out: string;
  smoke: boolean;
}

function parseConfig(argv: string[]): BenchConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      images: { type: 'string' },
      upscaled: { type: 'string' },
      repeats: { type: 'string' },
      'train-samples': { type: 'string' },
      epochs: { type: 'string' },
      requests: { type: 'string' },
      'torch-threads': { type: 'string' },
      'workflow-images': { type: 'string' },
      out: { type: 'string' },
      smoke: { type: 'boolean', default: false },
    },
  });
  const smoke = values.smoke === true;
  const num = (v: string | undefined, full: number, quick: number): number => {
    const n = v !== undefined ? Number(v) : smoke ? quick : full;
    if (!Number.isInteger(n) || n < 0) throw new Error(`expected a non-negative integer, got ${v}`);
    return n;
  };
  return {
    images: Math.max(1, num(values.images, 24, 2)),
    upscaled: num(values.upscaled, 8, 0),
    repeats: Math.max(1, num(values.repeats, 3, 1)),
    trainSamples: Math.max(1, num(values['train-samples'], 1000, 64)),
    // Full runs drop the first epoch of each repeat (warm-up); the smoke run keeps its single epoch.
    epochs: Math.max(1, num(values.epochs, 2, 1)),
    requests: Math.max(1, num(values.requests, 40, 5)),
    torchThreads: (values['torch-threads'] ?? (smoke ? '1' : '1,2')).split(',').map(Number),
    // The training workflow splits by image and needs at least 3 labelled images.
    workflowImages: Math.max(3, num(values['workflow-images'], 8, 3)),
    out: path.resolve(values.out ?? path.join(import.meta.dirname, 'results')),
    smoke,
  };
}

// ---------------------------------------------------------------------------------------------------
// Small helpers

function median(v: readonly number[]): number {
  if (v.length === 0) return Number.NaN;
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function percentile(v: readonly number[], p: number): number {
  if (v.length === 0) return Number.NaN;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

async function loadavg(): Promise<number[]> {
  try {
    return (await readFile('/proc/loadavg', 'utf8')).split(/\s+/).slice(0, 3).map(Number);
  } catch {
    return os.loadavg();
  }
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** Runs a pool of `concurrency` async workers over `items`. */
async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

interface PyResult {
  ok: true;
  json: Record<string, unknown>;
}
interface PyFailure {
  ok: false;
  reason: string;
}

/** Is `module` importable by the Python we use? Returns the reason it is not, or undefined. */
function pythonMissing(module: string, pkg: string): string | undefined {
  if (!existsSync(PYTHON)) return `not installed: ${PYTHON}`;
  const r = spawnSync(PYTHON, ['-c', `import ${module}; print(${module}.__version__)`], { encoding: 'utf8' });
  if (r.status !== 0) return `not installed: ${pkg} (import ${module} failed in ${PYTHON})`;
  return undefined;
}

function runPython(script: string, args: string[]): Promise<PyResult | PyFailure> {
  return new Promise((resolve) => {
    const child = spawn(PYTHON, [path.join(PY_DIR, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => {
      const line = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || !line.startsWith('{')) {
        resolve({ ok: false, reason: `failed (exit ${code}): ${err.trim().split('\n').slice(-3).join(' | ')}` });
        return;
      }
      resolve({ ok: true, json: JSON.parse(line) as Record<string, unknown> });
    });
  });
}

function numbers(v: unknown): number[] {
  return Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number') : [];
}

// ---------------------------------------------------------------------------------------------------
// Machine

async function machine(): Promise<Record<string, unknown>> {
  let cpu = os.cpus()[0]?.model ?? 'unknown';
  try {
    const info = await readFile('/proc/cpuinfo', 'utf8');
    cpu = /model name\s*:\s*(.+)/.exec(info)?.[1]?.trim() ?? cpu;
  } catch {
    /* not Linux */
  }
  // One interpreter for every version (importing torch alone takes seconds).
  const code = [
    'import sys, json, importlib',
    'v = {"python": sys.version.split()[0]}',
    'for k, m in (("opencvPython", "cv2"), ("torch", "torch"), ("tensorflowPython", "tensorflow")):',
    '    try: v[k] = importlib.import_module(m).__version__',
    '    except Exception: v[k] = "not installed"',
    'print(json.dumps(v))',
  ].join('\n');
  const r = existsSync(PYTHON) ? spawnSync(PYTHON, ['-c', code], { encoding: 'utf8' }) : undefined;
  const py = (r?.status === 0 ? JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') : {}) as Record<string, string>;
  const pyVersion = (k: string): string => py[k] ?? 'not installed';
  return {
    cpu,
    cores: os.availableParallelism(),
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    sharp: sharp.versions.sharp ?? 'unknown',
    libvips: sharp.versions.vips,
    tfjs: tf.version_core,
    python: pyVersion('python'),
    opencvPython: pyVersion('opencvPython'),
    torch: pyVersion('torch'),
    tensorflowPython: pyVersion('tensorflowPython'),
    loadAtStart: await loadavg(),
  };
}

// ---------------------------------------------------------------------------------------------------
// Inputs

/** 24-bit bottom-up BMP of an RGB image (what the SegPC originals are). */
function bmpOf(img: RgbImage): Buffer {
  const rowBytes = Math.ceil((img.width * 3) / 4) * 4;
  const size = 54 + rowBytes * img.height;
  const b = Buffer.alloc(size);
  b.write('BM', 0, 'ascii');
  b.writeUInt32LE(size, 2);
  b.writeUInt32LE(54, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(img.width, 18);
  b.writeInt32LE(img.height, 22);
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(24, 28);
  b.writeUInt32LE(rowBytes * img.height, 34);
  for (let y = 0; y < img.height; y++) {
    const row = 54 + (img.height - 1 - y) * rowBytes;
    for (let x = 0; x < img.width; x++) {
      const s = (y * img.width + x) * 3;
      b[row + x * 3] = img.data[s + 2]!;
      b[row + x * 3 + 1] = img.data[s + 1]!;
      b[row + x * 3 + 2] = img.data[s]!;
    }
  }
  return b;
}

interface InputSet {
  name: string;
  files: string[];
}

async function makeInputs(cfg: BenchConfig, tmp: string): Promise<{ jpeg: InputSet; bmp: InputSet; all: string[] }> {
  const all = (await readdir(path.join(DATA, 'images'))).filter((n) => n.endsWith('.jpg')).sort();
  // Every k-th image, so a small set still spans the folder.
  const step = Math.max(1, Math.floor(all.length / cfg.images));
  const picked = all.filter((_, i) => i % step === 0).slice(0, cfg.images);
  const jpeg = { name: '512x512 JPEG (bundled SegPC)', files: picked.map((n) => path.join(DATA, 'images', n)) };
  const bmpDir = path.join(tmp, 'bmp2048');
  await mkdir(bmpDir, { recursive: true });
  const bmpFiles: string[] = [];
  for (const f of jpeg.files.slice(0, cfg.upscaled)) {
    const { data, info } = await sharp(f).resize(2048, 1536, { fit: 'fill', kernel: 'lanczos3' }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const out = path.join(bmpDir, path.basename(f, '.jpg') + '.bmp');
    await writeFile(out, bmpOf({ width: info.width, height: info.height, data: new Uint8Array(data) }));
    bmpFiles.push(out);
  }
  return { jpeg, bmp: { name: '2048x1536 BMP (upscaled copies, like the SegPC originals)', files: bmpFiles }, all };
}

// ---------------------------------------------------------------------------------------------------
// (a) Preprocessing

type Variant = 'current' | 'proposedJs' | 'proposedCvJs';
const VARIANT: Record<Variant, (bytes: Uint8Array) => Promise<unknown>> = {
  current: (b) => preprocessImage(b),
  proposedJs: (b) => proposedPreprocess(b),
  proposedCvJs: (b) => proposedPreprocessCvJs(b),
};

async function myeloscopePreprocess(files: readonly string[], variant: Variant = 'current'): Promise<number> {
  const t0 = performance.now();
  await pool(files, 2, async (f) => VARIANT[variant](await readFile(f)));
  return files.length / ((performance.now() - t0) / 1000);
}

/** Per-stage milliseconds of preprocessImage's steps, one image at a time (the profile for task 3). */
async function preprocessStages(files: readonly string[]): Promise<Record<string, number>> {
  const st: Record<string, number[]> = { readFile: [], decodeResize: [], rgbToLab: [], claheL: [], labToRgb: [], encodePng: [], total: [] };
  for (const f of files) {
    const t0 = performance.now();
    const bytes = await readFile(f);
    const t1 = performance.now();
    const opened = await openImage(bytes);
    const target = fitInside(opened.source.width, opened.source.height, 512);
    if (target.width !== opened.source.width || target.height !== opened.source.height) {
      opened.pipeline.resize(target.width, target.height, { fit: 'fill' });
    }
    const img = !opened.rgb || target.width !== opened.source.width ? await rawRgb(opened.pipeline, opened.source.format) : opened.rgb;
    const t2 = performance.now();
    const { L, a, b } = rgbToLab(img);
    const t3 = performance.now();
    const eq = await claheGray({ width: img.width, height: img.height, data: L });
    const t4 = performance.now();
    const rgb = labToRgb(eq.data, a, b, img.width, img.height);
    const t5 = performance.now();
    await encodePng(rgb);
    const t6 = performance.now();
    st['readFile']!.push(t1 - t0);
    st['decodeResize']!.push(t2 - t1);
    st['rgbToLab']!.push(t3 - t2);
    st['claheL']!.push(t4 - t3);
    st['labToRgb']!.push(t5 - t4);
    st['encodePng']!.push(t6 - t5);
    st['total']!.push(t6 - t0);
  }
  return Object.fromEntries(Object.entries(st).map(([k, v]) => [k, round(median(v), 2)]));
}

async function meanAbsDiff(a: RgbImage, pngPath: string): Promise<number> {
  const { data, info } = await sharp(pngPath).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.width !== a.width || info.height !== a.height) return Number.NaN;
  let s = 0;
  for (let i = 0; i < data.length; i++) s += Math.abs(data[i]! - a.data[i]!);
  return s / data.length;
}

async function benchPreprocess(cfg: BenchConfig, sets: InputSet[], tmp: string): Promise<Record<string, unknown>> {
  sharp.concurrency(2);
  const missing = pythonMissing('cv2', 'python3-opencv');
  const results: Record<string, unknown>[] = [];
  for (const set of sets) {
    if (set.files.length === 0) continue;
    await myeloscopePreprocess(set.files.slice(0, 1)); // warm-up
    await myeloscopePreprocess(set.files.slice(0, 1), 'proposedJs');
    await myeloscopePreprocess(set.files.slice(0, 1), 'proposedCvJs');
    const mine: number[] = [];
    const prop: number[] = [];
    const propCv: number[] = [];
    const theirs: number[] = [];
    let skipped = missing;
    let versions: Record<string, unknown> = {};
    const load: number[][] = [];
    for (let r = 0; r < cfg.repeats; r++) {
      load.push(await loadavg());
      // Alternate which side goes first, so a load change does not always hit the same side.
      const sides: (() => Promise<void>)[] = [
        async () => void mine.push(await myeloscopePreprocess(set.files)),
        async () => void prop.push(await myeloscopePreprocess(set.files, 'proposedJs')),
        async () => void propCv.push(await myeloscopePreprocess(set.files, 'proposedCvJs')),
        async () => {
          if (skipped !== undefined) return;
          const res = await runPython('preprocess_cv.py', ['--threads', '2', '--repeats', '1', ...set.files]);
          if (!res.ok) skipped = res.reason;
          else {
            theirs.push(...numbers(res.json['imagesPerSecond']));
            versions = { threads: res.json['threads'], opencv: res.json['opencv'] };
          }
        },
      ];
      if (r % 2 === 1) sides.reverse();
      for (const s of sides) await s();
    }
    // Output agreement on a few images (not timed).
    let mae: number | undefined;
    let maeProposed: number | undefined;
    let maeProposedCv: number | undefined;
    if (skipped === undefined && results.length === 0 && !cfg.smoke) {
      const dir = path.join(tmp, `cv-out-${results.length}`);
      await mkdir(dir, { recursive: true });
      const few = set.files.slice(0, 3);
      const res = await runPython('preprocess_cv.py', ['--threads', '2', '--save-dir', dir, ...few]);
      if (res.ok) {
        const diffs: number[] = [];
        const diffsProposed: number[] = [];
        const diffsProposedCv: number[] = [];
        for (const f of few) {
          const cvPng = path.join(dir, path.basename(f).replace(/\.[^.]+$/, '.png'));
          diffs.push(await meanAbsDiff((await preprocessImage(await readFile(f))).image, cvPng));
          diffsProposed.push(await meanAbsDiff(await proposedPreprocess(await readFile(f)), cvPng));
          diffsProposedCv.push(await meanAbsDiff(await proposedPreprocessCvJs(await readFile(f)), cvPng));
        }
        mae = round(diffs.reduce((x, y) => x + y, 0) / diffs.length, 2);
        maeProposed = round(diffsProposed.reduce((x, y) => x + y, 0) / diffsProposed.length, 2);
        maeProposedCv = round(diffsProposedCv.reduce((x, y) => x + y, 0) / diffsProposedCv.length, 2);
      }
    }
    const m = median(mine);
    const t = median(theirs);
    results.push({
      input: set.name,
      images: set.files.length,
      repeats: cfg.repeats,
      myeloscope: { imagesPerSecond: round(m), runs: mine.map((v) => round(v)), threads: 'sharp.concurrency(2), 2 images in flight' },
      opencvPython:
        skipped !== undefined
          ? { skipped }
          : { imagesPerSecond: round(t), runs: theirs.map((v) => round(v)), ...versions, meanAbsDiffVsMyeloscope: mae },
      proposed: {
        imagesPerSecond: round(median(prop)),
        runs: prop.map((v) => round(v)),
        what: 'test/bench/proposed-preprocess.ts: same decode/resize, OpenCV tile CLAHE in JS, pow-free Lab->sRGB, no PNG (not in Myeloscope yet)',
        meanAbsDiffVsOpenCv: maeProposed,
      },
      proposedCvJs: {
        imagesPerSecond: round(median(propCv)),
        runs: propCv.map((v) => round(v)),
        what: 'test/bench/proposed-preprocess.ts variant B: same decode/resize, then cvtColor + CLAHE + cvtColor in OpenCV.js (1 wasm thread), no PNG',
        meanAbsDiffVsOpenCv: maeProposedCv,
      },
      speedRatio: skipped !== undefined ? null : round(m / t),
      speedRatioProposedCvJs: skipped !== undefined ? null : round(median(propCv) / t),
      speedRatioProposed: skipped !== undefined ? null : round(median(prop) / t),
      load,
      stagesMsPerImage: await preprocessStages(set.files.slice(0, Math.min(set.files.length, 8))),
    });
  }
  return {
    what: 'decode + resize to fit 512 + CLAHE (clip 1.0, 8x8) on Lab L + back to RGB; Myeloscope = preprocessImage (also encodes the PNG it returns); OpenCV = imread, resize INTER_AREA, cvtColor Lab, createCLAHE, cvtColor back (no encode)',
    speedRatioMeaning: 'Myeloscope images/s ÷ OpenCV images/s (> 1: Myeloscope faster); target >= 1.5',
    sets: results,
  };
}

// ---------------------------------------------------------------------------------------------------
// (b) Segmentation

async function benchSegment(cfg: BenchConfig, files: readonly string[], tmp: string): Promise<Record<string, unknown>> {
  // Same pixels on both sides: Myeloscope's preprocessed images, written losslessly.
  const dir = path.join(tmp, 'preprocessed');
  await mkdir(dir, { recursive: true });
  const images: RgbImage[] = [];
  const pngs: string[] = [];
  for (const f of files) {
    const pre = await preprocessImage(await readFile(f));
    images.push(pre.image);
    const p = path.join(dir, path.basename(f).replace(/\.[^.]+$/, '.png'));
    await writeFile(p, pre.png);
    pngs.push(p);
  }
  await segmentCells(images[0]!); // warm-up: loads OpenCV.js
  const missing = pythonMissing('cv2', 'python3-opencv');
  const mine: number[] = [];
  const alt: Record<number, number[]> = { 1: [], 2: [] };
  let counts: number[] = [];
  let theirCounts: number[] = [];
  let skipped = missing;
  const load: number[][] = [];
  for (let r = 0; r < cfg.repeats; r++) {
    load.push(await loadavg());
    const sides: (() => Promise<void>)[] = [
      async () => {
        const t0 = performance.now();
        const c: number[] = [];
        for (const img of images) c.push((await segmentCells(img)).cells.length);
        mine.push(images.length / ((performance.now() - t0) / 1000));
        counts = c;
      },
      async () => {
        for (const threads of cfg.smoke ? [1] : [1, 2]) {
          if (skipped !== undefined) return;
          const res = await runPython('segment_cv.py', ['--threads', String(threads), '--repeats', '1', ...pngs]);
          if (!res.ok) skipped = res.reason;
          else {
            alt[threads]!.push(...numbers(res.json['imagesPerSecond']));
            theirCounts = numbers(res.json['cellCounts']);
          }
        }
      },
    ];
    if (r % 2 === 1) sides.reverse();
    for (const s of sides) await s();
  }
  const m = median(mine);
  const same = counts.filter((c, i) => c === theirCounts[i]).length;
  const meanAbs = counts.length ? counts.reduce((s, c, i) => s + Math.abs(c - (theirCounts[i] ?? 0)), 0) / counts.length : Number.NaN;
  return {
    what: 'segmentCells on preprocessed 512x512 images (decoded before timing) vs test/bench/py/segment_cv.py',
    images: images.length,
    repeats: cfg.repeats,
    myeloscope: { imagesPerSecond: round(m), runs: mine.map((v) => round(v)), threads: 'OpenCV.js wasm, 1 thread', cellCounts: counts },
    opencvPython:
      skipped !== undefined
        ? { skipped }
        : {
            threads1: { imagesPerSecond: round(median(alt[1]!)), runs: alt[1]!.map((v) => round(v)) },
            threads2: { imagesPerSecond: round(median(alt[2]!)), runs: alt[2]!.map((v) => round(v)) },
            cellCounts: theirCounts,
            agreement: { imagesWithSameCount: same, meanAbsCountDiff: round(meanAbs) },
          },
    speedRatio1Thread: skipped !== undefined ? null : round(m / median(alt[1]!)),
    speedRatioMeaning: 'Myeloscope images/s ÷ cv2 images/s (> 1: Myeloscope faster)',
    identical:
      'same steps, constants, structuring elements, connectivities, distance-transform masks and Otsu rule',
    different:
      'region growing: FIFO BFS in JS (segment.ts) vs repeated cv2.dilate of the label image (same geodesic layers, ties to the higher id); band detection, background and scores vectorised in numpy; no final renumbering by centroid',
    load,
  };
}

// ---------------------------------------------------------------------------------------------------
// (c) Training

async function benchTraining(cfg: BenchConfig): Promise<Record<string, unknown>> {
  const backend = await initBackend('wasm');
  const n = cfg.trainSamples;
  const x = tf.randomUniform([n, 64, 64, 3], 0, 1, 'float32', 11) as tf.Tensor4D;
  const y = tf.tensor2d(Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 1 : 0)), [n, 1]);
  const torchMissing = pythonMissing('torch', 'python3-torch');
  const kerasMissing = pythonMissing('tensorflow', 'tensorflow (Keras)');
  const drop = cfg.epochs > 1 ? 1 : 0;
  // Both sides at each thread count: Myeloscope's threads are gradient shards (worker threads, ml/shards.ts).
  const mine: Record<number, number[]> = Object.fromEntries(cfg.torchThreads.map((t) => [t, []]));
  const torch: Record<number, number[]> = Object.fromEntries(cfg.torchThreads.map((t) => [t, []]));
  let torchSkipped = torchMissing;
  let torchVersion: unknown;
  const load: number[][] = [];
  for (let r = 0; r < cfg.repeats; r++) {
    load.push(await loadavg());
    const sides: (() => Promise<void>)[] = [
      async () => {
        for (const threads of cfg.torchThreads) {
          const model = buildCellModel({ seed: 1 + r });
          const h = await trainCellModel(model, { x, y }, undefined, { epochs: cfg.epochs, batchSize: 32, seed: 1 + r, shards: threads });
          mine[threads]!.push(...h.epochs.slice(drop).map((e) => e.seconds));
          model.optimizer.dispose();
          model.dispose();
        }
      },
      async () => {
        for (const threads of cfg.torchThreads) {
          if (torchSkipped !== undefined) return;
          const res = await runPython('train_torch.py', ['--threads', String(threads), '--samples', String(n), '--epochs', String(cfg.epochs), '--batch', '32']);
          if (!res.ok) torchSkipped = res.reason;
          else {
            torch[threads]!.push(...numbers(res.json['secondsPerEpoch']).slice(drop));
            torchVersion = res.json['torch'];
          }
        }
      },
    ];
    if (r % 2 === 1) sides.reverse();
    for (const s of sides) await s();
  }
  tf.dispose([x, y]);
  const defaultThreads = defaultShards(backend.name);
  const headline = mine[defaultThreads] ?? mine[cfg.torchThreads[0]!]!;
  const torchOut: Record<string, unknown> =
    torchSkipped !== undefined
      ? { skipped: torchSkipped }
      : Object.fromEntries([
          ['version', torchVersion],
          ...cfg.torchThreads.map((t) => [
            `threads${t}`,
            {
              secondsPerEpoch: round(median(torch[t]!), 3),
              bestSecondsPerEpoch: round(Math.min(...torch[t]!), 3),
              epochs: torch[t]!.map((v) => round(v, 3)),
              // Same thread count on both sides.
              slowdown: round(median(mine[t]!) / median(torch[t]!)),
              slowdownVsBest: round(Math.min(...mine[t]!) / Math.min(...torch[t]!)),
            },
          ]),
        ]);
  return {
    what: `one epoch of ${n} random 64x64x3 samples, batch 32, buildCellModel architecture (97,569 parameters), Adam, class-weighted BCE, dihedral augmentation; ${cfg.epochs} epoch(s) per repeat, ${drop ? 'first dropped as warm-up' : 'none dropped'}`,
    samples: n,
    repeats: cfg.repeats,
    myeloscope: {
      // The default (what `npm start` trains with), then each thread count.
      secondsPerEpoch: round(median(headline), 3),
      bestSecondsPerEpoch: round(Math.min(...headline), 3),
      threads: mine[defaultThreads] ? defaultThreads : cfg.torchThreads[0],
      backend: `${backend.name} (${backend.detail})`,
      ...Object.fromEntries(
        cfg.torchThreads.map((t) => [`threads${t}`, { secondsPerEpoch: round(median(mine[t]!), 3), bestSecondsPerEpoch: round(Math.min(...mine[t]!), 3), epochs: mine[t]!.map((v) => round(v, 3)) }]),
      ),
    },
    pytorch: torchOut,
    keras: kerasMissing !== undefined ? { skipped: kerasMissing } : { skipped: 'installed but not benchmarked: no Keras script in this bench yet' },
    slowdownMeaning: 'Myeloscope seconds/epoch ÷ PyTorch seconds/epoch at the same thread count (target <= 3)',
    load,
  };
}

// ---------------------------------------------------------------------------------------------------
// (d) Inference over HTTP

interface ServeChild {
  url: string;
  readyMs: number;
  stop(): Promise<number>;
}

function startServer(stateDir: string): Promise<ServeChild> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'serve.ts'), stateDir], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const lines = createInterface({ input: child.stdout });
    let rss: ((v: number) => void) | undefined;
    lines.on('line', (line) => {
      if (!line.startsWith('{')) return;
      const msg = JSON.parse(line) as { url?: string; maxRssBytes?: number };
      if (msg.url !== undefined) {
        const readyMs = performance.now() - t0;
        resolve({
          url: msg.url,
          readyMs,
          stop: () =>
            new Promise<number>((res) => {
              rss = res;
              child.stdin.write('stop\n');
            }),
        });
      } else if (msg.maxRssBytes !== undefined) rss?.(msg.maxRssBytes);
    });
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`serve.ts exited with ${code}: ${err.slice(-2000)}`));
    });
  });
}

async function post(url: string, body: Buffer): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`/predict answered ${res.status}`);
  return performance.now() - t0;
}

async function benchInference(cfg: BenchConfig, all: string[], tmp: string): Promise<Record<string, unknown>> {
  setLogSink(() => undefined);
  const stateDir = path.join(tmp, 'cloud');
  // 1. Publish a model: upload images + masks, let the handlers run, run the training workflow (1 epoch).
  const tPublish = performance.now();
  const cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0 });
  const s3 = new S3Client({
    endpoint: cloud.s3.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  const step = Math.max(1, Math.floor(all.length / cfg.workflowImages));
  const picked = all.filter((_, i) => i % step === 0).slice(0, cfg.workflowImages);
  let modelSource = `training workflow (PrepareDataset, Train 1 epoch, Evaluate, Publish; quality gate minRocAuc 0: a 1-epoch model is for latency only) on ${picked.length} images`;
  try {
    for (const f of picked) {
      await s3.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: `raw/bench/myeloma/masks/${f}`, Body: await readFile(path.join(DATA, 'masks', f)) }));
      await s3.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: `raw/bench/myeloma/${f}`, Body: await readFile(path.join(DATA, 'images', f)) }));
    }
    await cloud.idle();
    const exec = await cloud.runTraining({ dataset: 'bench', epochs: 1, runId: 'bench-run', minRocAuc: 0 }, { name: 'bench-exec' });
    if (exec.status !== 'SUCCEEDED') {
      // Latency does not depend on the weights: publish an untrained-but-valid model the way Publish does
      // (model under models/<runId>/, pointer models/latest.json), and say so in the results.
      const reason = `${exec.status}: ${String(exec.error)} ${String(exec.cause)}`.slice(0, 300);
      await initBackend('wasm');
      const model = buildCellModel({ seed: 3 });
      const x = tf.randomUniform([32, 64, 64, 3], 0, 1, 'float32', 5) as tf.Tensor4D;
      const y = tf.tensor2d(Array.from({ length: 32 }, (_, i) => i % 2), [32, 1]);
      await trainCellModel(model, { x, y }, undefined, { epochs: 1, batchSize: 32, seed: 3 });
      const store = new S3Store(cloud.buckets.models, s3);
      await saveModel(model, store, 'models/bench-direct/');
      await store.putJson(LATEST_POINTER_KEY, {
        runId: 'bench-direct',
        publishedAt: new Date().toISOString(),
        modelPrefix: 'models/bench-direct/',
        modelUri: store.uri('models/bench-direct/model.json'),
      });
      tf.dispose([x, y]);
      model.dispose();
      modelSource = `fallback: the training workflow failed (${reason}); a 1-epoch model was saved with saveModel and pointed to by models/latest.json, as Publish does`;
    }
  } finally {
    s3.destroy();
    await cloud.close();
  }
  const publishSeconds = (performance.now() - tPublish) / 1000;

  // 2. A fresh API process: cold start, then sequential requests, then autocannon.
  const bodies = await Promise.all(all.slice(0, Math.max(1, Math.min(all.length, 16))).map((f) => readFile(path.join(DATA, 'images', f))));
  const load0 = await loadavg();
  const server = await startServer(stateDir);
  const firstMs = await post(server.url, bodies[0]!);
  const lat: number[] = [];
  for (let i = 0; i < cfg.requests; i++) lat.push(await post(server.url, bodies[i % bodies.length]!));
  const cannon = await autocannon({
    url: `${server.url}/predict`,
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: bodies[0]!,
    connections: 2,
    amount: cfg.requests,
    timeout: 60,
  });
  const maxRss = await server.stop();
  return {
    what: `POST /predict of bundled 512x512 JPEGs to a fresh local API process (infra/local); model published in ${round(publishSeconds, 1)} s`,
    modelSource,
    coldStart: { processToListeningMs: round(server.readyMs, 0), firstRequestMs: round(firstMs, 0), totalMs: round(server.readyMs + firstMs, 0) },
    sequential: { requests: lat.length, p50Ms: round(percentile(lat, 50), 1), p99Ms: round(percentile(lat, 99), 1), meanMs: round(lat.reduce((a, b) => a + b, 0) / lat.length, 1) },
    autocannon: {
      connections: 2,
      requests: cannon.requests.total,
      non2xx: cannon.non2xx,
      errors: cannon.errors,
      requestsPerSecond: round(cannon.requests.average, 2),
      p50Ms: cannon.latency.p50,
      p99Ms: cannon.latency.p99,
    },
    peakRssMiB: round(maxRss / 2 ** 20, 0),
    peakRssNote: 'ru_maxrss of the API process, which also hosts the local S3 server',
    alternative: 'none: no other inference stack is benchmarked',
    load: [load0, await loadavg()],
  };
}

// ---------------------------------------------------------------------------------------------------
// Report

function fmt(v: unknown, digits = 2): string {
  return typeof v === 'number' && Number.isFinite(v) ? String(round(v, digits)) : '–';
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (typeof v === 'object' && v !== null ? (v as Obj) : {});

export function markdown(r: Obj): string {
  const m = obj(r['machine']);
  const lines: string[] = [];
  lines.push(`Benchmarks (\`npm run bench\`, ${String(r['finishedAt'])}${r['config'] && obj(r['config'])['smoke'] ? ', smoke configuration' : ''})`);
  lines.push('');
  lines.push(
    `Machine: ${String(m['cpu'])}, ${String(m['cores'])} cores, ${String(m['memoryGiB'])} GiB; Node ${String(m['node'])}, sharp ${String(m['sharp'])} (libvips ${String(m['libvips'])}), ` +
      `TF.js ${String(m['tfjs'])}; Python ${String(m['python'])}, OpenCV ${String(m['opencvPython'])}, torch ${String(m['torch'])}, TensorFlow ${String(m['tensorflowPython'])}. ` +
      `Load average (1/5/15 min) at start ${JSON.stringify(m['loadAtStart'])}, at end ${JSON.stringify(r['loadAtEnd'])}. Medians of alternating runs.`,
  );
  lines.push('');
  lines.push('| benchmark | Myeloscope | alternative | ratio | target |');
  lines.push('| --- | --- | --- | --- | --- |');
  const pre = obj(r['preprocess']);
  for (const s of (pre['sets'] as Obj[] | undefined) ?? []) {
    const my = obj(s['myeloscope']);
    const cv = obj(s['opencvPython']);
    const alt = cv['skipped'] !== undefined ? `OpenCV (Python): skipped (${String(cv['skipped'])})` : `OpenCV ${String(cv['opencv'])} (Python, 2 threads): ${fmt(cv['imagesPerSecond'], 1)} img/s (output MAE vs ours ${fmt(cv['meanAbsDiffVsMyeloscope'])})`;
    lines.push(
      `| preprocess ${String(s['input'])}, ${String(s['images'])} images → 512 + CLAHE | ${fmt(my['imagesPerSecond'], 1)} img/s (preprocessImage, 2 in flight, sharp 2 threads) | ${alt} | ${fmt(s['speedRatio'])}x speed | ≥ 1.5x |`,
    );
    const pr = obj(s['proposed']);
    lines.push(
      `| ↳ proposal A (prototype): OpenCV tile CLAHE in JS, pow-free Lab→RGB, no PNG | ${fmt(pr['imagesPerSecond'], 1)} img/s${pr['meanAbsDiffVsOpenCv'] !== undefined ? ` (output MAE vs OpenCV ${fmt(pr['meanAbsDiffVsOpenCv'])})` : ''} | same | ${fmt(s['speedRatioProposed'])}x speed | ≥ 1.5x |`,
    );
    const pc = obj(s['proposedCvJs']);
    lines.push(
      `| ↳ proposal B (prototype): Lab + CLAHE + back in OpenCV.js, no PNG | ${fmt(pc['imagesPerSecond'], 1)} img/s${pc['meanAbsDiffVsOpenCv'] !== undefined ? ` (output MAE vs OpenCV ${fmt(pc['meanAbsDiffVsOpenCv'])})` : ''} | same | ${fmt(s['speedRatioProposedCvJs'])}x speed | ≥ 1.5x |`,
    );
  }
  const seg = obj(r['segmentation']);
  if (seg['myeloscope'] !== undefined) {
    const my = obj(seg['myeloscope']);
    const cv = obj(seg['opencvPython']);
    const alt =
      cv['skipped'] !== undefined
        ? `native OpenCV: skipped (${String(cv['skipped'])})`
        : `cv2 port: ${fmt(obj(cv['threads1'])['imagesPerSecond'], 1)} img/s (1 thread), ${fmt(obj(cv['threads2'])['imagesPerSecond'], 1)} (2 threads); same cell count on ${String(obj(cv['agreement'])['imagesWithSameCount'])}/${String(seg['images'])} images, mean abs diff ${fmt(obj(cv['agreement'])['meanAbsCountDiff'])}`;
    lines.push(`| segmentation 512x512, ${String(seg['images'])} images | ${fmt(my['imagesPerSecond'], 1)} img/s (OpenCV.js, 1 thread) | ${alt} | ${fmt(seg['speedRatio1Thread'])}x speed (1 thread each) | – |`);
  }
  const tr = obj(r['training']);
  if (tr['myeloscope'] !== undefined) {
    const my = obj(tr['myeloscope']);
    const pt = obj(tr['pytorch']);
    const mineParts: string[] = [];
    const parts: string[] = [];
    let ratio = '–';
    for (const [k, v] of Object.entries(my)) {
      if (!/^threads\d+$/.test(k)) continue;
      const e = obj(v);
      mineParts.push(`${fmt(e['secondsPerEpoch'])} s with ${k.slice(7)} thread(s) (best ${fmt(e['bestSecondsPerEpoch'])} s)`);
    }
    if (pt['skipped'] !== undefined) parts.push(`PyTorch: skipped (${String(pt['skipped'])})`);
    else {
      for (const [k, v] of Object.entries(pt)) {
        if (!k.startsWith('threads')) continue;
        const e = obj(v);
        parts.push(`PyTorch ${String(pt['version'])} ${k.slice(7)} thread(s): ${fmt(e['secondsPerEpoch'])} s (best ${fmt(e['bestSecondsPerEpoch'])} s)`);
        const r = `${fmt(e['slowdown'])}x at ${k.slice(7)} thr. (best vs best ${fmt(e['slowdownVsBest'])}x)`;
        ratio = ratio === '–' ? `Myeloscope slower: ${r}` : `${ratio}; ${r}`;
      }
    }
    const keras = obj(tr['keras']);
    parts.push(`Keras/TensorFlow: skipped (${String(keras['skipped'])})`);
    lines.push(`| training, s/epoch of ${String(tr['samples'])} samples, batch 32 | ${mineParts.join('; ')} (TF.js wasm SIMD; threads = gradient shards) | ${parts.join('; ')} | ${ratio} | ≤ 3x |`);
  }
  const inf = obj(r['inference']);
  if (inf['sequential'] !== undefined) {
    const c = obj(inf['coldStart']);
    const s = obj(inf['sequential']);
    const a = obj(inf['autocannon']);
    lines.push(
      `| inference POST /predict (local API, 512x512 JPEG) | p50 ${fmt(s['p50Ms'], 0)} ms, p99 ${fmt(s['p99Ms'], 0)} ms (${String(s['requests'])} sequential); ${fmt(a['requestsPerSecond'], 1)} req/s with 2 connections; cold start ${fmt(c['processToListeningMs'], 0)} ms to listen + ${fmt(c['firstRequestMs'], 0)} ms first request; peak RSS ${fmt(inf['peakRssMiB'], 0)} MiB | none benchmarked | – | – |`,
    );
  }
  for (const name of ['preprocess', 'segmentation', 'training', 'inference']) {
    const e = obj(r[name])['error'];
    if (e !== undefined) lines.push(`| ${name} | failed: ${String(e).replace(/\|/g, '/').slice(0, 300)} | | | |`);
  }
  const infSource = obj(r['inference'])['modelSource'];
  lines.push('');
  if (infSource !== undefined) lines.push(`Inference model: ${String(infSource)}.`);
  for (const s of (pre['sets'] as Obj[] | undefined) ?? []) {
    lines.push(`Preprocess stages, ms per image, one at a time (${String(s['input'])}): ${JSON.stringify(s['stagesMsPerImage'])}`);
  }
  lines.push('Ratios compare medians; "best" is the fastest epoch of each side, less sensitive to other processes (multi-threaded PyTorch slows down by 10-25x when the 2 cores are busy).');
  if (seg['identical'] !== undefined) lines.push(`\nSegmentation port: identical: ${String(seg['identical'])}; different: ${String(seg['different'])}.`);
  lines.push('');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------

export async function runBench(cfg: BenchConfig): Promise<Obj> {
  const started = new Date();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'myeloscope-bench-'));
  const log = (s: string): void => console.error(`[bench ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s] ${s}`);
  try {
    const result: Obj = { startedAt: started.toISOString(), config: cfg, machine: await machine() };
    const inputs = await makeInputs(cfg, tmp);
    log(`inputs: ${inputs.jpeg.files.length} JPEG, ${inputs.bmp.files.length} BMP in ${tmp}`);
    // A failing section is recorded with its error; the others still run.
    const section = async (name: string, fn: () => Promise<Obj>): Promise<void> => {
      try {
        result[name] = await fn();
      } catch (err) {
        result[name] = { error: err instanceof Error ? err.message : String(err) };
      }
      log(`${name} done`);
    };
    await section('preprocess', () => benchPreprocess(cfg, [inputs.jpeg, inputs.bmp], tmp));
    await section('segmentation', () => benchSegment(cfg, inputs.jpeg.files, tmp));
    await section('training', () => benchTraining(cfg));
    await section('inference', () => benchInference(cfg, inputs.all, tmp));
    result['loadAtEnd'] = await loadavg();
    result['finishedAt'] = new Date().toISOString();
    await mkdir(cfg.out, { recursive: true });
    await writeFile(path.join(cfg.out, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    await writeFile(path.join(cfg.out, 'latest.md'), markdown(result));
    return result;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === path.resolve(import.meta.filename);
if (isMain) {
  try {
    const cfg = parseConfig(process.argv.slice(2));
    const result = await runBench(cfg);
    console.log(markdown(result));
    console.log(`written: ${path.join(cfg.out, 'latest.json')}, ${path.join(cfg.out, 'latest.md')}`);
    // Handles (OpenCV.js, sharp threads, keep-alive sockets) may keep the loop alive.
    process.exit(0);
  } catch (err) {
    // Emscripten's handlers would rethrow and print a whole wasm glue script: report it plainly.
    console.error(err instanceof Error ? err.stack : String(err));
    process.exit(1);
  }
}
