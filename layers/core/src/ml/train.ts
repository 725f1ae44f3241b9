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
function trainableVariables(model: tf.LayersModel): tf.Variable[] {
  return model.trainableWeights.map((w) => {
    const v = w.read();
    if (!(v instanceof tf.Variable)) throw new Error(`weight ${w.name} is not a tf.Variable`);
    return v;
  });
}

/** Gathers a batch, grouping samples by transform so each group is one gather + at most 3 cheap ops. */
function makeBatch(
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
    seconds: 0,
  };
  const all = Array.from({ length: n }, (_, i) => i);

  for (let epoch = 1; epoch <= opts.epochs; epoch++) {
    const t0 = performance.now();
    const order = shuffle(all, deriveSeed(opts.seed, 'shuffle', epoch));
    const augRng = mulberry32(deriveSeed(opts.seed, 'augment', epoch));
    let lossSum = 0;
    let correct = 0;
    for (let start = 0; start < n; start += opts.batchSize) {
      const idx = order.slice(start, start + opts.batchSize);
      const transforms = idx.map(() => (augment ? randomInt(augRng, 8) : 0));
      const { xb, yb, wb } = makeBatch(data.x, labels, sampleWeights, idx, transforms);
      let hits: tf.Tensor | undefined;
      let cost: tf.Scalar | null = null;
      try {
        cost = optimizer.minimize(
          () => {
            const out = model.apply(xb, { training: true });
            if (!(out instanceof tf.Tensor)) throw new Error('the model must have a single output');
            const p = tf.clipByValue(out, EPS, 1 - EPS);
            const bce = tf.neg(tf.add(tf.mul(yb, tf.log(p)), tf.mul(tf.sub(1, yb), tf.log(tf.sub(1, p)))));
            // Kept out of the gradient tidy so it can be read after the step.
            hits = tf.keep(tf.sum(tf.cast(tf.equal(tf.cast(tf.greaterEqual(out, 0.5), 'float32'), yb), 'float32')));
            return tf.mean(tf.mul(bce, wb));
          },
          true,
          vars,
        );
        const [l, h] = await Promise.all([cost?.data(), hits?.data()]);
        lossSum += (l?.[0] ?? Number.NaN) * idx.length;
        correct += h?.[0] ?? 0;
      } finally {
        tf.dispose([xb, yb, wb, ...(cost ? [cost] : []), ...(hits ? [hits] : [])]);
      }
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
  history.seconds = (performance.now() - started) / 1000;
  return history;
}
