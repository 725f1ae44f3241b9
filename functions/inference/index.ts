/**
 * inference: the Myeloscope API (API Gateway REST proxy events).
 *
 *   POST /predict            image bytes as the body (<= MAX_DIRECT_BYTES), or ?key=uploads/... / {"key": ...}
 *                            for an image uploaded through /uploads; ?explain=all|<id>[,<id>] adds saliency maps
 *   POST /uploads            {"contentType": "image/tiff"} -> { uploadUrl, key, expiresIn, headers } (S3 PUT)
 *   GET  /report[?runId=]    the evaluation report of the latest published model
 *
 * Cells are classified by the latest published model (reloaded when models/latest.json changes). User
 * mistakes get a 4xx with a JSON { error: { code, message } }, never a 500.
 */
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { isInputError, type MyeloscopeError } from '../../layers/core/src/errors.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';
import {
  BadRequestError,
  HttpError,
  MethodNotAllowedError,
  PayloadTooLargeError,
  UnsupportedMediaTypeError,
  bodyBytes,
  errorResponse,
  json,
  jsonBody,
  mediaType,
  query,
} from './http.ts';
import { ModelCache } from './model.ts';
import { predict, type PredictOptions } from './predict.ts';
import { createUpload, readUpload } from './uploads.ts';
import { latestReport } from './report.ts';

const num = (name: string, fallback: number): number => {
  const v = Number(process.env[name] ?? fallback);
  return Number.isFinite(v) ? v : fallback;
};

const models = new S3Store(bucketName('models'));
let work: S3Store | undefined;
const workStore = (): S3Store => (work ??= new S3Store(bucketName('work')));

const maxSize = num('PREPROCESS_MAX_SIZE', 512);
/**
 * Direct POST bodies reach Lambda base64-encoded (4/3 larger) and a synchronous invocation carries at most
 * 6 MB, so the raw image must stay under ~4.5 MB; larger images go through POST /uploads.
 */
const maxDirectBytes = num('MAX_DIRECT_BYTES', 4_500_000);
/** Images uploaded through /uploads. */
const maxUploadBytes = num('MAX_UPLOAD_BYTES', 50 * 1024 * 1024);
const uploadExpirySeconds = num('UPLOAD_URL_EXPIRES_SECONDS', 300);
/** Above this fraction of nucleated cells the image is flagged (>= 10 % clonal marrow plasma cells is a myeloma criterion). */
const fractionThreshold = num('PLASMA_FRACTION_THRESHOLD', 0.1);
const cellThreshold = num('CELL_PROBABILITY_THRESHOLD', 0.5);
/** How often a warm container looks for a newer published model (0: every request). */
const cache = new ModelCache(models, num('MODEL_REFRESH_SECONDS', 60) * 1000, num('CROP_SIZE', 64));

const DIRECT_TYPES = 'image/jpeg, image/png, image/tiff, image/bmp, image/webp, image/gif or application/octet-stream';

export async function handler(event: APIGatewayProxyEvent): Promise<APIGatewayProxyResult> {
  const path = event.resource || event.path;
  try {
    if (path === '/predict') {
      if (event.httpMethod !== 'POST') throw new MethodNotAllowedError(event.httpMethod, path, 'POST with an image as the body');
      return json(200, await predictRequest(event));
    }
    if (path === '/uploads') {
      if (event.httpMethod !== 'POST') throw new MethodNotAllowedError(event.httpMethod, path, 'POST');
      const body = mediaType(event) === 'application/json' || mediaType(event) === '' ? jsonBody(event) : {};
      const type = body.contentType;
      if (type !== undefined && typeof type !== 'string') throw new BadRequestError('invalid-input', 'contentType must be a string');
      return json(200, await createUpload(workStore().bucket, type, uploadExpirySeconds));
    }
    if (path === '/report') {
      if (event.httpMethod !== 'GET') throw new MethodNotAllowedError(event.httpMethod, path, 'GET');
      return await latestReport(models, query(event, 'runId'));
    }
    return errorResponse(404, 'not-found', `no route ${event.httpMethod} ${path}`);
  } catch (err) {
    return failure(err);
  }
}

