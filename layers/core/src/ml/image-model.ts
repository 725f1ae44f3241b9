/**
 * The image-level classifier of the `images` task: one CNN over the whole ROI-masked image, output =
 * P(second class). Why this size: the original project fed 512x512 ROI-masked images to an AlexNet-like net;
 * on one CPU thread that costs minutes per epoch for ~100 images, and an image-level label (where the slide
 * came from) needs cell composition and density, not nuclear detail. At 128x128 a cell is still ~15-20 px,
 * enough to tell nuclei from cytoplasm. The cell CNN's blocks with one more 2x2 pool (stride-2 stem, then
 * 16-32-64-128-128 filters) end on a 4x4 grid with a receptive field covering most of the image; global
 * average pooling keeps the weights (~250k) few for ~100 images.
 */
import type * as tf from '@tensorflow/tfjs';
import { buildCellModel } from './model.ts';

export const DEFAULT_IMAGE_INPUT_SIZE = 128;

export function buildImageModel(opts: { inputSize?: number; seed?: number; learningRate?: number } = {}): tf.LayersModel {
  return buildCellModel({
    inputSize: opts.inputSize ?? DEFAULT_IMAGE_INPUT_SIZE,
    filters: [16, 32, 64, 128, 128],
    dropout: 0.5,
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
    ...(opts.learningRate !== undefined ? { learningRate: opts.learningRate } : {}),
  });
}
