/**
 * The model's calls drawn on a held-out image: one box per cell, coloured by the call, solid where the call
 * agrees with the mask label and dashed where it does not. Boxes are an SVG layer composited with sharp, so
 * no segmentation labels or OpenCV are needed, only the bboxes from cells.json.
 */
import sharp from 'sharp';
import type { BBox } from '../types.ts';

export interface CalledCell {
  bbox: BBox;
  /** The model's call at the report threshold. */
  call: 0 | 1;
  /** The mask label. */
  label: 0 | 1;
}

export const CALL_COLOURS = { plasma: '#ff1f5a', other: '#22d36b' } as const;

/** PNG of `image` (any format sharp reads) with the cells' boxes. */
export async function callsOverlayPng(image: Uint8Array, cells: readonly CalledCell[]): Promise<Buffer> {
  const meta = await sharp(image).metadata();
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  const stroke = Math.max(2, Math.round(Math.max(w, h) / 256));
  const rects = cells
    .map((c) => {
      const colour = c.call === 1 ? CALL_COLOURS.plasma : CALL_COLOURS.other;
      const dash = c.call === c.label ? '' : ` stroke-dasharray="${stroke * 2},${stroke * 1.5}"`;
      const { x, y, width, height } = c.bbox;
      return `<rect x="${x}" y="${y}" width="${width}" height="${height}" fill="none" stroke="${colour}" stroke-width="${stroke}"${dash}/>`;
    })
    .join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}">${rects}</svg>`;
  return sharp(image).removeAlpha().composite([{ input: Buffer.from(svg), top: 0, left: 0 }]).png().toBuffer();
}
