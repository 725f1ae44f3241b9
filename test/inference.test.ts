/**
 * The inference API over the real local HTTP endpoint (local S3 over HTTP, routes from the CDK template, the
 * real handler): real images in four formats, every kind of bad input, presigned uploads, model refresh,
 * saliency maps, the report route, flat tensor memory across many requests; and the InferenceApi construct.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { App, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { connect } from 'node:net';
import { startLocalCloud, type LocalCloud } from '../infra/local/cloud.ts';
import { startLocalApi } from '../infra/local/api.ts';
import { InferenceApi } from '../infra/lib/inference-api.ts';
import { setLogSink } from '../layers/aws/src/events.ts';
import { S3Store } from '../layers/aws/src/s3.ts';
import { initBackend } from '../layers/core/src/ml/backend.ts';
import { buildCellModel } from '../layers/core/src/ml/model.ts';
import { saveModel } from '../layers/core/src/ml/io.ts';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';

const IMAGE = 'test/data/segpc2021/images/106.jpg';
let cloud: LocalCloud;
let stateDir: string;
let url: string;
let handler: (e: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>;

interface Cell {
  id: number;
  bbox: { x: number; y: number; width: number; height: number };
  class: 'plasma' | 'other';
  probability: number;
  explanation?: { method: string; cropPng: string; heatmapPng: string };
}
interface Prediction {
  runId: string;
  image: { width: number; height: number; format: string; analysedWidth: number; analysedHeight: number };
  counts: { nucleated: number; plasma: number; other: number };
  nucleatedCellCount: number;
  plasmaCellCount: number;
  plasmaCellFraction: number;
  call: { label: string; threshold: number; cellProbabilityThreshold: number };
  cells: Cell[];
  explainNotFound?: number[];
  overlayPng: string;
}
interface ErrorBody {
  error: { code: string; message: string };
}

/** A minimal 24-bit bottom-up BMP (sharp cannot write BMP). */
function encodeBmp(rgb: Uint8Array, width: number, height: number): Buffer {
  const row = Math.ceil((width * 3) / 4) * 4;
  const buf = Buffer.alloc(54 + row * height);
  buf.write('BM', 0, 'ascii');
  buf.writeUInt32LE(buf.length, 2);
  buf.writeUInt32LE(54, 10);
  buf.writeUInt32LE(40, 14);
  buf.writeInt32LE(width, 18);
  buf.writeInt32LE(height, 22);
  buf.writeUInt16LE(1, 26);
  buf.writeUInt16LE(24, 28);
  buf.writeUInt32LE(row * height, 34);
  for (let y = 0; y < height; y++) {
    const o = 54 + (height - 1 - y) * row;
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 3;
      buf[o + x * 3] = rgb[p + 2] as number;
      buf[o + x * 3 + 1] = rgb[p + 1] as number;
      buf[o + x * 3 + 2] = rgb[p] as number;
    }
  }
  return buf;
}

async function publish(runId: string, model: tf.LayersModel): Promise<void> {
  const store = new S3Store(cloud.buckets.models);
  const prefix = `models/${runId}/`;
  await saveModel(model, store, prefix);
  await store.put(`${prefix}report.html`, `<!doctype html><title>report ${runId}</title><h1>Evaluation of ${runId}</h1>`, 'text/html; charset=utf-8');
  await store.putJson('models/latest.json', { runId, publishedAt: new Date().toISOString(), modelPrefix: prefix, modelUri: store.uri(`${prefix}model.json`) });
}

/** Moves the output unit's bias so that about `share` of the given scores end above 0.5. */
function recalibrated(model: tf.LayersModel, scores: number[], share: number): void {
  const sorted = [...scores].sort((a, b) => a - b);
  const q = Math.min(0.999, Math.max(0.001, sorted[Math.floor((1 - share) * (sorted.length - 1))] as number));
  const layer = model.getLayer('plasma');
  const [kernel, bias] = layer.getWeights() as [tf.Tensor, tf.Tensor];
  // Halfway (in logits) between the chosen score and the next one up: no cell sits on the threshold.
  const next = Math.min(0.999, sorted.find((v) => v > q) ?? q + 0.01);
  const logit = (v: number) => Math.log(v / (1 - v));
  const shifted = tf.tidy(() => bias.sub((logit(q) + logit(next)) / 2));
  layer.setWeights([kernel, shifted]);
  shifted.dispose();
}

