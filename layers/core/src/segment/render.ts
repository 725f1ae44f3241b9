/** Images derived from a segmentation: ROI mask, masked image, annotated overlay, per-cell crops. */
import sharp from 'sharp';
import type { Cell, GrayImage, RgbImage } from '../types.ts';
import { withCv } from './opencv.ts';
import type { Segmentation } from './segment.ts';

function assertMatches(img: RgbImage, seg: Segmentation): void {
  if (img.width !== seg.width || img.height !== seg.height) {
    throw new RangeError(`image is ${img.width}x${img.height} but the segmentation is ${seg.width}x${seg.height}`);
  }
  if (img.data.length !== img.width * img.height * 3) {
    throw new RangeError(`image data has ${img.data.length} bytes, expected ${img.width * img.height * 3} (RGB)`);
  }
}

async function pngOf(data: Uint8Array, width: number, height: number, channels: 1 | 3): Promise<Buffer> {
  const pipeline = sharp(data, { raw: { width, height, channels } });
  // Without an explicit b-w interpretation sharp writes a 1-channel raw input as 3-channel sRGB.
  if (channels === 1) pipeline.toColourspace('b-w');
  return pipeline.png().toBuffer();
}

/** The ROI mask (255 inside any cell) as a one-channel PNG. */
export function roiMaskPng(seg: Segmentation): Promise<Buffer> {
  return pngOf(seg.roiMask.data, seg.width, seg.height, 1);
}

/** The image with every pixel outside all cells set to 0 (black): the CNN input of the original project. */
export function roiImage(img: RgbImage, seg: Segmentation): RgbImage {
  assertMatches(img, seg);
  const out = new Uint8Array(img.data.length);
  const { labels } = seg;
  for (let p = 0; p < labels.length; p++) {
    if (labels[p] === 0) continue;
    out[p * 3] = img.data[p * 3];
    out[p * 3 + 1] = img.data[p * 3 + 1];
    out[p * 3 + 2] = img.data[p * 3 + 2];
  }
  return { width: img.width, height: img.height, data: out };
}

const COLOURS = {
  plasma: [255, 40, 40],
  other: [40, 220, 40],
  unlabelled: [255, 230, 0],
} as const;

/**
 * PNG of the image with the contour of each given cell (plasma red, other green, unlabelled yellow)
 * and its id. Only `cells` are drawn, so a caller can pass a subset or cells relabelled elsewhere.
 */
export async function overlayPng(img: RgbImage, seg: Segmentation, cells: readonly Cell[]): Promise<Buffer> {
  assertMatches(img, seg);
  const { width: w, height: h } = img;
  const colourOf = new Map<number, readonly number[]>();
  for (const c of cells) colourOf.set(c.id, c.label === undefined ? COLOURS.unlabelled : COLOURS[c.label]);
  const out = Uint8Array.from(img.data);
  const { labels } = seg;
  // Contour = cell pixels with a 4-neighbour outside the cell; thickened inwards at larger images.
  const thickness = Math.max(1, Math.round(Math.max(w, h) / 400));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      const colour = colourOf.get(labels[p]);
      if (colour === undefined) continue;
      let edge = false;
      for (let d = 1; d <= thickness && !edge; d++) {
        edge =
          x < d || y < d || x >= w - d || y >= h - d ||
          labels[p - d] !== labels[p] || labels[p + d] !== labels[p] ||
          labels[p - d * w] !== labels[p] || labels[p + d * w] !== labels[p];
      }
      if (!edge) continue;
      out[p * 3] = colour[0];
      out[p * 3 + 1] = colour[1];
      out[p * 3 + 2] = colour[2];
    }
  }
  await withCv((cv, scope) => {
    const mat = scope.track(new cv.Mat(h, w, cv.CV_8UC3));
    mat.data.set(out);
    const fontScale = 0.35 * Math.max(1, Math.max(w, h) / 512);
    for (const c of cells) {
      // Roughly centred: Hershey simplex glyphs are about 20 px wide and 22 px tall at scale 1.
      const text = String(c.id);
      const org = new cv.Point(
        Math.round(c.centroid.x - (text.length * 20 * fontScale) / 2),
        Math.round(c.centroid.y + (22 * fontScale) / 2),
      );
      // Dark outline under light text: readable on both pale glass and dark nuclei.
      cv.putText(mat, text, org, cv.FONT_HERSHEY_SIMPLEX, fontScale, new cv.Scalar(0, 0, 0, 255), 3);
      cv.putText(mat, text, org, cv.FONT_HERSHEY_SIMPLEX, fontScale, new cv.Scalar(255, 255, 255, 255), 1);
    }
    out.set(mat.data);
  });
  return pngOf(out, w, h, 3);
}

export interface CropOptions {
  /**
   * 'cell' (default): pixels not belonging to the cell (neighbouring cells and background) are set to 0.
   * A crop then shows exactly the cell its label describes - a plasma cell's crop never contains the
   * lymphocyte next to it - and matches roiImage's convention of black outside the ROI.
   * 'none': the raw neighbourhood, for viewing.
   */
  mask?: 'cell' | 'none';
  /** Extra context around the bounding box, as a fraction of its longer side (default 0.1). */
  margin?: number;
  /**
   * Smallest square side in pixels of the analysed image (default 0: the square fits the cell). With a
   * floor, cells smaller than it are cut at one fixed scale, so the crop keeps the cell's size, which a
   * fitted crop resizes away (a small lymphocyte and a large plasma cell would fill the crop alike).
   */
  minSide?: number;
}

