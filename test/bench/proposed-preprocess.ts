/**
 * A prototype of the changes the bench recommends for layers/core/src/image/preprocess.ts (owned elsewhere;
 * measured here, not used by the pipeline). Same decode/resize (openImage + sharp resize), then:
 *  1. CLAHE: OpenCV's own algorithm in JavaScript (8x8 tile histograms, integer clip limit, redistribution,
 *     per-tile LUTs blended bilinearly), O(pixels), instead of libvips hist_local (a histogram per pixel over a
 *     64x64 window, O(pixels x window side)); it also reproduces OpenCV's output instead of approximating it.
 *  2. Lab -> sRGB without Math.pow per channel per pixel: linear -> 8-bit through exact decision thresholds
 *     (a 4096-entry first guess, then at most a step or two against the 256 rounding boundaries).
 *  3. No PNG encoding when the caller does not need it (the inference handler ignores `png`).
 */
import { fitInside, openImage, rawRgb, rgbToLab } from '../../layers/core/src/image/index.ts';
import type { RgbImage } from '../../layers/core/src/types.ts';
import { withCv } from '../../layers/core/src/segment/index.ts';

/** OpenCV CLAHE (clipLimit, tilesX x tilesY) on one 8-bit channel; sizes not divisible by the grid are
 * reflected (BORDER_REFLECT_101) for the histograms, as OpenCV pads them. */
export function claheOpenCv(src: Uint8Array, width: number, height: number, clipLimit = 1.0, tilesX = 8, tilesY = 8): Uint8Array {
  const tileW = Math.ceil(width / tilesX);
  const tileH = Math.ceil(height / tilesY);
  const area = tileW * tileH;
  const clip = clipLimit > 0 ? Math.max(1, Math.floor((clipLimit * area) / 256)) : 0;
  const scale = 255 / area;
  const luts = new Uint8Array(tilesX * tilesY * 256);
  const hist = new Int32Array(256);
  const reflect = (i: number, n: number): number => (i < n ? i : 2 * n - 2 - i);
  for (let ty = 0; ty < tilesY; ty++) {
    for (let tx = 0; tx < tilesX; tx++) {
      hist.fill(0);
      for (let y = ty * tileH; y < (ty + 1) * tileH; y++) {
        const row = reflect(y, height) * width;
        const x1 = (tx + 1) * tileW;
        if (x1 <= width) for (let x = tx * tileW; x < x1; x++) hist[src[row + x]!]!++;
        else for (let x = tx * tileW; x < x1; x++) hist[src[row + reflect(x, width)]!]!++;
      }
      if (clip > 0) {
        let clipped = 0;
        for (let i = 0; i < 256; i++) {
          if (hist[i]! > clip) {
            clipped += hist[i]! - clip;
            hist[i] = clip;
          }
        }
        const batch = Math.floor(clipped / 256);
        let residual = clipped - batch * 256;
        for (let i = 0; i < 256; i++) hist[i]! += batch;
        if (residual > 0) {
          const step = Math.max(Math.floor(256 / residual), 1);
          for (let i = 0; i < 256 && residual > 0; i += step, residual--) hist[i]!++;
        }
      }
      const base = (ty * tilesX + tx) * 256;
      let sum = 0;
      for (let i = 0; i < 256; i++) {
        sum += hist[i]!;
        const v = Math.round(sum * scale);
        luts[base + i] = v > 255 ? 255 : v;
      }
    }
  }
  const out = new Uint8Array(width * height);
  const xTile1 = new Int32Array(width);
  const xTile2 = new Int32Array(width);
  const xA = new Float32Array(width);
  for (let x = 0; x < width; x++) {
    const f = x / tileW - 0.5;
    const t1 = Math.floor(f);
    xA[x] = f - t1;
    xTile1[x] = Math.max(t1, 0) * 256;
    xTile2[x] = Math.min(t1 + 1, tilesX - 1) * 256;
  }
  for (let y = 0; y < height; y++) {
    const f = y / tileH - 0.5;
    const t1 = Math.floor(f);
    const ya = f - t1;
    const r1 = Math.max(t1, 0) * tilesX * 256;
    const r2 = Math.min(t1 + 1, tilesY - 1) * tilesX * 256;
    for (let x = 0, p = y * width; x < width; x++, p++) {
      const v = src[p]!;
      const xa = xA[x]!;
      const a1 = xTile1[x]! + v;
      const a2 = xTile2[x]! + v;
      const top = luts[r1 + a1]! * (1 - xa) + luts[r1 + a2]! * xa;
      const bottom = luts[r2 + a1]! * (1 - xa) + luts[r2 + a2]! * xa;
      const res = Math.round(top * (1 - ya) + bottom * ya);
      out[p] = res > 255 ? 255 : res < 0 ? 0 : res;
    }
  }
  return out;
}

