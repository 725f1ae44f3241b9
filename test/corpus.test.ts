/**
 * "Nothing lost, nothing let in": a corpus of bad and awkward inputs, generated here from one bundled image,
 * goes through the local cloud (raw upload -> S3 notification -> preprocess -> segment). Each input must end
 * processed (and segmented) or quarantined with the right code; no handler may throw for a bad input (the
 * dispatcher would retry it), and the ledger must account for every raw object. Then the handlers are called
 * directly with the same events, twice and at once, and must leave the same objects with the same ETags.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import bmp from 'bmp-js';
import type { S3Event } from 'aws-lambda';
import { DeleteObjectCommand, ListObjectsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startLocalCloud, type LocalCloud } from '../infra/local/cloud.ts';
import { objectCreatedRecord, setLogSink } from '../layers/aws/src/events.ts';
import { S3Store } from '../layers/aws/src/s3.ts';
import { readLedger, formatLedger, type Ledger, type RawStatus } from '../functions/cli/ledger.ts';
import { quarantineRecordKey } from '../functions/preprocess/outcome-keys.ts';
import { LOCAL_S3_MAX_SEGMENT_BYTES } from '../infra/local/s3.ts';

const IMAGE = 'test/data/segpc2021/images/106.jpg';
const MASK = 'test/data/segpc2021/masks/106.jpg';
// Small limits so a real decompression bomb and an oversized file stay cheap to make.
const MAX_PIXELS = 4_000_000;
const MAX_BYTES = 2_000_000;

let cloud: LocalCloud;
let client: S3Client;
let stateDir: string;
const logs: { level: string; message: string; fields: Record<string, unknown> }[] = [];

before(async () => {
  setLogSink((level, message, fields) => logs.push({ level, message, fields }));
  // The handlers read their limits at module load, which startLocalCloud does.
  process.env.PREPROCESS_MAX_PIXELS = String(MAX_PIXELS);
  process.env.PREPROCESS_MAX_BYTES = String(MAX_BYTES);
  stateDir = await mkdtemp(join(tmpdir(), 'myeloscope-corpus-'));
  cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0 });
  client = new S3Client({ endpoint: cloud.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
});

after(async () => {
  await cloud?.close();
  await rm(stateDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------
// The corpus

type Expect =
  | { status: Exclude<RawStatus, 'quarantined'>; width?: number; height?: number }
  | { status: 'quarantined'; code: string }
  /** Either outcome is right (e.g. a corrupt middle libjpeg can still decode): but never lost, never a crash. */
  | { status: 'processed-or-quarantined'; code: string };

interface Item {
  what: string;
  key: string;
  body: Uint8Array;
  expect: Expect;
}

