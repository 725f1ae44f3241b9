/** Loading the manifest's crops from a BlobStore into arrays the model takes. */
import type { BlobStore } from './store.ts';
import type { RgbImage } from './types.ts';
import type { ManifestSample } from './workflow.ts';
import { rgbFromPng, resizeRgb } from './image/index.ts';

/** Loads the crops of the samples, in order, resized to size x size when they differ. */
export async function loadCrops(
  store: BlobStore,
  samples: readonly ManifestSample[],
  size: number,
  opts: { concurrency?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<RgbImage[]> {
  const out: RgbImage[] = new Array(samples.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < samples.length) {
      const i = next++;
      const sample = samples[i] as ManifestSample;
      let img = await rgbFromPng(await store.get(sample.cropKey));
      if (img.width !== size || img.height !== size) img = await resizeRgb(img, size, size);
      out[i] = img;
      done++;
      if (opts.onProgress && (done % 200 === 0 || done === samples.length)) opts.onProgress(done, samples.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 16, samples.length) }, worker));
  return out;
}
