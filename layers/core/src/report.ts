/**
 * The evaluation written by the Evaluate step: held-out metrics of one run, from labels and scores, each with
 * a 95 % interval from a bootstrap over held-out source images. The HTML report lives in ./report/.
 */
import {
  accuracy,
  balancedAccuracy,
  confusionMatrix,
  logLoss,
  precisionRecallF1,
  rocAuc as rocAucOf,
  rocAucReport,
  rocCurve,
  thresholdScores,
  type ConfusionMatrix,
  type ClassMetrics,
  type RocPoint,
} from './ml/metrics.ts';
import type { EpochLog } from './ml/train.ts';
import { clusterBootstrap, groupIndices, type BootstrapInterval } from './report/bootstrap.ts';
import type { HeadlineMetrics, ManifestSample } from './workflow.ts';

export { clusterBootstrap, groupIndices, quantileSorted, type BootstrapInterval, type BootstrapOptions } from './report/bootstrap.ts';

/** A point estimate with its bootstrap interval. `value` is null where the metric is undefined (JSON has no NaN). */
export interface Estimate extends BootstrapInterval {
  value: number | null;
}

export interface PerImageCount {
  image: string;
  cells: number;
  plasmaTrue: number;
  plasmaPredicted: number;
  /** plasmaPredicted - plasmaTrue */
  error: number;
}

/** What Train recorded (runs/<runId>/training.json), as much of it as the report shows. */
export interface TrainingSummary {
  backend: string;
  /** Gradient shards (threads) per batch; 1 for runs from before data-parallel training. */
  shards: number;
  seconds: number | null;
  trainSamples: number | null;
  valSamples: number | null;
  epochs: EpochLog[];
}

export interface Evaluation {
  runId: string;
  split: 'test';
  threshold: number;
  /** Held-out cells. */
  n: number;
  /** Held-out source images (the unit of the split and of the bootstrap). */
  images: number;
  positives: number;
  accuracy: number;
  balancedAccuracy: number;
  loss: number;
  rocAuc: number | null;
  rocAucUndefinedReason?: string;
  confusionMatrix: ConfusionMatrix;
  classes: { other: ClassMetrics; plasma: ClassMetrics };
  rocCurve: RocPoint[];
  /** Per held-out image: plasma cells by the mask labels vs by the model. */
  perImage: PerImageCount[];
  meanAbsCountError: number;
  bootstrap: { unit: 'source image'; method: 'percentile'; replicates: number; seed: number; confidence: number };
  intervals: {
    loss: Estimate;
    accuracy: Estimate;
    balancedAccuracy: Estimate;
    rocAuc: Estimate;
    classes: Record<'other' | 'plasma', { precision: Estimate; recall: Estimate; f1: Estimate }>;
    confusionMatrix: { tn: Estimate; fp: Estimate; fn: Estimate; tp: Estimate };
    /** Mean over images of |predicted - true| plasma cells. */
    meanAbsCountError: Estimate;
    /** Mean over images of predicted - true (over- or under-counting bias). */
    meanCountError: Estimate;
  };
  /** Null when the run has no training.json. */
  training: TrainingSummary | null;
}

export interface EvaluationOptions {
  threshold?: number;
  /** Seeds the bootstrap (use the run's seed: same manifest + seed + backend, same report). @default 42 */
  seed?: number;
  /** @default 1000 */
  replicates?: number;
  /** @default 0.95 */
  confidence?: number;
  training?: TrainingSummary | null;
}

const finiteOrNull = (v: number): number | null => (Number.isFinite(v) ? v : null);

/** All bootstrapped statistics of one set of cells (indices into the held-out arrays) and images. */
function statistics(yTrue: readonly (0 | 1)[], scores: readonly number[], yPred: readonly (0 | 1)[], idx: readonly number[], counts: readonly PerImageCount[]) {
  const t = idx.map((i) => yTrue[i]);
  const s = idx.map((i) => scores[i]);
  const p = idx.map((i) => yPred[i]);
  const cm = confusionMatrix(t, p);
  const [other, plasma] = precisionRecallF1(t, p);
  return {
    loss: logLoss(t, s),
    accuracy: accuracy(t, p),
    balancedAccuracy: balancedAccuracy(t, p),
    rocAuc: rocAucOf(t, s),
    otherPrecision: other.precision,
    otherRecall: other.recall,
    otherF1: other.f1,
    plasmaPrecision: plasma.precision,
    plasmaRecall: plasma.recall,
    plasmaF1: plasma.f1,
    tn: cm.tn,
    fp: cm.fp,
    fn: cm.fn,
    tp: cm.tp,
    meanAbsCountError: counts.length ? counts.reduce((a, r) => a + Math.abs(r.error), 0) / counts.length : Number.NaN,
    meanCountError: counts.length ? counts.reduce((a, r) => a + r.error, 0) / counts.length : Number.NaN,
  };
}