const D = 'raw/corpus/myeloma/';

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A valid PNG header claiming width x height, with a few bytes of pixel data: a bomb by declaration. */
function pngClaiming(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(Buffer.alloc(64))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A JPEG whose SOF claims another size (the scan data stays the small image's). */
function jpegClaiming(jpeg: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(jpeg);
  for (let i = 2; i < out.length - 9; ) {
    if (out[i] !== 0xff) break;
    const marker = out[i + 1]!;
    const len = out.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xc3) {
      out.writeUInt16BE(height, i + 5);
      out.writeUInt16BE(width, i + 7);
      return out;
    }
    i += 2 + len;
  }
  throw new Error('no SOF marker');
}

function truncate(b: Buffer, keep: number): Buffer {
  return b.subarray(0, Math.floor(b.length * keep));
}

/** Overwrites a run of bytes in the middle with a fixed pattern (deterministic). */
function garble(b: Buffer): Buffer {
  const out = Buffer.from(b);
  const start = Math.floor(out.length * 0.3);
  for (let i = 0; i < Math.min(2048, out.length - start - 16); i++) out[start + i] = (i * 151 + 7) & 0xff;
  return out;
}

async function buildCorpus(): Promise<Item[]> {
  // 160 x 120: landscape, so a wrong EXIF rotation shows in the output size, and small for speed.
  const base = sharp(await readFile(IMAGE)).resize(160, 120, { fit: 'fill' });
  const rgb = await base.clone().raw().toBuffer();
  const w = 160;
  const h = 120;
  const jpeg = await base.clone().jpeg({ quality: 90 }).toBuffer();
  const png = await base.clone().png().toBuffer();
  const tiff = await base.clone().tiff().toBuffer();
  const webp = await base.clone().webp({ quality: 90 }).toBuffer();
  const gif = await base.clone().gif().toBuffer();
  const abgr = Buffer.alloc(w * h * 4);
  for (let i = 0; i < w * h; i++) abgr.set([255, rgb[i * 3 + 2]!, rgb[i * 3 + 1]!, rgb[i * 3]!], i * 4);
  const bmpFile = bmp.encode({ data: abgr, width: w, height: h }).data;
  const formats: [string, Buffer][] = [['jpg', jpeg], ['png', png], ['tif', tiff], ['webp', webp], ['gif', gif], ['bmp', bmpFile]];

  const ok = { status: 'segmented', width: w, height: h } as const;
  const items: Item[] = [];
  const add = (what: string, name: string, body: Uint8Array, expect: Expect) => items.push({ what, key: `${D}${name}`, body, expect });

  for (const [ext, bytes] of formats) {
    add(`${ext} good`, `good-${ext}.${ext}`, bytes, ok);
    add(`${ext} truncated to half`, `half-${ext}.${ext}`, truncate(bytes, 0.5), { status: 'processed-or-quarantined', code: 'corrupt-image' });
    add(`${ext} first 10 bytes`, `ten-${ext}.${ext}`, bytes.subarray(0, 10), { status: 'quarantined', code: 'corrupt-image' });
    add(`${ext} garbled middle`, `garbled-${ext}.${ext}`, garble(bytes), { status: 'processed-or-quarantined', code: 'corrupt-image' });
  }
  add('zero bytes', 'empty.jpg', new Uint8Array(0), { status: 'quarantined', code: 'empty-input' });
  add('text named .jpg', 'notes.jpg', Buffer.from('patient notes, not an image\n'), { status: 'quarantined', code: 'unsupported-format' });
  add('PDF named .png', 'report.png', Buffer.from('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n', 'latin1'), { status: 'quarantined', code: 'unsupported-format' });
  add('ZIP named .tif', 'bundle.tif', Buffer.from([0x50, 0x4b, 0x03, 0x04, 0x14, 0, 0, 0, 8, 0, ...Buffer.alloc(30)]), { status: 'quarantined', code: 'unsupported-format' });
  add('SVG named .png', 'vector.png', Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>'), { status: 'quarantined', code: 'unsupported-format' });
  add('HEIC named .jpg', 'phone.jpg', Buffer.from([0, 0, 0, 0x18, ...Buffer.from('ftypheic'), ...Buffer.alloc(16)]), { status: 'quarantined', code: 'unsupported-format' });
  add('PNG bytes named .jpg', 'png-inside.jpg', png, ok);
  add('JPEG bytes named .png', 'jpeg-inside.png', jpeg, ok);
  add('TIFF bytes, no extension', 'no-extension', tiff, ok);

  // Bit depths, channel layouts and colour spaces.
  add('PNG 16-bit RGB', 'rgb16-png.png', await base.clone().toColourspace('rgb16').png().toBuffer(), ok);
  add('PNG 8-bit grey', 'grey8.png', await base.clone().toColourspace('b-w').png().toBuffer(), ok);
  add('PNG 16-bit grey', 'grey16.png', await base.clone().toColourspace('grey16').png().toBuffer(), ok);
  add('PNG grey + alpha', 'grey-alpha.png', await base.clone().toColourspace('b-w').ensureAlpha(0.5).png().toBuffer(), ok);
  add('PNG RGBA', 'rgba.png', await base.clone().ensureAlpha(0.7).png().toBuffer(), ok);
  add('PNG palette', 'palette.png', await base.clone().png({ palette: true, colours: 64 }).toBuffer(), ok);
  add('PNG 1-bit palette', 'onebit-png.png', await base.clone().png({ palette: true, colours: 2 }).toBuffer(), ok);
  add('TIFF 16-bit RGB', 'rgb16-tiff.tif', await base.clone().toColourspace('rgb16').tiff().toBuffer(), ok);
  add('TIFF 1-bit', 'onebit-tiff.tif', await base.clone().toColourspace('b-w').tiff({ bitdepth: 1 }).toBuffer(), ok);
  add('TIFF CMYK', 'cmyk-tiff.tif', await base.clone().toColourspace('cmyk').tiff().toBuffer(), ok);
  add('JPEG CMYK', 'cmyk-jpeg.jpg', await base.clone().toColourspace('cmyk').jpeg().toBuffer(), ok);
  add('TIFF Lab (float)', 'lab.tif', await base.clone().toColourspace('lab').tiff().toBuffer(), ok);
  add('TIFF LZW RGBA', 'rgba-lzw.tif', await base.clone().ensureAlpha().tiff({ compression: 'lzw' }).toBuffer(), ok);
  add('TIFF two pages', 'pages.tif', await sharp([png, png], { join: { animated: true } }).tiff().toBuffer().catch(() => tiff), ok);
  add('WebP lossless with alpha', 'alpha.webp', await base.clone().ensureAlpha(0.5).webp({ lossless: true }).toBuffer(), ok);
  add('JPEG grey', 'grey.jpg', await base.clone().toColourspace('b-w').jpeg().toBuffer(), ok);
  for (let o = 1; o <= 8; o++) {
    // Orientations 5-8 swap the axes: the stored 160 x 120 is displayed 120 x 160.
    const swapped = o >= 5;
    add(`JPEG EXIF orientation ${o}`, `exif-${o}.jpg`, await base.clone().jpeg().withMetadata({ orientation: o }).toBuffer(), {
      status: 'segmented',
      width: swapped ? h : w,
      height: swapped ? w : h,
    });
  }

  // Sizes.
  add('PNG header claiming 100000 x 100000', 'bomb-header-png.png', pngClaiming(100_000, 100_000), { status: 'quarantined', code: 'image-limit' });
  add('JPEG SOF claiming 60000 x 60000', 'bomb-header-jpg.jpg', jpegClaiming(jpeg, 60_000, 60_000), { status: 'quarantined', code: 'image-limit' });
  const bomb = await sharp({ create: { width: 3000, height: 3000, channels: 3, background: "#000000" } }).png({ compressionLevel: 9 }).toBuffer();
  add(`real PNG bomb 3000 x 3000 in ${bomb.length} bytes`, 'bomb.png', bomb, { status: 'quarantined', code: 'image-limit' });
  add('file above PREPROCESS_MAX_BYTES', 'huge.jpg', Buffer.concat([jpeg, Buffer.alloc(MAX_BYTES)]), { status: 'quarantined', code: 'image-limit' });
  add('1 x 1 PNG', 'one.png', await sharp({ create: { width: 1, height: 1, channels: 3, background: '#c0a0d0' } }).png().toBuffer(), { status: 'quarantined', code: 'image-limit' });
  add('8 x 8 JPEG', 'eight.jpg', await base.clone().resize(8, 8).jpeg().toBuffer(), { status: 'quarantined', code: 'image-limit' });
  add('16 x 16 PNG (smallest accepted)', 'sixteen.png', await base.clone().resize(16, 16).png().toBuffer(), { status: 'segmented', width: 16, height: 16 });
  add('200 x 4000 PNG strip', 'strip.png', await base.clone().resize(200, 4000, { fit: 'fill' }).png().toBuffer(), { status: 'segmented', width: 26, height: 512 });
  // Passes the header checks, but would be 2 x 512 once fitted inside 512: nothing left to segment.
  add('16 x 4000 PNG strip', 'thin-strip.png', await base.clone().resize(16, 4000, { fit: 'fill' }).png().toBuffer(), { status: 'quarantined', code: 'image-limit' });
  add('mask 16 x 4000', 'masks/thin-strip.png', await base.clone().resize(16, 4000, { fit: 'fill' }).png().toBuffer(), { status: 'quarantined', code: 'image-limit' });
  add('flat white PNG', 'white.png', await sharp({ create: { width: 64, height: 64, channels: 3, background: '#ffffff' } }).png().toBuffer(), { status: 'segmented' });

  // Keys: every character S3 allows that a browser, shell or URL could trip on.
  const weird = ['a b.jpg', 'c+d.jpg', '100%.jpg', '%20literal.jpg', 'Zürich µ 試料.jpg', 'cell 🔬🩸.jpg', 'hash#1.jpg', 'what?.jpg', `quote"s and 'single'.jpg`, 'amp&eq=semi;colon:at@.jpg', 'tilde~back`tick^{}[]<>|.jpg', 'dots..jpg', 'nfd-Zu\u0308rich.jpg'];
  for (const name of weird) add(`key ${JSON.stringify(name)}`, name, jpeg, ok);
  // Long keys: segments of 200 bytes (the local S3 keeps each in a file name, at most 255 bytes).
  const longDirs = (bytes: number) => {
    const parts: string[] = [];
    let left = bytes;
    while (left > 0) {
      const n = Math.min(200, left);
      parts.push('x'.repeat(n - 1));
      left -= n;
    }
    return parts.join('/');
  };
  const fits = `${D}${longDirs(1024 - D.length - 120)}/long.jpg`;
  items.push({ what: `${Buffer.byteLength(fits)}-byte key (outputs fit)`, key: fits, body: jpeg, expect: ok });
  // Non-ASCII: 3 bytes a character, 9 URL-encoded, more than S3's 2 KB of metadata if stored as is.
  const cjk = `${D}${Array.from({ length: 4 }, () => '試'.repeat(66)).join('/')}/長い名前.jpg`;
  items.push({ what: `${Buffer.byteLength(cjk)}-byte non-ASCII key`, key: cjk, body: jpeg, expect: ok });
  // A file name the local S3 holds (233 bytes) whose processed name (.png for .j) it could not: quarantined
  // with the reason, its record under quarantine/_long-keys/ (quarantine/<key>.json would not fit either).
  add('233-byte file name, outputs 235 bytes', `${'y'.repeat(231)}.j`, jpeg, { status: 'quarantined', code: 'key-too-long' });
  const max = `${D}${longDirs(1024 - D.length - 9)}/long.jpg`;
  items.push({ what: `${Buffer.byteLength(max)}-byte key (S3 maximum)`, key: max, body: jpeg, expect: { status: 'quarantined', code: 'key-too-long' } });

  // Masks.
  add('mask with no image', 'masks/alone.png', await sharp(await readFile(MASK)).resize(160, 120, { fit: 'fill' }).png().toBuffer(), { status: 'orphan-mask' });
  add('image whose mask has another aspect', 'aspect.jpg', jpeg, { status: 'segment-failed' });
  add('mask of another aspect', 'masks/aspect.jpg', await sharp(await readFile(MASK)).resize(120, 120).jpeg().toBuffer(), { status: 'mask' });
  add('image with a good mask', 'paired.jpg', jpeg, ok);
  add('good mask', 'masks/paired.jpg', await sharp(await readFile(MASK)).resize(160, 120, { fit: 'fill' }).jpeg().toBuffer(), { status: 'mask' });
  add('corrupt mask', 'masks/good-jpg.jpg', truncate(await readFile(MASK), 0.02), { status: 'quarantined', code: 'corrupt-image' });

  // Key shapes preprocess cannot place.
  items.push({ what: 'no label folder', key: 'raw/corpus/stray.jpg', body: jpeg, expect: { status: 'quarantined', code: 'invalid-input' } });
  items.push({ what: 'folder marker (trailing /)', key: `${D}folder/`, body: new Uint8Array(0), expect: { status: 'quarantined', code: 'invalid-input' } });
  return items;
}

// ---------------------------------------------------------------------------------------------------
// Helpers

async function put(key: string, body: Uint8Array) {
  await client.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: key, Body: body }));
}

