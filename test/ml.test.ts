/**
 * The ML module on the wasm backend (the one Lambdas use): kernels against the cpu reference, model shapes,
 * data, split, training reproducibility, persistence and inference without leaks.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import type { BlobStore } from '../layers/core/src/store.ts';
import { InvalidInputError } from '../layers/core/src/errors.ts';
import { initBackend } from '../layers/core/src/ml/backend.ts';
import { registerWasmGradientKernels } from '../layers/core/src/ml/wasm-kernels.ts';
import { buildCellModel, SeededDropout } from '../layers/core/src/ml/model.ts';
import { cropsToTensor, labelsToTensor, type CellCrop } from '../layers/core/src/ml/data.ts';
import { deriveSeed, mulberry32, shuffle } from '../layers/core/src/ml/random.ts';
import { splitBySource } from '../layers/core/src/ml/split.ts';
import { classWeightsFor, dihedral, splitBatch, trainCellModel } from '../layers/core/src/ml/train.ts';
import { defaultShards, ShardWorkerError, ShardWorkers } from '../layers/core/src/ml/shards.ts';
import { predictScores } from '../layers/core/src/ml/evaluate.ts';
import { loadModel, saveModel } from '../layers/core/src/ml/io.ts';

before(async () => {
  const info = await initBackend('wasm');
  assert.equal(info.name, 'wasm');
});

/** Seeded uniform values in [lo, hi), optionally rounded to provoke ties. */
function values(n: number, seed: number, lo = -2, hi = 2, round = false): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: n }, () => {
    const v = lo + (hi - lo) * rng();
    return round ? Math.round(v) : v;
  });
}

/** Runs one kernel on wasm and on cpu with the same inputs; returns the max abs difference. */
async function diffVsCpu(
  kernel: string,
  inputs: Record<string, { data: Float32Array; shape: number[] }>,
  attrs: tf.NamedAttrMap,
): Promise<{ maxDiff: number; shape: number[] }> {
  const results: Float32Array[] = [];
  let shape: number[] = [];
  for (const backend of ['wasm', 'cpu']) {
    await tf.setBackend(backend);
    const out = tf.tidy(() => {
      const ins: tf.NamedTensorMap = {};
      for (const [k, v] of Object.entries(inputs)) ins[k] = tf.tensor(v.data, v.shape);
      return tf.engine().runKernel(kernel, ins, attrs) as tf.Tensor;
    });
    results.push((await out.data()) as Float32Array);
    shape = out.shape;
    out.dispose();
  }
  await tf.setBackend('wasm');
  const [a, b] = results as [Float32Array, Float32Array];
  assert.equal(a.length, b.length);
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
  return { maxDiff, shape };
}

const TOLERANCE = 1e-4;

describe('backend', () => {
  test('initBackend picks wasm with the SIMD binary and is idempotent', async () => {
    const first = await initBackend();
    const second = await initBackend('cpu');
    assert.equal(first, second);
    assert.equal(tf.getBackend(), 'wasm');
    assert.match(first.detail, /tfjs-backend-wasm-simd\.wasm/);
    assert.match(first.detail, /Conv2DBackpropFilter/);
    assert.match(first.detail, /GatherV2 \(faster\)/);
    // Registering again changes nothing.
    assert.deepEqual(registerWasmGradientKernels(), []);
  });
});

