import { STATUS_CODES, type Server, type ServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Listens on a loopback port; a busy fixed port falls back to any free one (the local cloud prints the
 * endpoints it got, never assumes them). Resolves the port in use.
 */
export async function listenWithFallback(server: Server, port: number | undefined, address: string): Promise<number> {
  const listen = (p: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, address, () => {
        server.off('error', reject);
        resolve();
      });
    });
  try {
    await listen(port ?? 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || !port) throw err;
    await listen(0);
  }
  return (server.address() as AddressInfo).port;
}

export interface LocalServerOptions {
  /**
   * Time a client has to send a whole request (headers and body); a stalled one gets 408 and is closed.
   * @default 30000 (a 50 MB upload on loopback takes well under a second; Node's own default is 300 s)
   */
  requestTimeoutMs?: number;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** The http.createServer options every local server uses: bounded waits for slow or stalled clients. */
export function localServerOptions(opts: LocalServerOptions = {}): ServerOptions {
  const requestTimeout = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  return {
    requestTimeout,
    headersTimeout: Math.min(10_000, requestTimeout),
    // Node checks the timeouts only this often (default 30 s, which would double a 30 s timeout).
    connectionsCheckingInterval: Math.max(10, Math.min(1_000, Math.floor(requestTimeout / 4))),
  };
}

/**
 * Requests Node refuses before any handler runs (headers or URL over its 16 KB limit, a stalled body,
 * malformed HTTP) get a JSON error like the API's own `{"error": {"code", "message"}}`, not an empty body.
 */
export function answerClientErrorsAsJson(server: Server, extraHeaders: Record<string, string> = {}): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, code, message] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'request-too-large', 'the request line and headers (URL with its query string, cookies...) are over the server\'s 16 KB limit: send large parameters in a JSON body']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'request-timeout', 'the request was not received in time (the body was shorter than its Content-Length, or the client stalled)']
          : [400, 'bad-request', `malformed HTTP request (${err.code ?? err.message})`];
    const body = JSON.stringify({ error: { code, message } });
    const headers = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), connection: 'close', ...extraHeaders };
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n${body}`);
  });
}