async function post(path: string, body: Uint8Array | string | undefined, contentType?: string): Promise<Response> {
  return fetch(`${url}${path}`, { method: 'POST', ...(contentType ? { headers: { 'content-type': contentType } } : {}), ...(body !== undefined ? { body } : {}) });
}

async function predictOk(path: string, body: Uint8Array | string, contentType: string): Promise<Prediction> {
  const res = await post(path, body, contentType);
  const text = await res.text();
  assert.equal(res.status, 200, text.slice(0, 300));
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  return JSON.parse(text) as Prediction;
}

async function assertConsistent(p: Prediction): Promise<void> {
  assert.ok(p.nucleatedCellCount > 5, `cells found: ${p.nucleatedCellCount}`);
  assert.equal(p.cells.length, p.nucleatedCellCount);
  assert.equal(p.counts.nucleated, p.nucleatedCellCount);
  const plasma = p.cells.filter((c) => c.class === 'plasma').length;
  assert.equal(p.plasmaCellCount, plasma);
  assert.equal(p.counts.plasma, plasma);
  assert.equal(p.counts.other, p.cells.length - plasma);
  assert.ok(Math.abs(p.plasmaCellFraction - plasma / p.cells.length) < 1e-4);
  assert.equal(p.call.label, p.plasmaCellFraction >= p.call.threshold ? 'plasma-cell-fraction-high' : 'plasma-cell-fraction-low');
  assert.equal(p.call.threshold, 0.1);
  for (const c of p.cells) {
    assert.ok(c.probability >= 0 && c.probability <= 1);
    assert.equal(c.class, c.probability >= p.call.cellProbabilityThreshold ? 'plasma' : 'other');
    assert.ok(c.bbox.x >= 0 && c.bbox.y >= 0 && c.bbox.x + c.bbox.width <= p.image.analysedWidth && c.bbox.y + c.bbox.height <= p.image.analysedHeight);
  }
  assert.equal(new Set(p.cells.map((c) => c.id)).size, p.cells.length, 'cell ids are unique');
  const meta = await sharp(Buffer.from(p.overlayPng, 'base64')).metadata();
  assert.equal(meta.format, 'png');
  assert.deepEqual([meta.width, meta.height], [p.image.analysedWidth, p.image.analysedHeight]);
}

let jpeg: Buffer;
let rgb: { data: Buffer; width: number; height: number };

before(async () => {
  setLogSink(() => undefined);
  process.env.MODEL_REFRESH_SECONDS = '0';
  stateDir = await mkdtemp(join(tmpdir(), 'myeloscope-inference-'));
  cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0 });
  url = cloud.api.url;
  ({ handler } = await import('../functions/inference/index.ts'));
  await initBackend();
  jpeg = await readFile(IMAGE);
  const raw = await sharp(jpeg).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  rgb = { data: raw.data, width: raw.info.width, height: raw.info.height };
});

after(async () => {
  await cloud?.close();
  await rm(stateDir, { recursive: true, force: true });
});

test('routes come from the CDK template: POST /predict, POST /uploads, GET /report, IAM auth', () => {
  const routes = cloud.app.api.routes.map((r) => `${r.method} ${r.path} ${r.function} ${r.authorizationType}`).sort();
  assert.deepEqual(routes, ['GET /report inference AWS_IAM', 'POST /predict inference AWS_IAM', 'POST /uploads inference AWS_IAM']);
});

test('before any model is published: 503 no-model, not a 500', async () => {
  const res = await post('/predict', jpeg, 'image/jpeg');
  assert.equal(res.status, 503);
  assert.equal(((await res.json()) as ErrorBody).error.code, 'no-model');
});