/** key -> ETag of every object in a bucket (ListObjects v1: s3rver cannot page v2 on Node 17+). */
async function snapshot(bucket: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let marker: string | undefined;
  for (;;) {
    const page = await client.send(new ListObjectsCommand({ Bucket: bucket, ...(marker ? { Marker: marker } : {}) }));
    for (const o of page.Contents ?? []) out.set(o.Key as string, o.ETag as string);
    const last = page.Contents?.at(-1)?.Key;
    if (!page.IsTruncated || !last) break;
    marker = last;
  }
  return out;
}

function event(bucket: string, key: string): S3Event {
  return { Records: [objectCreatedRecord(bucket, key, { source: 'test' })] };
}

function totalRetries(): number {
  return [...cloud.dispatcher.stats.values()].reduce((n, s) => n + s.retried, 0);
}

let items: Item[] = [];
let ledger: Ledger;

// ---------------------------------------------------------------------------------------------------
// Tests

test('every corpus input ends processed or quarantined with the right code, with no crash or retry', async () => {
  const t0 = performance.now();
  items = await buildCorpus();
  for (const item of items) await put(item.key, item.body);
  await cloud.idle();
  // A second file mapping to an existing processed name (dup.jpg then dup.png), after the first has landed.
  const dupFirst = items.find((i) => i.what === 'jpg good') as Item;
  await put(`${D}dup.jpg`, dupFirst.body);
  await cloud.idle();
  await put(`${D}dup.png`, (items.find((i) => i.what === 'png good') as Item).body);
  await cloud.idle();
  // Neither wins, whichever came first: the processed dup.png they would share is taken out.
  items.push(
    { what: 'dup.jpg (first)', key: `${D}dup.jpg`, body: dupFirst.body, expect: { status: 'quarantined', code: 'name-conflict' } },
    { what: 'dup.png (same name, other extension)', key: `${D}dup.png`, body: new Uint8Array(), expect: { status: 'quarantined', code: 'name-conflict' } },
  );

  assert.deepEqual(cloud.dispatcher.failures, [], 'no delivery failed for good');
  assert.equal(totalRetries(), 0, `no retries: ${JSON.stringify([...cloud.dispatcher.stats])}`);

  const work = new S3Store(cloud.buckets.work);
  ledger = await readLedger({ raw: new S3Store(cloud.buckets.raw), work });
  const byKey = new Map(ledger.entries.map((e) => [e.key, e]));
  const rows: string[] = [];
  for (const item of items) {
    const entry = byKey.get(item.key);
    assert.ok(entry, `${item.what}: in the ledger`);
    rows.push(`| ${item.what.replace(/\|/g, '\\|')} | ${entry.status} | ${entry.code ?? ''} |`);
    const exp = item.expect;
    if (exp.status === 'quarantined') {
      assert.equal(entry.status, 'quarantined', `${item.what}: ${JSON.stringify(entry)}`);
      assert.equal(entry.code, exp.code, `${item.what}: ${entry.reason}`);
      const record = await work.getJson<{ rawKey: string; code: string; reason: string }>(quarantineRecordKey(item.key));
      assert.equal(record.rawKey, item.key, `${item.what}: the record names its raw object`);
      assert.ok(record.reason.length > 10, `${item.what}: a reason a person can read`);
    } else if (exp.status === 'processed-or-quarantined') {
      assert.ok(entry.status === 'segmented' || (entry.status === 'quarantined' && entry.code === exp.code), `${item.what}: ${JSON.stringify(entry)}`);
    } else {
      assert.equal(entry.status, exp.status, `${item.what}: ${JSON.stringify(entry)}`);
      if (exp.width !== undefined && entry.output) {
        const meta = await sharp(await work.get(entry.output)).metadata();
        assert.deepEqual([meta.width, meta.height], [exp.width, exp.height], `${item.what}: processed size`);
      }
    }
  }
  for (const e of ledger.entries.filter((x) => x.output && x.status !== 'quarantined')) {
    const head = await work.head(e.output as string);
    const metaBytes = Object.entries(head?.metadata ?? {}).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0);
    assert.ok(metaBytes < 2048, `${e.key}: ${metaBytes} bytes of user metadata, above S3's 2 KB`);
  }
  assert.equal(await new S3Store(cloud.buckets.work).exists('processed/corpus/myeloma/dup.png'), false, 'no processed output of a conflict');
  assert.deepEqual(await work.list('segmented/corpus/myeloma/dup/'), [], 'no segmentation of a conflict');
  const aspect = ledger.entries.find((e) => e.key === `${D}aspect.jpg`);
  assert.equal(aspect?.code, 'invalid-input', 'a mask of another aspect: segment-failed with its reason');

  assert.equal(ledger.counts.missing, 0, formatLedger(ledger));
  assert.equal(ledger.counts.raw, ledger.counts.processed + ledger.counts.quarantined);
  assert.equal(ledger.counts.raw, items.length);
  console.log(`corpus: ${items.length} inputs in ${((performance.now() - t0) / 1000).toFixed(1)} s\n| input | outcome | code |\n| --- | --- | --- |\n${rows.join('\n')}\n\n${formatLedger(ledger)}`);
});

