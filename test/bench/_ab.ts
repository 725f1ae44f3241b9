import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { maxPoolGradWasm as oldMpg } from './_old-kernels.ts';
import { buildCellModel } from '../../layers/core/src/ml/model.ts';
import { trainCellModel } from '../../layers/core/src/ml/train.ts';
await initBackend('wasm');
const cur = tf.getKernel('MaxPoolGrad', 'wasm')!;
const old = { ...cur, kernelFunc: oldMpg() };
const use = (k: tf.KernelConfig) => { tf.unregisterKernel('MaxPoolGrad', 'wasm'); tf.registerKernel(k); };
const n = 320;
const x = tf.randomUniform([n, 64, 64, 3], 0, 1, 'float32', 11) as tf.Tensor4D;
const y = tf.tensor2d(Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 1 : 0)), [n, 1]);
const model = buildCellModel({ seed: 1 });
await trainCellModel(model, { x, y }, undefined, { epochs: 1, batchSize: 32, seed: 1 });
const t: Record<string, number[]> = { old: [], new: [] };
for (let r = 0; r < 8; r++) {
  for (const [k, cfg] of (r % 2 ? [['old', old], ['new', cur]] : [['new', cur], ['old', old]]) as [string, tf.KernelConfig][]) {
    use(cfg);
    const h = await trainCellModel(model, { x, y }, undefined, { epochs: 1, batchSize: 32, seed: 2 + r });
    t[k]!.push((h.epochs[0]!.seconds * 1000) / 10);
  }
}
const med = (a: number[]) => a.sort((p, q) => p - q)[a.length >> 1]!.toFixed(0);
console.log(`ms per batch of 32, median of 8 alternating epochs: old MaxPoolGrad ${med(t.old!)}, new ${med(t.new!)}; old ${t.old!.map((v) => v.toFixed(0))} new ${t.new!.map((v) => v.toFixed(0))}`);