test('JPEG, PNG, TIFF and BMP of one image: 200 with the same consistent answer; the model refreshes', async () => {
  await publish('inf-run-1', buildCellModel({ seed: 3 }));
  const first = await predictOk('/predict', jpeg, 'image/jpeg');
  assert.equal(first.runId, 'inf-run-1');
  // A second run whose bias makes about a third of the cells plasma: the refresh must pick it up (interval 0).
  const model = buildCellModel({ seed: 3 });
  recalibrated(model, first.cells.map((c) => c.probability), 0.35);
  await publish('inf-run-2', model);

  const png = await sharp(rgb.data, { raw: { width: rgb.width, height: rgb.height, channels: 3 } }).png().toBuffer();
  const tiff = await sharp(rgb.data, { raw: { width: rgb.width, height: rgb.height, channels: 3 } }).tiff({ compression: 'lzw' }).toBuffer();
  const bmp = encodeBmp(rgb.data, rgb.width, rgb.height);
  const results: Record<string, Prediction> = {};
  for (const [name, bytes, type] of [['jpeg', jpeg, 'image/jpeg'], ['png', png, 'image/png'], ['tiff', tiff, 'image/tiff'], ['bmp', bmp, 'image/bmp']] as const) {
    const p = await predictOk('/predict', bytes, type);
    assert.equal(p.runId, 'inf-run-2', `${name}: the newer model answers`);
    assert.equal(p.image.format, name);
    await assertConsistent(p);
    results[name] = p;
  }
  const jpegResult = results.jpeg as Prediction;
  assert.ok(jpegResult.plasmaCellCount > 0 && jpegResult.plasmaCellCount < jpegResult.nucleatedCellCount, 'both classes present');
  assert.notDeepEqual(jpegResult.cells.map((c) => c.probability), first.cells.map((c) => c.probability));
  // Same pixels, same answer, whatever the container format.
  const summary = (p: Prediction) => ({ cells: p.cells, plasma: p.plasmaCellCount, fraction: p.plasmaCellFraction, overlay: p.overlayPng });
  for (const name of ['png', 'tiff', 'bmp']) assert.deepEqual(summary(results[name] as Prediction), summary(jpegResult), `${name} = jpeg`);
  // application/octet-stream and no content type are fine too.
  assert.equal((await predictOk('/predict', jpeg, 'application/octet-stream')).nucleatedCellCount, jpegResult.nucleatedCellCount);

  // The overlay shows the model's calls: red contour pixels inside plasma cells' boxes, green inside the others'.
  const overlay = await sharp(Buffer.from(jpegResult.overlayPng, 'base64')).raw().toBuffer({ resolveWithObject: true });
  const has = (c: Cell, colour: [number, number, number]) => {
    const { x, y, width, height } = c.bbox;
    for (let yy = y; yy < y + height; yy++) {
      for (let xx = x; xx < x + width; xx++) {
        const p = (yy * overlay.info.width + xx) * overlay.info.channels;
        if (overlay.data[p] === colour[0] && overlay.data[p + 1] === colour[1] && overlay.data[p + 2] === colour[2]) return true;
      }
    }
    return false;
  };
  for (const c of jpegResult.cells) {
    assert.ok(has(c, c.class === 'plasma' ? [255, 40, 40] : [40, 220, 40]), `cell ${c.id} drawn as ${c.class}`);
  }
});

