/**
 * A gradient worker (see shards.ts): a replica of the model on its own backend instance, the training crops,
 * and a loop answering each step with the gradients of its part of the batch.
 */
import { parentPort } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from './backend.ts';
import { SeededDropout } from './model.ts';
import type { ShardInit, ShardReply, ShardRequest, ShardStep } from './shards.ts';
import { shardGradients, trainableVariables, valueCopies } from './train.ts';

interface Replica {
  model: tf.LayersModel;
  vars: tf.Variable[];
  x: tf.Tensor4D;
  labels: Float32Array;
  sampleWeights: Float32Array;
}

const port = parentPort;
if (port === null) throw new Error('shard-worker.ts runs as a worker thread (see shards.ts)');

let replica: Replica | undefined;
// Messages are handled one at a time, in order: a step never overlaps the next one's weight update.
let queue: Promise<void> = Promise.resolve();

port.on('message', (msg: ShardRequest) => {
  queue = queue.then(async () => {
    try {
      if (msg.type === 'init') {
        replica = await setUp(msg);
        reply({ type: 'ready' });
      } else {
        if (replica === undefined) throw new Error('step before init');
        const r = await step(replica, msg);
        reply(r, r.type === 'grads' ? r.grads.map((g) => g.buffer as ArrayBuffer) : []);
      }
    } catch (err) {
      reply({ type: 'error', message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
    }
  });
});

function reply(msg: ShardReply, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(msg, transfer);
}

async function setUp(init: ShardInit): Promise<Replica> {
  await initBackend(init.backend, { quiet: true });
  if (tf.getBackend() !== init.backend) throw new Error(`backend ${init.backend} unavailable in the worker (got ${tf.getBackend()})`);
  const model = await tf.models.modelFromJSON({ modelTopology: init.topology as tf.io.ModelJSON['modelTopology'] });
  for (const layer of model.layers) if (layer instanceof SeededDropout) layer.stream = init.stream;
  return {
    model,
    vars: trainableVariables(model),
    x: tf.tensor4d(init.x, init.xShape),
    labels: init.labels,
    sampleWeights: init.sampleWeights,
  };
}

async function step(r: Replica, msg: ShardStep): Promise<ShardReply> {
  if (msg.weights) {
    if (msg.weights.length !== r.vars.length) throw new Error(`${msg.weights.length} weights for ${r.vars.length} variables`);
    r.vars.forEach((v, i) => tf.tidy(() => v.assign(tf.tensor(msg.weights?.[i] ?? [], v.shape))));
  }
  const g = await shardGradients(r.model, r.x, r.labels, r.sampleWeights, r.vars, msg);
  try {
    // Copied out of the backend's memory, then transferred, not cloned.
    const grads = await valueCopies(g.grads);
    return { type: 'grads', n: g.n, loss: g.loss, hits: g.hits, grads };
  } finally {
    tf.dispose(g.grads);
  }
}
