/**
 * Image decoding: bytes of any supported format -> 8-bit sRGB RGB pixels.
 *
 * The format is taken from the magic bytes, never from a file name. JPEG, PNG, TIFF, WebP and GIF go
 * through sharp (libvips); BMP goes through bmp-js because sharp's prebuilt libvips has no BMP loader.
 * Limits (pixel count, minimum side) are checked on the header before any pixel buffer is allocated.
 */
import os from 'node:os';
import sharp, { type OutputInfo, type Sharp, type SharpOptions } from 'sharp';
import bmp from 'bmp-js';
import type { RgbImage } from '../types.ts';
import { CorruptImageError, EmptyInputError, ImageLimitError, UnsupportedFormatError } from '../errors.ts';

// sharp picks a libvips pool of 1 thread on glibc Linux without jemalloc (to limit heap fragmentation);
// our images are small and decoded one at a time per process, so use every core. The operation cache
// keeps sharp's defaults (50 MB / 100 ops): bounded, and we never open files by name.
sharp.concurrency(os.availableParallelism());

export type ImageFormat = 'jpeg' | 'png' | 'tiff' | 'webp' | 'gif' | 'bmp';

/** 50 megapixels: a 2560x1920 SegPC original is 4.9 MP, whole-slide scans are far above and not supported. */
export const DEFAULT_MAX_PIXELS = 50_000_000;
/** Smaller images cannot hold a cell at any useful magnification (and break CLAHE's 8x8 tile grid). */
export const MIN_SIDE = 16;

const FORMAT_NAMES: Record<ImageFormat, string> = {
  jpeg: 'JPEG',
  png: 'PNG',
  tiff: 'TIFF',
  webp: 'WebP',
  gif: 'GIF',
  bmp: 'BMP',
};
const READABLE = 'JPEG, PNG, TIFF, WebP, GIF or BMP';

export interface DecodeOptions {
  /** Largest accepted width x height (default DEFAULT_MAX_PIXELS). */
  maxPixels?: number;
}

/** What the uploaded file was, before any conversion. */
export interface SourceInfo {
  format: ImageFormat;
  /** Width as displayed, i.e. after EXIF orientation. */
  width: number;
  /** Height as displayed, i.e. after EXIF orientation. */
  height: number;
  /** EXIF orientation tag (1-8) when present. */
  orientation?: number;
  /** Channels as stored (4 for CMYK or RGBA, 1 for grey, ...). */
  channels: number;
  /** Sample format as stored, in libvips terms: 'uchar' = 8 bits a sample, 'ushort' = 16. */
  bitDepth?: string;
}

/**
 * A decoded-but-not-yet-materialised image: a sharp pipeline that yields oriented, alpha-flattened,
 * 8-bit sRGB pixels, so callers can append resize etc. and read raw pixels once.
 */
export interface OpenedImage {
  source: SourceInfo;
  pipeline: Sharp;
  /** Present when the pixels are already decoded (BMP): lets decodeImage skip a sharp round trip. */
  rgb?: RgbImage;
}

// ---------------------------------------------------------------------------------------------------
// Format sniffing

/** null = any byte. */
type Signature = ReadonlyArray<number | null>;

function ascii(s: string): number[] {
  return [...s].map((c) => c.charCodeAt(0));
}

const SIGNATURES: ReadonlyArray<{ format: ImageFormat; sig: Signature }> = [
  { format: 'jpeg', sig: [0xff, 0xd8, 0xff] },
  { format: 'png', sig: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] },
  { format: 'gif', sig: ascii('GIF87a') },
  { format: 'gif', sig: ascii('GIF89a') },
  { format: 'tiff', sig: [0x49, 0x49, 0x2a, 0x00] },
  { format: 'tiff', sig: [0x4d, 0x4d, 0x00, 0x2a] },
  // BigTIFF: libtiff reads it, and large scanner output uses it.
  { format: 'tiff', sig: [0x49, 0x49, 0x2b, 0x00] },
  { format: 'tiff', sig: [0x4d, 0x4d, 0x00, 0x2b] },
  { format: 'webp', sig: [...ascii('RIFF'), null, null, null, null, ...ascii('WEBP')] },
];

/** BITMAPCOREHEADER, INFO, V2, V3, OS/2 2.x, V4, V5. */
const BMP_HEADER_SIZES = new Set([12, 40, 52, 56, 64, 108, 124]);

function matches(bytes: Uint8Array, sig: Signature, length = sig.length): boolean {
  for (let i = 0; i < length; i++) {
    const want = sig[i];
    if (want !== null && want !== undefined && bytes[i] !== want) return false;
  }
  return true;
}