test('bad input: a clear 4xx JSON error for each mistake, never a 500', async () => {
  const truncated = jpeg.subarray(0, Math.floor(jpeg.length / 3));
  const tiny = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#888' } }).png().toBuffer();
  const cases: [string, () => Promise<Response>, number, string, RegExp?][] = [
    ['not an image', () => post('/predict', 'hello, this is text', 'image/png'), 415, 'unsupported-format'],
    ['text content type', () => post('/predict', 'hello', 'text/plain'), 415, 'unsupported-media-type'],
    ['multipart form', () => post('/predict', '--x\r\n\r\n--x--', 'multipart/form-data; boundary=x'), 415, 'unsupported-media-type', /image bytes/],
    ['empty body', () => post('/predict', undefined, 'image/png'), 400, 'empty-input'],
    // Without a binary media type API Gateway (and the local API) pass the body on as text: the bytes are lost.
    ['JPEG without Content-Type', () => post('/predict', jpeg), 415, 'unsupported-media-type', /Content-Type: image\/\*/],
    ['100 kB query string', () => fetch(`${url}/report?runId=${'a'.repeat(100_000)}`), 431, 'request-too-large', /16 KB/],
    ['truncated JPEG', () => post('/predict', truncated, 'image/jpeg'), 422, 'corrupt-image'],
    ['8x8 image', () => post('/predict', tiny, 'image/png'), 422, 'image-limit', /too small/],
    ['over the direct limit', () => post('/predict', Buffer.alloc(4_600_000, 7), 'image/jpeg'), 413, 'too-large', /\/uploads/],
    ['GET /predict', () => fetch(`${url}/predict`), 405, 'method-not-allowed'],
    ['GET /uploads', () => fetch(`${url}/uploads`), 405, 'method-not-allowed'],
    ['bad JSON', () => post('/predict', '{"key":', 'application/json'), 400, 'invalid-json'],
    ['JSON without key', () => post('/predict', '{}', 'application/json'), 400, 'missing-key'],
    ['foreign key', () => post('/predict?key=processed/x/y/z.png', jpeg, 'image/jpeg'), 400, 'invalid-key'],
    ['never uploaded', () => post('/predict', JSON.stringify({ key: 'uploads/00000000-0000-4000-8000-000000000000.png' }), 'application/json'), 404, 'upload-not-found'],
    ['bad explain', () => post('/predict?explain=first', jpeg, 'image/jpeg'), 400, 'invalid-explain'],
    ['upload of a PDF', () => post('/uploads', JSON.stringify({ contentType: 'application/pdf' }), 'application/json'), 415, 'unsupported-media-type'],
    ['report of a bad run id', () => fetch(`${url}/report?runId=..%2Fx`), 400, 'invalid-input'],
  ];
  for (const [name, send, status, code, message] of cases) {
    const res = await send();
    const text = await res.text();
    assert.equal(res.status, status, `${name}: ${text.slice(0, 300)}`);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/, name);
    const body = JSON.parse(text) as ErrorBody;
    assert.equal(body.error.code, code, name);
    assert.ok(body.error.message.length > 10, `${name} explains itself`);
    if (message) assert.match(body.error.message, message, name);
  }
  // The handler itself (as on Lambda, where API Gateway would pass any method through an ANY route).
  const direct = await handler({ httpMethod: 'DELETE', resource: '/predict', path: '/predict', headers: {}, body: null, isBase64Encoded: false } as unknown as APIGatewayProxyEvent);
  assert.equal(direct.statusCode, 405);
});

test('presigned upload: POST /uploads, PUT to the local S3, predict by key (query or JSON) for an image over the direct limit', async () => {
  // An uncompressed 2400x1800 TIFF (~13 MB): too large for a direct POST, fine through S3.
  const big = await sharp(jpeg).resize(2400, 1800, { fit: 'fill' }).tiff({ compression: 'none' }).toBuffer();
  assert.ok(big.length > 4_500_000);
  // Over API Gateway's 10 MB: refused before the function, pointing to /uploads.
  const direct = await post('/predict', big, 'image/tiff');
  assert.equal(direct.status, 413);
  assert.match(((await direct.json()) as ErrorBody).error.message, /\/uploads/);

  const ticketRes = await post('/uploads', JSON.stringify({ contentType: 'image/tiff' }), 'application/json');
  assert.equal(ticketRes.status, 200);
  const ticket = (await ticketRes.json()) as { uploadUrl: string; key: string; expiresIn: number; method: string; headers: Record<string, string> };
  assert.match(ticket.key, /^uploads\/[0-9a-f-]{36}\.tif$/);
  assert.equal(ticket.expiresIn, 300);
  assert.equal(ticket.method, 'PUT');
  assert.ok(ticket.uploadUrl.startsWith(cloud.s3.endpoint), `presigned against the local endpoint: ${ticket.uploadUrl}`);
  assert.match(ticket.uploadUrl, /X-Amz-Signature=/);
  // (s3rver does not check presigned signatures, so only the URL's terms are checked here.)
  assert.equal(new URL(ticket.uploadUrl).searchParams.get('X-Amz-Expires'), '300');
  assert.equal(new URL(ticket.uploadUrl).pathname, `/${cloud.buckets.work}/${ticket.key}`);
  // No checksum of the empty body the SDK signs: S3 would check it against the real upload and refuse it.
  const signed = [...new URL(ticket.uploadUrl).searchParams.keys()].map((k) => k.toLowerCase());
  assert.deepEqual(signed.filter((k) => k.startsWith('x-amz-checksum') || k === 'x-amz-sdk-checksum-algorithm'), [], ticket.uploadUrl);
  const put = await fetch(ticket.uploadUrl, { method: 'PUT', headers: ticket.headers, body: big });
  assert.equal(put.status, 200, await put.text());

  const byQuery = await predictOk(`/predict?key=${encodeURIComponent(ticket.key)}`, '', 'application/octet-stream');
  const byJson = await predictOk('/predict', JSON.stringify({ key: ticket.key, explain: 'all' }), 'application/json');
  for (const p of [byQuery, byJson]) {
    await assertConsistent(p);
    assert.deepEqual([p.image.width, p.image.height, p.image.format], [2400, 1800, 'tiff']);
  }
  assert.deepEqual(byJson.cells.map((c) => c.probability), byQuery.cells.map((c) => c.probability));
  assert.ok(byJson.cells.every((c) => c.explanation), 'explain in the JSON body');

});

