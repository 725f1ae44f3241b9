import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import {
  clusterBootstrap,
  evaluationReport,
  headlineMetrics,
  quantileSorted,
  trainingSummary,
  type Evaluation,
} from '../layers/core/src/report.ts';
import { renderChart, curveSpec, rocSpec, CHART_SCALE } from '../layers/core/src/report/charts.ts';
import { renderReport } from '../layers/core/src/report/html.ts';
import { callsOverlayPng } from '../layers/core/src/report/overlay.ts';
import { reportKeys } from '../layers/core/src/report/keys.ts';
import { DEFAULT_PARAMS, type ManifestSample } from '../layers/core/src/workflow.ts';

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function sample(image: string, cellId: number, label: 0 | 1): ManifestSample {
  return {
    id: `${image}#${cellId}`,
    sourceImage: image,
    cellId,
    cropKey: `segmented/x/${image}/crops/${cellId}.png`,
    cropEtag: 'e',
    label,
    split: 'test',
  };
}

/** `images` images of `perImage` cells; `make(image, cell)` gives the label and the score. */
function dataset(images: number, perImage: number, make: (img: number, cell: number) => [0 | 1, number]) {
  const samples: ManifestSample[] = [];
  const scores: number[] = [];
  for (let i = 0; i < images; i++) {
    for (let c = 0; c < perImage; c++) {
      const [label, score] = make(i, c);
      samples.push(sample(`processed/t/m/${i}.png`, c + 1, label));
      scores.push(score);
    }
  }
  return { samples, scores };
}

const width = (ci: [number, number] | null): number => {
  assert.ok(ci, 'expected an interval');
  return ci[1] - ci[0];
};

test('quantileSorted interpolates between order statistics (type 7)', () => {
  assert.equal(quantileSorted([1, 2, 3, 4, 5], 0.5), 3);
  assert.equal(quantileSorted([1, 2, 3, 4], 0.5), 2.5);
  assert.equal(quantileSorted([0, 10], 0.025), 0.25);
  assert.ok(Number.isNaN(quantileSorted([], 0.5)));
});

test('bootstrap: identical images give a zero-width interval at the point value', () => {
  // Every image: 3 other cells and 2 plasma cells with the same scores, one mistake each way.
  const { samples, scores } = dataset(8, 5, (_, c) => {
    const labels: (0 | 1)[] = [0, 0, 0, 1, 1];
    const s = [0.1, 0.2, 0.7, 0.4, 0.9];
    return [labels[c], s[c]];
  });
  const e = evaluationReport('r', samples, scores, { replicates: 200 });
  for (const k of ['accuracy', 'balancedAccuracy', 'rocAuc', 'loss', 'meanAbsCountError'] as const) {
    const est = e.intervals[k];
    assert.ok(est.ci, k);
    assert.ok(Math.abs(est.ci[1] - est.ci[0]) < 1e-12, `${k} interval ${est.ci}`);
    assert.ok(Math.abs(est.ci[0] - (est.value as number)) < 1e-12, `${k} interval at the value`);
    assert.equal(est.valid, 200);
    assert.equal(est.skipped, 0);
  }
  assert.equal(e.accuracy, 0.6);
  assert.deepEqual(e.intervals.confusionMatrix.tp.ci, [8, 8]);
});

test('bootstrap: resampling by image is wider than by cell when images differ (clustered errors)', () => {
  // Half of the images are called perfectly, half entirely wrong: cells within an image are not independent.
  const { samples, scores } = dataset(10, 20, (i, c) => {
    const label: 0 | 1 = c % 2 === 0 ? 1 : 0;
    const right = i % 2 === 0;
    return [label, right === (label === 1) ? 0.9 : 0.1];
  });
  const byImage = evaluationReport('r', samples, scores, { replicates: 500 });
  // The same cells, each its own "image": a bootstrap over cells.
  const byCell = evaluationReport('r', samples.map((s) => ({ ...s, sourceImage: s.id })), scores, { replicates: 500 });
  assert.equal(byImage.accuracy, byCell.accuracy);
  const wImage = width(byImage.intervals.accuracy.ci);
  const wCell = width(byCell.intervals.accuracy.ci);
  assert.ok(wImage > 2.5 * wCell, `by image ${wImage} vs by cell ${wCell}`);
  // Roughly the textbook widths: 2 * 1.96 * sqrt(0.25 / 10) = 0.62 and 2 * 1.96 * sqrt(0.25 / 200) = 0.14.
  assert.ok(wImage > 0.4 && wImage < 0.8, `by image ${wImage}`);
  assert.ok(wCell > 0.08 && wCell < 0.2, `by cell ${wCell}`);
});

