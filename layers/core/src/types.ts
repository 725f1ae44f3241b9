/** Interleaved 8-bit sRGB pixels, row-major, 3 channels (R, G, B). */
export interface RgbImage {
  width: number;
  height: number;
  /** length = width * height * 3 */
  data: Uint8Array;
}

/** One-channel 8-bit image (masks: 0 or 255). */
export interface GrayImage {
  width: number;
  height: number;
  /** length = width * height */
  data: Uint8Array;
}

export type CellClass = 'plasma' | 'other';

export interface BBox {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** One nucleated cell found by segmentation. */
export interface Cell {
  /** 1-based, stable for a given image and segmentation parameters. */
  id: number;
  bbox: BBox;
  /** pixels */
  area: number;
  centroid: { x: number; y: number };
  /** Set when a plasma-cell mask accompanies the image: label by overlap. */
  label?: CellClass;
  /** Fraction of the cell's pixels inside the plasma-cell mask (when a mask is present). */
  maskOverlap?: number;
}