test('a client that stalls mid-body gets a JSON 408 and is closed, not held for Node\'s 300 s', async () => {
  // The local servers default to 30 s for a whole request (a 4.5 MB body on loopback takes milliseconds).
  for (const server of [cloud.api.server, cloud.sfn.server]) assert.equal(server.requestTimeout, 30_000);
  const api = await startLocalApi({ routes: cloud.app.api.routes, handlers: { inference: handler }, binaryMediaTypes: cloud.app.api.binaryMediaTypes, port: 0, requestTimeoutMs: 500 });
  try {
    const t0 = performance.now();
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect(api.port, '127.0.0.1', () => {
        socket.write('POST /predict HTTP/1.1\r\nHost: local\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n');
        socket.write(jpeg.subarray(0, 1000));
      });
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
      setTimeout(() => reject(new Error(`no answer in 10 s: ${text}`)), 10_000).unref();
    });
    const seconds = (performance.now() - t0) / 1000;
    assert.match(reply, /^HTTP\/1\.1 408 /, reply);
    assert.equal((JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as ErrorBody).error.code, 'request-timeout');
    assert.ok(seconds < 5, `answered after ${seconds.toFixed(1)} s`);
  } finally {
    await api.close();
  }
});

test('explain: saliency heatmaps for all cells or chosen ones', async () => {
  const all = await predictOk('/predict?explain=all', jpeg, 'image/jpeg');
  for (const c of all.cells) {
    assert.equal(c.explanation?.method, 'saliency');
    for (const png of [c.explanation?.heatmapPng, c.explanation?.cropPng]) {
      const meta = await sharp(Buffer.from(png ?? '', 'base64')).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
    }
    assert.notEqual(c.explanation?.heatmapPng, c.explanation?.cropPng);
  }
  const ids = all.cells.slice(0, 2).map((c) => c.id);
  const some = await predictOk(`/predict?explain=${ids.join(',')},9999`, jpeg, 'image/jpeg');
  assert.deepEqual(some.cells.filter((c) => c.explanation).map((c) => c.id), ids);
  assert.deepEqual(some.explainNotFound, [9999]);
  // The heatmap of a cell is the same whether explained alone or with all others.
  assert.equal(some.cells.find((c) => c.id === ids[0])?.explanation?.heatmapPng, all.cells.find((c) => c.id === ids[0])?.explanation?.heatmapPng);
  const none = await predictOk('/predict', jpeg, 'image/jpeg');
  assert.ok(none.cells.every((c) => c.explanation === undefined));
});

test('GET /report serves the latest run report; CORS preflight answered', async () => {
  const res = await fetch(`${url}/report`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/html/);
  assert.equal(res.headers.get('x-myeloscope-run-id'), 'inf-run-2');
  assert.match(await res.text(), /Evaluation of inf-run-2/);
  const old = await fetch(`${url}/report?runId=inf-run-1`);
  assert.match(await old.text(), /inf-run-1/);
  const missing = await fetch(`${url}/report?runId=never-run`);
  assert.equal(missing.status, 404);

  const pre = await fetch(`${url}/predict`, { method: 'OPTIONS', headers: { origin: 'http://example.org', 'access-control-request-method': 'POST' } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), '*');
  assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
  assert.match(pre.headers.get('access-control-allow-headers') ?? '', /Content-Type/);
  const ok = await post('/predict', jpeg, 'image/jpeg');
  assert.equal(ok.headers.get('access-control-allow-origin'), '*');
  await ok.arrayBuffer();
});