test('what was decoded is the picture: every accepted variant of the base image matches its PNG after processing', async () => {
  const work = new S3Store(cloud.buckets.work);
  const pixels = async (key: string, grey: boolean) => {
    const p = sharp(await work.get(key));
    return (grey ? p.toColourspace('b-w') : p.removeAlpha()).raw().toBuffer();
  };
  const ref = 'processed/corpus/myeloma/good-png.png';
  const [refRgb, refGrey] = [await pixels(ref, false), await pixels(ref, true)];
  const mae = (a: Buffer, b: Buffer) => {
    let sum = 0;
    for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
    return sum / a.length;
  };
  const report: string[] = [];
  for (const item of items) {
    const e = ledger.entries.find((x) => x.key === item.key);
    if (item.expect.status !== 'segmented' || e?.status !== 'segmented' || !e.output) continue;
    if (!('width' in item.expect) || item.expect.width !== 160 || item.expect.height !== 120) continue;
    if (/orientation [2-8]/.test(item.what)) continue;
    const grey = /grey|1-bit|Lab/.test(item.what) ? mae(await pixels(e.output, true), refGrey) : undefined;
    const colour = grey === undefined ? mae(await pixels(e.output, false), refRgb) : undefined;
    report.push(`${item.what}: ${grey !== undefined ? `grey MAE ${grey.toFixed(1)}` : `RGB MAE ${colour?.toFixed(1)}`}`);
    // 1-bit keeps only black and white; half-transparent variants are flattened onto white (lighter by design);
    // palette and lossy formats lose a little; a misread colour space (e.g. inverted CMYK) loses far more.
    const limit = /1-bit/.test(item.what) ? 90 : /alpha|RGBA/.test(item.what) ? 60 : 12;
    assert.ok((grey ?? colour ?? 0) < limit, `${item.what}: ${grey ?? colour} >= ${limit}`);
  }
  console.log(report.join('\n'));
});

