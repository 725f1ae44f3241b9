/**
 * The local API Gateway: an HTTP server on loopback turning each request into an API Gateway REST proxy event
 * for the route's handler, and the handler's result back into an HTTP response.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from 'aws-lambda';

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

export async function startLocalApi(opts: {
  routes: Route[];
  handlers: Record<string, ApiHandler>;
  binaryMediaTypes: string[];
  port?: number;
  address?: string;
  stage?: string;
}): Promise<LocalApi> {
  const address = opts.address ?? '127.0.0.1';
  const stage = opts.stage ?? 'prod';
  const server = createServer((req, res) => {
    void (async () => {
      try {
        const url = new URL(req.url ?? '/', `http://${address}`);
        const route = opts.routes.find((r) => r.path === url.pathname && (r.method === req.method || r.method === 'ANY'));
        if (!route) {
          const known = opts.routes.map((r) => `${r.method} ${r.path}`).join(', ');
          res.writeHead(url.pathname && opts.routes.some((r) => r.path === url.pathname) ? 405 : 404, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { code: 'not-found', message: `no route for ${req.method} ${url.pathname}; routes: ${known}` } }));
          return;
        }
        const body = await readBody(req);
        if (body === undefined) {
          res.writeHead(413, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { code: 'too-large', message: `request body over ${MAX_BODY} bytes (the API Gateway limit)` } }));
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
        // What API Gateway answers when the integration fails.
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: 'Internal server error', detail: err instanceof Error ? err.message : String(err) }));
      }
    })();
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, address, () => {
        server.off('error', reject);
        resolve();
      });
    });
  try {
    await listen(opts.port ?? 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || !opts.port) throw err;
    await listen(0);
  }
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${address}:${port}`,
    port,
    server,
    close: () => new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  };
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
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
