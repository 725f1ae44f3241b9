// Image decoding, preprocessing and encoding, on the bundled SegPC-2021 images (512 x 512 JPEG) and masks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import bmp from 'bmp-js';
import type { GrayImage, RgbImage } from '../layers/core/src/types.ts';
import {
  CorruptImageError,
  EmptyInputError,
  ImageLimitError,
  InvalidInputError,
  UnsupportedFormatError,
  isInputError,
} from '../layers/core/src/errors.ts';
import {
  applyClahe,
  claheMaxSlopeFor,
  claheWindowFor,
  decodeImage,
  decodeMask,
  encodePng,
  grayFromPng,
  preprocessImage,
  preprocessMask,
  resizeRgb,
  rgbFromPng,
  rgbToLab,
} from '../layers/core/src/image/index.ts';
import { linearToSrgb8 } from '../layers/core/src/image/preprocess.ts';

const DATA = new URL('./data/segpc2021/', import.meta.url);
const readImage = (id: string) => readFile(new URL(`images/${id}.jpg`, DATA));
const readMask = (id: string) => readFile(new URL(`masks/${id}.jpg`, DATA));

/** Pixels as libvips decodes them, without our code: the reference for lossless round trips. */
async function sharpRgb(input: Buffer, opts: { autoOrient?: boolean } = {}): Promise<RgbImage> {
  const { data, info } = await sharp(input, { autoOrient: opts.autoOrient ?? false })
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 3);
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