test('a re-upload that breaks an image takes its old outputs out; fixing it brings them back', async () => {
  const key = `${D}paired.jpg`;
  const good = items.find((i) => i.key === key)?.body as Uint8Array;
  const work = new S3Store(cloud.buckets.work);
  await put(key, good.subarray(0, 200));
  await cloud.idle();
  let entry = (await readLedger({ raw: new S3Store(cloud.buckets.raw), work }, { dataset: 'corpus' })).entries.find((e) => e.key === key);
  assert.equal(entry?.status, 'quarantined');
  assert.deepEqual(await work.list('segmented/corpus/myeloma/paired/'), [], 'no stale cells.json for the dataset step to read');
  assert.equal(await work.exists('processed/corpus/myeloma/paired.png'), false);
  await put(key, good);
  await cloud.idle();
  entry = (await readLedger({ raw: new S3Store(cloud.buckets.raw), work }, { dataset: 'corpus' })).entries.find((e) => e.key === key);
  assert.equal(entry?.status, 'segmented');
  assert.equal(await work.exists(quarantineRecordKey(key)), false, 'the quarantine record is cleared');
  const cells = await work.getJson<{ maskKey: string | null }>('segmented/corpus/myeloma/paired/cells.json');
  assert.equal(cells.maskKey, 'processed/corpus/myeloma/masks/paired.png', 'labelled again with its mask');
  assert.deepEqual(cloud.dispatcher.failures, []);
  assert.equal(totalRetries(), 0);
});