test('bootstrap: replicates where a metric is undefined are skipped and counted', () => {
  // 3 images, each of one class: a resample drawing only plasma images (or only others) has no AUC.
  const { samples, scores } = dataset(3, 4, (i, c) => [i === 0 ? 1 : 0, 0.2 + 0.1 * c + (i === 0 ? 0.3 : 0)]);
  const e = evaluationReport('r', samples, scores, { replicates: 300 });
  const auc = e.intervals.rocAuc;
  assert.ok(auc.skipped > 0, 'some one-class replicates');
  assert.equal(auc.valid + auc.skipped, 300);
  assert.equal(e.intervals.accuracy.skipped, 0);
  // P(no plasma image drawn) = (2/3)^3 plus P(only the plasma image) = (1/3)^3: a third, ~100 of 300.
  assert.ok(auc.skipped > 60 && auc.skipped < 140, `skipped ${auc.skipped}`);
  // And a statistic undefined everywhere has no interval rather than a made-up one.
  const none = clusterBootstrap(4, () => ({ x: Number.NaN }), { replicates: 10 });
  assert.deepEqual(none.x, { ci: null, valid: 0, skipped: 10 });
});

test('evaluation is reproducible: same inputs and seed give deep-equal reports; another seed moves the intervals', () => {
  const { samples, scores } = dataset(12, 9, (i, c) => [((i + c) % 3 === 0 ? 1 : 0) as 0 | 1, ((i * 7 + c * 13) % 17) / 17]);
  const a = evaluationReport('r', samples, scores, { seed: 7 });
  const b = evaluationReport('r', samples, scores, { seed: 7 });
  assert.deepEqual(a, b);
  assert.equal(JSON.stringify(a), JSON.stringify(b));
  const c = evaluationReport('r', samples, scores, { seed: 8 });
  assert.notDeepEqual(a.intervals, c.intervals);
  assert.equal(a.accuracy, c.accuracy);
  assert.equal(a.bootstrap.replicates, 1000);
  assert.equal(a.bootstrap.unit, 'source image');
});

test('per-image plasma-cell counts and their mean absolute error', () => {
  const samples = [sample('a', 1, 1), sample('a', 2, 1), sample('a', 3, 0), sample('b', 1, 0), sample('b', 2, 0)];
  const scores = [0.9, 0.1, 0.1, 0.8, 0.7];
  const e = evaluationReport('r', samples, scores, { replicates: 50 });
  assert.deepEqual(e.perImage, [
    { image: 'a', cells: 3, plasmaTrue: 2, plasmaPredicted: 1, error: -1 },
    { image: 'b', cells: 2, plasmaTrue: 0, plasmaPredicted: 2, error: 2 },
  ]);
  assert.equal(e.meanAbsCountError, 1.5);
  assert.equal(e.intervals.meanAbsCountError.value, 1.5);
  assert.equal(e.intervals.meanCountError.value, 0.5);
  const ci = e.intervals.meanAbsCountError.ci as [number, number];
  assert.ok(ci[0] >= 1 && ci[1] <= 2 && ci[0] < ci[1], `${ci}`);
  const h = headlineMetrics(e);
  assert.equal(h.testCells, 5);
  assert.equal(h.testImages, 2);
  assert.equal(h.meanAbsCountError, 1.5);
  assert.deepEqual(h.accuracyCi, e.intervals.accuracy.ci);
  assert.deepEqual(h.rocAucCi, e.intervals.rocAuc.ci);
  assert.equal(h.ciLevel, 0.95);
});

test('trainingSummary reads training.json as Train writes it', () => {
  const epochs = [{ epoch: 1, loss: 0.7, acc: 0.5, valLoss: 0.6, valAcc: 0.6, seconds: 1 }];
  assert.deepEqual(trainingSummary({ backend: { name: 'wasm', detail: 'x' }, seconds: 3, trainSamples: 10, valSamples: 2, history: { epochs, shards: 2 } }), {
    backend: 'wasm',
    shards: 2,
    seconds: 3,
    trainSamples: 10,
    valSamples: 2,
    epochs,
  });
  // Runs from before data-parallel training have no shard count: they trained on one thread.
  assert.equal(trainingSummary({ backend: 'wasm', history: { epochs } })?.shards, 1);
  assert.equal(trainingSummary(null), null);
  assert.equal(trainingSummary({ history: {} }), null);
});

