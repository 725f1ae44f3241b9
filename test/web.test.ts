/**
 * The web page in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core): served by
 * the local API from functions/web/, it posts a bundled image to the local /predict, draws the overlay, the
 * counts and the cell table from the API's answer, and shows a cell's saliency map on click.
 *
 * Needs Chromium: `apt-get update && apt-get install -y chromium`. Without it the test fails (never skips).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { startLocalCloud, type LocalCloud } from '../infra/local/cloud.ts';
import { startLocalApi, type LocalApi } from '../infra/local/api.ts';
import { setLogSink } from '../layers/aws/src/events.ts';
import { S3Store } from '../layers/aws/src/s3.ts';
import { initBackend } from '../layers/core/src/ml/backend.ts';
import { buildCellModel } from '../layers/core/src/ml/model.ts';
import { saveModel } from '../layers/core/src/ml/io.ts';

const CHROMIUM = '/usr/bin/chromium';
const IMAGE = 'test/data/segpc2021/images/106.jpg';
const SHOTS = process.env.MYELOSCOPE_SCREENSHOTS ?? tmpdir();

interface Cell {
  id: number;
  class: 'plasma' | 'other';
  probability: number;
  explanation?: { heatmapPng: string; cropPng: string };
}
interface Prediction {
  runId: string;
  nucleatedCellCount: number;
  plasmaCellCount: number;
  plasmaCellFraction: number;
  call: { label: string; threshold: number };
  cells: Cell[];
  overlayPng: string;
}

let cloud: LocalCloud;
let api: LocalApi;
let stateDir: string;
let context: BrowserContext;
let page: Page;

async function publish(runId: string, model: tf.LayersModel): Promise<void> {
  const store = new S3Store(cloud.buckets.models);
  const prefix = `models/${runId}/`;
  await saveModel(model, store, prefix);
  await store.put(`${prefix}report.html`, `<!doctype html><title>Evaluation ${runId}</title><h1>Evaluation of ${runId}</h1>`, 'text/html; charset=utf-8');
  await store.putJson('models/latest.json', { runId, publishedAt: new Date().toISOString(), modelPrefix: prefix, modelUri: store.uri(`${prefix}model.json`) });
}

async function predict(bytes: Uint8Array, type: string): Promise<Prediction> {
  const res = await fetch(`${api.url}/predict?explain=all`, { method: 'POST', headers: { 'content-type': type }, body: bytes });
  assert.equal(res.status, 200);
  return (await res.json()) as Prediction;
}

before(async () => {
  // Fail, with the fix, rather than skip: the page is part of the product.
  assert.ok(
    existsSync(CHROMIUM),
    `${CHROMIUM} is missing: install Debian's Chromium with \`apt-get update && apt-get install -y chromium\` (nothing downloads a browser)`,
  );
  setLogSink(() => undefined);
  process.env.MODEL_REFRESH_SECONDS = '0';
  stateDir = await mkdtemp(join(tmpdir(), 'myeloscope-web-'));
  cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0 });
  const { handler } = (await import('../functions/inference/index.ts')) as { handler: (e: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult> };
  // The API as cloud.ts should start it: the template's routes plus the page (see the report).
  api = await startLocalApi({
    routes: cloud.app.api.routes,
    handlers: { inference: handler },
    binaryMediaTypes: cloud.app.api.binaryMediaTypes,
    staticDir: new URL('../functions/web/', import.meta.url),
    port: 0,
  });
  await initBackend();
  // A tiny untrained model, its output bias moved so that about a third of the cells are called plasma.
  const model = buildCellModel({ seed: 5 });
  await publish('web-run-0', model);
  const first = await predict(await readFile(IMAGE), 'image/jpeg');
  const sorted = first.cells.map((c) => c.probability).sort((a, b) => a - b);
  const logit = (v: number) => Math.log(Math.min(0.999, Math.max(0.001, v)) / (1 - Math.min(0.999, Math.max(0.001, v))));
  const i = Math.floor(0.65 * (sorted.length - 1));
  const cut = (logit(sorted[i] as number) + logit((sorted[i + 1] ?? (sorted[i] as number) + 0.01) as number)) / 2;
  const layer = model.getLayer('plasma');
  const [kernel, bias] = layer.getWeights() as [tf.Tensor, tf.Tensor];
  const shifted = bias.sub(cut);
  layer.setWeights([kernel, shifted]);
  shifted.dispose();
  await publish('web-run-1', model);
  model.dispose();

  const userDataDir = await mkdtemp(join(tmpdir(), 'myeloscope-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 1100 },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (err) => assert.fail(`page error: ${err.message}`));
});

after(async () => {
  await context?.close();
  await api?.close();
  await cloud?.close();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

async function shownCounts(p: Page) {
  return {
    nucleated: Number(await p.textContent('#count-nucleated')),
    plasma: Number(await p.textContent('#count-plasma')),
    fraction: await p.textContent('#fraction'),
    rows: await p.$$eval('#cells tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent ?? ''))),
  };
}

function expectedRows(r: Prediction) {
  return r.cells.map((c) => [String(c.id), c.class, c.probability.toFixed(3)]);
}

test('the page: upload through the file input, overlay, counts and table match the API, click a cell for its saliency map', async () => {
  const res = await page.goto(`${api.url}/`);
  assert.equal(res?.status(), 200);
  assert.match(await page.title(), /Myeloscope/);
  assert.equal(await page.isVisible('#results'), false);

  await page.setInputFiles('#file', IMAGE);
  await page.waitForSelector('#results', { state: 'visible', timeout: 60_000 });
  await page.waitForFunction("document.getElementById('overlay')?.naturalWidth === 512");

  const apiResult = await predict(await readFile(IMAGE), 'image/jpeg');
  assert.equal(apiResult.runId, 'web-run-1');
  assert.ok(apiResult.plasmaCellCount > 0 && apiResult.plasmaCellCount < apiResult.nucleatedCellCount, 'both classes on screen');
  const shown = await shownCounts(page);
  assert.equal(shown.nucleated, apiResult.nucleatedCellCount);
  assert.equal(shown.plasma, apiResult.plasmaCellCount);
  assert.equal(shown.fraction, `${(apiResult.plasmaCellFraction * 100).toFixed(1)} %`);
  assert.deepEqual(shown.rows.map((r) => r.slice(0, 3)), expectedRows(apiResult));
  assert.match((await page.textContent('#model')) ?? '', /web-run-1/);
  assert.match((await page.textContent('#call')) ?? '', /threshold 10\.0 %/);
  // The overlay on screen is the API's overlay.
  const src = await page.getAttribute('#overlay', 'src');
  assert.equal(src, `data:image/png;base64,${apiResult.overlayPng}`);

  // Click the first plasma cell on the image: its saliency map and crop appear.
  const plasma = apiResult.cells.find((c) => c.class === 'plasma') as Cell;
  await page.click(`.hotspot[data-cell-id="${plasma.id}"]`);
  await page.waitForSelector('#explain', { state: 'visible' });
  await page.waitForFunction("document.getElementById('saliency')?.naturalWidth === 64");
  assert.equal(await page.textContent('#explain-id'), String(plasma.id));
  assert.equal(await page.textContent('#explain-class'), 'plasma cell');
  assert.equal(await page.getAttribute('#saliency', 'src'), `data:image/png;base64,${plasma.explanation?.heatmapPng}`);
  assert.equal(await page.getAttribute(`#cells tbody tr[data-cell-id="${plasma.id}"]`, 'class'), 'selected');
  const shot = join(SHOTS, 'myeloscope-web.png');
  await page.screenshot({ path: shot, fullPage: true });
  const meta = await sharp(shot).metadata();
  assert.ok((meta.width ?? 0) >= 1000, `screenshot ${shot}`);

  // A row of the table selects its cell too.
  const other = apiResult.cells.find((c) => c.class === 'other') as Cell;
  await page.click(`#cells tbody tr[data-cell-id="${other.id}"]`);
  assert.equal(await page.textContent('#explain-class'), 'other nucleated cell');
  assert.equal(await page.getAttribute('#saliency', 'src'), `data:image/png;base64,${other.explanation?.heatmapPng}`);

  // The report link opens the latest run's evaluation report.
  const href = await page.getAttribute('#report-link', 'href');
  const report = await page.request.get(new URL(href ?? '', page.url()).href);
  assert.equal(report.status(), 200);
  assert.match(await report.text(), /Evaluation of web-run-1/);
});

test('the page: drag and drop a PNG; a bad file shows the API message', async () => {
  await page.goto(`${api.url}/`);
  const png = await sharp(IMAGE).png().toBuffer();
  // In-page code as a string: this file is type-checked without the DOM library.
  await page.evaluate(`(() => {
    const bytes = Uint8Array.from(atob(${JSON.stringify(png.toString('base64'))}), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
    const zone = document.getElementById('drop');
    zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  })()`);
  await page.waitForSelector('#results', { state: 'visible', timeout: 60_000 });
  const apiResult = await predict(png, 'image/png');
  const shown = await shownCounts(page);
  assert.equal(shown.nucleated, apiResult.nucleatedCellCount);
  assert.equal(shown.plasma, apiResult.plasmaCellCount);
  assert.match((await page.textContent('#status')) ?? '', /dropped\.png/);

  const notes = join(stateDir, 'notes.png');
  await writeFile(notes, 'this is not an image');
  await page.setInputFiles('#file', notes);
  await page.waitForSelector('#status.error');
  assert.match((await page.textContent('#status')) ?? '', /Could not analyse notes\.png: not an image/);
  assert.equal(await page.isVisible('#results'), false);
});

test('the page: an image over the direct-upload limit goes through a presigned PUT to S3 (bucket CORS from the template)', async () => {
  await page.goto(`${api.url}/`);
  // Uncompressed PNG of an upscaled bundled image: about 7.7 MB, over the page's 4.5 MB direct limit.
  const big = join(stateDir, 'big slide.png');
  await writeFile(big, await sharp(IMAGE).resize(1600, 1600).png({ compressionLevel: 0 }).toBuffer());
  const failed: string[] = [];
  page.on('requestfailed', (r) => failed.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText ?? ''}`));
  await page.setInputFiles('#file', big);
  await page.waitForSelector('#results, #status.error', { state: 'visible', timeout: 90_000 });
  assert.equal(await page.isVisible('#results'), true, `${(await page.textContent('#status')) ?? ''} ${failed.join('; ')}`);
  assert.ok(Number(await page.textContent('#count-nucleated')) > 0);
  assert.match((await page.textContent('#status')) ?? '', /big slide\.png/);
  assert.deepEqual(failed, []);
});

test('static serving: index, assets with their types, no escape from the folder', async () => {
  for (const [path, type] of [['/', /text\/html/], ['/app.js', /javascript/], ['/style.css', /text\/css/], ['/config.js', /javascript/]] as const) {
    const res = await fetch(`${api.url}${path}`);
    assert.equal(res.status, 200, path);
    assert.match(res.headers.get('content-type') ?? '', type, path);
    await res.arrayBuffer();
  }
  for (const path of ['/../package.json', '/%2e%2e/package.json', '/nope.js']) {
    const res = await fetch(`${api.url}${path}`);
    assert.equal(res.status, 404, path);
    await res.arrayBuffer();
  }
});