test('logs carry no image bytes and no full long file names', () => {
  assert.ok(logs.length > 0);
  const longNames = items.map((i) => i.key.slice(i.key.lastIndexOf('/') + 1)).filter((n) => n.length > 12);
  for (const rec of logs) {
    const line = JSON.stringify(rec);
    assert.ok(line.length < 2000, `short log lines: ${line.slice(0, 200)}`);
    assert.doesNotMatch(line, /[A-Za-z0-9+/]{200,}/, 'nothing like base64 pixel data');
    for (const name of longNames) assert.ok(!line.includes(name), `log names ${name} in full: ${line}`);
  }
});

test('the same event twice, or twice at once, leaves the same objects with the same ETags', async () => {
  const { handler: preprocess } = (await import('../functions/preprocess/index.ts')) as { handler: (e: S3Event) => Promise<unknown> };
  const { handler: segment } = (await import('../functions/segment/index.ts')) as { handler: (e: S3Event) => Promise<unknown> };
  const raw = cloud.buckets.raw;
  const workBucket = cloud.buckets.work;
  const rawKeys = [`${D}paired.jpg`, `${D}masks/paired.jpg`, `${D}cell 🔬🩸.jpg`, `${D}notes.jpg`, `${D}aspect.jpg`, `${D}dup.png`, items.find((i) => i.expect.status === 'quarantined' && i.key.length > 1000)?.key as string];
  const processedKeys = ['processed/corpus/myeloma/paired.png', 'processed/corpus/myeloma/masks/paired.png', 'processed/corpus/myeloma/aspect.png'];
  const before = await snapshot(workBucket);
  const retriesBefore = totalRetries();

  for (const key of rawKeys) {
    await preprocess(event(raw, key));
    await preprocess(event(raw, key));
  }
  await Promise.all(rawKeys.flatMap((key) => [preprocess(event(raw, key)), preprocess(event(raw, key))]));
  for (const key of processedKeys) {
    await segment(event(workBucket, key));
    await segment(event(workBucket, key));
  }
  // Image and mask events for one pair at once, twice each: what S3 does when both land together.
  await Promise.all(processedKeys.flatMap((key) => [segment(event(workBucket, key)), segment(event(workBucket, key))]));
  await cloud.idle();
  const afterRun = await snapshot(workBucket);
  assert.deepEqual([...afterRun].sort(), [...before].sort(), 'same keys, same ETags');
  assert.equal(totalRetries(), retriesBefore);

  // Forced recomputation: drop the result and deliver image and mask events together.
  const cells = 'segmented/corpus/myeloma/paired/cells.json';
  await client.send(new DeleteObjectCommand({ Bucket: workBucket, Key: cells }));
  await Promise.all([segment(event(workBucket, processedKeys[0] as string)), segment(event(workBucket, processedKeys[1] as string))]);
  await cloud.idle();
  assert.deepEqual([...(await snapshot(workBucket))].sort(), [...before].sort(), 'recomputed outputs are byte-identical');

  // The mask replaced while the image's segmentation runs: the result that stays is the one of the newest pair.
  const work = new S3Store(workBucket);
  const maskKey = processedKeys[1] as string;
  const masks = [await work.get(maskKey), await sharp(await work.get(maskKey)).flop().png().toBuffer()];
  for (let round = 0; round < 3; round++) {
    const next = masks[(round + 1) % 2] as Uint8Array;
    await Promise.all([segment(event(workBucket, processedKeys[0] as string)), work.put(maskKey, next, 'image/png').then(() => segment(event(workBucket, maskKey)))]);
    await cloud.idle();
    const record = await work.getJson<{ maskEtag: string | null }>(cells);
    assert.equal(record.maskEtag, (await work.head(maskKey))?.etag, `round ${round}: cells.json is of the current mask`);
  }
  assert.equal(totalRetries(), retriesBefore);
});