describe('wasm gradient kernels match cpu', () => {
  const convCases: { pad: 'same' | 'valid'; stride: number; h: number; w: number; f: number }[] = [
    { pad: 'same', stride: 1, h: 9, w: 10, f: 3 },
    { pad: 'valid', stride: 1, h: 9, w: 10, f: 3 },
    { pad: 'same', stride: 2, h: 9, w: 10, f: 3 },
    { pad: 'same', stride: 2, h: 8, w: 8, f: 3 },
    { pad: 'valid', stride: 2, h: 8, w: 9, f: 3 },
    { pad: 'same', stride: 1, h: 7, w: 7, f: 5 },
    { pad: 'valid', stride: 1, h: 6, w: 6, f: 1 },
  ];
  for (const { pad, stride, h, w, f } of convCases) {
    const label = `${pad}, stride ${stride}, ${h}x${w} input, ${f}x${f} filter`;
    const cin = 3;
    const cout = 4;
    const xShape = [2, h, w, cin];
    const outH = pad === 'same' ? Math.ceil(h / stride) : Math.floor((h - f) / stride) + 1;
    const outW = pad === 'same' ? Math.ceil(w / stride) : Math.floor((w - f) / stride) + 1;
    const dyShape = [2, outH, outW, cout];
    const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);

    test(`Conv2DBackpropFilter: ${label}`, async (t) => {
      const { maxDiff, shape } = await diffVsCpu(
        'Conv2DBackpropFilter',
        { x: { data: values(size(xShape), 1), shape: xShape }, dy: { data: values(size(dyShape), 2), shape: dyShape } },
        { strides: stride, pad, dataFormat: 'NHWC', filterShape: [f, f, cin, cout] },
      );
      assert.deepEqual(shape, [f, f, cin, cout]);
      t.diagnostic(`max abs diff vs cpu: ${maxDiff.toExponential(2)}`);
      assert.ok(maxDiff < TOLERANCE, `max diff ${maxDiff}`);
    });

    test(`Conv2DBackpropInput: ${label}`, async (t) => {
      const { maxDiff, shape } = await diffVsCpu(
        'Conv2DBackpropInput',
        {
          dy: { data: values(size(dyShape), 3), shape: dyShape },
          filter: { data: values(f * f * cin * cout, 4), shape: [f, f, cin, cout] },
        },
        { strides: stride, pad, dataFormat: 'NHWC', inputShape: xShape },
      );
      assert.deepEqual(shape, xShape);
      t.diagnostic(`max abs diff vs cpu: ${maxDiff.toExponential(2)}`);
      assert.ok(maxDiff < TOLERANCE, `max diff ${maxDiff}`);
    });
  }

  test('Conv2DBackpropFilter: NCHW', async (t) => {
    const { maxDiff } = await diffVsCpu(
      'Conv2DBackpropFilter',
      { x: { data: values(2 * 3 * 9 * 9, 5), shape: [2, 3, 9, 9] }, dy: { data: values(2 * 4 * 9 * 9, 6), shape: [2, 4, 9, 9] } },
      { strides: 1, pad: 'same', dataFormat: 'NCHW', filterShape: [3, 3, 3, 4] },
    );
    t.diagnostic(`max abs diff vs cpu: ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff < TOLERANCE, `max diff ${maxDiff}`);
  });

  test('Conv2DBackpropFilter: a realistic layer (batch 8, 32x32x16 -> 32)', async (t) => {
    // Larger sums: relative float32 error ~1e-6 of magnitudes ~30, hence small inputs.
    const { maxDiff } = await diffVsCpu(
      'Conv2DBackpropFilter',
      {
        x: { data: values(8 * 32 * 32 * 16, 7, 0, 0.5), shape: [8, 32, 32, 16] },
        dy: { data: values(8 * 32 * 32 * 32, 8, -0.01, 0.01), shape: [8, 32, 32, 32] },
      },
      { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 16, 32] },
    );
    t.diagnostic(`max abs diff vs cpu: ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff < TOLERANCE, `max diff ${maxDiff}`);
  });

  const poolCases: { k: number; s: number; pad: 'same' | 'valid'; h: number; round: boolean; lo: number }[] = [
    // The model's case: 2x2/2 after a ReLU (many zero ties), then with negatives and integer ties.
    { k: 2, s: 2, pad: 'valid', h: 8, round: true, lo: 0 },
    { k: 2, s: 2, pad: 'valid', h: 8, round: false, lo: -2 },
    { k: 2, s: 2, pad: 'same', h: 8, round: true, lo: -2 },
    // Not tiled: the cpu fallback.
    { k: 3, s: 2, pad: 'same', h: 9, round: true, lo: -2 },
    { k: 2, s: 2, pad: 'same', h: 7, round: false, lo: -2 },
  ];
  for (const { k, s, pad, h, round, lo } of poolCases) {
    test(`MaxPoolGrad: ${k}x${k}/${s} ${pad} on ${h}x${h}${round ? ', with ties' : ''}${lo < 0 ? ', negatives' : ''}`, async (t) => {
      const xShape = [2, h, h, 5];
      const x = values(2 * h * h * 5, 9, lo, 2, round);
      const y = tf.tidy(() => tf.maxPool(tf.tensor4d(x, xShape as [number, number, number, number]), k, s, pad));
      const yData = (await y.data()) as Float32Array;
      const yShape = y.shape;
      y.dispose();
      const { maxDiff } = await diffVsCpu(
        'MaxPoolGrad',
        {
          dy: { data: values(yData.length, 10), shape: yShape },
          input: { data: x, shape: xShape },
          output: { data: yData, shape: yShape },
        },
        { filterSize: k, strides: s, pad },
      );
      t.diagnostic(`max abs diff vs cpu: ${maxDiff.toExponential(2)}`);
      assert.ok(maxDiff < TOLERANCE, `max diff ${maxDiff}`);
    });
  }

  test('MaxPoolGrad 2x2/2: a realistic layer (batch 4, 16x16x32) with ties, negatives and -Infinity', async (t) => {
    const xShape = [4, 16, 16, 32];
    const x = values(4 * 16 * 16 * 32, 11, -2, 2, true);
    // Whole windows of -Infinity (no maximum: no gradient anywhere, as on cpu) and single -Infinity entries.
    for (const i of [0, 1, 32, 33, 16 * 32, 16 * 32 + 1, 16 * 32 + 32, 16 * 32 + 33, 999, 4000]) x[i] = Number.NEGATIVE_INFINITY;
    const y = tf.tidy(() => tf.maxPool(tf.tensor4d(x, xShape as [number, number, number, number]), 2, 2, 'valid'));
    const yData = (await y.data()) as Float32Array;
    const yShape = y.shape;
    y.dispose();
    const { maxDiff } = await diffVsCpu(
      'MaxPoolGrad',
      { dy: { data: values(yData.length, 12), shape: yShape }, input: { data: x, shape: xShape }, output: { data: yData, shape: yShape } },
      { filterSize: 2, strides: 2, pad: 'valid' },
    );
    t.diagnostic(`max abs diff vs cpu: ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff < TOLERANCE, `max diff ${maxDiff}`);
  });

  for (const dims of [[1], [2], [1, 2], [0], [3]]) {
    test(`Reverse: axes ${dims.join(',')} of [3, 5, 4, 3]`, async () => {
      const { maxDiff, shape } = await diffVsCpu('Reverse', { x: { data: values(3 * 5 * 4 * 3, 13), shape: [3, 5, 4, 3] } }, { dims });
      assert.deepEqual(shape, [3, 5, 4, 3]);
      assert.equal(maxDiff, 0);
    });
  }

  test('GatherV2: rows of a 4-D tensor (axis 0), repeated and 2-D indices, other axes, bounds', async () => {
    const x = { data: values(6 * 4 * 4 * 3, 14), shape: [6, 4, 4, 3] };
    for (const [idx, idxShape, axis] of [[[5, 0, 0, 3], [4], 0], [[1, 2, 3, 4, 5, 0], [2, 3], 0], [[3, 1], [2], 2]] as const) {
      await tf.setBackend('wasm');
      const results: Float32Array[] = [];
      for (const backend of ['wasm', 'cpu']) {
        await tf.setBackend(backend);
        const out = tf.tidy(() => tf.gather(tf.tensor(x.data, x.shape), tf.tensor(Array.from(idx), Array.from(idxShape), 'int32'), axis));
        results.push((await out.data()) as Float32Array);
        out.dispose();
      }
      await tf.setBackend('wasm');
      assert.deepEqual(Array.from(results[0]!), Array.from(results[1]!));
    }
    assert.throws(() => tf.tidy(() => tf.gather(tf.tensor(x.data, x.shape), tf.tensor1d([6], 'int32'))), /not in \[0, 5\]/);
  });

  test('kernels leave no tensors or wasm buffers behind', () => {
    const backend = tf.backend() as tf.KernelBackend;
    const x = tf.randomUniform([4, 16, 16, 8], 0, 1, 'float32', 1) as tf.Tensor4D;
    const f = tf.randomUniform([3, 3, 8, 8], -1, 1, 'float32', 2) as tf.Tensor4D;
    const step = (): void => {
      tf.tidy(() => {
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.maxPool(tf.relu(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same')), 2, 2, 'valid').sum());
        g([x, f]);
      });
    };
    step();
    const tensors = tf.memory().numTensors;
    const dataIds = backend.numDataIds();
    for (let i = 0; i < 3; i++) step();
    assert.equal(tf.memory().numTensors, tensors);
    assert.equal(backend.numDataIds(), dataIds);
    tf.dispose([x, f]);
  });
});

describe('random', () => {
  test('mulberry32 and shuffle are deterministic; deriveSeed separates streams', () => {
    const a = mulberry32(5);
    const b = mulberry32(5);
    for (let i = 0; i < 5; i++) assert.equal(a(), b());
    const items = Array.from({ length: 20 }, (_, i) => i);
    const s1 = shuffle(items, 3);
    assert.deepEqual(s1, shuffle(items, 3));
    assert.notDeepEqual(s1, items);
    assert.deepEqual([...s1].sort((p, q) => p - q), items);
    assert.notEqual(deriveSeed(1, 'shuffle', 1), deriveSeed(1, 'shuffle', 2));
    assert.equal(deriveSeed(1, 'a'), deriveSeed(1, 'a'));
  });
});

describe('model', () => {
  test('shapes and parameter count', () => {
    const model = buildCellModel({ seed: 1 });
    assert.deepEqual(model.inputs[0]?.shape, [null, 64, 64, 3]);
    assert.deepEqual(model.outputs[0]?.shape, [null, 1]);
    // conv 3x3: 9*cin*cout + cout; dense: 128 + 1
    const expected = 9 * 3 * 16 + 16 + (9 * 16 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 128 + 128) + 129;
    assert.equal(model.countParams(), expected);
    assert.equal(expected, 97569);
    const shapes = model.layers.map((l) => l.outputShape);
    assert.deepEqual(shapes[0], [null, 32, 32, 16]); // stride-2 stem
    assert.deepEqual(shapes[shapes.length - 3], [null, 128]); // global average pool
    assert.ok(model.layers.some((l) => l instanceof SeededDropout));
    const out = tf.tidy(() => (model.predict(tf.zeros([2, 64, 64, 3])) as tf.Tensor).shape);
    assert.deepEqual(out, [2, 1]);
    model.dispose();
  });

  test('options: input size, filters; seeded initial weights', () => {
    const small = buildCellModel({ inputSize: 32, filters: [8, 16], seed: 3 });
    assert.deepEqual(small.inputs[0]?.shape, [null, 32, 32, 3]);
    assert.equal(small.countParams(), 9 * 3 * 8 + 8 + (9 * 8 * 16 + 16) + 17);
    const again = buildCellModel({ inputSize: 32, filters: [8, 16], seed: 3 });
    const other = buildCellModel({ inputSize: 32, filters: [8, 16], seed: 4 });
    const w = (m: tf.LayersModel): number[] => Array.from(m.getWeights()[0]?.dataSync() ?? []);
    assert.deepEqual(w(small), w(again));
    assert.notDeepEqual(w(small), w(other));
    for (const m of [small, again, other]) m.dispose();
    assert.throws(() => buildCellModel({ inputSize: 8 }));
  });
});

function crop(size: number, fill: (i: number) => number): CellCrop {
  return { width: size, height: size, data: Uint8Array.from({ length: size * size * 3 }, (_, i) => fill(i)) };
}

describe('data', () => {
  test('cropsToTensor scales to [0, 1] in NHWC order', () => {
    const x = cropsToTensor([crop(2, (i) => i * 20), crop(2, () => 255)]);
    assert.deepEqual(x.shape, [2, 2, 2, 3]);
    const d = x.dataSync();
    assert.equal(d[0], 0);
    assert.ok(Math.abs((d[5] ?? 0) - 100 / 255) < 1e-6);
    assert.equal(d[12], 1);
    x.dispose();
    const y = labelsToTensor([0, 1, 1]);
    assert.deepEqual(y.shape, [3, 1]);
    y.dispose();
  });

  test('cropsToTensor rejects empty, mixed sizes and wrong byte counts', () => {
    assert.throws(() => cropsToTensor([]), InvalidInputError);
    assert.throws(() => cropsToTensor([crop(2, () => 0), crop(3, () => 0)]), InvalidInputError);
    assert.throws(() => cropsToTensor([{ width: 2, height: 2, data: new Uint8Array(16) }]), InvalidInputError);
    assert.throws(() => labelsToTensor([0, 2]), InvalidInputError);
  });
});

describe('splitBySource', () => {
  /** 75 sources of 20-40 crops, ~25% plasma, a few sources without any. */
  function dataset(): { id: string; sourceImage: string; label: 0 | 1 }[] {
    const rng = mulberry32(11);
    const out: { id: string; sourceImage: string; label: 0 | 1 }[] = [];
    for (let s = 0; s < 75; s++) {
      const n = 20 + Math.floor(rng() * 21);
      const share = s % 10 === 0 ? 0 : 0.1 + 0.3 * rng();
      for (let i = 0; i < n; i++) out.push({ id: `img${s}#${i}`, sourceImage: `img${s}.jpg`, label: rng() < share ? 1 : 0 });
    }
    return out;
  }

  test('no source image on two sides; every sample placed once', () => {
    const samples = dataset();
    const split = splitBySource(samples, { seed: 1 });
    const sides = [split.train, split.val, split.test].map((side) => new Set(side.map((s) => s.sourceImage)));
    for (let i = 0; i < 3; i++) {
      for (let j = i + 1; j < 3; j++) {
        for (const src of sides[i] ?? []) assert.ok(!sides[j]?.has(src), `${src} is on two sides`);
      }
    }
    assert.equal(split.train.length + split.val.length + split.test.length, samples.length);
  });

  test('deterministic for a seed, whatever the input order; differs across seeds', () => {
    const samples = dataset();
    const ids = (s: ReturnType<typeof splitBySource<(typeof samples)[number]>>): string[][] =>
      [s.train, s.val, s.test].map((side) => side.map((x) => x.id).sort());
    const a = splitBySource(samples, { seed: 7 });
    const b = splitBySource(shuffle(samples, 99), { seed: 7 });
    assert.deepEqual(ids(a), ids(b));
    assert.notDeepEqual(ids(a), ids(splitBySource(samples, { seed: 8 })));
  });

  test('fractions of source images are about right; held-out sides contain plasma cells', () => {
    const samples = dataset();
    for (const seed of [1, 2, 3, 4, 5]) {
      const split = splitBySource(samples, { seed, testFraction: 0.2, valFraction: 0.1 });
      const count = (side: typeof samples): number => new Set(side.map((s) => s.sourceImage)).size;
      assert.equal(count(split.test), 15);
      assert.equal(count(split.val), 8);
      assert.equal(count(split.train), 52);
      assert.ok(split.test.some((s) => s.label === 1));
      assert.ok(split.val.some((s) => s.label === 1));
      // Stratification keeps the plasma share of test within reach of the whole set's.
      const share = (side: typeof samples): number => side.filter((s) => s.label === 1).length / side.length;
      assert.ok(Math.abs(share(split.test) - share(samples)) < 0.1, `test share ${share(split.test)}`);
    }
  });

  test('small datasets: train keeps an image, test gets plasma when possible', () => {
    const three = [
      { sourceImage: 'a', label: 1 as const },
      { sourceImage: 'b', label: 0 as const },
      { sourceImage: 'c', label: 1 as const },
    ];
    const split = splitBySource(three, { seed: 1 });
    assert.equal(split.test.length, 1);
    assert.equal(split.test[0]?.label, 1);
    assert.ok(split.train.length >= 1);
    const one = splitBySource([{ sourceImage: 'a' }], { seed: 1 });
    assert.deepEqual([one.train.length, one.val.length, one.test.length], [1, 0, 0]);
    assert.throws(() => splitBySource(three, { seed: 1, testFraction: 0.6, valFraction: 0.5 }), InvalidInputError);
  });
});

