/** HTTP plumbing of the inference API: typed errors, JSON responses with CORS headers, header/query access. */
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { MyeloscopeError } from '../../layers/core/src/errors.ts';

/** A request the API refuses: carries the HTTP status it maps to. */
export class HttpError extends MyeloscopeError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

export class MethodNotAllowedError extends HttpError {
  constructor(method: string, path: string, allowed: string) {
    super(405, 'method-not-allowed', `${method} is not allowed on ${path}: use ${allowed}`);
  }
}

export class PayloadTooLargeError extends HttpError {
  constructor(message: string) {
    super(413, 'too-large', message);
  }
}

export class UnsupportedMediaTypeError extends HttpError {
  constructor(message: string) {
    super(415, 'unsupported-media-type', message);
  }
}

export class BadRequestError extends HttpError {
  constructor(code: string, message: string) {
    super(400, code, message);
  }
}

export class NotFoundError extends HttpError {
  constructor(code: string, message: string) {
    super(404, code, message);
  }
}

/** No model has been published yet: the service is not ready, not the caller's fault. */
export class NoModelError extends HttpError {
  constructor() {
    super(503, 'no-model', 'no model has been published yet: run the training workflow first');
  }
}

export const CORS_HEADERS: Record<string, string> = {
  'access-control-allow-origin': process.env.CORS_ALLOW_ORIGIN ?? '*',
  'access-control-allow-headers': 'Content-Type,Authorization,X-Api-Key,X-Amz-Date,X-Amz-Security-Token,X-Amz-User-Agent',
  'access-control-allow-methods': 'GET,POST,OPTIONS',
};

export function json(statusCode: number, body: unknown): APIGatewayProxyResult {
  return { statusCode, headers: { 'content-type': 'application/json', ...CORS_HEADERS }, body: JSON.stringify(body) };
}

export function errorResponse(status: number, code: string, message: string): APIGatewayProxyResult {
  return json(status, { error: { code, message } });
}

export function header(event: APIGatewayProxyEvent, name: string): string | undefined {
  const wanted = name.toLowerCase();
  const hit = Object.entries(event.headers ?? {}).find(([k]) => k.toLowerCase() === wanted);
  return hit?.[1] ?? undefined;
}

/** The media type of the request without parameters, lower case; '' when absent. */
export function mediaType(event: APIGatewayProxyEvent): string {
  return (header(event, 'content-type') ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

export function query(event: APIGatewayProxyEvent, name: string): string | undefined {
  return event.queryStringParameters?.[name] ?? undefined;
}

export function bodyBytes(event: APIGatewayProxyEvent): Buffer {
  return Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
}

/** Parses a JSON object body; an absent body is {}. */
export function jsonBody(event: APIGatewayProxyEvent): Record<string, unknown> {
  const text = bodyBytes(event).toString('utf8').trim();
  if (text === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BadRequestError('invalid-json', 'the request body is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new BadRequestError('invalid-json', 'the request body must be a JSON object');
  }
  return value as Record<string, unknown>;
}
