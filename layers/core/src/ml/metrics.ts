/**
 * Binary classification metrics in plain TypeScript (no tensors): the evaluation report and tests use them
 * on arrays of labels and scores. Class 1 = plasma cell (positive), 0 = other.
 *
 * Undefined values (a rate with a zero denominator, AUC with one class only) are NaN, never a made-up 0 or
 * 0.5: NaN cannot be mistaken for a result, and JSON.stringify writes it as null. rocAucReport gives the
 * reason alongside.
 */
import { InvalidInputError } from '../errors.ts';

export interface ConfusionMatrix {
  /** true 0, predicted 0 */
  tn: number;
  /** true 0, predicted 1 */
  fp: number;
  /** true 1, predicted 0 */
  fn: number;
  /** true 1, predicted 1 */
  tp: number;
  /** rows = true class (0, 1), columns = predicted class (0, 1): [[tn, fp], [fn, tp]] */
  matrix: [[number, number], [number, number]];
}

export interface ClassMetrics {
  precision: number;
  recall: number;
  f1: number;
  /** Number of samples whose true class is this one. */
  support: number;
}

export interface RocPoint {
  fpr: number;
  tpr: number;
  /** Predict 1 when score >= threshold; the first point's threshold is +Infinity (nothing predicted 1). */
  threshold: number;
}

function checkLabels(yTrue: readonly number[], other: readonly number[], otherName: string): void {
  if (yTrue.length !== other.length) {
    throw new InvalidInputError(`yTrue has ${yTrue.length} values but ${otherName} has ${other.length}`);
  }
  yTrue.forEach((y, i) => {
    if (y !== 0 && y !== 1) throw new InvalidInputError(`yTrue[${i}] = ${y}, expected 0 or 1`);
  });
}

function checkPredictions(yPred: readonly number[]): void {
  yPred.forEach((y, i) => {
    if (y !== 0 && y !== 1) throw new InvalidInputError(`yPred[${i}] = ${y}, expected 0 or 1`);
  });
}

function checkScores(scores: readonly number[]): void {
  scores.forEach((s, i) => {
    if (!Number.isFinite(s)) throw new InvalidInputError(`scores[${i}] = ${s} is not a finite number`);
  });
}

const ratio = (num: number, den: number): number => (den === 0 ? Number.NaN : num / den);

/** 1 where score >= threshold. */
export function thresholdScores(scores: readonly number[], threshold = 0.5): (0 | 1)[] {
  return scores.map((s) => (s >= threshold ? 1 : 0));
}

export function confusionMatrix(yTrue: readonly number[], yPred: readonly number[]): ConfusionMatrix {
  checkLabels(yTrue, yPred, 'yPred');
  checkPredictions(yPred);
  let tn = 0;
  let fp = 0;
  let fn = 0;
  let tp = 0;
  yTrue.forEach((t, i) => {
    const p = yPred[i];
    if (t === 1) {
      if (p === 1) tp++;
      else fn++;
    } else if (p === 1) fp++;
    else tn++;
  });
  return { tn, fp, fn, tp, matrix: [[tn, fp], [fn, tp]] };
}

/** Fraction correct; NaN for no samples. */
export function accuracy(yTrue: readonly number[], yPred: readonly number[]): number {
  const { tn, fp, fn, tp } = confusionMatrix(yTrue, yPred);
  return ratio(tp + tn, tn + fp + fn + tp);
}

/** Per-class precision, recall, F1 and support, indexed by class (0, 1). */
export function precisionRecallF1(yTrue: readonly number[], yPred: readonly number[]): [ClassMetrics, ClassMetrics] {
  const { tn, fp, fn, tp } = confusionMatrix(yTrue, yPred);
  const forClass = (hit: number, falseAlarm: number, miss: number): ClassMetrics => {
    const precision = ratio(hit, hit + falseAlarm);
    const recall = ratio(hit, hit + miss);
    // F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN): defined whenever the class was predicted or present.
    const f1 = ratio(2 * hit, 2 * hit + falseAlarm + miss);
    return { precision, recall, f1, support: hit + miss };
  };
  // For class 0 the roles swap: a "hit" is a true negative, a false alarm is a false negative.
  return [forClass(tn, fn, fp), forClass(tp, fp, fn)];
}

/**
 * Mean of the per-class recalls over the classes present in yTrue (sensitivity and specificity when both
 * are present), so a model that always answers "other" scores 0.5, not the majority share. NaN if empty.
 */