/** Tiny synthetic task: plasma crops bluer in the centre, "other" crops redder. */
function syntheticSet(n: number, size: number, seed: number): { x: tf.Tensor4D; y: tf.Tensor2D; labels: number[] } {
  const rng = mulberry32(seed);
  const labels = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 1 : 0));
  const crops = labels.map((l) =>
    crop(size, (i) => {
      const c = i % 3;
      const base = 120 + Math.floor(rng() * 60);
      return l === 1 ? (c === 2 ? base + 60 : base - 40) : c === 0 ? base + 40 : base - 20;
    }),
  );
  return { x: cropsToTensor(crops), y: labelsToTensor(labels), labels };
}

describe('training', () => {
  test('class weights: balanced, none, explicit', () => {
    assert.deepEqual(classWeightsFor([1, 0, 0, 0]), { 0: 4 / 6, 1: 2 });
    assert.deepEqual(classWeightsFor([0, 0], 'balanced'), { 0: 1, 1: 1 });
    assert.deepEqual(classWeightsFor([1, 0], 'none'), { 0: 1, 1: 1 });
    assert.deepEqual(classWeightsFor([1, 0], { 0: 1, 1: 3 }), { 0: 1, 1: 3 });
  });

  test('dihedral transforms are the 8 distinct symmetries of a square', () => {
    const x = tf.tensor4d(Float32Array.from({ length: 9 }, (_, i) => i), [1, 3, 3, 1]);
    const seen = new Set<string>();
    for (let t = 0; t < 8; t++) seen.add(Array.from(tf.tidy(() => dihedral(x, t).dataSync())).join(','));
    assert.equal(seen.size, 8);
    x.dispose();
  });

  test('reproducible for a seed, learns a trivial task, history per epoch, no leak', async () => {
    const data = syntheticSet(48, 32, 1);
    const val = syntheticSet(12, 32, 2);
    const run = async (): Promise<{ weights: Float32Array[]; history: Awaited<ReturnType<typeof trainCellModel>> }> => {
      const model = buildCellModel({ inputSize: 32, filters: [8, 16], seed: 5, learningRate: 0.01 });
      const counts: number[] = [];
      const history = await trainCellModel(model, data, val, {
        epochs: 3,
        batchSize: 16,
        seed: 9,
        augment: true,
        onEpoch: () => {
          counts.push(tf.memory().numTensors);
        },
      });
      // Adam creates its state during the first step; after that the count must not grow.
      assert.equal(counts[1], counts[0]);
      assert.equal(counts[2], counts[0]);
      const weights = model.getWeights().map((w) => w.dataSync() as Float32Array);
      model.dispose();
      return { weights, history };
    };
    const a = await run();
    const b = await run();
    assert.deepEqual(a.weights, b.weights);
    assert.equal(a.history.epochs.length, 3);
    for (const e of a.history.epochs) {
      assert.ok(Number.isFinite(e.loss) && e.seconds > 0 && e.valLoss !== undefined && e.valAcc !== undefined);
    }
    assert.deepEqual(a.history.classWeight, { 0: 48 / 64, 1: 48 / 32 });
    assert.equal(a.history.trainPositives, 16);
    assert.equal(a.history.backend, 'wasm');
    assert.ok((a.history.epochs[2]?.valAcc ?? 0) >= 0.9, `val acc ${a.history.epochs[2]?.valAcc}`);
    tf.dispose([data.x, data.y, val.x, val.y]);
  });

  test('gradient shards in worker threads give the whole batch\'s gradient (same weights as one thread)', async () => {
    const data = syntheticSet(40, 32, 4);
    // No dropout: then the only difference between shard counts is the order of float additions.
    const run = async (shards: number) => {
      const model = buildCellModel({ inputSize: 32, filters: [8, 16], seed: 5, dropout: 0 });
      const history = await trainCellModel(model, data, undefined, { epochs: 2, batchSize: 16, seed: 1, shards });
      const weights = model.getWeights().map((w) => Array.from(w.dataSync()));
      // The optimizer's state is not the model's: dispose it too, or it would count as a leak below.
      model.optimizer.dispose();
      model.dispose();
      return { weights, history };
    };
    const one = await run(1);
    const before = tf.memory().numTensors;
    for (const shards of [2, 3]) {
      const r = await run(shards);
      assert.equal(r.history.shards, shards);
      let maxDiff = 0;
      r.weights.forEach((w, i) => w.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - (one.weights[i]?.[j] ?? NaN))))));
      assert.ok(maxDiff < 1e-5, `${shards} shards: weights differ from one thread by ${maxDiff}`);
      // The batch of 16 in 3 parts (5, 5, 6) and the last batch of 8: losses agree too.
      r.history.epochs.forEach((e, k) => assert.ok(Math.abs(e.loss - (one.history.epochs[k]?.loss ?? NaN)) < 1e-5));
    }
    assert.equal(tf.memory().numTensors, before, 'sharded training leaked tensors');
    tf.dispose([data.x, data.y]);
  });

  test('splitBatch: contiguous near-equal parts, empty ones for a tiny batch', () => {
    assert.deepEqual(splitBatch([1, 2, 3, 4, 5], [0, 1, 2, 3, 4], 2), [
      { indices: [1, 2], transforms: [0, 1] },
      { indices: [3, 4, 5], transforms: [2, 3, 4] },
    ]);
    assert.deepEqual(splitBatch([7], [3], 3), [
      { indices: [], transforms: [] },
      { indices: [], transforms: [] },
      { indices: [7], transforms: [3] },
    ]);
  });

  test('defaultShards: 2 on single-core backends, 1 on native TensorFlow, env override checked', () => {
    assert.equal(defaultShards('wasm', {}), 2);
    assert.equal(defaultShards('cpu', {}), 2);
    assert.equal(defaultShards('tensorflow', {}), 1);
    assert.equal(defaultShards('wasm', { MYELOSCOPE_TRAIN_SHARDS: '1' }), 1);
    assert.equal(defaultShards('tensorflow', { MYELOSCOPE_TRAIN_SHARDS: '4' }), 4);
    for (const bad of ['0', '2.5', 'two', '17']) assert.throws(() => defaultShards('wasm', { MYELOSCOPE_TRAIN_SHARDS: bad }), RangeError);
  });

  test('a gradient worker that cannot start fails training with its reason', async () => {
    const x = new Float32Array(new SharedArrayBuffer(4 * 3 * 4 * 4 * 3));
    const init = { topology: {}, backend: 'no-such-backend', x, xShape: [3, 4, 4, 3] as [number, number, number, number], labels: new Float32Array(3), sampleWeights: new Float32Array(3), stream: 1 };
    await assert.rejects(ShardWorkers.start([init]), (err: unknown) => err instanceof ShardWorkerError && /unknown backend 'no-such-backend'/.test(err.message));
  });

  test('rejects mismatched inputs', async () => {
    const model = buildCellModel({ inputSize: 32, filters: [8, 16], seed: 1 });
    const x = tf.zeros([4, 32, 32, 3]) as tf.Tensor4D;
    const y = tf.zeros([3, 1]) as tf.Tensor2D;
    await assert.rejects(trainCellModel(model, { x, y }, undefined, { epochs: 1, batchSize: 2, seed: 1 }), InvalidInputError);
    tf.dispose([x, y]);
    model.dispose();
  });
});

