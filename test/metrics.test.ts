import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidInputError } from '../layers/core/src/errors.ts';
import {
  accuracy,
  balancedAccuracy,
  confusionMatrix,
  logLoss,
  precisionRecallF1,
  rocAuc,
  rocAucReport,
  rocCurve,
  thresholdScores,
} from '../layers/core/src/ml/metrics.ts';

const close = (actual: number, expected: number, eps = 1e-9): void =>
  assert.ok(Math.abs(actual - expected) <= eps, `expected ${expected}, got ${actual}`);

test('confusion matrix, accuracy, per-class metrics: symmetric case', () => {
  // i:      0  1  2  3  4  5
  // true:   1  1  0  0  1  0
  // pred:   1  0  0  1  1  0
  // tp = {0, 4} = 2, fn = {1} = 1, fp = {3} = 1, tn = {2, 5} = 2
  const yTrue = [1, 1, 0, 0, 1, 0];
  const yPred = [1, 0, 0, 1, 1, 0];
  const cm = confusionMatrix(yTrue, yPred);
  assert.deepEqual(cm, { tn: 2, fp: 1, fn: 1, tp: 2, matrix: [[2, 1], [1, 2]] });
  close(accuracy(yTrue, yPred), 4 / 6);
  const [c0, c1] = precisionRecallF1(yTrue, yPred);
  // class 1: P = 2/3, R = 2/3, F1 = 2/3; class 0: P = tn/(tn+fn) = 2/3, R = tn/(tn+fp) = 2/3
  for (const c of [c0, c1]) {
    close(c.precision, 2 / 3);
    close(c.recall, 2 / 3);
    close(c.f1, 2 / 3);
    assert.equal(c.support, 3);
  }
  close(balancedAccuracy(yTrue, yPred), 2 / 3);
});

test('per-class metrics and balanced accuracy: imbalanced case', () => {
  // true: 1 1 1 0 0 0 0 0 0 0 ; pred: 1 0 0 1 0 0 0 0 0 0
  // tp = 1, fn = 2, fp = 1, tn = 6; accuracy = 7/10
  const yTrue = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
  const yPred = [1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
  assert.deepEqual(confusionMatrix(yTrue, yPred).matrix, [[6, 1], [2, 1]]);
  close(accuracy(yTrue, yPred), 0.7);
  const [c0, c1] = precisionRecallF1(yTrue, yPred);
  // class 1: P = 1/2, R = 1/3, F1 = 2PR/(P+R) = (1/3)/(5/6) = 0.4
  close(c1.precision, 0.5);
  close(c1.recall, 1 / 3);
  close(c1.f1, 0.4);
  assert.equal(c1.support, 3);
  // class 0: P = 6/8, R = 6/7, F1 = 2*6/(2*6+1+2) = 0.8
  close(c0.precision, 0.75);
  close(c0.recall, 6 / 7);
  close(c0.f1, 0.8);
  assert.equal(c0.support, 7);
  // (1/3 + 6/7) / 2 = 25/42, where plain accuracy says 0.7
  close(balancedAccuracy(yTrue, yPred), 25 / 42);
});

test('degenerate rates are NaN, not 0', () => {
  // Never predicts plasma: precision of class 1 is 0/0; recall 0/2 = 0; F1 = 0/(0+0+2) = 0
  const [, c1] = precisionRecallF1([1, 1, 0], [0, 0, 0]);
  assert.ok(Number.isNaN(c1.precision));
  assert.equal(c1.recall, 0);
  assert.equal(c1.f1, 0);
  // No plasma cells at all and none predicted: every class-1 rate is undefined
  const [c0, none] = precisionRecallF1([0, 0], [0, 0]);
  assert.ok(Number.isNaN(none.precision) && Number.isNaN(none.recall) && Number.isNaN(none.f1));
  assert.equal(c0.recall, 1);
  // Balanced accuracy over the classes present only: recall of class 0 = 1
  assert.equal(balancedAccuracy([0, 0], [0, 0]), 1);
  assert.ok(Number.isNaN(accuracy([], [])));
  assert.ok(Number.isNaN(balancedAccuracy([], [])));
});

test('rocAuc: Mann-Whitney without ties', () => {
  // pos 0.35, 0.8; neg 0.1, 0.4. Pairs: 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
  close(rocAuc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 0.75);
  close(rocAuc([0, 1], [0.2, 0.9]), 1);
  close(rocAuc([0, 1], [0.9, 0.2]), 0);
});

test('rocAuc: ties count one half', () => {
  // pos 0.5, 0.9; neg 0.5, 0.2. Pairs: 0.5 vs 0.5 tie = 1/2, 0.5>0.2, 0.9>0.5, 0.9>0.2 -> 3.5/4
  close(rocAuc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]), 0.875);
  // every score equal: each of the 2*3 pairs is a tie -> 1/2
  close(rocAuc([1, 0, 1, 0, 0], [0.3, 0.3, 0.3, 0.3, 0.3]), 0.5);
  // pos 2, 2; neg 1, 2, 3. Pairs per positive: >1 yes, =2 half, <3 no -> 1.5 each -> 3/6
  close(rocAuc([1, 1, 0, 0, 0], [2, 2, 1, 2, 3]), 0.5);
});

