/**
 * inference: POST /predict with an image body (API Gateway proxy event) -> the cells found, each classified
 * plasma / other by the latest published model, the plasma-cell count and fraction, and an overlay PNG.
 * User mistakes get a 4xx with a JSON message, never a 500.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import * as tf from '@tensorflow/tfjs';
import { isInputError, MyeloscopeError } from '../../layers/core/src/errors.ts';
import { LATEST_POINTER_KEY } from '../../layers/core/src/keys.ts';
import { preprocessImage } from '../../layers/core/src/image/index.ts';
import { analyseCells } from '../../layers/core/src/pipeline.ts';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { cropsToTensor } from '../../layers/core/src/ml/data.ts';
import { loadModel } from '../../layers/core/src/ml/io.ts';
import { predictScores } from '../../layers/core/src/ml/evaluate.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';
import type { LatestPointer } from '../publish/index.ts';

const models = new S3Store(bucketName('models'));
const maxSize = Number(process.env.PREPROCESS_MAX_SIZE ?? 512);
const cropSize = Number(process.env.CROP_SIZE ?? 64);
const maxBytes = Number(process.env.MAX_UPLOAD_BYTES ?? 6 * 1024 * 1024);
/** Above this fraction of nucleated cells the image is flagged (>= 10 % clonal marrow plasma cells is a myeloma criterion). */
const fractionThreshold = Number(process.env.PLASMA_FRACTION_THRESHOLD ?? 0.1);
const cellThreshold = 0.5;
/** How often a warm container looks for a newer published model. */
const modelRefreshMs = Number(process.env.MODEL_REFRESH_SECONDS ?? 60) * 1000;

class NoModelError extends MyeloscopeError {
  constructor() {
    super('no-model', 'no model has been published yet: run the training workflow first');
  }
}

let cached: { runId: string; model: tf.LayersModel; inputSize: number; checkedAt: number } | undefined;

async function latestModel() {
  if (cached && Date.now() - cached.checkedAt < modelRefreshMs) return cached;
  if (!(await models.exists(LATEST_POINTER_KEY))) throw new NoModelError();
  const pointer = await models.getJson<LatestPointer>(LATEST_POINTER_KEY);
  if (cached?.runId === pointer.runId) {
    cached.checkedAt = Date.now();
    return cached;
  }
  await initBackend();
  const model = await loadModel(models, pointer.modelPrefix);
  const shape = model.inputs[0]?.shape;
  const inputSize = typeof shape?.[1] === 'number' ? shape[1] : cropSize;
  cached?.model.dispose();
  cached = { runId: pointer.runId, model, inputSize, checkedAt: Date.now() };
  log('info', 'model loaded', { runId: pointer.runId });
  return cached;
}

function json(statusCode: number, body: unknown): APIGatewayProxyResult {
  return {
    statusCode,
    headers: { 'content-type': 'application/json', 'access-control-allow-origin': '*' },
    body: JSON.stringify(body),
  };
}

function errorResponse(status: number, code: string, message: string): APIGatewayProxyResult {
  return json(status, { error: { code, message } });
}

function header(event: APIGatewayProxyEvent, name: string): string | undefined {
  const hit = Object.entries(event.headers ?? {}).find(([k]) => k.toLowerCase() === name);
  return hit?.[1] ?? undefined;
}

export async function handler(event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  if (event.httpMethod !== 'POST') return errorResponse(405, 'method-not-allowed', 'use POST with an image as the body');
  const contentType = (header(event, 'content-type') ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (contentType && !contentType.startsWith('image/') && contentType !== 'application/octet-stream') {
    return errorResponse(415, 'unsupported-media-type', `send the image bytes with Content-Type image/* or application/octet-stream (got ${contentType})`);
  }
  const body = Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'binary');
  if (body.length === 0) return errorResponse(400, 'empty-input', 'the request body is empty: send an image');
  if (body.length > maxBytes) return errorResponse(413, 'too-large', `the image is ${body.length} bytes; the limit is ${maxBytes}`);
  try {
    const current = await latestModel();
    const pre = await preprocessImage(body, { maxSize });
    const analysis = await analyseCells(pre.image, undefined, { cropSize: current.inputSize, encodeCrops: false });
    let probs: number[] = [];
    if (analysis.crops.length) {
      const x = cropsToTensor(analysis.crops.map((c) => c.image));
      probs = Array.from(await predictScores(current.model, x, 64));
      x.dispose();
    }
    const cells = analysis.cells.map((c, i) => {
      const p = probs[i] ?? 0;
      return { id: c.id, bbox: c.bbox, area: c.area, centroid: c.centroid, class: p >= cellThreshold ? 'plasma' : 'other', probability: round(p) };
    });
    const plasma = cells.filter((c) => c.class === 'plasma').length;
    const fraction = cells.length ? plasma / cells.length : 0;
    return json(200, {
      runId: current.runId,
      image: { width: pre.source.width, height: pre.source.height, format: pre.source.format, analysedWidth: analysis.width, analysedHeight: analysis.height },
      nucleatedCellCount: cells.length,
      plasmaCellCount: plasma,
      plasmaCellFraction: round(fraction),
      call: {
        label: fraction >= fractionThreshold ? 'plasma-cell-fraction-high' : 'plasma-cell-fraction-low',
        threshold: fractionThreshold,
        cellProbabilityThreshold: cellThreshold,
        note: 'research use only: a count on one field of view, not a diagnosis',
      },
      cells,
      overlayPng: analysis.overlayPng.toString('base64'),
    });
  } catch (err) {
    if (err instanceof NoModelError) return errorResponse(503, err.code, err.message);
    if (isInputError(err)) {
      const status = err.code === 'unsupported-format' ? 415 : err.code === 'image-limit' ? 413 : 400;
      return errorResponse(status, err.code, err.message);
    }
    log('error', 'inference failed', { error: err instanceof Error ? err.message : String(err) });
    return errorResponse(500, 'internal', 'the prediction failed on our side; try again or report it');
  }
}

function round(v: number): number {
  return Math.round(v * 1e4) / 1e4;
}
