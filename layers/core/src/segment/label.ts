/** Label segmented cells as plasma / other by their overlap with a plasma-cell mask. */
import type { Cell, GrayImage } from '../types.ts';
import type { Segmentation } from './segment.ts';

/** Mask pixels above this value are inside a plasma cell (as the image module: lossy JPEG masks, > 127). */
export const MASK_THRESHOLD = 127;

export function assertSameSize(seg: Segmentation, mask: GrayImage): void {
  if (mask.width !== seg.width || mask.height !== seg.height) {
    throw new RangeError(`mask is ${mask.width}x${mask.height} but the segmentation is ${seg.width}x${seg.height}`);
  }
  if (mask.data.length !== mask.width * mask.height) {
    throw new RangeError(`mask data has ${mask.data.length} bytes, expected ${mask.width * mask.height}`);
  }
}

/**
 * Copies of `seg.cells` with `label` ('plasma' when at least `minOverlap` of the cell's pixels are inside
 * the mask, else 'other') and `maskOverlap` set. The input cells are not modified.
 */
export function labelCells(seg: Segmentation, plasmaMask: GrayImage, minOverlap = 0.5): Cell[] {
  assertSameSize(seg, plasmaMask);
  const inside = new Float64Array(seg.cells.length + 1);
  const total = new Float64Array(seg.cells.length + 1);
  const { labels } = seg;
  const mask = plasmaMask.data;
  for (let i = 0; i < labels.length; i++) {
    const id = labels[i];
    if (id === 0) continue;
    total[id]++;
    if (mask[i] > MASK_THRESHOLD) inside[id]++;
  }
  return seg.cells.map((cell) => {
    const overlap = total[cell.id] > 0 ? inside[cell.id] / total[cell.id] : 0;
    return { ...cell, label: overlap >= minOverlap ? 'plasma' : 'other', maskOverlap: overlap };
  });
}
