/**
 * Profiles training steps of the cell model on the current backend: wall time per kernel (every kernel call
 * goes through tf.profile, which times each kernel with backend.time), summed over a few batches.
 *
 *   node --import tsx test/bench/profile-epoch.ts [--batches 8] [--batch 32] [--stock]
 * --stock: keep the stock wasm Conv2DBackpropInput/MaxPoolGrad (to measure the gain of ours).
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { registerWasmGradientKernels } from '../../layers/core/src/ml/wasm-kernels.ts';
import { buildCellModel } from '../../layers/core/src/ml/model.ts';
import { trainCellModel } from '../../layers/core/src/ml/train.ts';

const { values } = parseArgs({
  options: { batches: { type: 'string', default: '8' }, batch: { type: 'string', default: '32' }, stock: { type: 'boolean', default: false } },
});
const batch = Number(values.batch);
const batches = Number(values.batches);
if (values.stock) registerWasmGradientKernels({ replaceSlowKernels: false });
const info = await initBackend('wasm');
console.log(`backend ${info.name}: ${info.detail}`);
const model = buildCellModel({ seed: 1 });
const n = batch * batches;
const x = tf.randomUniform([n, 64, 64, 3], 0, 1, 'float32', 3) as tf.Tensor4D;
const y = tf.tensor2d(Array.from({ length: n }, (_, i) => i % 2), [n, 1]);
// Warm-up epoch (kernel setup, XNNPACK operator caches), then the profiled one.
await trainCellModel(model, { x, y }, undefined, { epochs: 1, batchSize: batch, seed: 1 });
const t0 = performance.now();
const prof = await tf.profile(async () => {
  await trainCellModel(model, { x, y }, undefined, { epochs: 1, batchSize: batch, seed: 2 });
});
const wall = performance.now() - t0;
const byKernel = new Map<string, { ms: number; calls: number }>();
for (const k of prof.kernels) {
  const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
  const key = `${k.name} ${JSON.stringify(k.inputShapes[0] ?? [])}`;
  const e = byKernel.get(key) ?? { ms: 0, calls: 0 };
  e.ms += ms;
  e.calls++;
  byKernel.set(key, e);
}
const total = [...byKernel.values()].reduce((a, b) => a + b.ms, 0);
console.log(`${batches} batches of ${batch}: wall ${wall.toFixed(0)} ms (profiling adds overhead), kernel sum ${total.toFixed(0)} ms`);
for (const [k, v] of [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 25)) {
  console.log(`${(v.ms / batches).toFixed(1).padStart(7)} ms/batch ${((100 * v.ms) / total).toFixed(1).padStart(5)}%  x${v.calls / batches}  ${k}`);
}