/** Fraction of pixels that are not (near) white. */
async function inkFraction(png: Buffer): Promise<number> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  let ink = 0;
  for (let p = 0; p < info.width * info.height; p++) {
    if (data[p * 3] < 200 || data[p * 3 + 1] < 200 || data[p * 3 + 2] < 200) ink++;
  }
  return ink / (info.width * info.height);
}

test('a chart renders without a browser to a PNG of the spec size that is not blank', async () => {
  const epochs = Array.from({ length: 6 }, (_, i) => ({ epoch: i + 1, loss: 0.7 - i * 0.05, acc: 0.5 + i * 0.05, valLoss: 0.65 - i * 0.03, valAcc: 0.55 + i * 0.04, seconds: 1 }));
  const spec = curveSpec(epochs, 'loss');
  const chart = await renderChart(spec);
  assert.deepEqual(chart.png.subarray(0, 8), PNG_MAGIC);
  const meta = await sharp(chart.png).metadata();
  assert.equal(meta.width, (spec as { width: number }).width * CHART_SCALE);
  assert.equal(meta.height, (spec as { height: number }).height * CHART_SCALE);
  assert.equal(chart.width, meta.width);
  const ink = await inkFraction(chart.png);
  assert.ok(ink > 0.01 && ink < 0.5, `ink fraction ${ink}`);
  assert.match(chart.svg, /^<svg/);
  assert.match(chart.svg, /epoch/);
  // Both series are drawn: the train and validation colours appear in the picture.
  const { data } = await sharp(chart.png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  let blue = 0;
  let orange = 0;
  for (let p = 0; p < data.length; p += 3) {
    if (data[p] < 80 && data[p + 2] > 150) blue++;
    if (data[p] > 220 && data[p + 1] > 100 && data[p + 1] < 160 && data[p + 2] < 60) orange++;
  }
  assert.ok(blue > 100 && orange > 100, `blue ${blue}, orange ${orange}`);
});

test('a ROC chart carries the AUC and its interval in its title', async () => {
  const chart = await renderChart(rocSpec([{ fpr: 0, tpr: 0, threshold: Infinity }, { fpr: 0.2, tpr: 0.8, threshold: 0.5 }, { fpr: 1, tpr: 1, threshold: 0.1 }], 0.8, [0.7, 0.9]));
  assert.match(chart.svg, /AUC 0\.800 \[0\.700, 0\.900\]/);
  assert.ok((await inkFraction(chart.png)) > 0.01);
});

test('the model-call overlay draws boxes in the call colour on the image', async () => {
  const image = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 255, g: 255, b: 255 } } }).png().toBuffer();
  const png = await callsOverlayPng(image, [
    { bbox: { x: 4, y: 4, width: 20, height: 20 }, call: 1, label: 1 },
    { bbox: { x: 36, y: 20, width: 20, height: 20 }, call: 0, label: 0 },
  ]);
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.width, 64);
  assert.equal(info.height, 48);
  const px = (x: number, y: number) => Array.from(data.subarray((y * info.width + x) * info.channels, (y * info.width + x) * info.channels + 3));
  const [r1, g1] = px(4, 14); // left edge of the plasma box: red
  assert.ok(r1 > 200 && g1 < 100, `plasma edge ${px(4, 14)}`);
  const [r2, g2] = px(36, 30); // left edge of the other box: green
  assert.ok(g2 > 150 && r2 < 100, `other edge ${px(36, 30)}`);
  assert.deepEqual(px(14, 14), [255, 255, 255]); // inside a box: untouched
});

async function fixtureEvaluation(): Promise<Evaluation> {
  const { samples, scores } = dataset(6, 10, (i, c) => [((c + i) % 4 === 0 ? 1 : 0) as 0 | 1, ((c + i) % 4 === 0 ? 0.6 : 0.3) + ((i * 3 + c) % 5) / 20]);
  const epochs = Array.from({ length: 4 }, (_, i) => ({ epoch: i + 1, loss: 0.7 - i * 0.1, acc: 0.6 + i * 0.05, valLoss: 0.68 - i * 0.05, valAcc: 0.6 + i * 0.03, seconds: 2 }));
  return evaluationReport('run-test-1', samples, scores, { seed: 3, replicates: 200, training: { backend: 'cpu', shards: 1, seconds: 8, trainSamples: 100, valSamples: 20, epochs } });
}

