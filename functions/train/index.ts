/**
 * Train step: the manifest's train (and val) crops -> a CNN in TensorFlow.js LayersModel format under
 * runs/<runId>/model/, and the training history under runs/<runId>/training.json. The same entry point runs in
 * a Lambda, in the local cloud and (later) in the GPU container.
 */
import * as tf from '@tensorflow/tfjs';
import { runKeys } from '../../layers/core/src/keys.ts';
import type { Manifest, RunState } from '../../layers/core/src/workflow.ts';
import { loadCrops } from '../../layers/core/src/dataset.ts';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { buildCellModel } from '../../layers/core/src/ml/model.ts';
import { buildImageModel } from '../../layers/core/src/ml/image-model.ts';
import { cropsToTensor } from '../../layers/core/src/ml/data.ts';
import { trainCellModel } from '../../layers/core/src/ml/train.ts';
import { saveModel } from '../../layers/core/src/ml/io.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { parseS3Uri, S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';

const work = new S3Store(bucketName('work'));

export async function handler(state: RunState): Promise<RunState> {
  const started = Date.now();
  const backend = await initBackend();
  log('info', 'training backend', { runId: state.runId, backend: backend.name, detail: backend.detail });
  const manifest = await work.getJson<Manifest>(parseS3Uri(state.manifestUri).key);
  const { params } = manifest;
  const keys = runKeys(state.runId);
  const trainSamples = manifest.samples.filter((s) => s.split === 'train');
  const valSamples = manifest.samples.filter((s) => s.split === 'val');
  const [trainCrops, valCrops] = await Promise.all([
    loadCrops(work, trainSamples, params.inputSize),
    loadCrops(work, valSamples, params.inputSize),
  ]);
  const data = { x: cropsToTensor(trainCrops), y: tf.tensor2d(trainSamples.map((s) => [s.label])) };
  const val = valSamples.length ? { x: cropsToTensor(valCrops), y: tf.tensor2d(valSamples.map((s) => [s.label])) } : undefined;
  const model =
    params.task === 'images'
      ? buildImageModel({ inputSize: params.inputSize, seed: params.seed })
      : buildCellModel({ inputSize: params.inputSize, seed: params.seed });
  const history = await trainCellModel(model, data, val, {
    epochs: params.epochs,
    batchSize: params.batchSize,
    seed: params.seed,
    onEpoch: (e) => log('info', 'epoch', { runId: state.runId, ...e }),
  });
  log('info', 'trained', { runId: state.runId, backend: backend.name, shards: history.shards, seconds: history.seconds });
  await saveModel(model, work, keys.modelDir);
  await work.putJson(keys.training, {
    runId: state.runId,
    backend,
    params,
    trainSamples: trainSamples.length,
    valSamples: valSamples.length,
    seconds: (Date.now() - started) / 1000,
    history,
  });
  tf.dispose([data.x, data.y, ...(val ? [val.x, val.y] : [])]);
  model.dispose();
  return { ...state, modelUri: work.uri(keys.modelDir), trainingUri: work.uri(keys.training), backend: backend.name };
}
