/** Batched inference: P(plasma cell) per crop. */
import * as tf from '@tensorflow/tfjs';

/**
 * Scores (sigmoid outputs) for every crop of x, batch by batch so that peak memory stays one batch of
 * activations whatever the number of crops. Leaves no tensors behind; x is not disposed.
 */
export async function predictScores(model: tf.LayersModel, x: tf.Tensor4D, batchSize = 64): Promise<Float32Array> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
  const n = x.shape[0];
  const out = new Float32Array(n);
  for (let start = 0; start < n; start += batchSize) {
    const size = Math.min(batchSize, n - start);
    const scores = tf.tidy(() => {
      const xb = x.slice([start, 0, 0, 0], [size, -1, -1, -1]);
      const y = model.predict(xb);
      if (Array.isArray(y)) throw new Error('predictScores: the model must have a single output');
      return y.reshape([size]);
    });
    try {
      out.set(await scores.data(), start);
    } finally {
      scores.dispose();
    }
  }
  return out;
}
