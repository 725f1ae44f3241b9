/** Raw pixels <-> PNG, via sharp. PNG is the lossless interchange format between pipeline steps. */
import sharp from 'sharp';
import type { GrayImage, RgbImage } from '../types.ts';
import { CorruptImageError, UnsupportedFormatError } from '../errors.ts';
import { sniffFormat } from './decode.ts';

function channelsOf(img: RgbImage | GrayImage): 1 | 3 {
  const px = img.width * img.height;
  if (px > 0 && img.data.length === px * 3) return 3;
  if (px > 0 && img.data.length === px) return 1;
  throw new RangeError(`image data has ${img.data.length} bytes, expected ${px} (grey) or ${px * 3} (RGB)`);
}

/** Lossless PNG of an RGB or grey image (grey stays 1 channel). */
export async function encodePng(img: RgbImage | GrayImage): Promise<Buffer> {
  const channels = channelsOf(img);
  const pipeline = sharp(img.data, { raw: { width: img.width, height: img.height, channels } });
  // Without an explicit b-w interpretation sharp would write a 1-channel raw input as 3-channel sRGB.
  if (channels === 1) pipeline.toColourspace('b-w');
  return pipeline.png().toBuffer();
}

async function pngPixels(bytes: Uint8Array, grey: boolean): Promise<{ data: Uint8Array; width: number; height: number }> {
  const format = sniffFormat(bytes);
  if (format !== 'png') throw new UnsupportedFormatError(`expected a PNG, got ${format.toUpperCase()}`);
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    const { data, info } = await sharp(buf)
      .flatten({ background: '#ffffff' })
      .toColourspace(grey ? 'b-w' : 'srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new CorruptImageError(`the PNG file cannot be decoded (corrupt or truncated): ${msg}`, { cause: err });
  }
}

/** PNG bytes -> 8-bit RGB (alpha flattened onto white, grey expanded). */
export async function rgbFromPng(bytes: Uint8Array): Promise<RgbImage> {
  return pngPixels(bytes, false);
}

/** PNG bytes -> 8-bit grey (e.g. a stored mask). */
export async function grayFromPng(bytes: Uint8Array): Promise<GrayImage> {
  return pngPixels(bytes, true);
}

/** Resizes to exactly width x height (no aspect handling: callers pass the size they need). */
export async function resizeRgb(img: RgbImage, width: number, height: number): Promise<RgbImage> {
  channelsOf(img);
  const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { fit: 'fill' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}
