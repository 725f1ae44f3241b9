/**
 * The report's charts, rendered without a browser: Vega-Lite spec -> Vega view (renderer 'none') -> SVG ->
 * PNG with sharp (librsvg). Sizes are fixed (autosize fit to the padding box) so a chart's pixels are known.
 */
import sharp from 'sharp';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { ConfusionMatrix, RocPoint } from '../ml/metrics.ts';
import type { EpochLog } from '../ml/train.ts';
import type { BootstrapInterval } from './bootstrap.ts';

export interface RenderedChart {
  svg: string;
  png: Buffer;
  /** PNG size in pixels: the spec's width and height times `scale`. */
  width: number;
  height: number;
}

export const CHART_SCALE = 2;

/** Renders a Vega-Lite spec of explicit width and height; the PNG is exactly width*scale x height*scale. */
export async function renderChart(spec: TopLevelSpec, scale = CHART_SCALE): Promise<RenderedChart> {
  const full = { autosize: { type: 'fit', contains: 'padding' }, background: 'white', ...spec } as TopLevelSpec;
  const view = new vega.View(vega.parse(compile(full).spec), { renderer: 'none' });
  try {
    const svg = await view.toSVG(scale);
    const png = await sharp(Buffer.from(svg)).png().toBuffer();
    const meta = await sharp(png).metadata();
    return { svg, png, width: meta.width ?? 0, height: meta.height ?? 0 };
  } finally {
    view.finalize();
  }
}

let fontCheck: Promise<boolean> | undefined;

/**
 * Whether librsvg can draw text here (it needs system fonts via fontconfig; a bare Lambda image has none).
 * Without fonts the report embeds the charts as SVG, which a browser draws with its own fonts.
 */
export function textRenders(): Promise<boolean> {
  fontCheck ??= (async () => {
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="60" height="30"><rect width="60" height="30" fill="white"/><text x="4" y="22" font-family="sans-serif" font-size="20" fill="black">Ag</text></svg>';
    try {
      const { channels } = await sharp(Buffer.from(svg)).stats();
      return (channels[0]?.min ?? 255) < 128;
    } catch {
      return false;
    }
  })();
  return fontCheck;
}

const W = 420;
const H = 280;

/** Train and validation curves of one quantity per epoch. */
export function curveSpec(epochs: readonly EpochLog[], quantity: 'loss' | 'accuracy'): TopLevelSpec {
  const rows = epochs.flatMap((e) => {
    const train = quantity === 'loss' ? e.loss : e.acc;
    const val = quantity === 'loss' ? e.valLoss : e.valAcc;
    return [{ epoch: e.epoch, set: 'train', value: train }, ...(val === undefined ? [] : [{ epoch: e.epoch, set: 'validation', value: val }])];
  });
  return {
    width: W,
    height: H,
    title: quantity === 'loss' ? 'Loss per epoch (binary cross-entropy)' : 'Accuracy per epoch (threshold 0.5)',
    data: { values: rows },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'epoch', type: 'quantitative', axis: { tickMinStep: 1, title: 'epoch' } },
      y: { field: 'value', type: 'quantitative', title: quantity, scale: quantity === 'accuracy' ? { domain: [0, 1] } : { zero: true } },
      color: { field: 'set', type: 'nominal', title: null, scale: { domain: ['train', 'validation'], range: ['#1f77b4', '#ff7f0e'] } },
    },
  };
}

