/** The evaluation written by the Evaluate step: held-out metrics of one run, from labels and scores. */
import {
  accuracy,
  balancedAccuracy,
  confusionMatrix,
  logLoss,
  precisionRecallF1,
  rocAucReport,
  rocCurve,
  thresholdScores,
  type ConfusionMatrix,
  type ClassMetrics,
  type RocPoint,
} from './ml/metrics.ts';
import type { ManifestSample } from './workflow.ts';

export interface Evaluation {
  runId: string;
  split: 'test';
  threshold: number;
  /** Held-out cells. */
  n: number;
  /** Held-out source images (the unit of the split). */
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
  perImage: { image: string; cells: number; plasmaTrue: number; plasmaPredicted: number }[];
  meanAbsCountError: number;
}

export function evaluationReport(runId: string, samples: readonly ManifestSample[], scores: readonly number[], threshold = 0.5): Evaluation {
  const yTrue = samples.map((s) => s.label);
  const yPred = thresholdScores(scores, threshold);
  const auc = rocAucReport(yTrue, scores);
  const [other, plasma] = precisionRecallF1(yTrue, yPred);
  const byImage = new Map<string, { image: string; cells: number; plasmaTrue: number; plasmaPredicted: number }>();
  samples.forEach((s, i) => {
    const row = byImage.get(s.sourceImage) ?? { image: s.sourceImage, cells: 0, plasmaTrue: 0, plasmaPredicted: 0 };
    row.cells++;
    row.plasmaTrue += s.label;
    row.plasmaPredicted += yPred[i] as number;
    byImage.set(s.sourceImage, row);
  });
  const perImage = [...byImage.values()];
  return {
    runId,
    split: 'test',
    threshold,
    n: samples.length,
    images: perImage.length,
    positives: auc.positives,
    accuracy: accuracy(yTrue, yPred),
    balancedAccuracy: balancedAccuracy(yTrue, yPred),
    loss: logLoss(yTrue, scores),
    rocAuc: auc.auc,
    ...(auc.undefinedReason ? { rocAucUndefinedReason: auc.undefinedReason } : {}),
    confusionMatrix: confusionMatrix(yTrue, yPred),
    classes: { other, plasma },
    rocCurve: rocCurve(yTrue, scores),
    perImage,
    meanAbsCountError: perImage.length ? perImage.reduce((a, r) => a + Math.abs(r.plasmaPredicted - r.plasmaTrue), 0) / perImage.length : Number.NaN,
  };
}
