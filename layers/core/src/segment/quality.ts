/** How well a segmentation delineates and counts the plasma cells of a reference mask. */
import type { GrayImage } from '../types.ts';
import { assertSameSize, labelCells, MASK_THRESHOLD } from './label.ts';
import type { Segmentation } from './segment.ts';

export interface InstanceMatch {
  /** 1-based index of the mask's connected component (row-major order of first pixel). */
  component: number;
  area: number;
  /** Cell with the highest IoU with this component, 0 if no cell touches it. */
  bestCellId: number;
  bestIou: number;
  /**
   * IoU of the component with the union of the cells lying mostly (> 50%) inside it. The bundled masks
   * merge touching plasma cells into one component; this scores delineation without penalising the split.
   */
  groupIou: number;
}

export interface SegmentationQuality {
  /** Pixel IoU between the mask and the union of cells labelled plasma by overlap (1 if both are empty). */
  iou: number;
  /** Pixel Dice between the same two sets (1 if both are empty). */
  dice: number;
  /** One row per mask component (plasma-cell instance, or a clump of touching ones). */
  instances: InstanceMatch[];
  /** Mean of `bestIou` over the components (1 if the mask is empty). */
  meanInstanceIou: number;
  /** Components whose best cell has IoU >= 0.5. */
  matched: number;
  /** matched / components (1 if the mask is empty). */
  recall50: number;
  /** Components whose groupIou >= 0.5, over components (1 if the mask is empty). */
  groupRecall50: number;
  /** Cells labelled plasma (overlap >= minOverlap). */
  plasmaCells: number;
  /** Connected components of the mask of at least `minComponentArea` pixels. */
  maskComponents: number;
  /** plasmaCells - maskComponents. */
  countError: number;
  absCountError: number;
  /** All segmented (nucleated) cells. */
  nucleatedCells: number;
}

export interface QualityOptions {
  /** Fraction of a cell inside the mask for it to count as plasma (default 0.5). */
  minOverlap?: number;
  /**
   * Mask components smaller than this many pixels are JPEG noise, not cells, and are ignored for the
   * instance and count metrics (default 0.2% of the image: a plasma cell covers about 2% at 512x512).
   */
  minComponentArea?: number;
}

/** 8-connected components of `mask > MASK_THRESHOLD`; labels 1..n in row-major order of first pixel. */
export function maskComponents(mask: GrayImage): { labels: Int32Array; count: number; areas: number[] } {
  const { width, height, data } = mask;
  const labels = new Int32Array(width * height);
  const areas: number[] = [0];
  const stack: number[] = [];
  let count = 0;
  for (let start = 0; start < labels.length; start++) {
    if (labels[start] !== 0 || data[start] <= MASK_THRESHOLD) continue;
    count++;
    let area = 0;
    labels[start] = count;
    stack.push(start);
    while (stack.length > 0) {
      const p = stack.pop() as number;
      area++;
      const x = p % width;
      const y = (p - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        const ny = y + dy;
        if (ny < 0 || ny >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          if (nx < 0 || nx >= width) continue;
          const q = ny * width + nx;
          if (labels[q] === 0 && data[q] > MASK_THRESHOLD) {
            labels[q] = count;
            stack.push(q);
          }
        }
      }
    }
    areas.push(area);
  }
  return { labels, count, areas };
}

export function segmentationQuality(
  seg: Segmentation,
  plasmaMask: GrayImage,
  opts: QualityOptions = {},
): SegmentationQuality {
  assertSameSize(seg, plasmaMask);
  const minOverlap = opts.minOverlap ?? 0.5;
  const minComponentArea = opts.minComponentArea ?? Math.round(0.002 * seg.width * seg.height);
  const cells = labelCells(seg, plasmaMask, minOverlap);
  const isPlasma = new Uint8Array(cells.length + 1);
  for (const c of cells) if (c.label === 'plasma') isPlasma[c.id] = 1;

  // (a) pixel overlap of the plasma-labelled union with the whole mask (noise specks included: they are
  // part of the reference as given, and too small to move the numbers).
  let inter = 0;
  let predicted = 0;
  let reference = 0;
  const { labels } = seg;
  const mask = plasmaMask.data;
  for (let i = 0; i < labels.length; i++) {
    const p = isPlasma[labels[i]] === 1;
    const m = mask[i] > MASK_THRESHOLD;
    if (p) predicted++;
    if (m) reference++;
    if (p && m) inter++;
  }
  const union = predicted + reference - inter;
  const iou = union === 0 ? 1 : inter / union;
  const dice = predicted + reference === 0 ? 1 : (2 * inter) / (predicted + reference);

  // (b) per component: intersection with every cell, from one pass over the pixels.
  const comps = maskComponents(plasmaMask);
  const cellArea = new Float64Array(cells.length + 1);
  const overlaps = new Map<number, number>(); // key: component * (nCells + 1) + cell
  const stride = cells.length + 1;
  for (let i = 0; i < labels.length; i++) {
    const cell = labels[i];
    if (cell !== 0) cellArea[cell]++;
    const comp = comps.labels[i];
    if (comp !== 0 && cell !== 0) {
      const key = comp * stride + cell;
      overlaps.set(key, (overlaps.get(key) ?? 0) + 1);
    }
  }
  const best = new Map<number, { cell: number; iou: number }>();
  // Sorted keys: ties between cells resolve to the lowest id, independent of pixel order.
  for (const key of [...overlaps.keys()].sort((a, b) => a - b)) {
    const n = overlaps.get(key) as number;
    const comp = Math.floor(key / stride);
    const cell = key % stride;
    const cIou = n / (comps.areas[comp] + cellArea[cell] - n);
    const prev = best.get(comp);
    if (prev === undefined || cIou > prev.iou) best.set(comp, { cell, iou: cIou });
  }
  // Groups: each cell joins the component holding more than half of its pixels (at most one can).
  const groupInter = new Float64Array(comps.count + 1);
  const groupArea = new Float64Array(comps.count + 1);
  for (const key of overlaps.keys()) {
    const n = overlaps.get(key) as number;
    const comp = Math.floor(key / stride);
    const cell = key % stride;
    if (2 * n > cellArea[cell]) {
      groupInter[comp] += n;
      groupArea[comp] += cellArea[cell];
    }
  }
  const instances: InstanceMatch[] = [];
  for (let comp = 1; comp <= comps.count; comp++) {
    if (comps.areas[comp] < minComponentArea) continue;
    const b = best.get(comp);
    const gUnion = comps.areas[comp] + groupArea[comp] - groupInter[comp];
    instances.push({
      component: comp,
      area: comps.areas[comp],
      bestCellId: b?.cell ?? 0,
      bestIou: b?.iou ?? 0,
      groupIou: gUnion === 0 ? 0 : groupInter[comp] / gUnion,
    });
  }
  const matched = instances.filter((m) => m.bestIou >= 0.5).length;
  const groupMatched = instances.filter((m) => m.groupIou >= 0.5).length;
  const plasmaCells = cells.filter((c) => c.label === 'plasma').length;
  const countError = plasmaCells - instances.length;
  return {
    iou,
    dice,
    instances,
    meanInstanceIou: instances.length === 0 ? 1 : instances.reduce((s, m) => s + m.bestIou, 0) / instances.length,
    matched,
    recall50: instances.length === 0 ? 1 : matched / instances.length,
    groupRecall50: instances.length === 0 ? 1 : groupMatched / instances.length,
    plasmaCells,
    maskComponents: instances.length,
    countError,
    absCountError: Math.abs(countError),
    nucleatedCells: cells.length,
  };
}
