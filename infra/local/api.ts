/**
 * The local API Gateway: an HTTP server on loopback turning each request into an API Gateway REST proxy event
 * for the route's handler, and the handler's result back into an HTTP response. Like a deployed API with
 * defaultCorsPreflightOptions it answers CORS preflights (OPTIONS) itself; with `staticDir` it also serves a
 * folder of static files (the web page, functions/web/) on GET/HEAD for paths no route claims, `/` being
 * index.html: on AWS the same files go to S3 + CloudFront (or any static host).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { extname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';
import { answerClientErrorsAsJson, listenWithFallback, localServerOptions, type LocalServerOptions } from './listen.ts';

export type ApiHandler = (event: APIGatewayProxyEvent) => Promise<APIGatewayProxyResult>;

export interface Route {
  method: string;
  path: string;
  function: string;
}

export interface LocalApi {
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

/** API Gateway's own cap on a request payload. */
const MAX_BODY = 10 * 1024 * 1024;

/** What defaultCorsPreflightOptions with Cors.ALL_ORIGINS and Cors.DEFAULT_HEADERS answers. */
const CORS_PREFLIGHT_HEADERS = {
  'access-control-allow-origin': '*',
  'access-control-allow-headers': 'Content-Type,X-Amz-Date,Authorization,X-Api-Key,X-Amz-Security-Token,X-Amz-User-Agent',
  'access-control-max-age': '600',
};

const STATIC_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

export interface LocalApiOptions extends LocalServerOptions {
  routes: Route[];
  handlers: Record<string, ApiHandler>;
  binaryMediaTypes: string[];
  port?: number;
  address?: string;
  stage?: string;
  /** A folder served on GET/HEAD for paths no route claims ('/' -> index.html). @default none */
  staticDir?: string | URL;
  /** Answer CORS preflights (OPTIONS) on route paths, as defaultCorsPreflightOptions does. @default true */
  cors?: boolean;
}

export async function startLocalApi(opts: LocalApiOptions): Promise<LocalApi> {
  const address = opts.address ?? '127.0.0.1';
  const stage = opts.stage ?? 'prod';
  const staticRoot = opts.staticDir === undefined ? undefined : resolve(typeof opts.staticDir === 'string' ? opts.staticDir : fileURLToPath(opts.staticDir));
  const server = createServer(localServerOptions(opts), (req, res) => {
    void (async () => {
      try {
        const url = new URL(req.url ?? '/', `http://${address}`);
        const route = opts.routes.find((r) => r.path === url.pathname && (r.method === req.method || r.method === 'ANY'));
        if (!route) {
          const methods = opts.routes.filter((r) => r.path === url.pathname).map((r) => r.method);
          if (req.method === 'OPTIONS' && methods.length && opts.cors !== false) {
            res.writeHead(204, { ...CORS_PREFLIGHT_HEADERS, 'access-control-allow-methods': [...methods, 'OPTIONS'].join(',') });
            res.end();
            return;
          }
          if (staticRoot && !methods.length && (req.method === 'GET' || req.method === 'HEAD') && (await serveStatic(staticRoot, url.pathname, req, res))) return;
          const known = opts.routes.map((r) => `${r.method} ${r.path}`).join(', ');
          const status = methods.length ? 405 : 404;
          res.writeHead(status, { 'content-type': 'application/json', ...(methods.length ? { allow: methods.join(', ') } : {}) });
          res.end(JSON.stringify({ error: { code: status === 405 ? 'method-not-allowed' : 'not-found', message: `no route for ${req.method} ${url.pathname}; routes: ${known}` } }));
          return;
        }
        const body = await readBody(req);
        if (body === undefined) {
          res.writeHead(413, { 'content-type': 'application/json', ...(opts.cors !== false ? { 'access-control-allow-origin': '*' } : {}) });
          res.end(JSON.stringify({ error: { code: 'too-large', message: `request body over ${MAX_BODY} bytes (the API Gateway limit): POST /uploads for a presigned upload URL instead` } }));
          return;
        }
        const handler = opts.handlers[route.function];
        if (!handler) throw new Error(`no local handler for ${route.function}`);
        const result = await handler(toEvent(req, url, body, opts.binaryMediaTypes, stage, route.path));
        const payload = Buffer.from(result.body ?? '', result.isBase64Encoded ? 'base64' : 'utf8');
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(result.headers ?? {})) headers[k] = String(v);
        res.writeHead(result.statusCode, headers);
        res.end(payload);
      } catch (err) {
        // Failed mid-response (e.g. a static file vanished): nothing better to do than cut the connection.
        if (res.headersSent) {
          res.destroy();
          return;
        }
        // What API Gateway answers when the integration fails.
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: 'Internal server error', detail: err instanceof Error ? err.message : String(err) }));
      }
    })();
  });
  answerClientErrorsAsJson(server, opts.cors !== false ? { 'access-control-allow-origin': '*' } : {});
  const port = await listenWithFallback(server, opts.port, address);
  return {
    url: `http://${address}:${port}`,
    port,
    server,
    close: () => new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  };
}