// Linear light -> sRGB 8-bit, exactly round(255 * encode(v)), without pow per sample.
const GUESS_SIZE = 4096;
/** BOUNDARY[i]: the linear value where the 8-bit output turns from i to i + 1. */
const BOUNDARY = new Float64Array(256);
for (let i = 0; i < 255; i++) {
  const c = (i + 0.5) / 255;
  BOUNDARY[i] = c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
}
BOUNDARY[255] = Number.POSITIVE_INFINITY;
const GUESS = new Uint8Array(GUESS_SIZE + 1);
for (let k = 0, i = 0; k <= GUESS_SIZE; k++) {
  while (BOUNDARY[i]! <= k / GUESS_SIZE) i++;
  GUESS[k] = i;
}

function linearTo8(v: number): number {
  if (!(v > 0)) return 0;
  if (v >= 1) return 255;
  let i = GUESS[Math.floor(v * GUESS_SIZE)]!;
  while (v >= BOUNDARY[i]!) i++;
  return i;
}

const XN = 0.950456;
const ZN = 1.088754;
const EPS = 0.008856;
const KAPPA = 903.3;

function labFInv(f: number): number {
  const t = f * f * f;
  return t > EPS ? t : (f - 16 / 116) / 7.787;
}

/** Same maths as preprocess.ts labToRgb, with linearTo8 instead of Math.pow. */
export function labToRgbFast(L: Uint8Array, a: Float32Array, b: Float32Array, width: number, height: number): RgbImage {
  const n = width * height;
  const out = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    const l = (L[i]! * 100) / 255;
    const fy = (l + 16) / 116;
    const y = l > KAPPA * EPS ? fy * fy * fy : l / KAPPA;
    const x = labFInv(fy + a[i]! / 500) * XN;
    const z = labFInv(fy - b[i]! / 200) * ZN;
    out[j] = linearTo8(3.240479 * x - 1.53715 * y - 0.498535 * z);
    out[j + 1] = linearTo8(-0.969256 * x + 1.875991 * y + 0.041556 * z);
    out[j + 2] = linearTo8(0.055648 * x - 0.204043 * y + 1.057311 * z);
  }
  return { width, height, data: out };
}

/** Decode + resize as preprocessImage, then the proposed CLAHE path; no PNG. */
export async function proposedPreprocess(bytes: Uint8Array, maxSize = 512): Promise<RgbImage> {
  const opened = await openImage(bytes);
  const target = fitInside(opened.source.width, opened.source.height, maxSize);
  const resize = target.width !== opened.source.width || target.height !== opened.source.height;
  let img: RgbImage;
  if (!resize && opened.rgb) img = opened.rgb;
  else {
    if (resize) opened.pipeline.resize(target.width, target.height, { fit: 'fill' });
    img = await rawRgb(opened.pipeline, opened.source.format);
  }
  const { L, a, b } = rgbToLab(img);
  return labToRgbFast(claheOpenCv(L, img.width, img.height), a, b, img.width, img.height);
}

/**
 * Variant B: the colour conversions and CLAHE done by OpenCV.js (already loaded for segmentation): OpenCV's
 * own code, so the output is OpenCV's (up to its wasm build), ~6 ms for a 512x512 image on one thread.
 */
export async function proposedPreprocessCvJs(bytes: Uint8Array, maxSize = 512): Promise<RgbImage> {
  const opened = await openImage(bytes);
  const target = fitInside(opened.source.width, opened.source.height, maxSize);
  const resize = target.width !== opened.source.width || target.height !== opened.source.height;
  let img: RgbImage;
  if (!resize && opened.rgb) img = opened.rgb;
  else {
    if (resize) opened.pipeline.resize(target.width, target.height, { fit: 'fill' });
    img = await rawRgb(opened.pipeline, opened.source.format);
  }
  return withCv((cv, scope) => {
    const src = scope.track(new cv.Mat(img.height, img.width, cv.CV_8UC3));
    src.data.set(img.data);
    const lab = scope.track(new cv.Mat());
    cv.cvtColor(src, lab, cv.COLOR_RGB2Lab);
    const planes = scope.track(new cv.MatVector());
    cv.split(lab, planes);
    const l = scope.track(planes.get(0));
    const eq = scope.track(new cv.Mat());
    const clahe = scope.track(new cv.CLAHE(1.0, new cv.Size(8, 8)));
    clahe.apply(l, eq);
    planes.set(0, eq);
    cv.merge(planes, lab);
    const out = scope.track(new cv.Mat());
    cv.cvtColor(lab, out, cv.COLOR_Lab2RGB);
    return { width: img.width, height: img.height, data: new Uint8Array(out.data) };
  });
}