test('rocAuc: one class only is undefined, with a clear marker in the report form', () => {
  assert.ok(Number.isNaN(rocAuc([1, 1, 1], [0.2, 0.5, 0.9])));
  assert.ok(Number.isNaN(rocAuc([0, 0], [0.2, 0.5])));
  assert.ok(Number.isNaN(rocAuc([], [])));
  assert.deepEqual(rocAucReport([0, 0], [0.2, 0.5]), {
    auc: null,
    positives: 0,
    negatives: 2,
    undefinedReason: 'no positive (plasma) samples',
  });
  assert.equal(rocAucReport([1], [0.5]).undefinedReason, 'no negative (other) samples');
  assert.deepEqual(rocAucReport([0, 1], [0.1, 0.7]), { auc: 1, positives: 1, negatives: 1 });
  // NaN becomes null in JSON, never a plausible-looking number
  assert.equal(JSON.stringify({ auc: rocAuc([1], [0.5]) }), '{"auc":null}');
});

/** Trapezoidal area under ROC points: must equal rocAuc. */
function area(points: { fpr: number; tpr: number }[]): number {
  let a = 0;
  for (let i = 1; i < points.length; i++) {
    const p = points[i - 1];
    const q = points[i];
    if (p && q) a += ((q.fpr - p.fpr) * (q.tpr + p.tpr)) / 2;
  }
  return a;
}

test('rocCurve: points by decreasing threshold, ties as one diagonal step', () => {
  // descending: 0.8 (pos) -> (0, .5); 0.4 (neg) -> (.5, .5); 0.35 (pos) -> (.5, 1); 0.1 (neg) -> (1, 1)
  const pts = rocCurve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]);
  assert.deepEqual(pts, [
    { fpr: 0, tpr: 0, threshold: Number.POSITIVE_INFINITY },
    { fpr: 0, tpr: 0.5, threshold: 0.8 },
    { fpr: 0.5, tpr: 0.5, threshold: 0.4 },
    { fpr: 0.5, tpr: 1, threshold: 0.35 },
    { fpr: 1, tpr: 1, threshold: 0.1 },
  ]);
  close(area(pts), 0.75);
  // tie at 0.5 between a positive and a negative: one point, (0, .5) -> (.5, 1)
  const tied = rocCurve([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]);
  assert.deepEqual(
    tied.map((p) => [p.fpr, p.tpr]),
    [
      [0, 0],
      [0, 0.5],
      [0.5, 1],
      [1, 1],
    ],
  );
  close(area(tied), 0.875);
  assert.deepEqual(rocCurve([1, 1], [0.3, 0.4]), []);
});

test('logLoss: hand-computed, clipped at eps', () => {
  // -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.2231435513 + 0.5108256238) / 2
  close(logLoss([1, 0], [0.8, 0.4]), 0.36698458755, 1e-10);
  // p = 0.5 for everything: ln 2
  close(logLoss([1, 0, 1], [0.5, 0.5, 0.5]), Math.LN2, 1e-12);
  // a certain mistake costs -ln(1e-7) = 16.118..., not Infinity
  close(logLoss([1], [0]), -Math.log(1e-7), 1e-9);
  close(logLoss([0], [0]), -Math.log(1 - 1e-7), 1e-12);
  assert.ok(Number.isNaN(logLoss([], [])));
});

test('thresholdScores: >= threshold is class 1', () => {
  assert.deepEqual(thresholdScores([0.2, 0.5, 0.7]), [0, 1, 1]);
  assert.deepEqual(thresholdScores([0.2, 0.5, 0.7], 0.6), [0, 0, 1]);
});

test('invalid input is rejected', () => {
  assert.throws(() => confusionMatrix([0, 1], [0]), InvalidInputError);
  assert.throws(() => accuracy([0, 2], [0, 1]), InvalidInputError);
  assert.throws(() => accuracy([0, 1], [0, 0.5]), InvalidInputError);
  assert.throws(() => rocAuc([0, 1], [0.1, Number.NaN]), InvalidInputError);
  assert.throws(() => logLoss([0, 1], [0.1]), InvalidInputError);
});
