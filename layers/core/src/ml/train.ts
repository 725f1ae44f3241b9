/**
 * The training loop. A custom loop rather than model.fit because it gives, together: seeded shuffling,
 * per-sample seeded augmentation built batch by batch (no augmented copy of the whole dataset in memory),
 * class-weighted loss, and an await per batch so a Lambda's event loop (timers, logging) keeps running.
 */
import * as tf from '@tensorflow/tfjs';
import { InvalidInputError } from '../errors.ts';
import { predictScores } from './evaluate.ts';
import { accuracy, logLoss, thresholdScores } from './metrics.ts';
import { deriveSeed, mulberry32, randomInt, shuffle } from './random.ts';
import { defaultShards, ShardWorkers, shardWorkersAvailable, type ShardInit } from './shards.ts';

/** Loss weight per class, indexed by label. */
export interface ClassWeights {
  0: number;
  1: number;
}

/**
 * 'balanced' (default): weight n / (2 n_c), so that each class contributes half of the loss whatever its
 * share (plasma cells are a minority); 'none': 1 and 1; or explicit weights.
 */
export type ClassWeightOption = 'balanced' | 'none' | ClassWeights;

export interface EpochLog {
  /** 1-based */
  epoch: number;
  /** Mean class-weighted binary cross-entropy over the epoch's training batches (dropout and augmentation on). */
  loss: number;
  /** Accuracy at threshold 0.5 on the training batches as they were seen (dropout and augmentation on). */
  acc: number;
  /** Unweighted binary cross-entropy on the validation set after the epoch. */
  valLoss?: number;
  valAcc?: number;
  /** Wall-clock seconds for the epoch, validation included. */
  seconds: number;
}

export interface TrainingHistory {
  epochs: EpochLog[];
  classWeight: ClassWeights;
  trainSamples: number;
  trainPositives: number;
  valSamples: number;
  batchSize: number;
  seed: number;
  augment: boolean;
  backend: string;
  /** Gradient shards per batch (threads), see TrainOptions.shards. */
  shards: number;
  seconds: number;
}

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  seed: number;
  classWeight?: ClassWeightOption;
  /** Random flips, 90-degree rotations and transposes (the 8 symmetries of a square), seeded. Default true:
   * a smear has no up or left, and with ~75 images the model needs every free example it can get. */
  augment?: boolean;
  /**
   * Parts each batch is split into, computed in parallel (the loop's thread plus shards - 1 worker threads,
   * ml/shards.ts); the gradient is the same as one batch's, dropout masks and rounding differ, so the result
   * depends on it. Default defaultShards(backend): 2 on wasm and cpu, 1 on native TensorFlow.
   */
  shards?: number;
  onEpoch?: (e: EpochLog) => void | Promise<void>;
}

export interface LabelledTensors {
  /** float32 [n, h, w, c] in [0, 1] */
  x: tf.Tensor4D;
  /** float32 [n, 1] of 0/1 */
  y: tf.Tensor2D;
}

/** Clipping of probabilities inside log(), as Keras/TF.js binary cross-entropy. */
const EPS = 1e-7;

export function classWeightsFor(labels: readonly number[], option: ClassWeightOption = 'balanced'): ClassWeights {
  if (option === 'none') return { 0: 1, 1: 1 };
  if (option !== 'balanced') {
    if (!(option[0] > 0 && option[1] > 0)) throw new InvalidInputError('class weights must be positive');
    return { 0: option[0], 1: option[1] };
  }
  const n1 = labels.filter((l) => l === 1).length;
  const n0 = labels.length - n1;
  // With one class only there is nothing to balance: keep the loss on its usual scale.
  if (n0 === 0 || n1 === 0) return { 0: 1, 1: 1 };
  return { 0: labels.length / (2 * n0), 1: labels.length / (2 * n1) };
}

/** One of the 8 symmetries of the square: bit 0 transposes, bit 1 flips rows, bit 2 flips columns. */
export function dihedral(x: tf.Tensor4D, t: number): tf.Tensor4D {
  let r = x;
  if (t & 1) r = tf.transpose(r, [0, 2, 1, 3]);
  if (t & 2) r = tf.reverse(r, 1);
  if (t & 4) r = tf.reverse(r, 2);
  return r;
}

