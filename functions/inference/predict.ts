/**
 * One prediction: preprocess like the pipeline, segment the nucleated cells, classify their crops with the
 * model, draw the model's calls (plasma red, other green) and, on request, explain chosen cells.
 */
import * as tf from '@tensorflow/tfjs';
import { preprocessImage } from '../../layers/core/src/image/index.ts';
import { cellCrops, overlayPng, segmentCells } from '../../layers/core/src/segment/index.ts';
import { CROP_OPTIONS } from '../../layers/core/src/pipeline.ts';
import { cropsToTensor } from '../../layers/core/src/ml/data.ts';
import { predictScores } from '../../layers/core/src/ml/evaluate.ts';
import type { BBox, CellClass } from '../../layers/core/src/types.ts';
import type { LoadedModel } from './model.ts';
import { cropPng, heatmapPng, saliencyMaps } from './explain.ts';

export interface PredictOptions {
  maxSize: number;
  /** Cell-level decision threshold on P(plasma). */
  cellThreshold: number;
  /** Image-level threshold on the plasma-cell fraction of nucleated cells. */
  fractionThreshold: number;
  /** 'all', or the ids of the cells to explain. */
  explain: 'all' | number[];
}

export interface CellResult {
  id: number;
  bbox: BBox;
  area: number;
  centroid: { x: number; y: number };
  class: CellClass;
  probability: number;
  /** With explain: the crop the model saw, and its saliency map over it (PNG, base64). */
  explanation?: { method: 'saliency'; cropPng: string; heatmapPng: string };
}

export async function predict(bytes: Uint8Array, m: LoadedModel, opts: PredictOptions) {
  const pre = await preprocessImage(bytes, { maxSize: opts.maxSize });
  const image = pre.image;
  const seg = await segmentCells(image);
  const crops = cellCrops(image, seg, m.inputSize, CROP_OPTIONS);
  const wanted = new Set(opts.explain === 'all' ? crops.map((c) => c.id) : opts.explain);
  let probs: Float32Array = new Float32Array(0);
  const maps = new Map<number, Float32Array>();
  if (crops.length) {
    const x = cropsToTensor(crops.map((c) => c.image));
    try {
      probs = await predictScores(m.model, x, 64);
      const idx = crops.map((c, i) => (wanted.has(c.id) ? i : -1)).filter((i) => i >= 0);
      if (idx.length) {
        const sub = tf.gather(x, idx);
        try {
          const s = await saliencyMaps(m.model, sub);
          idx.forEach((i, k) => maps.set((crops[i] as { id: number }).id, s[k] as Float32Array));
        } finally {
          sub.dispose();
        }
      }
    } finally {
      x.dispose();
    }
  }
  const cells: CellResult[] = await Promise.all(
    seg.cells.map(async (c, i) => {
      // The call follows the probability as reported, so a client re-applying the threshold agrees.
      const p = round(probs[i] ?? 0, 4);
      const out: CellResult = {
        id: c.id,
        bbox: c.bbox,
        area: c.area,
        centroid: { x: round(c.centroid.x, 1), y: round(c.centroid.y, 1) },
        class: p >= opts.cellThreshold ? 'plasma' : 'other',
        probability: p,
      };
      const map = maps.get(c.id);
      const crop = crops[i];
      if (map && crop) {
        const [cp, hp] = await Promise.all([cropPng(crop.image), heatmapPng(crop.image, map)]);
        out.explanation = { method: 'saliency', cropPng: cp.toString('base64'), heatmapPng: hp.toString('base64') };
      }
      return out;
    }),
  );
  // The overlay shows the model's calls, not mask labels (there is no mask at inference).
  const overlay = await overlayPng(image, seg, seg.cells.map((c, i) => ({ ...c, label: cells[i]?.class ?? 'other' })));
  const plasma = cells.filter((c) => c.class === 'plasma').length;
  const fraction = cells.length ? plasma / cells.length : 0;
  const unknown = opts.explain === 'all' ? [] : opts.explain.filter((id) => !seg.cells.some((c) => c.id === id));
  return {
    runId: m.runId,
    model: { runId: m.runId, publishedAt: m.publishedAt, inputSize: m.inputSize },
    image: { width: pre.source.width, height: pre.source.height, format: pre.source.format, analysedWidth: image.width, analysedHeight: image.height },
    counts: { nucleated: cells.length, plasma, other: cells.length - plasma },
    nucleatedCellCount: cells.length,
    plasmaCellCount: plasma,
    plasmaCellFraction: round(fraction, 4),
    call: {
      label: fraction >= opts.fractionThreshold ? 'plasma-cell-fraction-high' : 'plasma-cell-fraction-low',
      threshold: opts.fractionThreshold,
      cellProbabilityThreshold: opts.cellThreshold,
      note: 'research use only: a count on one field of view, not a diagnosis',
    },
    cells,
    ...(unknown.length ? { explainNotFound: unknown } : {}),
    overlayPng: overlay.toString('base64'),
  };
}

function round(v: number, places: number): number {
  const f = 10 ** places;
  return Math.round(v * f) / f;
}
