/**
 * Evaluate step: the trained model on the held-out split (whole source images never seen in training):
 * loss, accuracy, balanced accuracy, ROC AUC, confusion matrix, per-class precision/recall/F1 and per-image
 * plasma-cell counts, each with a bootstrap interval over held-out images, plus the training history, written
 * to runs/<runId>/evaluation.json; and the human report, runs/<runId>/report.html with runs/<runId>/report/*.png.
 */
import * as tf from '@tensorflow/tfjs';
import { runKeys } from '../../layers/core/src/keys.ts';
import type { Manifest, ManifestSample, RunState } from '../../layers/core/src/workflow.ts';
import type { Cell } from '../../layers/core/src/types.ts';
import { loadCrops } from '../../layers/core/src/dataset.ts';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { cropsToTensor } from '../../layers/core/src/ml/data.ts';
import { loadModel } from '../../layers/core/src/ml/io.ts';
import { predictScores } from '../../layers/core/src/ml/evaluate.ts';
import { evaluationReport, headlineMetrics, trainingSummary } from '../../layers/core/src/report.ts';
import { renderReport, type OverlayInput } from '../../layers/core/src/report/html.ts';
import { reportKeys } from '../../layers/core/src/report/keys.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { parseS3Uri, S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';

const work = new S3Store(bucketName('work'));

/** Held-out images drawn in the report: a few, enough to see the calls without bloating the HTML. */
const OVERLAY_IMAGES = 4;

async function readTraining(state: RunState, fallbackKey: string): Promise<unknown> {
  const key = state.trainingUri ? parseS3Uri(state.trainingUri).key : fallbackKey;
  try {
    return await work.getJson<unknown>(key);
  } catch (err) {
    // A report without curves beats no report: the history is context, not a metric.
    log('warn', 'no training history', { runId: state.runId, key, error: String(err) });
    return null;
  }
}

async function overlayInputs(manifest: Manifest, test: readonly ManifestSample[], scores: readonly number[], threshold: number): Promise<OverlayInput[]> {
  const images = [...new Set(test.map((s) => s.sourceImage))].slice(0, OVERLAY_IMAGES);
  const out: OverlayInput[] = [];
  for (const image of images) {
    const source = manifest.sources.find((s) => s.image === image);
    if (!source) continue;
    const [png, cellsJson] = await Promise.all([work.get(image), work.getJson<{ cells: Cell[] }>(source.cellsKey)]);
    const bbox = new Map(cellsJson.cells.map((c) => [c.id, c.bbox]));
    const cells = test.flatMap((s, i) => {
      const b = s.sourceImage === image ? bbox.get(s.cellId) : undefined;
      return b ? [{ bbox: b, call: (scores[i] >= threshold ? 1 : 0) as 0 | 1, label: s.label }] : [];
    });
    out.push({ image, png, cells });
  }
  return out;
}

export async function handler(state: RunState): Promise<RunState> {
  await initBackend();
  const manifest = await work.getJson<Manifest>(parseS3Uri(state.manifestUri).key);
  const keys = runKeys(state.runId);
  const test = manifest.samples.filter((s) => s.split === 'test');
  const model = await loadModel(work, keys.modelDir);
  const crops = await loadCrops(work, test, manifest.params.inputSize);
  const x = cropsToTensor(crops);
  const scores = Array.from(await predictScores(model, x, 64));
  tf.dispose(x);
  model.dispose();
  const training = trainingSummary(await readTraining(state, keys.training));
  // Seeded by the run's seed: the same manifest, seed and backend give the same evaluation.
  const evaluation = evaluationReport(state.runId, test, scores, { seed: manifest.params.seed, training });
  await work.putJson(keys.evaluation, evaluation);

  const report = await renderReport({
    evaluation,
    params: manifest.params,
    counts: state.counts,
    backend: state.backend ?? training?.backend,
    // Boxes come from cells.json: only the cell task has one sample per segmented cell.
    overlays: manifest.params.task === 'cells' ? await overlayInputs(manifest, test, scores, evaluation.threshold) : [],
    ...(manifest.classes ? { classes: manifest.classes } : {}),
    ...(manifest.audit ? { audit: manifest.audit } : {}),
    ...(state.warnings ? { warnings: state.warnings } : {}),
  });
  const rk = reportKeys(keys.dir);
  for (const p of report.pictures) await work.put(rk.picture(p.name), p.png, 'image/png');
  await work.put(rk.html, report.html, 'text/html; charset=utf-8');

  const metrics = headlineMetrics(evaluation);
  log('info', 'evaluated', { runId: state.runId, ...metrics });
  // A Batch training job returns nothing to the state machine: the backend comes from training.json.
  const backend = state.backend ?? training?.backend;
  return { ...state, ...(backend ? { backend } : {}), evaluationUri: work.uri(keys.evaluation), metrics };
}