function rawInput(img: RgbImage | GrayImage, channels: 1 | 3 | 4 = 3) {
  return { raw: { width: img.width, height: img.height, channels } };
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

function maxAbsDiff(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function assertSameImage(actual: RgbImage, expected: RgbImage, tolerance = 0): void {
  assert.equal(actual.width, expected.width, 'width');
  assert.equal(actual.height, expected.height, 'height');
  assert.equal(actual.data.length, expected.width * expected.height * 3, 'data length');
  if (tolerance === 0) assert.ok(Buffer.from(actual.data).equals(Buffer.from(expected.data)), 'pixels differ');
  else assert.ok(maxAbsDiff(actual.data, expected.data) <= tolerance, `max diff ${maxAbsDiff(actual.data, expected.data)} > ${tolerance}`);
}

/** std of a w x h tile of a one-channel image. */
function tileStd(data: Uint8Array, width: number, x0: number, y0: number, w: number, h: number): number {
  let sum = 0;
  let sq = 0;
  for (let y = y0; y < y0 + h; y++) {
    for (let x = x0; x < x0 + w; x++) {
      const v = data[y * width + x]!;
      sum += v;
      sq += v * v;
    }
  }
  const n = w * h;
  return Math.sqrt(Math.max(0, sq / n - (sum / n) ** 2));
}

/** A crop of a real image, so colours are asymmetric (R != B) and the size is not a multiple of 4. */
async function cropOf(id: string, width: number, height: number, top = 140): Promise<RgbImage> {
  const { data, info } = await sharp(await readImage(id))
    .extract({ left: 0, top, width, height })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

/** 24-bit bottom-up BMP with a 40-byte BITMAPINFOHEADER, the most common kind. */
function bmp24(img: RgbImage): Buffer {
  const rowBytes = Math.ceil((img.width * 3) / 4) * 4;
  const buf = Buffer.alloc(54 + rowBytes * img.height);
  buf.write('BM', 0, 'latin1');
  buf.writeUInt32LE(buf.length, 2);
  buf.writeUInt32LE(54, 10);
  buf.writeUInt32LE(40, 14);
  buf.writeInt32LE(img.width, 18);
  buf.writeInt32LE(img.height, 22);
  buf.writeUInt16LE(1, 26);
  buf.writeUInt16LE(24, 28);
  buf.writeUInt32LE(rowBytes * img.height, 34);
  for (let y = 0; y < img.height; y++) {
    const row = 54 + (img.height - 1 - y) * rowBytes;
    for (let x = 0; x < img.width; x++) {
      const s = (y * img.width + x) * 3;
      buf[row + x * 3] = img.data[s + 2]!;
      buf[row + x * 3 + 1] = img.data[s + 1]!;
      buf[row + x * 3 + 2] = img.data[s]!;
    }
  }
  return buf;
}

/** 32-bit top-down BGRA BMP with a BITMAPV5HEADER (124 bytes) and BI_BITFIELDS, as Windows writes. */
function bmp32v5(img: RgbImage, alphaAt: (i: number) => number): Buffer {
  const headerEnd = 14 + 124;
  const buf = Buffer.alloc(headerEnd + img.width * img.height * 4);
  buf.write('BM', 0, 'latin1');
  buf.writeUInt32LE(buf.length, 2);
  buf.writeUInt32LE(headerEnd, 10);
  buf.writeUInt32LE(124, 14);
  buf.writeInt32LE(img.width, 18);
  buf.writeInt32LE(-img.height, 22);
  buf.writeUInt16LE(1, 26);
  buf.writeUInt16LE(32, 28);
  buf.writeUInt32LE(3, 30);
  buf.writeUInt32LE(img.width * img.height * 4, 34);
  buf.writeUInt32LE(0x00ff0000, 54);
  buf.writeUInt32LE(0x0000ff00, 58);
  buf.writeUInt32LE(0x000000ff, 62);
  buf.writeUInt32LE(0xff000000, 66);
  buf.write('BGRs', 70, 'latin1');
  for (let i = 0; i < img.width * img.height; i++) {
    const p = headerEnd + i * 4;
    buf[p] = img.data[i * 3 + 2]!;
    buf[p + 1] = img.data[i * 3 + 1]!;
    buf[p + 2] = img.data[i * 3]!;
    buf[p + 3] = alphaAt(i);
  }
  return buf;
}

/** 8-bit palettised BMP (grey palette), bottom-up. */
function bmp8Grey(grey: GrayImage): Buffer {
  const rowBytes = Math.ceil(grey.width / 4) * 4;
  const offset = 54 + 256 * 4;
  const buf = Buffer.alloc(offset + rowBytes * grey.height);
  buf.write('BM', 0, 'latin1');
  buf.writeUInt32LE(buf.length, 2);
  buf.writeUInt32LE(offset, 10);
  buf.writeUInt32LE(40, 14);
  buf.writeInt32LE(grey.width, 18);
  buf.writeInt32LE(grey.height, 22);
  buf.writeUInt16LE(1, 26);
  buf.writeUInt16LE(8, 28);
  buf.writeUInt32LE(256, 46);
  for (let i = 0; i < 256; i++) buf.writeUInt32LE(i * 0x010101, 54 + i * 4);
  for (let y = 0; y < grey.height; y++) {
    grey.data.subarray(y * grey.width, (y + 1) * grey.width).forEach((v, x) => {
      buf[offset + (grey.height - 1 - y) * rowBytes + x] = v;
    });
  }
  return buf;
}

/** Fraction of pixels where R and B differ: guards the BMP tests against a symmetric (R == B) source. */
function asymmetry(img: RgbImage): number {
  let n = 0;
  for (let i = 0; i < img.data.length; i += 3) if (Math.abs(img.data[i]! - img.data[i + 2]!) > 10) n++;
  return n / (img.width * img.height);
}

async function rejects(p: Promise<unknown>, type: new (...args: never[]) => Error, message?: RegExp): Promise<Error> {
  const err = await p.then(
    () => assert.fail(`expected ${type.name}, but it resolved`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof type, `expected ${type.name}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  if (message) assert.match(err.message, message);
  assert.ok(isInputError(err), 'an input error, so the pipeline quarantines instead of retrying');
  return err;
}

// ---------------------------------------------------------------------------------------------------
// Formats

test('JPEG: decodes the bundled image to 512 x 512 RGB, as libvips does', async () => {
  const jpg = await readImage('106');
  const img = await decodeImage(jpg);
  assertSameImage(img, await sharpRgb(jpg));
  assert.ok(asymmetry(img) > 0.3, 'stained image: R and B differ');
});

test('PNG, TIFF 8-bit, lossless WebP: exact round trip of a bundled image', async () => {
  const ref = await sharpRgb(await readImage('1722'));
  const encoded = {
    png: await sharp(ref.data, rawInput(ref)).png().toBuffer(),
    tiff: await sharp(ref.data, rawInput(ref)).tiff({ compression: 'lzw' }).toBuffer(),
    webp: await sharp(ref.data, rawInput(ref)).webp({ lossless: true }).toBuffer(),
  };
  for (const [format, bytes] of Object.entries(encoded)) {
    const out = await preprocessImage(bytes, { clahe: false });
    assert.equal(out.source.format, format);
    assertSameImage(out.image, ref);
  }
});

test('TIFF 16-bit: converted to 8-bit with the same pixels', async () => {
  const ref = await sharpRgb(await readImage('1864'));
  const wide = new Uint16Array(ref.data.length);
  // v * 257 is v in 16 bits (0 -> 0, 255 -> 65535): the 8-bit result must be v again.
  for (let i = 0; i < wide.length; i++) wide[i] = ref.data[i]! * 257;
  const tiff = await sharp(wide, rawInput(ref)).toColourspace('rgb16').tiff({ compression: 'lzw' }).toBuffer();
  assert.equal((await sharp(tiff).metadata()).depth, 'ushort', 'the test file really is 16-bit');
  const out = await preprocessImage(tiff, { clahe: false });
  assert.equal(out.source.bitDepth, 'ushort');
  assertSameImage(out.image, ref);
});

test('TIFF multi-page: the first page is decoded', async () => {
  const [a, b] = [await readImage('106'), await readImage('112')];
  const tiff = await sharp([a, b], { join: { animated: true } }).tiff({ compression: 'lzw' }).toBuffer();
  assert.equal((await sharp(tiff).metadata()).pages, 2);
  const img = await decodeImage(tiff);
  assertSameImage(img, await sharpRgb(a));
  assert.ok(meanAbsDiff(img.data, (await sharpRgb(b)).data) > 5, 'not the second page');
});

test('GIF: palette image decodes exactly; a photo within GIF quantisation', async () => {
  // Four asymmetric colours in blocks: exactly representable in a GIF palette.
  const colours = [[200, 30, 90], [20, 180, 60], [40, 70, 220], [250, 240, 10]];
  const width = 40;
  const height = 24;
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set(colours[(x >> 3) % 2 + 2 * ((y >> 3) % 2)]!, (y * width + x) * 3);
  }
  const blocks: RgbImage = { width, height, data };
  const gif = await sharp(blocks.data, rawInput(blocks)).gif().toBuffer();
  assertSameImage(await decodeImage(gif), blocks);

  const ref = await sharpRgb(await readImage('2144'));
  const photo = await decodeImage(await sharp(ref.data, rawInput(ref)).gif().toBuffer());
  assert.ok(meanAbsDiff(photo.data, ref.data) < 6, `GIF photo MAE ${meanAbsDiff(photo.data, ref.data)}`);
});

test('grey PNG: expanded to 3 equal channels', async () => {
  const jpg = await readImage('9295');
  const greyPng = await sharp(jpg).toColourspace('b-w').png().toBuffer();
  assert.equal((await sharp(greyPng).metadata()).channels, 1);
  const grey = await sharp(greyPng).extractChannel(0).raw().toBuffer();
  assert.equal(grey.length, 512 * 512);
  const img = await decodeImage(greyPng);
  assert.equal(img.data.length, 512 * 512 * 3);
  for (let i = 0; i < grey.length; i++) {
    const [r, g, b] = [img.data[i * 3]!, img.data[i * 3 + 1]!, img.data[i * 3 + 2]!];
    if (r !== grey[i] || g !== grey[i] || b !== grey[i]) assert.fail(`pixel ${i}: ${r},${g},${b} != grey ${grey[i]}`);
  }
});

test('PNG with alpha: flattened onto white', async () => {
  const ref = await sharpRgb(await readImage('9611'));
  const n = ref.width * ref.height;
  const rgba = new Uint8Array(n * 4);
  // Left third transparent, middle third half transparent, right third opaque.
  const alphaAt = (i: number) => [0, 128, 255][Math.min(2, Math.floor(((i % ref.width) * 3) / ref.width))]!;
  for (let i = 0; i < n; i++) {
    rgba.set(ref.data.subarray(i * 3, i * 3 + 3), i * 4);
    rgba[i * 4 + 3] = alphaAt(i);
  }
  const png = await sharp(rgba, { raw: { width: ref.width, height: ref.height, channels: 4 } }).png().toBuffer();
  const img = await decodeImage(png);
  const expected = new Uint8Array(n * 3);
  for (let i = 0; i < n * 3; i++) {
    const a = alphaAt(Math.floor(i / 3));
    expected[i] = Math.round((ref.data[i]! * a + 255 * (255 - a)) / 255);
  }
  assertSameImage(img, { width: ref.width, height: ref.height, data: expected }, 1);
  assert.equal(img.data[0], 255, 'transparent pixels are white');
});

test('CMYK JPEG: converted to sRGB', async () => {
  const jpg = await readImage('106');
  const cmyk = await sharp(jpg).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
  assert.equal((await sharp(cmyk).metadata()).space, 'cmyk');
  const out = await preprocessImage(cmyk, { clahe: false });
  assert.equal(out.source.channels, 4);
  const mae = meanAbsDiff(out.image.data, (await sharpRgb(jpg)).data);
  assert.ok(mae < 6, `CMYK -> sRGB MAE ${mae}`);
});

test('BMP 24-bit (bottom-up, padded rows): exact, channel order R, G, B', async () => {
  const src = await cropOf('106', 301, 203);
  assert.ok(asymmetry(src) > 0.3, 'source colours must be asymmetric for the channel-order check');
  const out = await preprocessImage(bmp24(src), { clahe: false });
  assert.equal(out.source.format, 'bmp');
  assertSameImage(out.image, src);
});

test('BMP written by bmp-js (top-down) and 32-bit BGRA V5 with alpha: exact', async () => {
  const src = await cropOf('2144', 150, 97);
  assert.ok(asymmetry(src) > 0.3, 'source colours must be asymmetric for the channel-order check');
  const abgr = new Uint8Array(src.width * src.height * 4);
  for (let i = 0; i < src.width * src.height; i++) {
    abgr[i * 4 + 1] = src.data[i * 3 + 2]!;
    abgr[i * 4 + 2] = src.data[i * 3 + 1]!;
    abgr[i * 4 + 3] = src.data[i * 3]!;
  }
  assertSameImage(await decodeImage(bmp.encode({ data: abgr, width: src.width, height: src.height }).data), src);

  assertSameImage(await decodeImage(bmp32v5(src, () => 255)), src);
  // Alpha all 0 is a common writer bug ("BGRX"): treated as opaque, not as an all-white image.
  assertSameImage(await decodeImage(bmp32v5(src, () => 0)), src);
  const half = await decodeImage(bmp32v5(src, (i) => (i % 2 ? 255 : 0)));
  assert.deepEqual([...half.data.subarray(0, 3)], [255, 255, 255], 'transparent pixel flattened onto white');
  assert.deepEqual([...half.data.subarray(3, 6)], [...src.data.subarray(3, 6)], 'opaque pixel kept');
});

test('BMP 8-bit palettised: grey levels exact', async () => {
  const { data, info } = await sharp(await readImage('9295')).extract({ left: 3, top: 70, width: 99, height: 77 }).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
  const grey: GrayImage = { width: info.width, height: info.height, data: new Uint8Array(data) };
  const img = await decodeImage(bmp8Grey(grey));
  const expected = new Uint8Array(grey.data.length * 3);
  grey.data.forEach((v, i) => expected.fill(v, i * 3, i * 3 + 3));
  assertSameImage(img, { width: grey.width, height: grey.height, data: expected });
});

// ---------------------------------------------------------------------------------------------------
// Orientation and resize

test('EXIF orientation 6: decoded rotated 90 degrees clockwise', async () => {
  const jpg = await sharp(await readImage('1864'))
    .extract({ left: 0, top: 100, width: 512, height: 300 })
    .withMetadata({ orientation: 6 })
    .jpeg({ quality: 95 })
    .toBuffer();
  const stored = await sharpRgb(jpg, { autoOrient: false });
  assert.equal(stored.width, 512);
  // Orientation 6: the stored image must be turned 90 degrees clockwise for display.
  const H = stored.height;
  const rotated = new Uint8Array(stored.data.length);
  for (let yd = 0; yd < stored.width; yd++) {
    for (let xd = 0; xd < H; xd++) {
      const s = ((H - 1 - xd) * stored.width + yd) * 3;
      rotated.set(stored.data.subarray(s, s + 3), (yd * H + xd) * 3);
    }
  }
  const out = await preprocessImage(jpg, { clahe: false });
  assert.equal(out.source.orientation, 6);
  assert.deepEqual([out.source.width, out.source.height], [300, 512]);
  assertSameImage(out.image, { width: 300, height: 512, data: rotated });
  // Oriented before resizing: the long side is the height.
  const small = await preprocessImage(jpg, { clahe: false, maxSize: 256 });
  assert.deepEqual([small.image.width, small.image.height], [150, 256]);
});

test('resize: keeps the aspect ratio, never enlarges; png is the image losslessly', async () => {
  const src = await cropOf('2144', 512, 300, 100);
  const png = await encodePng(src);
  const small = await preprocessImage(png, { maxSize: 256, clahe: false });
  assert.deepEqual([small.image.width, small.image.height], [256, 150]);
  assert.equal(small.image.data.length, 256 * 150 * 3);
  // Content is preserved: the downscale matches an independent resize closely.
  const expected = await resizeRgb(src, 256, 150);
  assert.ok(meanAbsDiff(small.image.data, expected.data) < 1, 'resized content');
  assertSameImage(await rgbFromPng(small.png), small.image);

  const big = await preprocessImage(png, { maxSize: 1024, clahe: false });
  assertSameImage(big.image, src);
  const defaultSize = await preprocessImage(await sharp(src.data, rawInput(src)).resize(1300, 762).png().toBuffer(), { clahe: false });
  assert.deepEqual([defaultSize.image.width, defaultSize.image.height], [512, 300]);
  assert.deepEqual([defaultSize.source.width, defaultSize.source.height], [1300, 762]);
});

// ---------------------------------------------------------------------------------------------------
// CLAHE

test('CLAHE parameters: OpenCV 8x8 tiles on 512 x 512 -> 64 x 64 window', () => {
  assert.deepEqual(claheWindowFor(512, 512, 8), { width: 64, height: 64 });
  assert.deepEqual(claheWindowFor(512, 512, { tilesX: 8, tilesY: 8 }), { width: 64, height: 64 });
  assert.deepEqual(claheWindowFor(400, 300, { tilesX: 8, tilesY: 8 }), { width: 50, height: 38 });
  assert.deepEqual(claheWindowFor(20, 5, 8), { width: 3, height: 1 });
  // 0.85 x the OpenCV clip in counts (1.0 * 4096 / 256 = 16), see preprocess.ts.
  assert.equal(claheMaxSlopeFor(1, { width: 64, height: 64 }), 14);
  assert.equal(claheMaxSlopeFor(2, { width: 64, height: 64 }), 27);
  assert.equal(claheMaxSlopeFor(0, { width: 64, height: 64 }), 0, 'clipLimit 0 = no limit, as in OpenCV');
  assert.equal(claheMaxSlopeFor(40, { width: 64, height: 64 }), 100, 'capped at sharp maximum');
  assert.throws(() => claheWindowFor(512, 512, 0), RangeError);
});

test('CLAHE raises the contrast of a low-contrast tile and keeps the hue', async () => {
  const jpg = await readImage('1722');
  const plain = await preprocessImage(jpg, { clahe: false });
  const eq = await preprocessImage(jpg);
  assert.deepEqual([eq.image.width, eq.image.height], [512, 512]);
  const before = rgbToLab(plain.image);
  const after = rgbToLab(eq.image);
  // The lowest-contrast 64 x 64 tile that is not a flat padding band.
  let best = { x: 0, y: 0, std: Infinity };
  for (let y = 0; y < 512; y += 64) {
    for (let x = 0; x < 512; x += 64) {
      const s = tileStd(before.L, 512, x, y, 64, 64);
      if (s > 2 && s < best.std) best = { x, y, std: s };
    }
  }
  const stdAfter = tileStd(after.L, 512, best.x, best.y, 64, 64);
  assert.ok(stdAfter > best.std * 1.3, `tile std ${best.std.toFixed(2)} -> ${stdAfter.toFixed(2)}`);
  // Lightness changed, chroma (a*, b*) only by rounding: CLAHE acts on L, not on R, G, B separately.
  assert.ok(meanAbsDiff(before.L, after.L) > 3, 'L changed');
  let da = 0;
  let db = 0;
  for (let i = 0; i < before.a.length; i++) {
    da += Math.abs(before.a[i]! - after.a[i]!);
    db += Math.abs(before.b[i]! - after.b[i]!);
  }
  assert.ok(da / before.a.length < 1 && db / before.b.length < 1, `a* ${da / before.a.length}, b* ${db / before.b.length}`);
  // The same as applying CLAHE to the decoded image directly.
  assertSameImage(await applyClahe(plain.image), eq.image);
});

// ---------------------------------------------------------------------------------------------------
// Masks

test('decodeMask: grey, 0/255 only, at the requested size; preprocessMask matches the image size', async () => {
  const bytes = await readMask('106');
  const full = await decodeMask(bytes, 512, 512);
  const grey = await sharp(bytes).toColourspace('b-w').raw().toBuffer();
  const expected = Uint8Array.from(grey, (v) => (v > 127 ? 255 : 0));
  assert.ok(Buffer.from(full.data).equals(Buffer.from(expected)), 'threshold at 127');
  const fg = full.data.filter((v) => v === 255).length / full.data.length;
  assert.ok(fg > 0.01 && fg < 0.9, `foreground fraction ${fg}`);

  const half = await decodeMask(bytes, 256, 256);
  assert.equal(half.data.length, 256 * 256);
  assert.ok(half.data.every((v) => v === 0 || v === 255));
  const fgHalf = half.data.filter((v) => v === 255).length / half.data.length;
  assert.ok(Math.abs(fgHalf - fg) < 0.01, `foreground ${fg} -> ${fgHalf}`);

  // Image and mask from the same original size stay aligned after preprocessing.
  const big = await sharp(bytes).resize(1024, 600, { fit: 'fill' }).png().toBuffer();
  const bigImage = await sharp(await readImage('106')).resize(1024, 600, { fit: 'fill' }).png().toBuffer();
  const m = await preprocessMask(big);
  const im = await preprocessImage(bigImage);
  assert.deepEqual([m.mask.width, m.mask.height], [im.image.width, im.image.height]);
  assert.deepEqual([m.mask.width, m.mask.height], [512, 300]);
  assert.ok(Buffer.from((await grayFromPng(m.png)).data).equals(Buffer.from(m.mask.data)));

  // The bundled masks are already (almost) binary, so check the threshold itself on a grey ramp.
  const ramp: GrayImage = { width: 256, height: 16, data: Uint8Array.from({ length: 256 * 16 }, (_, i) => i % 256) };
  const thresholded = await decodeMask(await encodePng(ramp), 256, 16);
  assert.deepEqual([...thresholded.data.subarray(120, 136)], [...ramp.data.subarray(120, 136)].map((v) => (v > 127 ? 255 : 0)));
  assert.equal(thresholded.data.filter((v) => v === 255).length, 128 * 16);

  // A mask of another aspect ratio cannot belong to the image.
  await rejects(decodeMask(bytes, 512, 300), InvalidInputError, /aspect ratio/);
});

// ---------------------------------------------------------------------------------------------------
// Encode helpers

test('encodePng / rgbFromPng / grayFromPng round trip; grey stays one channel', async () => {
  const src = await cropOf('9611', 123, 77);
  assertSameImage(await rgbFromPng(await encodePng(src)), src);
  const grey: GrayImage = { width: 123, height: 77, data: rgbToLab(src).L };
  const png = await encodePng(grey);
  assert.equal((await sharp(png).metadata()).channels, 1);
  assert.ok(Buffer.from((await grayFromPng(png)).data).equals(Buffer.from(grey.data)));
  await rejects(rgbFromPng(await readImage('106')), UnsupportedFormatError, /expected a PNG/);
});

// ---------------------------------------------------------------------------------------------------
// Errors

test('errors: empty, not an image, unsupported image kinds', async () => {
  await rejects(decodeImage(new Uint8Array(0)), EmptyInputError);
  await rejects(preprocessImage(Buffer.alloc(0)), EmptyInputError);

  // The name says .jpg; only the bytes count.
  const dir = await mkdtemp(join(tmpdir(), 'myeloscope-image-'));
  try {
    const path = join(dir, 'smear-17.jpg');
    await writeFile(path, 'Patient 17, smear 3: see the attached images\n');
    await rejects(preprocessImage(await readFile(path)), UnsupportedFormatError, /^not an image: starts with "Patient 17, "$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  await rejects(decodeImage(Buffer.from('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj', 'latin1')), UnsupportedFormatError, /^not an image: a PDF document \(starts with "%PDF/);
  await rejects(decodeImage(Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])), UnsupportedFormatError, /^unsupported format: starts with bytes 00 01 02 03 04 05 06 07/);
  const heic = Buffer.concat([Buffer.from([0, 0, 0, 24]), Buffer.from('ftypheic\0\0\0\0mif1heic', 'latin1')]);
  await rejects(decodeImage(heic), UnsupportedFormatError, /HEIC/);
});

test('errors: truncated JPEG, PNG, BMP -> CorruptImageError', async () => {
  const jpg = await readImage('1864');
  await rejects(decodeImage(jpg.subarray(0, Math.floor(jpg.length * 0.6))), CorruptImageError, /JPEG/);
  await rejects(decodeImage(jpg.subarray(0, 2)), CorruptImageError, /truncated/);
  const png = await sharp(jpg).png().toBuffer();
  await rejects(preprocessImage(png.subarray(0, Math.floor(png.length * 0.6))), CorruptImageError, /PNG/);
  const bmpFile = bmp24(await cropOf('1864', 64, 64));
  await rejects(decodeImage(bmpFile.subarray(0, bmpFile.length - 100)), CorruptImageError, /BMP file is truncated/);
});

test('errors: pixel limits, checked on the header before decoding', async () => {
  // A 54-byte BMP header claiming 100000 x 100000 (40 GB of bmp-js ABGR pixels if it were decoded).
  const header = bmp24({ width: 16, height: 16, data: new Uint8Array(16 * 16 * 3) }).subarray(0, 54);
  header.writeInt32LE(100_000, 18);
  header.writeInt32LE(100_000, 22);
  const memBefore = process.memoryUsage().arrayBuffers;
  await rejects(decodeImage(header), ImageLimitError, /100000 x 100000 pixels \(10000\.0 megapixels\), above the limit of 50\.0 megapixels/);
  assert.ok(process.memoryUsage().arrayBuffers - memBefore < 50e6, 'nothing large was allocated');
  // 8000 x 8000 = 64 MP: above the default limit, though a truncation check would also have failed it.
  header.writeInt32LE(8000, 18);
  header.writeInt32LE(-8000, 22);
  await rejects(decodeImage(header), ImageLimitError);

  const jpg = await readImage('106');
  await rejects(decodeImage(jpg, { maxPixels: 100_000 }), ImageLimitError, /512 x 512/);
  assert.equal((await decodeImage(jpg, { maxPixels: 512 * 512 })).width, 512);

  const tiny = await sharp(jpg).resize(12, 12).png().toBuffer();
  await rejects(preprocessImage(tiny), ImageLimitError, /too small/);
  const tinyBmp = bmp24(await cropOf('106', 20, 8));
  await rejects(decodeImage(tinyBmp), ImageLimitError, /too small/);
  const ok = await decodeImage(await sharp(jpg).resize(16, 16).png().toBuffer());
  assert.deepEqual([ok.width, ok.height], [16, 16]);
});

test('linearToSrgb8 (table and boundaries) equals round(255 x sRGB encode) exactly, edges included', () => {
  const reference = (v: number): number => {
    const c = v <= 0.0031308 ? 12.92 * v : 1.055 * v ** (1 / 2.4) - 0.055;
    return Math.min(255, Math.max(0, Math.round(c * 255)));
  };
  const probes = [-1, -0, 0, 1e-9, 0.0031308, 0.5, 0.999999, 1, 1.5, Number.NaN];
  // Every rounding boundary and its neighbours, plus a dense sweep.
  for (let i = 0; i < 255; i++) {
    const c = (i + 0.5) / 255;
    const b = c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    probes.push(b * (1 - 1e-12), b * (1 + 1e-12));
  }
  for (let k = 0; k <= 200_000; k++) probes.push(k / 200_000);
  for (const v of probes) {
    const want = Number.isNaN(v) ? 0 : reference(v);
    assert.equal(linearToSrgb8(v), want, `linear ${v}`);
  }
});