export function evaluationReport(runId: string, samples: readonly ManifestSample[], scores: readonly number[], opts: EvaluationOptions = {}): Evaluation {
  const threshold = opts.threshold ?? 0.5;
  const seed = opts.seed ?? 42;
  const replicates = opts.replicates ?? 1000;
  const confidence = opts.confidence ?? 0.95;
  const yTrue = samples.map((s) => s.label);
  const yPred = thresholdScores(scores, threshold);
  const auc = rocAucReport(yTrue, scores);
  const { ids, members } = groupIndices(samples.map((s) => s.sourceImage));
  const perImage: PerImageCount[] = ids.map((image, c) => {
    const m = members[c];
    const plasmaTrue = m.reduce((a, i) => a + yTrue[i], 0);
    const plasmaPredicted = m.reduce((a, i) => a + yPred[i], 0);
    return { image, cells: m.length, plasmaTrue, plasmaPredicted, error: plasmaPredicted - plasmaTrue };
  });
  const all = samples.map((_, i) => i);
  const point = statistics(yTrue, scores, yPred, all, perImage);
  const boot = clusterBootstrap(
    ids.length,
    (drawn) => statistics(yTrue, scores, yPred, drawn.flatMap((c) => members[c]), drawn.map((c) => perImage[c])),
    { replicates, seed, confidence },
  );
  const est = (k: keyof typeof point): Estimate => ({ value: finiteOrNull(point[k]), ...(boot[k] ?? { ci: null, valid: 0, skipped: replicates }) });
  const [other, plasma] = precisionRecallF1(yTrue, yPred);
  return {
    runId,
    split: 'test',
    threshold,
    n: samples.length,
    images: perImage.length,
    positives: auc.positives,
    accuracy: point.accuracy,
    balancedAccuracy: point.balancedAccuracy,
    loss: point.loss,
    rocAuc: auc.auc,
    ...(auc.undefinedReason ? { rocAucUndefinedReason: auc.undefinedReason } : {}),
    confusionMatrix: confusionMatrix(yTrue, yPred),
    classes: { other, plasma },
    rocCurve: rocCurve(yTrue, scores),
    perImage,
    meanAbsCountError: point.meanAbsCountError,
    bootstrap: { unit: 'source image', method: 'percentile', replicates, seed, confidence },
    intervals: {
      loss: est('loss'),
      accuracy: est('accuracy'),
      balancedAccuracy: est('balancedAccuracy'),
      rocAuc: est('rocAuc'),
      classes: {
        other: { precision: est('otherPrecision'), recall: est('otherRecall'), f1: est('otherF1') },
        plasma: { precision: est('plasmaPrecision'), recall: est('plasmaRecall'), f1: est('plasmaF1') },
      },
      confusionMatrix: { tn: est('tn'), fp: est('fp'), fn: est('fn'), tp: est('tp') },
      meanAbsCountError: est('meanAbsCountError'),
      meanCountError: est('meanCountError'),
    },
    training: opts.training ?? null,
  };
}

/** The small summary the state machine carries (RunState.metrics): headline values and their intervals. */
export function headlineMetrics(e: Evaluation): HeadlineMetrics {
  const i = e.intervals;
  return {
    accuracy: e.accuracy,
    rocAuc: e.rocAuc,
    testCells: e.n,
    testImages: e.images,
    accuracyCi: i.accuracy.ci,
    rocAucCi: i.rocAuc.ci,
    balancedAccuracy: i.balancedAccuracy.value,
    balancedAccuracyCi: i.balancedAccuracy.ci,
    meanAbsCountError: i.meanAbsCountError.value,
    meanAbsCountErrorCi: i.meanAbsCountError.ci,
    ciLevel: e.bootstrap.confidence,
    bootstrapReplicates: e.bootstrap.replicates,
  };
}

/** training.json as Train writes it, reduced to what the report shows; tolerant of older or partial files. */
export function trainingSummary(json: unknown): TrainingSummary | null {
  if (typeof json !== 'object' || json === null) return null;
  const t = json as {
    backend?: { name?: string } | string;
    seconds?: number;
    trainSamples?: number;
    valSamples?: number;
    history?: { epochs?: EpochLog[]; shards?: number };
  };
  const epochs = t.history?.epochs;
  if (!Array.isArray(epochs)) return null;
  const backend = typeof t.backend === 'string' ? t.backend : (t.backend?.name ?? 'unknown');
  return {
    backend,
    shards: typeof t.history?.shards === 'number' ? t.history.shards : 1,
    seconds: typeof t.seconds === 'number' ? t.seconds : null,
    trainSamples: typeof t.trainSamples === 'number' ? t.trainSamples : null,
    valSamples: typeof t.valSamples === 'number' ? t.valSamples : null,
    epochs,
  };
}
