/**
 * The ledger: the pure computation over key lists, then over a mixed corpus run through the local cloud
 * (raw = processed + quarantined, nothing missing), and the `npm run ledger` command against the local state,
 * including a raw object whose event was lost (missing, exit 1) and its redrive (exit 0).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startLocalCloud, type LocalCloud } from '../infra/local/cloud.ts';
import { startLocalS3 } from '../infra/local/s3.ts';
import { setLogSink } from '../layers/aws/src/events.ts';
import { S3Store } from '../layers/aws/src/s3.ts';
import { computeLedger, formatLedger, readLedger, redrive, type Ledger } from '../functions/cli/ledger.ts';
import { quarantineRecordKey, quarantineRecordKeys } from '../functions/preprocess/outcome-keys.ts';

const run = promisify(execFile);
const DATA = 'test/data/segpc2021';

test('computeLedger: each raw key gets exactly one outcome; raw = processed + quarantined + missing', () => {
  const longKey = `raw/d/l/${'n/'.repeat(505)}x.jpg`;
  const ledger = computeLedger({
    raw: [
      'raw/d/l/a.jpg', // segmented
      'raw/d/l/masks/a.jpg', // mask of a processed image
      'raw/d/l/b.tif', // segment failed
      'raw/d/l/masks/b.png',
      'raw/d/l/c.png', // quarantined
      'raw/d/l/d.jpg', // lost
      'raw/d/l/e.jpg', // processed, never segmented
      'raw/d/l/masks/f.jpg', // mask, no image
      'raw/d/l/g.jpg', // conflict: g.jpg and g.png both claim processed g.png
      'raw/d/l/g.png',
      'raw/d/l/h.jpg', // quarantined after an older version was processed: the newest verdict wins
      longKey, // quarantined under quarantine/_long-keys/
      'raw/stray.jpg', // no label folder, quarantined
    ],
    work: [
      'processed/d/l/a.png',
      'processed/d/l/masks/a.png',
      'segmented/d/l/a/cells.json',
      'processed/d/l/b.png',
      'processed/d/l/masks/b.png',
      'segmented/d/l/b/cells.json',
      'segmented/d/l/b/error.json',
      'quarantine/raw/d/l/c.png.json',
      'processed/d/l/e.png',
      'processed/d/l/masks/f.png',
      'processed/d/l/g.png',
      'segmented/d/l/g/cells.json',
      'processed/d/l/h.png',
      'segmented/d/l/h/cells.json',
      'quarantine/raw/d/l/h.jpg.json',
      quarantineRecordKey(longKey),
      'quarantine/raw/stray.jpg.json',
      'processed/d/l/zombie.png', // its raw object was deleted
    ],
    records: new Map([
      ['quarantine/raw/d/l/c.png.json', { code: 'corrupt-image', reason: 'truncated' }],
      ['segmented/d/l/b/error.json', { code: 'invalid-input', reason: 'mask aspect' }],
    ]),
  });
  const status = Object.fromEntries(ledger.entries.map((e) => [e.key, e.status]));
  assert.deepEqual(status, {
    'raw/d/l/a.jpg': 'segmented',
    'raw/d/l/masks/a.jpg': 'mask',
    'raw/d/l/b.tif': 'segment-failed',
    'raw/d/l/masks/b.png': 'mask',
    'raw/d/l/c.png': 'quarantined',
    'raw/d/l/d.jpg': 'missing',
    'raw/d/l/e.jpg': 'unsegmented',
    'raw/d/l/masks/f.jpg': 'orphan-mask',
    'raw/d/l/g.jpg': 'conflict',
    'raw/d/l/g.png': 'conflict',
    'raw/d/l/h.jpg': 'quarantined',
    [longKey]: 'quarantined',
    'raw/stray.jpg': 'quarantined',
  });
  assert.deepEqual(ledger.counts, { raw: 13, processed: 5, quarantined: 4, missing: 4 });
  assert.equal(ledger.counts.raw, ledger.counts.processed + ledger.counts.quarantined + ledger.counts.missing);
  assert.deepEqual(ledger.orphanOutputs, ['processed/d/l/zombie.png']);
  const c = ledger.entries.find((e) => e.key === 'raw/d/l/c.png');
  assert.deepEqual([c?.code, c?.reason], ['corrupt-image', 'truncated']);
  const text = formatLedger(ledger);
  assert.match(text, /^raw 13 {2}processed 5 {2}quarantined 4 {2}missing 4$/m);
  assert.match(text, /raw\/d\/l\/c\.png {2}corrupt-image: truncated/);
  assert.match(text, /raw\/d\/l\/b\.tif {2}invalid-input: mask aspect/);
  assert.match(text, /raw\/d\/l\/e\.jpg {2}unsegmented/);

  const empty = computeLedger({ raw: [], work: [] });
  assert.deepEqual(empty.counts, { raw: 0, processed: 0, quarantined: 0, missing: 0 });
});

test('a record where a store with a segment limit puts it counts, with or without the limit; conflicts are redriven', async () => {
  // 233-byte file name: quarantine/<key>.json fits S3 but not the local S3's 233-byte segments.
  const key = `raw/d/l/${'q'.repeat(229)}.jpg`;
  const local = quarantineRecordKey(key, { S3_MAX_KEY_SEGMENT_BYTES: '233' });
  assert.match(local, /^quarantine\/_long-keys\/[0-9a-f]{64}\.json$/);
  assert.equal(quarantineRecordKey(key, {}), `quarantine/${key}.json`, 'AWS: the plain key');
  assert.deepEqual(quarantineRecordKeys(key), [`quarantine/${key}.json`, local]);
  for (const record of quarantineRecordKeys(key)) {
    assert.equal(computeLedger({ raw: [key], work: [record] }).entries[0]?.status, 'quarantined', record);
  }
  // Two raw files in one processed output and no record (state from before conflicts were quarantined): redriven.
  const conflict = computeLedger({ raw: ['raw/d/l/g.jpg', 'raw/d/l/g.png'], work: ['processed/d/l/g.png'] });
  const seen: string[] = [];
  const noStore = new S3Store('unused');
  const done = await redrive(conflict, { raw: noStore, work: noStore }, { preprocess: async (e) => void seen.push(e.Records[0]?.s3.object.key ?? ''), segment: async () => undefined });
  assert.deepEqual(done, ['raw/d/l/g.jpg', 'raw/d/l/g.png']);
  assert.equal(seen.length, 2);
});

let cloud: LocalCloud;
let client: S3Client;
let stateDir: string;
let cloudOpen = false;

before(async () => {
  setLogSink(() => undefined);
  stateDir = await mkdtemp(join(tmpdir(), 'myeloscope-ledger-'));
  cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0 });
  cloudOpen = true;
  client = new S3Client({ endpoint: cloud.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
});

after(async () => {
  if (cloudOpen) await cloud.close();
  await rm(stateDir, { recursive: true, force: true });
});

async function put(c: S3Client, key: string, body: Uint8Array | string) {
  await c.send(new PutObjectCommand({ Bucket: 'myeloscope-raw', Key: key, Body: body }));
}

/** `npm run ledger` as a user runs it (through tsx), against the local state. */
async function ledgerCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, ...env };
  try {
    const out = await run(process.execPath, ['--import', 'tsx', 'functions/cli/ledger.ts', ...args], { env: clean, timeout: 60_000 });
    return { code: 0, ...out };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

test('mixed corpus through the local cloud: raw = processed + quarantined, nothing missing; the command agrees', async () => {
  const files = (await readdir(join(DATA, 'images'))).sort().slice(0, 3);
  for (const f of files) {
    await put(client, `raw/mixed/myeloma/masks/${f}`, await readFile(join(DATA, 'masks', f)));
    await put(client, `raw/mixed/myeloma/${f}`, await readFile(join(DATA, 'images', f)));
  }
  const image = await readFile(join(DATA, 'images', files[0] as string));
  await put(client, 'raw/mixed/myeloma/broken.jpg', image.subarray(0, 300));
  await put(client, 'raw/mixed/myeloma/notes.txt.png', 'not a picture');
  await put(client, 'raw/mixed/myeloma/masks/lonely.jpg', await readFile(join(DATA, 'masks', files[1] as string)));
  await put(client, 'raw/mixed/myeloma/wide.png', await sharp(image).resize(256, 128, { fit: 'fill' }).png().toBuffer());
  await put(client, 'raw/mixed/myeloma/masks/wide.png', await sharp(image).resize(128, 128).png().toBuffer());
  await put(client, 'raw/other/x/tiny.png', await sharp(image).resize(4, 4).png().toBuffer());
  await cloud.idle();
  assert.deepEqual(cloud.dispatcher.failures, []);

  const stores = { raw: new S3Store(cloud.buckets.raw), work: new S3Store(cloud.buckets.work) };
  const ledger = await readLedger(stores);
  assert.equal(ledger.counts.raw, 12);
  assert.equal(ledger.counts.missing, 0, formatLedger(ledger));
  assert.equal(ledger.counts.raw, ledger.counts.processed + ledger.counts.quarantined);
  assert.deepEqual(ledger.byStatus, { segmented: 3, mask: 4, quarantined: 3, 'orphan-mask': 1, 'segment-failed': 1 }, formatLedger(ledger));
  const reasons = Object.fromEntries(ledger.entries.filter((e) => e.code).map((e) => [e.key, e.code]));
  assert.deepEqual(reasons, {
    'raw/mixed/myeloma/broken.jpg': 'corrupt-image',
    'raw/mixed/myeloma/notes.txt.png': 'unsupported-format',
    'raw/mixed/myeloma/wide.png': 'invalid-input',
    'raw/other/x/tiny.png': 'image-limit',
  });
  const mixed = await readLedger(stores, { dataset: 'mixed' });
  assert.equal(mixed.counts.raw, 11);
  console.log(formatLedger(ledger));

  // The command, against the same state, after the cloud has stopped (it starts the local S3 only).
  const port = cloud.s3.port;
  await cloud.close();
  cloudOpen = false;
  const cli = await ledgerCli(['--local', '--state-dir', stateDir, '--json']);
  assert.equal(cli.code, 0, cli.stderr);
  const fromCli = JSON.parse(cli.stdout) as Ledger;
  assert.deepEqual(fromCli.counts, ledger.counts);
  const text = await ledgerCli(['--local', '--state-dir', stateDir, '--dataset', 'other']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /raw 1 {2}processed 0 {2}quarantined 1 {2}missing 0/);
  assert.match(text.stdout, /raw\/other\/x\/tiny\.png {2}image-limit: /);

  // A raw object written while nothing delivered its event (the cloud was down): missing, exit 1...
  const s3 = await startLocalS3({ directory: join(stateDir, 's3'), buckets: Object.values(cloud.buckets), port });
  const bare = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  await put(bare, `raw/mixed/myeloma/late ${files[2]}`, await readFile(join(DATA, 'images', files[2] as string)));
  await s3.close();
  const lost = await ledgerCli(['--local', '--state-dir', stateDir]);
  assert.equal(lost.code, 1, lost.stderr);
  assert.match(lost.stdout, /missing 1/);
  assert.match(lost.stdout, /missing:\n {2}"raw\/mixed\/myeloma\/late /);
  // ...until a redrive runs the handlers for it (in-process with --local: the local S3 alone delivers no events).
  const redriven = await ledgerCli(['--local', '--state-dir', stateDir, '--redrive', '--json']);
  assert.equal(redriven.code, 0, redriven.stderr);
  const after = JSON.parse(redriven.stdout) as Ledger;
  assert.equal(after.counts.missing, 0);
  assert.equal(after.entries.find((e) => e.key.includes('late '))?.status, 'segmented');
});

test('the command says what to set when no bucket is configured', async () => {
  const out = await ledgerCli([]);
  assert.equal(out.code, 2);
  assert.match(out.stderr, /RAW_BUCKET/);
  assert.match(out.stderr, /--local/);
  const bad = await ledgerCli(['--bogus']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /usage/);
});