function startsWith(bytes: Uint8Array, s: string, at = 0): boolean {
  if (bytes.length < at + s.length) return false;
  for (let i = 0; i < s.length; i++) if (bytes[at + i] !== s.charCodeAt(i)) return false;
  return true;
}

/** Known non-supported kinds, so the user learns what they uploaded rather than "unknown". */
function describeOther(bytes: Uint8Array): { what: string; image: boolean } | undefined {
  const hex = (...b: number[]): boolean => matches(bytes, b) && bytes.length >= b.length;
  if (startsWith(bytes, '%PDF')) return { what: 'a PDF document', image: false };
  if (hex(0x50, 0x4b, 0x03, 0x04)) return { what: 'a ZIP archive (or an Office document)', image: false };
  if (hex(0x1f, 0x8b)) return { what: 'a gzip archive', image: false };
  if (startsWith(bytes, 'ZISRAWFILE')) return { what: 'Zeiss CZI (export the image as TIFF or PNG)', image: true };
  if (startsWith(bytes, 'DICM', 128)) return { what: 'DICOM (export the image as TIFF or PNG)', image: true };
  if (startsWith(bytes, 'ftyp', 4)) {
    const brand = String.fromCharCode(...bytes.subarray(8, 12));
    if (brand === 'avif' || brand === 'avis') return { what: 'AVIF', image: true };
    if (['heic', 'heix', 'hevc', 'heim', 'heis', 'mif1', 'msf1'].includes(brand)) return { what: 'HEIC/HEIF', image: true };
    return { what: 'a video (MP4/QuickTime)', image: false };
  }
  if (hex(0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20) || hex(0xff, 0x4f, 0xff, 0x51)) return { what: 'JPEG 2000', image: true };
  if (hex(0xff, 0x0a) || hex(0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20)) return { what: 'JPEG XL', image: true };
  if (startsWith(bytes, '8BPS')) return { what: 'Photoshop PSD', image: true };
  if (hex(0x00, 0x00, 0x01, 0x00)) return { what: 'ICO', image: true };
  const head = new TextDecoder('latin1').decode(bytes.subarray(0, 1024)).trimStart().toLowerCase();
  if (head.startsWith('<svg') || (head.startsWith('<?xml') && head.includes('<svg'))) return { what: 'SVG', image: true };
  return undefined;
}

/** Printable prefix for messages, or undefined when the bytes look binary. */
function textPrefix(bytes: Uint8Array, n: number): string | undefined {
  const head = bytes.subarray(0, 64);
  let printable = 0;
  for (const b of head) {
    if (b === 0) return undefined;
    if ((b >= 0x20 && b < 0x7f) || b === 0x09 || b === 0x0a || b === 0x0d || b >= 0x80) printable++;
  }
  if (printable < head.length * 0.95) return undefined;
  const text = new TextDecoder('utf-8').decode(bytes.subarray(0, n * 4));
  return [...text].slice(0, n).join('').replace(/\s+/g, ' ');
}

/**
 * The image format of `bytes`, from magic bytes.
 * @throws EmptyInputError (0 bytes), UnsupportedFormatError (not a readable image),
 *   CorruptImageError (a readable format's signature, cut short)
 */
export function sniffFormat(bytes: Uint8Array): ImageFormat {
  if (bytes.length === 0) throw new EmptyInputError();
  for (const { format, sig } of SIGNATURES) {
    if (bytes.length >= sig.length) {
      if (matches(bytes, sig)) return format;
    } else if (bytes.length >= 2 && matches(bytes, sig, bytes.length)) {
      throw new CorruptImageError(
        `the file is truncated: ${bytes.length} bytes is too short for a ${FORMAT_NAMES[format]} image`,
      );
    }
  }
  if (bytes[0] === 0x42 && bytes[1] === 0x4d) {
    // "BM" alone is too weak (text can start with it): also require a known DIB header size.
    if (bytes.length < 18) {
      throw new CorruptImageError(`the file is truncated: ${bytes.length} bytes is too short for a BMP image`);
    }
    const headerSize = bytes[14]! | (bytes[15]! << 8) | (bytes[16]! << 16) | (bytes[17]! << 24);
    if (BMP_HEADER_SIZES.has(headerSize)) return 'bmp';
  }
  const other = describeOther(bytes);
  if (other?.image) {
    throw new UnsupportedFormatError(`unsupported image format: ${other.what}; Myeloscope reads ${READABLE}`);
  }
  const text = textPrefix(bytes, 12);
  const seen =
    text !== undefined
      ? `starts with ${JSON.stringify(text)}`
      : `starts with bytes ${[...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`;
  if (other) throw new UnsupportedFormatError(`not an image: ${other.what} (${seen})`);
  if (text !== undefined) throw new UnsupportedFormatError(`not an image: ${seen}`);
  throw new UnsupportedFormatError(`unsupported format: ${seen}; Myeloscope reads ${READABLE}`);
}

