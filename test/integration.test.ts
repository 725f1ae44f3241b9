/**
 * End to end over real local parts: the local S3 over HTTP, S3 notifications from the CDK template, the real
 * handlers, the synthesized state machine run by the local ASL interpreter, and the inference API over HTTP.
 * Keys carry spaces, '+' and non-ASCII characters, which S3 URL-encodes in its events.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startLocalCloud, type LocalCloud } from '../infra/local/cloud.ts';
import { setLogSink } from '../layers/aws/src/events.ts';
import type { RunState } from '../layers/core/src/workflow.ts';

const DATA = 'test/data/segpc2021';
let cloud: LocalCloud;
let client: S3Client;
let stateDir: string;
const results: { fn: string; key: string; result: unknown }[] = [];

before(async () => {
  setLogSink(() => undefined);
  stateDir = await mkdtemp(join(tmpdir(), 'myeloscope-it-'));
  cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0, onDelivered: (fn, key, result) => results.push({ fn, key, result }) });
  client = new S3Client({ endpoint: cloud.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
});

after(async () => {
  await cloud?.close();
  await rm(stateDir, { recursive: true, force: true });
});

async function put(key: string, body: Uint8Array | string) {
  await client.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: key, Body: body }));
}

async function list(bucket: string, prefix: string): Promise<string[]> {
  const out = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (out.Contents ?? []).map((o) => o.Key as string);
}

async function getJson<T>(bucket: string, key: string): Promise<T> {
  const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return JSON.parse(await (out.Body as { transformToString(): Promise<string> }).transformToString()) as T;
}

// Awkward names: a space, '+', non-ASCII, parentheses; one file in a nested folder.
const names = (files: string[]) => files.map((f, i) => [f, [`a b ${i}.jpg`, `c+d ${i}.jpg`, `Zürich μ ${i}.jpg`, `(e) ${i}.jpg`, `sub dir/f ${i}.jpg`, `g${i}.jpg`][i % 6] as string] as const);

test('upload -> preprocess -> segment -> train workflow -> publish -> predict over HTTP', async () => {
  const files = (await readdir(join(DATA, 'images'))).sort().slice(0, 8);
  for (const [file, name] of names(files)) {
    await put(`raw/it/myeloma/masks/${name}`, await readFile(join(DATA, 'masks', file)));
    await put(`raw/it/myeloma/${name}`, await readFile(join(DATA, 'images', file)));
  }
  // Not an image: must be quarantined with a reason, not lost.
  await put('raw/it/myeloma/notes 1+1.jpg', 'this is not a JPEG');
  await cloud.idle();
  assert.deepEqual(cloud.dispatcher.failures, []);

  const processed = await list(cloud.buckets.work, 'processed/it/');
  assert.equal(processed.length, 16, `8 images + 8 masks processed, got ${processed.join(', ')}`);
  for (const [, name] of names(files)) {
    const stem = name.replace(/\.jpg$/, '');
    assert.ok(processed.includes(`processed/it/myeloma/${stem}.png`), `processed image for ${name}`);
    const cells = await getJson<{ cells: { label?: string }[]; maskKey: string | null }>(cloud.buckets.work, `segmented/it/myeloma/${stem}/cells.json`);
    assert.ok(cells.cells.length > 0, `cells found in ${name}`);
    assert.ok(cells.maskKey, `mask used for ${name}`);
    assert.ok(cells.cells.every((c) => c.label === 'plasma' || c.label === 'other'));
  }
  const quarantine = await list(cloud.buckets.work, 'quarantine/');
  assert.deepEqual(quarantine, ['quarantine/raw/it/myeloma/notes 1+1.jpg.json']);
  const reason = await getJson<{ code: string; reason: string }>(cloud.buckets.work, quarantine[0] as string);
  assert.equal(reason.code, 'unsupported-format');

  // The same event again changes nothing (idempotent handlers).
  const before = results.length;
  await put(`raw/it/myeloma/${names(files)[0]?.[1]}`, await readFile(join(DATA, 'images', files[0] as string)));
  await cloud.idle();
  const again = results.slice(before).flatMap((r) => ((r.result as { results: { status: string }[] }).results ?? []).map((x) => `${r.fn}:${x.status}`));
  assert.deepEqual(again, ['preprocess:unchanged']);

  const exec = await cloud.runTraining({ dataset: 'it', epochs: 2, runId: 'it-run-1' }, { name: 'it-exec-1' });
  assert.equal(exec.status, 'SUCCEEDED', `${exec.error}: ${exec.cause}`);
  for (const state of ['PrepareDataset', 'Train', 'Evaluate', 'Publish']) assert.ok(state in exec.timings, `${state} ran`);
  const run = exec.output as RunState;
  assert.equal(run.runId, 'it-run-1');
  assert.ok(run.counts.test > 0 && run.counts.train > 0);
  assert.ok(run.metrics && run.metrics.accuracy >= 0 && run.metrics.accuracy <= 1);
  const published = await list(cloud.buckets.models, 'models/it-run-1/');
  for (const f of ['model.json', 'weights.bin', 'evaluation.json', 'manifest.json', 'report.json', 'report.html', 'report/roc.png']) {
    assert.ok(published.includes(`models/it-run-1/${f}`), `published ${f}: ${published.join(', ')}`);
  }
  const latest = await getJson<{ runId: string }>(cloud.buckets.models, 'models/latest.json');
  assert.equal(latest.runId, 'it-run-1');

  // Bad input to the workflow fails fast with the reason.
  const bad = await cloud.runTraining({ dataset: 'it', epochs: 0 }, { name: 'it-exec-bad' });
  assert.equal(bad.status, 'FAILED');
  assert.match(`${bad.error} ${bad.cause}`, /epochs/);

  const res = await fetch(`${cloud.api.url}/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: await readFile(join(DATA, 'images', files[0] as string)) });
  assert.equal(res.status, 200);
  const body = (await res.json()) as { runId: string; cells: { class: string; probability: number }[]; plasmaCellCount: number; nucleatedCellCount: number; overlayPng: string };
  assert.equal(body.runId, 'it-run-1');
  assert.ok(body.nucleatedCellCount > 0);
  assert.equal(body.cells.length, body.nucleatedCellCount);
  assert.equal(body.plasmaCellCount, body.cells.filter((c) => c.class === 'plasma').length);
  assert.ok(body.cells.every((c) => c.probability >= 0 && c.probability <= 1));
  assert.deepEqual([...Buffer.from(body.overlayPng, 'base64').subarray(1, 4)], [0x50, 0x4e, 0x47]);

  const notImage = await fetch(`${cloud.api.url}/predict`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: 'hello' });
  assert.equal(notImage.status, 415);
  const empty = await fetch(`${cloud.api.url}/predict`, { method: 'POST', headers: { 'content-type': 'image/png' } });
  assert.equal(empty.status, 400);
});