/** Serves a file under root; false when there is none (the caller answers 404). Never leaves root. */
async function serveStatic(root: string, pathname: string, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
  let rel: string;
  try {
    rel = decodeURIComponent(pathname);
  } catch {
    return false;
  }
  if (rel.includes('\0')) return false;
  let file = resolve(root, `.${rel.endsWith('/') ? `${rel}index.html` : rel}`);
  if (file !== root && !file.startsWith(root + sep)) return false;
  let info = await stat(file).catch(() => undefined);
  if (info?.isDirectory()) {
    file = resolve(file, 'index.html');
    info = await stat(file).catch(() => undefined);
  }
  if (!info?.isFile()) return false;
  res.writeHead(200, {
    'content-type': STATIC_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream',
    'content-length': String(info.size),
    'cache-control': 'no-cache',
  });
  if (req.method === 'HEAD') {
    res.end();
    return true;
  }
  await new Promise<void>((done, fail) => {
    createReadStream(file).on('error', fail).pipe(res).on('finish', done).on('error', fail);
  });
  return true;
}

/** The request body; undefined when over MAX_BODY (read to the end anyway, so the client sees the 413). */
async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size <= MAX_BODY) chunks.push(chunk as Buffer);
  }
  return size > MAX_BODY ? undefined : Buffer.concat(chunks);
}

function isBinary(contentType: string | undefined, binaryMediaTypes: string[]): boolean {
  const type = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  return binaryMediaTypes.some((t) => (t.endsWith('/*') ? type.startsWith(t.slice(0, -1)) : t === type));
}

function toEvent(req: IncomingMessage, url: URL, body: Buffer, binaryMediaTypes: string[], stage: string, resource: string): APIGatewayProxyEvent {
  const headers: Record<string, string> = {};
  const multiValueHeaders: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined) continue;
    const values = Array.isArray(v) ? v : [v];
    headers[k] = values.join(',');
    multiValueHeaders[k] = values;
  }
  const query: Record<string, string> = {};
  const multiQuery: Record<string, string[]> = {};
  for (const [k, v] of url.searchParams) {
    query[k] = v;
    (multiQuery[k] ??= []).push(v);
  }
  const binary = isBinary(req.headers['content-type'], binaryMediaTypes);
  const hasQuery = Object.keys(query).length > 0;
  return {
    resource,
    path: url.pathname,
    httpMethod: req.method ?? 'GET',
    headers,
    multiValueHeaders,
    queryStringParameters: hasQuery ? query : null,
    multiValueQueryStringParameters: hasQuery ? multiQuery : null,
    pathParameters: null,
    stageVariables: null,
    body: body.length ? (binary ? body.toString('base64') : body.toString('utf8')) : null,
    isBase64Encoded: binary && body.length > 0,
    requestContext: {
      accountId: '000000000000',
      apiId: 'local',
      authorizer: null,
      protocol: 'HTTP/1.1',
      httpMethod: req.method ?? 'GET',
      identity: {
        accessKey: null, accountId: null, apiKey: null, apiKeyId: null, caller: null, clientCert: null,
        cognitoAuthenticationProvider: null, cognitoAuthenticationType: null, cognitoIdentityId: null,
        cognitoIdentityPoolId: null, principalOrgId: null, sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
        user: null, userAgent: req.headers['user-agent'] ?? null, userArn: null,
      },
      path: `/${stage}${url.pathname}`,
      stage,
      requestId: `local-${Date.now().toString(36)}`,
      requestTimeEpoch: Date.now(),
      resourceId: 'local',
      resourcePath: resource,
    },
  };
}