test('the HTML report is self-contained, embeds the pictures and states the metrics with intervals and caveats', async () => {
  const e = await fixtureEvaluation();
  const image = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 200, g: 180, b: 220 } } }).png().toBuffer();
  const report = await renderReport({
    evaluation: e,
    params: DEFAULT_PARAMS,
    counts: { train: 100, val: 20, test: 60, sources: 30 },
    backend: 'cpu',
    overlays: [{ image: 'processed/t/m/0.png', png: image, cells: [{ bbox: { x: 2, y: 2, width: 10, height: 10 }, call: 1, label: 0 }] }],
    warnings: ['only 3 held-out image(s): <wide>'],
  });
  assert.match(report.html, /Read with care:.*<li>only 3 held-out image\(s\): &#60;wide&#62;<\/li>/s);
  const names = report.pictures.map((p) => p.name);
  assert.deepEqual(names, ['loss.png', 'accuracy.png', 'confusion-matrix.png', 'roc.png', 'counts.png', 'overlay-0.png']);
  for (const p of report.pictures) assert.deepEqual(p.png.subarray(0, 8), PNG_MAGIC, p.name);
  // Every picture is in the HTML, as a PNG data URI (fonts present) or inline SVG (no fonts).
  const uris = [...report.html.matchAll(/src="data:image\/png;base64,([A-Za-z0-9+/=]+)"/g)].map((m) => Buffer.from(m[1] as string, 'base64'));
  const inlineSvgs = (report.html.match(/<svg/g) ?? []).length;
  assert.equal(uris.length + inlineSvgs, report.pictures.length);
  for (const u of uris) assert.deepEqual(u.subarray(0, 8), PNG_MAGIC);
  assert.ok(uris.some((u) => u.equals(report.pictures[report.pictures.length - 1]?.png as Buffer)), 'overlay embedded');
  // No external resources.
  assert.doesNotMatch(report.html, /(src|href)="(https?:)?\/\//);
  // Headline metrics with their intervals, as computed.
  const auc = e.intervals.rocAuc;
  assert.ok(auc.ci && auc.value !== null);
  assert.ok(report.html.includes(`${auc.value.toFixed(3)}</td><td>${auc.ci[0].toFixed(3)} – ${auc.ci[1].toFixed(3)}`), 'AUC row');
  const acc = e.intervals.accuracy;
  assert.ok(acc.ci && report.html.includes(`${(acc.value as number).toFixed(3)}</td><td>${acc.ci[0].toFixed(3)} – ${acc.ci[1].toFixed(3)}`), 'accuracy row');
  assert.match(report.html, /balanced accuracy/);
  assert.match(report.html, /mean absolute error/);
  assert.match(report.html, /60 cells from 6 source images/);
  assert.match(report.html, /by source image/);
  assert.match(report.html, /not a diagnosis/);
  assert.match(report.html, /one patient may fall on both sides of the split/);
  assert.match(report.html, /One lab, one stain/);
  assert.ok(report.html.includes(`&#34;epochs&#34;:${DEFAULT_PARAMS.epochs},`), 'params shown');
  assert.match(report.html, /<td>cpu<\/td>/);
  // Rendering is deterministic too.
  const again = await renderReport({ evaluation: e, params: DEFAULT_PARAMS, counts: { train: 100, val: 20, test: 60, sources: 30 }, backend: 'cpu' });
  assert.ok(report.html.includes(report.pictures[0]?.png.toString('base64') as string) || inlineSvgs > 0);
  assert.deepEqual(again.pictures[0]?.png, report.pictures[0]?.png);
});

test('report keys sit beside the run and the published model', () => {
  assert.deepEqual(
    { html: reportKeys('runs/r1/').html, png: reportKeys('models/r1/').picture('roc.png') },
    { html: 'runs/r1/report.html', png: 'models/r1/report/roc.png' },
  );
  assert.throws(() => reportKeys('runs/r1'), RangeError);
});