// ---------------------------------------------------------------------------------------------------
// Limits and error mapping

function resolveMaxPixels(maxPixels: number | undefined): number {
  const limit = maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!Number.isFinite(limit) || limit < 1) throw new RangeError(`maxPixels must be a positive number, got ${limit}`);
  return Math.floor(limit);
}

function megapixels(n: number): string {
  return `${(n / 1e6).toFixed(1)} megapixels`;
}

/** Checked on header dimensions, before any pixel buffer exists. */
function checkLimits(width: number, height: number, maxPixels: number, format: ImageFormat): void {
  const pixels = width * height;
  if (pixels > maxPixels) {
    throw new ImageLimitError(
      `the ${FORMAT_NAMES[format]} image is ${width} x ${height} pixels (${megapixels(pixels)}), ` +
        `above the limit of ${megapixels(maxPixels)}; downscale it first`,
    );
  }
  if (Math.min(width, height) < MIN_SIDE) {
    throw new ImageLimitError(
      `the ${FORMAT_NAMES[format]} image is ${width} x ${height} pixels, too small: at least ${MIN_SIDE} pixels a side are needed`,
    );
  }
}

function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  // sharp ends some messages with ': ' and the libvips detail on the next line: drop the dangling colon.
  return msg.split('\n')[0]!.trim().replace(/:$/, '');
}