test('the local S3 refuses a key segment it cannot store with a clear 400, and keeps running', async () => {
  const dir = 'raw/corpus/long-names/';
  for (const bytes of [LOCAL_S3_MAX_SEGMENT_BYTES + 1, 240, 244, 900]) {
    const key = `${dir}${'n'.repeat(bytes - 4)}.jpg`;
    const err = await client.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: key, Body: Buffer.alloc(1000, 1) })).then(
      () => undefined,
      (e: unknown) => e as Error & { $metadata?: { httpStatusCode?: number } },
    );
    assert.ok(err, `${bytes}-byte file name refused`);
    assert.equal(err.name, 'KeyTooLongError');
    assert.equal(err.$metadata?.httpStatusCode, 400);
    assert.match(err.message, new RegExp(`local S3 server .*cannot store a path segment over ${LOCAL_S3_MAX_SEGMENT_BYTES} bytes.*AWS S3 allows it`));
  }
  // A folder name, too; reads and deletes of such keys answer as for any missing key.
  const deepKey = `${dir}${'f'.repeat(300)}/x.jpg`;
  await assert.rejects(client.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: deepKey, Body: 'x' })), { name: 'KeyTooLongError' });
  assert.equal(await new S3Store(cloud.buckets.raw).head(deepKey), undefined);
  await client.send(new DeleteObjectCommand({ Bucket: cloud.buckets.raw, Key: deepKey }));
  // The longest storable segment still works, nothing half-written is left, and listing and the ledger work.
  const longest = `${dir}${'m'.repeat(LOCAL_S3_MAX_SEGMENT_BYTES - 4)}.jpg`;
  await put(longest, (items.find((i) => i.what === 'jpg good') as Item).body);
  await cloud.idle();
  assert.deepEqual(await new S3Store(cloud.buckets.raw).list(dir), [longest]);
  const l = await readLedger({ raw: new S3Store(cloud.buckets.raw), work: new S3Store(cloud.buckets.work) }, { dataset: 'corpus' });
  assert.equal(l.entries.find((e) => e.key === longest)?.status, 'segmented');
  assert.equal(l.counts.missing, 0, formatLedger(l));
  assert.deepEqual(cloud.dispatcher.failures, []);
});