/** The model's trainable tf.Variables (LayerVariable.read() returns the Variable itself). */
export function trainableVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => {
    const v = w.read();
    if (!(v instanceof tf.Variable)) throw new Error(`weight ${w.name} is not a tf.Variable`);
    return v;
  });
}

/** Gathers a batch, grouping samples by transform so each group is one gather + at most 3 cheap ops. */
export function makeBatch(
  x: tf.Tensor4D,
  labels: Float32Array,
  weights: Float32Array,
  indices: readonly number[],
  transforms: readonly number[],
): { xb: tf.Tensor4D; yb: tf.Tensor2D; wb: tf.Tensor2D } {
  return tf.tidy(() => {
    const parts: tf.Tensor4D[] = [];
    const order: number[] = [];
    for (let t = 0; t < 8; t++) {
      const ids = indices.filter((_, k) => transforms[k] === t);
      if (ids.length === 0) continue;
      parts.push(dihedral(tf.gather(x, tf.tensor1d(ids, 'int32')), t));
      order.push(...ids);
    }
    const xb = parts.length === 1 ? parts[0] : tf.concat(parts, 0);
    const yb = tf.tensor2d(order.map((i) => labels[i]), [order.length, 1]);
    const wb = tf.tensor2d(order.map((i) => weights[i]), [order.length, 1]);
    return { xb, yb, wb };
  });
}

/**
 * Class-weighted mean binary cross-entropy of a batch (what the optimizer minimises) and, kept out of any
 * enclosing tidy so it can be read after the step, the number of correct calls at 0.5.
 */
export function batchLoss(model: tf.LayersModel, xb: tf.Tensor4D, yb: tf.Tensor2D, wb: tf.Tensor2D): { loss: tf.Scalar; hits: tf.Scalar } {
  const out = model.apply(xb, { training: true });
  if (!(out instanceof tf.Tensor)) throw new Error('the model must have a single output');
  const p = tf.clipByValue(out, EPS, 1 - EPS);
  const bce = tf.neg(tf.add(tf.mul(yb, tf.log(p)), tf.mul(tf.sub(1, yb), tf.log(tf.sub(1, p)))));
  const hits = tf.keep(tf.sum(tf.cast(tf.equal(tf.cast(tf.greaterEqual(out, 0.5), 'float32'), yb), 'float32')) as tf.Scalar);
  return { loss: tf.mean(tf.mul(bce, wb)), hits };
}

/** Contiguous, near-equal parts of a batch, one per gradient shard (some empty when the batch is tiny). */
export function splitBatch(indices: readonly number[], transforms: readonly number[], shards: number): { indices: number[]; transforms: number[] }[] {
  return Array.from({ length: shards }, (_, s) => {
    const from = Math.floor((s * indices.length) / shards);
    const to = Math.floor(((s + 1) * indices.length) / shards);
    return { indices: indices.slice(from, to), transforms: transforms.slice(from, to) };
  });
}

/** One part of a batch: the gradients of its batchLoss with respect to `vars` (in that order). */
export interface ShardGradients {
  /** Samples in the part; 0 gives no gradients. */
  n: number;
  loss: number;
  hits: number;
  grads: tf.Tensor[];
}

/** Gradients of batchLoss over one part of a batch; the caller disposes `grads`. */
export async function shardGradients(
  model: tf.LayersModel,
  x: tf.Tensor4D,
  labels: Float32Array,
  weights: Float32Array,
  vars: tf.Variable[],
  part: { indices: readonly number[]; transforms: readonly number[] },
): Promise<ShardGradients> {
  if (part.indices.length === 0) return { n: 0, loss: 0, hits: 0, grads: [] };
  const { xb, yb, wb } = makeBatch(x, labels, weights, part.indices, part.transforms);
  let hits: tf.Scalar | undefined;
  let value: tf.Scalar | undefined;
  try {
    const r = tf.variableGrads(() => {
      const b = batchLoss(model, xb, yb, wb);
      hits = b.hits;
      return b.loss;
    }, vars);
    value = r.value;
    const grads = vars.map((v) => {
      const g = r.grads[v.name];
      if (g === undefined) throw new Error(`no gradient for ${v.name}`);
      return g;
    });
    const [l, h] = await Promise.all([value.data(), hits?.data()]);
    return { n: part.indices.length, loss: l[0] ?? Number.NaN, hits: h?.[0] ?? 0, grads };
  } finally {
    tf.dispose([xb, yb, wb, ...(value ? [value] : []), ...(hits ? [hits] : [])]);
  }
}