/** sharp reports every failure as a plain Error; sort input problems from resource problems. */
function fromSharpError(err: unknown, format: ImageFormat, maxPixels: number): Error {
  const msg = firstLine(err);
  if (/exceeds pixel limit/i.test(msg)) {
    return new ImageLimitError(`the ${FORMAT_NAMES[format]} image is above the limit of ${megapixels(maxPixels)}`);
  }
  // Not the input's fault: let the caller retry rather than quarantine the file.
  if (/out of memory|cannot allocate|ENOMEM/i.test(msg)) return err instanceof Error ? err : new Error(msg);
  return new CorruptImageError(`the ${FORMAT_NAMES[format]} file cannot be decoded (corrupt or truncated): ${msg}`, {
    cause: err,
  });
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------------------------------------------
// BMP (bmp-js)

interface BmpHeader {
  width: number;
  /** Signed as stored: negative = top-down rows. */
  rawHeight: number;
  height: number;
  bitsPerPixel: number;
  compression: number;
  headerSize: number;
  dataOffset: number;
  paletteEntries: number;
  /** Only meaningful with BI_BITFIELDS and a V3+ header. */
  alphaMask: number;
}

const BMP_COMPRESSION_NAMES: Record<number, string> = {
  0: 'none',
  1: 'RLE8',
  2: 'RLE4',
  3: 'bitfields',
  4: 'embedded JPEG',
  5: 'embedded PNG',
  6: 'alpha bitfields',
};

function readBmpHeader(buf: Buffer): BmpHeader {
  if (buf.length < 54) throw new CorruptImageError('the BMP file is truncated: its header is incomplete');
  const headerSize = buf.readUInt32LE(14);
  if (headerSize === 12) {
    throw new UnsupportedFormatError('unsupported image format: OS/2 1.x BMP; re-save it as a Windows BMP, PNG or TIFF');
  }
  const width = buf.readInt32LE(18);
  const rawHeight = buf.readInt32LE(22);
  const bitsPerPixel = buf.readUInt16LE(28);
  const compression = buf.readUInt32LE(30);
  const colors = buf.readUInt32LE(46);
  if (width <= 0 || rawHeight === 0 || rawHeight === -0x80000000) {
    throw new CorruptImageError(`the BMP header is invalid: ${width} x ${rawHeight} pixels`);
  }
  const paletteEntries = bitsPerPixel <= 8 ? Math.min(colors || 1 << bitsPerPixel, 1 << bitsPerPixel) : 0;
  const alphaMask = headerSize >= 56 && buf.length >= 70 ? buf.readUInt32LE(66) : 0;
  return {
    width,
    rawHeight,
    height: Math.abs(rawHeight),
    bitsPerPixel,
    compression,
    headerSize,
    dataOffset: buf.readUInt32LE(10),
    paletteEntries,
    alphaMask,
  };
}

const SUPPORTED_BMP: Record<number, number[]> = { 1: [0], 4: [0, 2], 8: [0, 1], 16: [0, 3], 24: [0], 32: [0, 3] };

/**
 * bmp-js ignores the pixel-data offset and the header size (it reads palette and pixels straight after
 * a 40-byte header) and misreads BGRA bitfields; so rebuild the file into the one layout it gets right.
 */
function normaliseBmp(buf: Buffer, h: BmpHeader): { file: Buffer; hasAlpha: boolean } {
  if (!SUPPORTED_BMP[h.bitsPerPixel]?.includes(h.compression)) {
    const comp = BMP_COMPRESSION_NAMES[h.compression] ?? String(h.compression);
    throw new UnsupportedFormatError(
      `unsupported image format: BMP with ${h.bitsPerPixel} bits a pixel and compression "${comp}"; re-save it as PNG or TIFF`,
    );
  }
  let compression = h.compression;
  let hasAlpha = false;
  if (h.bitsPerPixel === 32 && h.compression === 3) {
    const [r, g, b] = [buf.readUInt32LE(54), buf.readUInt32LE(58), buf.readUInt32LE(62)];
    if (r !== 0x00ff0000 || g !== 0x0000ff00 || b !== 0x000000ff) {
      throw new UnsupportedFormatError('unsupported image format: 32-bit BMP with unusual channel masks; re-save it as PNG');
    }
    // Standard BGRA: bmp-js's uncompressed 32-bit path reads exactly that byte order.
    compression = 0;
    hasAlpha = h.alphaMask === 0xff000000;
  }
  const paletteBytes = h.paletteEntries * 4;
  const paletteStart = 14 + h.headerSize;
  if (paletteStart + paletteBytes > buf.length || h.dataOffset > buf.length) {
    throw new CorruptImageError('the BMP file is truncated: its header or palette is incomplete');
  }
  const rowBytes = Math.floor((h.width * h.bitsPerPixel + 31) / 32) * 4;
  const compressed = compression === 1 || compression === 2;
  const pixelBytes = compressed ? buf.length - h.dataOffset : rowBytes * h.height;
  if (h.dataOffset + pixelBytes > buf.length) {
    throw new CorruptImageError(
      `the BMP file is truncated: ${pixelBytes} bytes of pixel data expected, ${buf.length - h.dataOffset} found`,
    );
  }
  // bmp-js reads 4 masks (16 bytes) after the header when compression is bitfields.
  const maskBytes = compression === 3 ? 16 : 0;
  const pixelStart = 54 + maskBytes + paletteBytes;
  const file = Buffer.alloc(pixelStart + pixelBytes);
  file.write('BM', 0, 'latin1');
  file.writeUInt32LE(file.length, 2);
  file.writeUInt32LE(pixelStart, 10);
  file.writeUInt32LE(40, 14);
  file.writeInt32LE(h.width, 18);
  file.writeInt32LE(h.rawHeight, 22);
  file.writeUInt16LE(1, 26);
  file.writeUInt16LE(h.bitsPerPixel, 28);
  file.writeUInt32LE(compression, 30);
  file.writeUInt32LE(pixelBytes, 34);
  file.writeUInt32LE(h.paletteEntries, 46);
  if (maskBytes > 0) buf.copy(file, 54, 54, 66); // R, G, B masks; the 4th stays 0
  buf.copy(file, 54 + maskBytes, paletteStart, paletteStart + paletteBytes);
  buf.copy(file, pixelStart, h.dataOffset, h.dataOffset + pixelBytes);
  return { file, hasAlpha };
}

function decodeBmp(buf: Buffer, h: BmpHeader): RgbImage {
  const { file, hasAlpha } = normaliseBmp(buf, h);
  let abgr: Buffer;
  try {
    abgr = bmp.decode(file).data;
  } catch (err) {
    // bmp-js reads past the end (RangeError) or indexes a missing palette entry (TypeError) on bad files.
    throw new CorruptImageError(`the BMP file cannot be decoded (corrupt or truncated): ${firstLine(err)}`, { cause: err });
  }
  const n = h.width * h.height;
  const rgb = new Uint8Array(n * 3);
  // Writers often leave the alpha byte 0 in "BGRA" files: treat all-transparent as opaque.
  let useAlpha = hasAlpha;
  if (useAlpha) {
    useAlpha = false;
    for (let i = 0; i < n; i++) if (abgr[i * 4] !== 0) { useAlpha = true; break; }
  }
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    // bmp-js byte order is A, B, G, R.
    const a = useAlpha ? abgr[i * 4]! : 255;
    const r = abgr[i * 4 + 3]!;
    const g = abgr[i * 4 + 2]!;
    const b = abgr[i * 4 + 1]!;
    if (a === 255) {
      rgb[j] = r;
      rgb[j + 1] = g;
      rgb[j + 2] = b;
    } else {
      // Flatten onto white, like the sharp path.
      rgb[j] = Math.round((r * a + 255 * (255 - a)) / 255);
      rgb[j + 1] = Math.round((g * a + 255 * (255 - a)) / 255);
      rgb[j + 2] = Math.round((b * a + 255 * (255 - a)) / 255);
    }
  }
  return { width: h.width, height: h.height, data: rgb };
}