async function predictRequest(event: APIGatewayProxyEvent) {
  const type = mediaType(event);
  let key = query(event, 'key');
  let explainParam = query(event, 'explain');
  let bytes: Uint8Array;
  if (type === 'application/json') {
    const body = jsonBody(event);
    if (body.key !== undefined) {
      if (typeof body.key !== 'string') throw new BadRequestError('invalid-input', 'key must be a string');
      key = body.key;
    }
    if (body.explain !== undefined) explainParam = Array.isArray(body.explain) ? body.explain.join(',') : String(body.explain);
    if (key === undefined) throw new BadRequestError('missing-key', 'a JSON body must name an uploaded image: {"key": "uploads/..."} (see POST /uploads), or send the image bytes with an image/* Content-Type');
  }
  if (key !== undefined) {
    bytes = await readUpload(workStore(), key, maxUploadBytes);
  } else {
    if (type === 'multipart/form-data') {
      throw new UnsupportedMediaTypeError(`send the image bytes as the body (Content-Type ${DIRECT_TYPES}), not a multipart form`);
    }
    if (type && !type.startsWith('image/') && type !== 'application/octet-stream') {
      throw new UnsupportedMediaTypeError(`send the image bytes with Content-Type ${DIRECT_TYPES} (got ${type})`);
    }
    bytes = bodyBytes(event);
    if (bytes.length === 0) throw new BadRequestError('empty-input', 'the request body is empty: send an image');
    // API Gateway passes a body without a binary media type on as UTF-8 text: the image's bytes are already lost.
    if (!type) {
      throw new UnsupportedMediaTypeError(
        `send the image bytes with a Content-Type header: Content-Type: image/* (${DIRECT_TYPES}); without one the body arrives as text and the image is corrupted`,
      );
    }
    if (bytes.length > maxDirectBytes) {
      throw new PayloadTooLargeError(
        `the image is ${bytes.length} bytes; a direct POST is limited to ${maxDirectBytes} bytes (Lambda takes 6 MB and the body arrives base64-encoded, 4/3 larger): ` +
          'POST /uploads for a presigned upload URL, PUT the image there, then POST /predict?key=<key>',
      );
    }
  }
  const options: PredictOptions = { maxSize, cellThreshold, fractionThreshold, explain: parseExplain(explainParam) };
  return cache.use((m) => predict(bytes, m, options));
}

function parseExplain(v: string | undefined): PredictOptions['explain'] {
  if (v === undefined || v === '' || v === 'none') return [];
  if (v === 'all') return 'all';
  const ids = v.split(',').map((s) => Number(s.trim()));
  if (ids.some((id) => !Number.isInteger(id) || id < 1)) {
    throw new BadRequestError('invalid-explain', `explain must be 'all' or cell ids like 3,7 (got ${JSON.stringify(v)})`);
  }
  return ids;
}

const INPUT_STATUS: Record<string, number> = {
  'unsupported-format': 415,
  'image-limit': 413,
  'corrupt-image': 422,
  'empty-input': 400,
  'invalid-input': 400,
};

function failure(err: unknown): APIGatewayProxyResult {
  if (err instanceof HttpError) return errorResponse(err.status, err.code, err.message);
  if (isInputError(err)) {
    const e: MyeloscopeError = err;
    // image-limit covers both ends: over the pixel limit is 413, under the minimum side is unprocessable.
    const status = e.code === 'image-limit' && /too small/.test(e.message) ? 422 : (INPUT_STATUS[e.code] ?? 400);
    return errorResponse(status, e.code, e.message);
  }
  log('error', 'request failed', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  return errorResponse(500, 'internal', 'the request failed on our side; try again or report it');
}
