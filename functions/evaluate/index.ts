/**
 * Evaluate step: the trained model on the held-out split (whole source images never seen in training):
 * accuracy, ROC AUC, confusion matrix and per-class precision/recall/F1, written to runs/<runId>/evaluation.json.
 */
import * as tf from '@tensorflow/tfjs';
import { runKeys } from '../../layers/core/src/keys.ts';
import type { Manifest, RunState } from '../../layers/core/src/workflow.ts';
import { loadCrops } from '../../layers/core/src/dataset.ts';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { cropsToTensor } from '../../layers/core/src/ml/data.ts';
import { loadModel } from '../../layers/core/src/ml/io.ts';
import { predictScores } from '../../layers/core/src/ml/evaluate.ts';
import { evaluationReport } from '../../layers/core/src/report.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { parseS3Uri, S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';

const work = new S3Store(bucketName('work'));

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
  const evaluation = evaluationReport(state.runId, test, scores);
  await work.putJson(keys.evaluation, evaluation);
  const metrics = {
    accuracy: evaluation.accuracy,
    rocAuc: evaluation.rocAuc,
    testCells: evaluation.n,
    testImages: evaluation.images,
  };
  log('info', 'evaluated', { runId: state.runId, ...metrics });
  return { ...state, evaluationUri: work.uri(keys.evaluation), metrics };
}