/**
 * Resample an RGB square to size x size: area averaging when shrinking (no aliasing of chromatin
 * texture), bilinear when enlarging. Pure JS so crops need no OpenCV runtime and stay synchronous.
 */
export function resizeSquare(src: Uint8Array, side: number, size: number): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  if (side === size) {
    out.set(src);
    return out;
  }
  if (side > size) {
    const scale = side / size;
    const acc = new Float64Array(3);
    for (let oy = 0; oy < size; oy++) {
      const y0 = oy * scale;
      const y1 = y0 + scale;
      for (let ox = 0; ox < size; ox++) {
        const x0 = ox * scale;
        const x1 = x0 + scale;
        acc.fill(0);
        let weight = 0;
        for (let sy = Math.floor(y0); sy < Math.min(side, Math.ceil(y1)); sy++) {
          const wy = Math.min(y1, sy + 1) - Math.max(y0, sy);
          for (let sx = Math.floor(x0); sx < Math.min(side, Math.ceil(x1)); sx++) {
            const wgt = wy * (Math.min(x1, sx + 1) - Math.max(x0, sx));
            const i = (sy * side + sx) * 3;
            acc[0] += wgt * src[i];
            acc[1] += wgt * src[i + 1];
            acc[2] += wgt * src[i + 2];
            weight += wgt;
          }
        }
        const o = (oy * size + ox) * 3;
        for (let c = 0; c < 3; c++) out[o + c] = Math.round(acc[c] / weight);
      }
    }
    return out;
  }
  // Enlarging: sample at pixel centres (half-pixel convention, edges clamped).
  const scale = side / size;
  for (let oy = 0; oy < size; oy++) {
    const fy = Math.min(side - 1, Math.max(0, (oy + 0.5) * scale - 0.5));
    const y0 = Math.floor(fy);
    const y1 = Math.min(side - 1, y0 + 1);
    const ty = fy - y0;
    for (let ox = 0; ox < size; ox++) {
      const fx = Math.min(side - 1, Math.max(0, (ox + 0.5) * scale - 0.5));
      const x0 = Math.floor(fx);
      const x1 = Math.min(side - 1, x0 + 1);
      const tx = fx - x0;
      const o = (oy * size + ox) * 3;
      for (let c = 0; c < 3; c++) {
        const top = src[(y0 * side + x0) * 3 + c] * (1 - tx) + src[(y0 * side + x1) * 3 + c] * tx;
        const bottom = src[(y1 * side + x0) * 3 + c] * (1 - tx) + src[(y1 * side + x1) * 3 + c] * tx;
        out[o + c] = Math.round(top * (1 - ty) + bottom * ty);
      }
    }
  }
  return out;
}

/**
 * One size x size RGB crop per cell, in cell order: a square centred on the cell's bounding box,
 * side = longer bbox side plus a margin on each side (at least minSide), zero-padded where it leaves the image,
 * then resized.
 */
export function cellCrops(
  img: RgbImage,
  seg: Segmentation,
  size = 64,
  opts: CropOptions = {},
): { id: number; image: RgbImage }[] {
  assertMatches(img, seg);
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`crop size must be a positive integer, got ${size}`);
  const maskMode = opts.mask ?? 'cell';
  const marginFrac = opts.margin ?? 0.1;
  if (!(marginFrac >= 0)) throw new RangeError(`crop margin must be >= 0, got ${marginFrac}`);
  const minSide = opts.minSide ?? 0;
  if (!(minSide >= 0)) throw new RangeError(`crop minSide must be >= 0, got ${minSide}`);
  const { width: w, height: h } = img;
  const { labels } = seg;
  return seg.cells.map((cell) => {
    const { bbox } = cell;
    const side = Math.max(1, Math.ceil(minSide), Math.ceil(Math.max(bbox.width, bbox.height) * (1 + 2 * marginFrac)));
    const x0 = Math.round(bbox.x + bbox.width / 2 - side / 2);
    const y0 = Math.round(bbox.y + bbox.height / 2 - side / 2);
    const square = new Uint8Array(side * side * 3);
    for (let sy = Math.max(0, -y0); sy < Math.min(side, h - y0); sy++) {
      const y = y0 + sy;
      for (let sx = Math.max(0, -x0); sx < Math.min(side, w - x0); sx++) {
        const p = y * w + x0 + sx;
        if (maskMode === 'cell' && labels[p] !== cell.id) continue;
        const q = (sy * side + sx) * 3;
        square[q] = img.data[p * 3];
        square[q + 1] = img.data[p * 3 + 1];
        square[q + 2] = img.data[p * 3 + 2];
      }
    }
    return { id: cell.id, image: { width: size, height: size, data: resizeSquare(square, side, size) } };
  });
}

/** PNG bytes of an RGB (crop) or one-channel image. */
export function encodeCropPng(image: RgbImage | GrayImage): Promise<Buffer> {
  const channels = image.data.length === image.width * image.height ? 1 : 3;
  if (image.data.length !== image.width * image.height * channels) {
    throw new RangeError(`image data has ${image.data.length} bytes for ${image.width}x${image.height}`);
  }
  return pngOf(image.data, image.width, image.height, channels);
}
