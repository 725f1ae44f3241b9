/**
 * Saliency maps: the gradient of the model's plasma-cell score with respect to each input pixel of a cell
 * crop (Simonyan et al. 2014), |gradient| maxed over RGB, smoothed with a 3x3 box filter and scaled to
 * [0, 1] per crop. The crops of one image go through one backward pass: the model has no batch-coupled
 * layers, so the gradient of the summed scores is each crop's own gradient.
 *
 * Runs on the wasm backend (Conv2DBackpropInput, MaxPoolGrad and the ReLU/mean gradients are all there;
 * wasm-kernels.ts adds the missing Conv2DBackpropFilter, not needed here). Every tensor is freed.
 */
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import type { RgbImage } from '../../layers/core/src/types.ts';

/** Per crop, a size x size map in [0, 1], row-major. */
export async function saliencyMaps(model: tf.LayersModel, x: tf.Tensor4D): Promise<Float32Array[]> {
  const [n, h, w] = x.shape;
  const maps = tf.tidy(() => {
    const score = (input: tf.Tensor): tf.Tensor => {
      const y = model.apply(input, { training: false });
      if (Array.isArray(y) || !(y instanceof tf.Tensor)) throw new Error('saliency: the model must have one output');
      return y.sum();
    };
    const g = tf.grad(score)(x);
    const s = g.abs().max(3, true) as tf.Tensor4D;
    const smooth = tf.avgPool(s, 3, 1, 'same');
    const peak = smooth.max([1, 2, 3], true);
    return smooth.div(peak.add(1e-12)).reshape([n, h * w]);
  });
  try {
    const data = await maps.data();
    return Array.from({ length: n }, (_, i) => Float32Array.from(data.subarray(i * h * w, (i + 1) * h * w)));
  } finally {
    maps.dispose();
  }
}

/** A perceptually ordered dark-blue -> red -> yellow ramp (like 'inferno'), t in [0, 1]. */
function ramp(t: number): [number, number, number] {
  const stops: [number, number, number, number][] = [
    [0, 0, 0, 40],
    [0.35, 120, 30, 110],
    [0.65, 230, 70, 40],
    [1, 255, 240, 80],
  ];
  for (let i = 1; i < stops.length; i++) {
    const a = stops[i - 1] as [number, number, number, number];
    const b = stops[i] as [number, number, number, number];
    if (t <= b[0]) {
      const f = (t - a[0]) / (b[0] - a[0]);
      return [a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2]), a[3] + f * (b[3] - a[3])];
    }
  }
  return [255, 240, 80];
}

/** The crop with the saliency map blended over it (opacity grows with saliency), as a PNG. */
export function heatmapPng(crop: RgbImage, map: Float32Array): Promise<Buffer> {
  const out = new Uint8Array(crop.width * crop.height * 3);
  for (let p = 0; p < crop.width * crop.height; p++) {
    const t = Math.min(1, Math.max(0, map[p] ?? 0));
    const c = ramp(t);
    const alpha = 0.25 + 0.65 * t;
    for (let k = 0; k < 3; k++) out[p * 3 + k] = Math.round((1 - alpha) * (crop.data[p * 3 + k] ?? 0) + alpha * c[k]);
  }
  return sharp(out, { raw: { width: crop.width, height: crop.height, channels: 3 } }).png().toBuffer();
}

export function cropPng(crop: RgbImage): Promise<Buffer> {
  return sharp(crop.data, { raw: { width: crop.width, height: crop.height, channels: 3 } }).png().toBuffer();
}