export function balancedAccuracy(yTrue: readonly number[], yPred: readonly number[]): number {
  const recalls = precisionRecallF1(yTrue, yPred)
    .filter((c) => c.support > 0)
    .map((c) => c.recall);
  return recalls.length === 0 ? Number.NaN : recalls.reduce((a, b) => a + b, 0) / recalls.length;
}

/** 1-based ranks with ties given their average rank (the Mann-Whitney convention). */
function averageRanks(values: readonly number[]): number[] {
  const idx = values.map((_, i) => i).sort((a, b) => values[a] - values[b]);
  const ranks = new Array<number>(values.length);
  let i = 0;
  while (i < idx.length) {
    let j = i;
    while (j + 1 < idx.length && values[idx[j + 1]] === values[idx[i]]) j++;
    const avg = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[idx[k]] = avg;
    i = j + 1;
  }
  return ranks;
}

/**
 * Area under the ROC curve = P(score of a random positive > score of a random negative), ties counting 1/2,
 * computed as the Mann-Whitney U statistic over average ranks (O(n log n)). NaN when yTrue has one class only.
 */
export function rocAuc(yTrue: readonly number[], scores: readonly number[]): number {
  checkLabels(yTrue, scores, 'scores');
  checkScores(scores);
  const nPos = yTrue.filter((y) => y === 1).length;
  const nNeg = yTrue.length - nPos;
  if (nPos === 0 || nNeg === 0) return Number.NaN;
  const ranks = averageRanks(scores);
  let rankSumPos = 0;
  yTrue.forEach((y, i) => {
    if (y === 1) rankSumPos += ranks[i];
  });
  const u = rankSumPos - (nPos * (nPos + 1)) / 2;
  return u / (nPos * nNeg);
}

/** rocAuc for reports: null plus a reason instead of NaN when the AUC is undefined. */
export function rocAucReport(
  yTrue: readonly number[],
  scores: readonly number[],
): { auc: number | null; positives: number; negatives: number; undefinedReason?: string } {
  const auc = rocAuc(yTrue, scores);
  const positives = yTrue.filter((y) => y === 1).length;
  const negatives = yTrue.length - positives;
  if (!Number.isNaN(auc)) return { auc, positives, negatives };
  const undefinedReason =
    yTrue.length === 0 ? 'no samples' : positives === 0 ? 'no positive (plasma) samples' : 'no negative (other) samples';
  return { auc: null, positives, negatives, undefinedReason };
}

/**
 * ROC points from (0, 0) to (1, 1), one per distinct score (tied scores move together, giving a diagonal
 * step), by decreasing threshold. Empty when yTrue has one class only (a rate would divide by zero).
 */
export function rocCurve(yTrue: readonly number[], scores: readonly number[]): RocPoint[] {
  checkLabels(yTrue, scores, 'scores');
  checkScores(scores);
  const nPos = yTrue.filter((y) => y === 1).length;
  const nNeg = yTrue.length - nPos;
  if (nPos === 0 || nNeg === 0) return [];
  const order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a]);
  const points: RocPoint[] = [{ fpr: 0, tpr: 0, threshold: Number.POSITIVE_INFINITY }];
  let tp = 0;
  let fp = 0;
  let i = 0;
  while (i < order.length) {
    const threshold = scores[order[i]];
    while (i < order.length && scores[order[i]] === threshold) {
      if (yTrue[order[i]] === 1) tp++;
      else fp++;
      i++;
    }
    points.push({ fpr: fp / nNeg, tpr: tp / nPos, threshold });
  }
  return points;
}

/**
 * Mean binary cross-entropy in nats of probabilities p = P(class 1), clipped to [eps, 1 - eps] so that a
 * confident mistake costs a large finite amount (eps 1e-7 as Keras/TF.js). NaN for no samples.
 */
export function logLoss(yTrue: readonly number[], probs: readonly number[], eps = 1e-7): number {
  checkLabels(yTrue, probs, 'probs');
  checkScores(probs);
  if (yTrue.length === 0) return Number.NaN;
  let sum = 0;
  yTrue.forEach((y, i) => {
    const p = Math.min(1 - eps, Math.max(eps, probs[i]));
    sum -= y === 1 ? Math.log(p) : Math.log(1 - p);
  });
  return sum / yTrue.length;
}