/**
 * Trains in place (the model must be compiled: buildCellModel does it) and returns the per-epoch history.
 * Reproducible for a seed on a given backend. Leaves no tensors behind besides the optimizer's own state.
 */
export async function trainCellModel(
  model: tf.LayersModel,
  data: LabelledTensors,
  val: LabelledTensors | undefined,
  opts: TrainOptions,
): Promise<TrainingHistory> {
  const started = performance.now();
  const n = data.x.shape[0];
  if (n === 0) throw new InvalidInputError('no training samples');
  if (data.y.shape[0] !== n || data.y.shape[1] !== 1) {
    throw new InvalidInputError(`y must be [${n}, 1], got [${data.y.shape.join(', ')}]`);
  }
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new InvalidInputError('batchSize must be a positive integer');
  if (!Number.isInteger(opts.epochs) || opts.epochs < 0) throw new InvalidInputError('epochs must be a non-negative integer');
  const optimizer = model.optimizer;
  if (optimizer === undefined || optimizer === null) throw new InvalidInputError('compile the model first (compileCellModel)');

  const labels = Float32Array.from(await data.y.data());
  const classWeight = classWeightsFor(Array.from(labels), opts.classWeight);
  const sampleWeights = labels.map((l) => (l === 1 ? classWeight[1] : classWeight[0]));
  const valLabels = val !== undefined ? Array.from(await val.y.data()) : [];
  const augment = opts.augment ?? true;
  const vars = trainableVariables(model);
  const history: TrainingHistory = {
    epochs: [],
    classWeight,
    trainSamples: n,
    trainPositives: labels.filter((l) => l === 1).length,
    valSamples: valLabels.length,
    batchSize: opts.batchSize,
    seed: opts.seed,
    augment,
    backend: tf.getBackend(),
    shards: 1,
    seconds: 0,
  };
  const all = Array.from({ length: n }, (_, i) => i);
  const pool = await startShards(model, data.x, labels, sampleWeights, opts.shards ?? defaultShards(history.backend));
  history.shards = pool ? pool.parts : 1;
  const ctx: StepContext = { model, vars, optimizer, x: data.x, labels, weights: sampleWeights };
  try {
    for (let epoch = 1; epoch <= opts.epochs; epoch++) {
      const t0 = performance.now();
      const order = shuffle(all, deriveSeed(opts.seed, 'shuffle', epoch));
      const augRng = mulberry32(deriveSeed(opts.seed, 'augment', epoch));
      let lossSum = 0;
      let correct = 0;
      for (let start = 0; start < n; start += opts.batchSize) {
        const idx = order.slice(start, start + opts.batchSize);
        const transforms = idx.map(() => (augment ? randomInt(augRng, 8) : 0));
        const r = pool ? await pool.step(ctx, idx, transforms) : await singleStep(ctx, idx, transforms);
        lossSum += r.loss * idx.length;
        correct += r.hits;
      }
      const log: EpochLog = { epoch, loss: lossSum / n, acc: correct / n, seconds: 0 };
      if (val !== undefined && valLabels.length > 0) {
        const scores = Array.from(await predictScores(model, val.x, Math.max(opts.batchSize, 64)));
        log.valLoss = logLoss(valLabels, scores);
        log.valAcc = accuracy(valLabels, thresholdScores(scores));
      }
      log.seconds = (performance.now() - t0) / 1000;
      history.epochs.push(log);
      await opts.onEpoch?.(log);
    }
  } finally {
    await pool?.close();
  }
  history.seconds = (performance.now() - started) / 1000;
  return history;
}

/** What every training step works on. */
interface StepContext {
  model: tf.LayersModel;
  vars: tf.Variable[];
  optimizer: tf.Optimizer;
  x: tf.Tensor4D;
  labels: Float32Array;
  /** Per-sample loss weights (class weights). */
  weights: Float32Array;
}

interface StepResult {
  /** Mean class-weighted loss of the batch. */
  loss: number;
  hits: number;
}