/** 2x2 heat map, rows = mask label, columns = model's call, with counts (and their intervals) printed. */
export function confusionSpec(cm: ConfusionMatrix, ci?: Record<'tn' | 'fp' | 'fn' | 'tp', BootstrapInterval>): TopLevelSpec {
  const cell = (truth: string, call: string, k: 'tn' | 'fp' | 'fn' | 'tp') => {
    const c = ci?.[k].ci;
    return { truth, call, count: cm[k], label: c ? `${cm[k]} [${c[0].toFixed(0)}–${c[1].toFixed(0)}]` : String(cm[k]) };
  };
  const rows = [cell('other', 'other', 'tn'), cell('other', 'plasma', 'fp'), cell('plasma', 'other', 'fn'), cell('plasma', 'plasma', 'tp')];
  const order = ['other', 'plasma'];
  return {
    width: 320,
    height: 280,
    title: 'Confusion matrix (held-out cells)',
    data: { values: rows },
    encoding: {
      x: { field: 'call', type: 'nominal', sort: order, title: "model's call", axis: { labelAngle: 0 } },
      y: { field: 'truth', type: 'nominal', sort: order, title: 'mask label' },
    },
    layer: [
      { mark: 'rect', encoding: { color: { field: 'count', type: 'quantitative', scale: { scheme: 'blues' }, legend: null } } },
      {
        mark: { type: 'text', fontSize: 14 },
        encoding: {
          text: { field: 'label', type: 'nominal' },
          color: { condition: { test: `datum.count > ${Math.max(cm.tn, cm.fp, cm.fn, cm.tp) / 2}`, value: 'white' }, value: 'black' },
        },
      },
    ],
  };
}

/** ROC curve with the chance diagonal; the title carries the AUC and its interval. */
export function rocSpec(points: readonly RocPoint[], auc: number | null, ci: [number, number] | null): TopLevelSpec {
  const title = auc === null ? 'ROC curve (AUC undefined)' : `ROC curve, AUC ${auc.toFixed(3)}${ci ? ` [${ci[0].toFixed(3)}, ${ci[1].toFixed(3)}]` : ''}`;
  return {
    width: 340,
    height: 340,
    title,
    layer: [
      {
        data: { values: [{ fpr: 0, tpr: 0 }, { fpr: 1, tpr: 1 }] },
        mark: { type: 'line', strokeDash: [4, 4], color: '#999' },
        encoding: { x: { field: 'fpr', type: 'quantitative' }, y: { field: 'tpr', type: 'quantitative' } },
      },
      {
        data: { values: points.map((p, i) => ({ fpr: p.fpr, tpr: p.tpr, order: i })) },
        mark: { type: 'line', color: '#d62728', interpolate: 'linear' },
        encoding: {
          x: { field: 'fpr', type: 'quantitative', title: 'false positive rate (1 - specificity)', scale: { domain: [0, 1] } },
          y: { field: 'tpr', type: 'quantitative', title: 'true positive rate (sensitivity)', scale: { domain: [0, 1] } },
          order: { field: 'order', type: 'quantitative' },
        },
      },
    ],
  };
}

/** Predicted vs mask-labelled plasma cells per held-out image, with the identity line. */
export function countSpec(perImage: readonly { image: string; plasmaTrue: number; plasmaPredicted: number }[]): TopLevelSpec {
  const max = Math.max(1, ...perImage.map((r) => Math.max(r.plasmaTrue, r.plasmaPredicted)));
  return {
    width: 340,
    height: 340,
    title: 'Plasma cells per held-out image',
    layer: [
      {
        data: { values: [{ a: 0, b: 0 }, { a: max, b: max }] },
        mark: { type: 'line', strokeDash: [4, 4], color: '#999' },
        encoding: { x: { field: 'a', type: 'quantitative' }, y: { field: 'b', type: 'quantitative' } },
      },
      {
        data: { values: perImage.map((r) => ({ image: r.image.split('/').pop(), truth: r.plasmaTrue, predicted: r.plasmaPredicted })) },
        mark: { type: 'circle', size: 60, color: '#1f77b4', opacity: 0.8 },
        encoding: {
          x: { field: 'truth', type: 'quantitative', title: 'by mask label', scale: { domain: [0, max] } },
          y: { field: 'predicted', type: 'quantitative', title: 'by the model', scale: { domain: [0, max] } },
        },
      },
    ],
  };
}