// ---------------------------------------------------------------------------------------------------
// Public API

/**
 * Checks format and limits from the header, then returns a sharp pipeline producing oriented, 8-bit sRGB,
 * 3-channel pixels (alpha flattened onto white). Append operations (resize, ...) and call `.raw()`;
 * map errors of that final call with `rawRgb` / `runPipeline`.
 */
export async function openImage(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<OpenedImage> {
  const format = sniffFormat(bytes);
  const maxPixels = resolveMaxPixels(opts.maxPixels);
  const buf = asBuffer(bytes);

  if (format === 'bmp') {
    const h = readBmpHeader(buf);
    checkLimits(h.width, h.height, maxPixels, format);
    const rgb = decodeBmp(buf, h);
    return {
      source: { format, width: h.width, height: h.height, channels: h.bitsPerPixel === 32 ? 4 : 3, bitDepth: 'uchar' },
      pipeline: sharp(rgb.data, { raw: { width: rgb.width, height: rgb.height, channels: 3 } }),
      rgb,
    };
  }

  const input: SharpOptions = {
    autoOrient: true,
    limitInputPixels: maxPixels,
    // 'error' rejects truncated and undecodable data but tolerates libjpeg/libpng warnings that
    // microscope software often triggers (e.g. extraneous bytes) on otherwise good images.
    failOn: 'error',
    // Multi-page TIFF / animated GIF and WebP: the first page only.
    page: 0,
    pages: 1,
  };
  let width: number;
  let height: number;
  let source: SourceInfo;
  try {
    // Header only; without the pixel limit, which sharp would otherwise apply here too and so hide the
    // dimensions our message reports. The limit stays on the decoding pipeline as a backstop.
    const meta = await sharp(buf, { ...input, limitInputPixels: false }).metadata();
    width = meta.width;
    height = meta.height;
    source = {
      format,
      width: meta.autoOrient?.width ?? meta.width,
      height: meta.autoOrient?.height ?? meta.height,
      channels: meta.channels,
      bitDepth: meta.depth,
      ...(meta.orientation !== undefined ? { orientation: meta.orientation } : {}),
    };
  } catch (err) {
    throw fromSharpError(err, format, maxPixels);
  }
  if (!(width > 0 && height > 0)) throw new CorruptImageError(`the ${FORMAT_NAMES[format]} header has no valid size`);
  checkLimits(width, height, maxPixels, format);
  const pipeline = sharp(buf, input).flatten({ background: '#ffffff' }).toColourspace('srgb');
  return { source, pipeline };
}

/** Runs a pipeline from openImage to raw pixels, mapping decode failures to the named errors. */
export async function runPipeline(
  pipeline: Sharp,
  format: ImageFormat,
  maxPixels?: number,
): Promise<{ data: Uint8Array; width: number; height: number; channels: number }> {
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await pipeline.raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw fromSharpError(err, format, resolveMaxPixels(maxPixels));
  }
  const { data, info } = out;
  return {
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    width: info.width,
    height: info.height,
    channels: info.channels,
  };
}

/** runPipeline for 3-channel output. */
export async function rawRgb(pipeline: Sharp, format: ImageFormat, maxPixels?: number): Promise<RgbImage> {
  const { data, width, height, channels } = await runPipeline(pipeline, format, maxPixels);
  // A programming error (pipeline changed the colourspace), not bad input.
  if (channels !== 3) throw new Error(`expected 3 channels from the decode pipeline, got ${channels}`);
  return { width, height, data };
}

/**
 * Decodes JPEG, PNG, TIFF (8/16-bit, first page), WebP, GIF (first frame) or BMP to 8-bit sRGB RGB:
 * EXIF orientation applied, alpha flattened onto white, grey expanded to 3 channels, CMYK converted.
 * @throws EmptyInputError, UnsupportedFormatError, CorruptImageError, ImageLimitError
 */
export async function decodeImage(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<RgbImage> {
  const opened = await openImage(bytes, opts);
  if (opened.rgb) return opened.rgb;
  return rawRgb(opened.pipeline, opened.source.format, opts.maxPixels);
}