test('same.jpg and same.png uploaded at once: both quarantined name-conflict, no output, in any order, every time', async () => {
  const dir = 'raw/corpus/conflict/';
  const jpg = (items.find((i) => i.what === 'jpg good') as Item).body;
  const png = (items.find((i) => i.what === 'png good') as Item).body;
  const raw = new S3Store(cloud.buckets.raw);
  const work = new S3Store(cloud.buckets.work);
  const check = async (when: string) => {
    const l = await readLedger({ raw, work }, { dataset: 'corpus' });
    for (const name of ['same.jpg', 'same.png']) {
      const e = l.entries.find((x) => x.key === `${dir}${name}`);
      assert.equal(e?.status, 'quarantined', `${when}: ${name} ${JSON.stringify(e)}`);
      assert.equal(e?.code, 'name-conflict', `${when}: ${name}`);
      assert.match(e?.reason ?? '', /2 raw files .*same\.jpg.*same\.png.* would all become .*same\.png/, when);
    }
    assert.equal(await work.exists('processed/corpus/conflict/same.png'), false, `${when}: no shared processed output`);
    assert.deepEqual(await work.list('segmented/corpus/conflict/same/'), [], `${when}: no segmentation`);
    assert.equal(l.counts.missing, 0, formatLedger(l));
  };
  await Promise.all([put(`${dir}same.jpg`, jpg), put(`${dir}same.png`, png)]);
  await cloud.idle();
  await check('uploaded together');
  const records = async () => Promise.all(['same.jpg', 'same.png'].map(async (n) => (await work.head(quarantineRecordKey(`${dir}${n}`)))?.etag));
  const first = await records();

  // The same events again, one way round, the other, and at once: the same records, byte for byte.
  const { handler: preprocess } = (await import('../functions/preprocess/index.ts')) as { handler: (e: S3Event) => Promise<unknown> };
  const ev = (n: string) => event(cloud.buckets.raw, `${dir}${n}`);
  await preprocess(ev('same.png'));
  await preprocess(ev('same.jpg'));
  await Promise.all([preprocess(ev('same.jpg')), preprocess(ev('same.png'))]);
  await cloud.idle();
  await check('redelivered');
  assert.deepEqual(await records(), first);

  // One is deleted and the other uploaded again: it is processed, its record cleared.
  await client.send(new DeleteObjectCommand({ Bucket: cloud.buckets.raw, Key: `${dir}same.png` }));
  await put(`${dir}same.jpg`, jpg);
  await cloud.idle();
  const l = await readLedger({ raw, work }, { dataset: 'corpus' });
  assert.equal(l.entries.find((x) => x.key === `${dir}same.jpg`)?.status, 'segmented');
  assert.deepEqual(cloud.dispatcher.failures, []);
});