test('memory stays flat: tensor count constant over 30 requests after warm-up', async () => {
  const png = await sharp(jpeg).png().toBuffer();
  await predictOk('/predict?explain=all', png, 'image/png');
  const baseline = tf.memory().numTensors;
  const counts: number[] = [];
  for (let i = 0; i < 30; i++) {
    const explain = i % 3 === 0 ? '?explain=all' : '';
    await predictOk(`/predict${explain}`, i % 2 ? jpeg : png, i % 2 ? 'image/jpeg' : 'image/png');
    if (i % 5 === 4) {
      const bad = await post('/predict', jpeg.subarray(0, 500), 'image/jpeg');
      assert.equal(bad.status, 422);
      await bad.arrayBuffer();
    }
    counts.push(tf.memory().numTensors);
  }
  assert.deepEqual(new Set(counts), new Set([baseline]), `tensors: baseline ${baseline}, seen ${[...new Set(counts)].join(', ')}`);
  // A refresh to a new model disposes the old one: the count stays the model's size.
  // (Building and saving a model in the test leaves a few tensors of its own behind: count them apart.)
  const before = tf.memory().numTensors;
  const m = buildCellModel({ seed: 9 });
  await publish('inf-run-3', m);
  m.dispose();
  const testSide = tf.memory().numTensors - before;
  assert.equal((await predictOk('/predict', jpeg, 'image/jpeg')).runId, 'inf-run-3');
  assert.equal(tf.memory().numTensors, baseline + testSide, 'after the swap the old model is gone');
});

test('InferenceApi construct: CORS preflight, gateway responses with CORS, throttling, upload grants, optional API key', () => {
  const app = new App();
  const stack = new Stack(app, 'T');
  const fn = new lambda.Function(stack, 'Fn', { runtime: lambda.Runtime.NODEJS_20_X, handler: 'index.handler', code: lambda.Code.fromInline('exports.handler=async()=>({})') });
  const bucket = new s3.Bucket(stack, 'Work');
  new InferenceApi(stack, 'Api', { handler: fn, uploadsBucket: bucket, apiKey: { rateLimit: 5, burstLimit: 10, quotaPerDay: 1000 } });
  const t = Template.fromStack(stack);
  t.hasResourceProperties('AWS::ApiGateway::Stage', {
    MethodSettings: [{ ThrottlingRateLimit: 20, ThrottlingBurstLimit: 40, HttpMethod: '*', ResourcePath: '/*' }],
  });
  const methods = Object.values(t.findResources('AWS::ApiGateway::Method')).map((r) => (r as { Properties: Record<string, unknown> }).Properties);
  const real = methods.filter((p) => p.HttpMethod !== 'OPTIONS');
  assert.equal(real.length, 3);
  assert.ok(real.every((p) => p.AuthorizationType === 'AWS_IAM' && p.ApiKeyRequired === true));
  const options = methods.filter((p) => p.HttpMethod === 'OPTIONS');
  assert.ok(options.length >= 3, 'CORS preflight on each resource');
  assert.ok(options.every((p) => p.AuthorizationType === 'NONE'), 'preflights are unauthenticated, as browsers need');
  t.resourceCountIs('AWS::ApiGateway::GatewayResponse', 2);
  t.hasResourceProperties('AWS::ApiGateway::UsagePlan', { Throttle: { RateLimit: 5, BurstLimit: 10 }, Quota: { Limit: 1000, Period: 'DAY' } });
  t.resourceCountIs('AWS::ApiGateway::ApiKey', 1);
  t.hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: { UPLOADS_PREFIX: 'uploads/' } } });
  const policy = JSON.stringify(t.findResources('AWS::IAM::Policy'));
  assert.match(policy, /s3:PutObject/);
  assert.match(policy, /uploads\/\*/);
  // Without the option: no key, no usage plan.
  const plain = new Stack(new App(), 'P');
  const fn2 = new lambda.Function(plain, 'Fn', { runtime: lambda.Runtime.NODEJS_20_X, handler: 'index.handler', code: lambda.Code.fromInline('exports.handler=async()=>({})') });
  new InferenceApi(plain, 'Api', { handler: fn2 });
  Template.fromStack(plain).resourceCountIs('AWS::ApiGateway::UsagePlan', 0);
});
