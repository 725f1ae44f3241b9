/**
 * The images task and its audit: labels from folders that also differ in size and format are flagged,
 * through the real workflow on the local cloud; a single-label dataset fails fast with the reason.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { auditImageLabels } from '../layers/core/src/audit.ts';
import { startLocalCloud, type LocalCloud } from '../infra/local/cloud.ts';
import { setLogSink } from '../layers/aws/src/events.ts';
import type { Manifest, RunState } from '../layers/core/src/workflow.ts';

test('audit: flags each attribute that alone separates the labels, and only those', () => {
  const items = [
    { label: 'a', sourceKey: 'raw/d/a/1.jpg', width: 512, height: 512 },
    { label: 'a', sourceKey: 'raw/d/a/2.jpg', width: 512, height: 384 },
    { label: 'b', sourceKey: 'raw/d/b/x-1.png', width: 103, height: 103 },
    { label: 'b', sourceKey: 'raw/d/b/x-2.jpg', width: 103, height: 103 },
  ];
  const byAttr = Object.fromEntries(auditImageLabels(items).map((f) => [f.attribute, f]));
  assert.equal(byAttr.size?.separatesLabels, true);
  assert.equal(byAttr.folder?.separatesLabels, true, 'file naming # vs x-# separates');
  assert.equal(byAttr.format?.separatesLabels, false, 'jpg appears under both labels');
  assert.equal(byAttr.acquisition, undefined, 'nothing recorded, nothing claimed');
  assert.deepEqual(byAttr.size?.valuesByLabel.b, ['103x103 (2)']);
  assert.match(byAttr.size?.message ?? '', /WARNING.*pixel size/);
  const same = auditImageLabels([
    { label: 'a', sourceKey: 'raw/d/a/1.jpg', width: 512, height: 512 },
    { label: 'b', sourceKey: 'raw/d/b/2.jpg', width: 512, height: 512 },
  ]);
  assert.ok(same.every((f) => !f.separatesLabels));
});

let cloud: LocalCloud;
let client: S3Client;
let stateDir: string;

before(async () => {
  setLogSink(() => undefined);
  stateDir = await mkdtemp(join(tmpdir(), 'myeloscope-audit-'));
  cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0 });
  client = new S3Client({ endpoint: cloud.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
});

after(async () => {
  await cloud?.close();
  await rm(stateDir, { recursive: true, force: true });
});

test('images task: trains on folder labels and its audit warns that size, format and naming give the label away', async () => {
  const dir = 'test/data/segpc2021/images';
  const files = (await readdir(dir)).sort().slice(0, 12);
  const put = (Key: string, Body: Uint8Array) => client.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key, Body }));
  // The flaw of the original project, reproduced: one "class" comes from another source (smaller PNGs).
  for (const [i, f] of files.entries()) {
    const bytes = await readFile(join(dir, f));
    if (i % 2 === 0) await put(`raw/audit/myeloma/${f}`, bytes);
    else await put(`raw/audit/other-source/img-${i}.png`, await sharp(bytes).resize(256, 192, { fit: 'fill' }).png().toBuffer());
  }
  await cloud.idle();
  assert.deepEqual(cloud.dispatcher.failures, []);

  const exec = await cloud.runTraining({ dataset: 'audit', task: 'images', epochs: 1, inputSize: 64, minRocAuc: 0, runId: 'audit-1' }, { name: 'audit-1' });
  assert.equal(exec.status, 'SUCCEEDED', `${exec.error}: ${exec.cause}`);
  const run = exec.output as RunState;
  assert.deepEqual(run.classes, ['myeloma', 'other-source']);
  assert.equal(run.counts.sources, 12);
  assert.equal(run.counts.train + run.counts.val + run.counts.test, 12, 'one sample per image');
  assert.ok(run.auditWarnings && run.auditWarnings.length >= 3, `warnings: ${JSON.stringify(run.auditWarnings)}`);
  const out = await client.send(new GetObjectCommand({ Bucket: cloud.buckets.work, Key: 'runs/audit-1/manifest.json' }));
  const manifest = JSON.parse(await (out.Body as { transformToString(): Promise<string> }).transformToString()) as Manifest;
  const flagged = (manifest.audit ?? []).filter((f) => f.separatesLabels).map((f) => f.attribute).sort();
  assert.deepEqual(flagged, ['folder', 'format', 'size']);
  assert.ok(manifest.samples.every((s) => s.cropKey.endsWith('/roi.png')), 'the ROI-masked image is the input');
  // The published report shows the audit.
  const rep = await client.send(new GetObjectCommand({ Bucket: cloud.buckets.models, Key: 'models/audit-1/report.html' }));
  const html = await (rep.Body as { transformToString(): Promise<string> }).transformToString();
  assert.match(html, /Audit: do the labels give themselves away/);
  assert.match(html, /3 warning\(s\)/);
  assert.match(html, /256x192 \(6\)/);

  const one = await cloud.runTraining({ dataset: 'it-one-label', task: 'images', epochs: 1 }, { name: 'audit-2' });
  assert.equal(one.status, 'FAILED');
  assert.match(`${one.cause}`, /needs exactly 2 labels/);
});