/** One optimizer step on the whole batch in this thread (what optimizer.minimize does, on shardGradients). */
async function singleStep(c: StepContext, idx: number[], transforms: number[]): Promise<StepResult> {
  const g = await shardGradients(c.model, c.x, c.labels, c.weights, c.vars, { indices: idx, transforms });
  try {
    c.optimizer.applyGradients(Object.fromEntries(c.vars.map((v, i) => [v.name, g.grads[i] as tf.Tensor])));
  } finally {
    tf.dispose(g.grads);
  }
  return { loss: g.loss, hits: g.hits };
}

/** The loop's side of data-parallel steps: its own part of each batch plus the workers' parts. */
class ShardedSteps {
  /** Weights the workers have not seen yet (all of them before the first step). */
  private pendingWeights: Float32Array[] | undefined;

  constructor(
    private readonly workers: ShardWorkers,
    readonly parts: number,
    initialWeights: Float32Array[],
  ) {
    this.pendingWeights = initialWeights;
  }

  async step(c: StepContext, idx: number[], transforms: number[]): Promise<StepResult> {
    const { model, vars, optimizer } = c;
    const [mine, ...theirs] = splitBatch(idx, transforms, this.parts);
    if (mine === undefined) throw new Error('no parts');
    const sent = this.pendingWeights;
    // Posted first, so the workers compute while this thread does its own part.
    const remote = this.workers.step(theirs.map((p) => ({ ...p, ...(sent ? { weights: sent } : {}) })));
    this.pendingWeights = undefined;
    // Handled below; this keeps a worker failure from being an unhandled rejection if our own part throws first.
    remote.catch(() => undefined);
    const local = await shardGradients(model, c.x, c.labels, c.weights, vars, mine);
    let others: Awaited<typeof remote>;
    try {
      others = await remote;
    } catch (err) {
      tf.dispose(local.grads);
      throw err;
    }
    const total = idx.length;
    // The whole batch's gradient: each part's mean-loss gradient weighted by its share of the batch.
    const combined: tf.NamedTensorMap = {};
    tf.tidy(() => {
      vars.forEach((v, i) => {
        let g = local.n > 0 ? tf.mul(local.grads[i] as tf.Tensor, local.n / total) : tf.zerosLike(v);
        for (const o of others) {
          const part = o.grads[i];
          if (o.n > 0 && part !== undefined) g = tf.add(g, tf.mul(tf.tensor(part, v.shape), o.n / total));
        }
        combined[v.name] = tf.keep(g);
      });
    });
    tf.dispose(local.grads);
    optimizer.applyGradients(combined);
    tf.dispose(Object.values(combined));
    this.pendingWeights = await valueCopies(vars);
    const loss = (local.n * local.loss + others.reduce((a, o) => a + o.n * o.loss, 0)) / total;
    return { loss, hits: local.hits + others.reduce((a, o) => a + o.hits, 0) };
  }

  close(): Promise<void> {
    return this.workers.close();
  }
}

/**
 * Copies of float32 tensors' values, never views on the backend's memory: they are posted between threads,
 * and a view on the wasm heap would clone the whole heap.
 */
export async function valueCopies(tensors: readonly tf.Tensor[]): Promise<Float32Array[]> {
  return Promise.all(tensors.map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
}

/** Starts shards - 1 gradient workers, or returns undefined for the single-thread loop. */
async function startShards(
  model: tf.LayersModel,
  x: tf.Tensor4D,
  labels: Float32Array,
  sampleWeights: Float32Array,
  shards: number,
): Promise<ShardedSteps | undefined> {
  if (!Number.isInteger(shards) || shards < 1) throw new InvalidInputError(`shards must be a positive integer, got ${shards}`);
  if (shards === 1) return undefined;
  if (!shardWorkersAvailable()) {
    console.warn('[myeloscope/ml] gradient worker threads are not available in this build: training on one thread');
    return undefined;
  }
  // One copy of the crops in shared memory for all workers (each then copies it into its own backend).
  const shared = new Float32Array(new SharedArrayBuffer(x.size * Float32Array.BYTES_PER_ELEMENT));
  shared.set((await x.data()) as Float32Array);
  const topology = model.toJSON(null, false);
  const inits: ShardInit[] = Array.from({ length: shards - 1 }, (_, k) => ({
    topology,
    backend: tf.getBackend(),
    x: shared,
    xShape: x.shape,
    labels,
    sampleWeights,
    stream: k + 1,
  }));
  const workers = await ShardWorkers.start(inits);
  return new ShardedSteps(workers, shards, await valueCopies(trainableVariables(model)));
}