/** A BlobStore over a Map, as the core's tests do. */
function memoryStore(): BlobStore & { keys(): string[] } {
  const m = new Map<string, Uint8Array>();
  return {
    get: async (key) => {
      const v = m.get(key);
      if (v === undefined) throw new Error(`no such key: ${key}`);
      return v;
    },
    put: async (key, body) => {
      m.set(key, typeof body === 'string' ? new TextEncoder().encode(body) : body.slice());
    },
    exists: async (key) => m.has(key),
    list: async (prefix) => [...m.keys()].filter((k) => k.startsWith(prefix)).sort(),
    keys: () => [...m.keys()].sort(),
  };
}

describe('persistence and inference', () => {
  test('save/load round trip through a BlobStore gives identical predictions', async () => {
    const store = memoryStore();
    const model = buildCellModel({ inputSize: 32, filters: [8, 16], seed: 2 });
    const data = syntheticSet(10, 32, 3);
    await trainCellModel(model, data, undefined, { epochs: 1, batchSize: 5, seed: 1 });
    await saveModel(model, store, 'runs/r1/model/');
    assert.deepEqual(store.keys(), ['runs/r1/model/model.json', 'runs/r1/model/weights.bin']);
    const json = JSON.parse(new TextDecoder().decode(await store.get('runs/r1/model/model.json'))) as {
      format: string;
      weightsManifest: { paths: string[] }[];
    };
    assert.equal(json.format, 'layers-model');
    assert.deepEqual(json.weightsManifest[0]?.paths, ['./weights.bin']);
    const loaded = await loadModel(store, 'runs/r1/model/');
    const before = await predictScores(model, data.x, 4);
    const after = await predictScores(loaded, data.x, 4);
    assert.deepEqual(Array.from(after), Array.from(before));
    // A loaded model is not compiled: training it must say so rather than fail obscurely.
    await assert.rejects(trainCellModel(loaded, data, undefined, { epochs: 1, batchSize: 5, seed: 1 }), InvalidInputError);
    tf.dispose([data.x, data.y]);
    model.dispose();
    loaded.dispose();
  });

  test('predictScores: batch boundaries, same as predict, no leak', async () => {
    const model = buildCellModel({ inputSize: 32, filters: [8, 16], seed: 4 });
    const x = tf.randomUniform([5, 32, 32, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
    await predictScores(model, x, 2);
    const n = tf.memory().numTensors;
    const scores = await predictScores(model, x, 2);
    assert.equal(tf.memory().numTensors, n);
    assert.equal(scores.length, 5);
    const reference = tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync());
    for (let i = 0; i < 5; i++) assert.ok(Math.abs((scores[i] ?? 0) - (reference[i] ?? 0)) < 1e-6);
    x.dispose();
    model.dispose();
  });
});
