/**
 * Crops in, tensors out. Scaling to [0, 1] happens here and only here, so training and inference cannot
 * disagree about it.
 */
import * as tf from '@tensorflow/tfjs';
import { InvalidInputError } from '../errors.ts';

export { shuffle, mulberry32, deriveSeed } from './random.ts';

/** One cell crop: interleaved 8-bit RGB, row-major (the core's RgbImage has this shape). */
export interface CellCrop {
  data: Uint8Array;
  width: number;
  height: number;
}

/** 1 = plasma cell, 0 = other nucleated cell. */
export type CellLabel = 0 | 1;

/** A labelled crop's identity: what split.ts and the manifest need, without the pixels. */
export interface CellSample {
  /** Unique across the dataset, e.g. `<image key>#<cell id>`. */
  id: string;
  /** The image the crop was cut from: the unit of the train/val/test split. */
  sourceImage: string;
  label: CellLabel;
}

/** float32 [n, height, width, 3] in [0, 1]. All crops must share one size; at least one crop. */
export function cropsToTensor(crops: readonly CellCrop[]): tf.Tensor4D {
  const first = crops[0];
  if (first === undefined) throw new InvalidInputError('cropsToTensor: no crops');
  const { width, height } = first;
  const pixels = width * height * 3;
  const out = new Float32Array(crops.length * pixels);
  crops.forEach((c, i) => {
    if (c.width !== width || c.height !== height) {
      throw new InvalidInputError(`crop ${i} is ${c.width}x${c.height}, expected ${width}x${height} like crop 0`);
    }
    if (c.data.length !== pixels) {
      throw new InvalidInputError(`crop ${i} has ${c.data.length} bytes, expected ${pixels} (RGB, 3 bytes per pixel)`);
    }
    const base = i * pixels;
    for (let j = 0; j < pixels; j++) out[base + j] = c.data[j] / 255;
  });
  return tf.tensor4d(out, [crops.length, height, width, 3], 'float32');
}

/** float32 [n, 1] of 0/1, the target shape of the sigmoid output. */
export function labelsToTensor(labels: readonly number[]): tf.Tensor2D {
  for (const l of labels) {
    if (l !== 0 && l !== 1) throw new InvalidInputError(`label ${l} is not 0 or 1`);
  }
  return tf.tensor2d(Float32Array.from(labels), [labels.length, 1], 'float32');
}
