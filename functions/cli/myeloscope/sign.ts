/**
 * SigV4 for the inference API on AWS, which uses IAM auth (infra/lib/inference-api.ts): requests to an
 * execute-api host are signed with the caller's default AWS credentials; the local API needs no signature.
 * @smithy/signature-v4 comes with the AWS SDK (not a direct dependency: add it to package.json to pin it).
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { SFNClient } from '@aws-sdk/client-sfn';
import { clientConfig } from '../../../layers/aws/src/config.ts';

type Bytes = string | ArrayBuffer | ArrayBufferView;
const buf = (d: Bytes) => (typeof d === 'string' ? Buffer.from(d, 'utf8') : ArrayBuffer.isView(d) ? Buffer.from(d.buffer, d.byteOffset, d.byteLength) : Buffer.from(d));

/** node:crypto SHA-256 / HMAC-SHA-256 in the shape the signer expects. */
class NodeSha256 {
  private h: Hash | Hmac;
  constructor(private readonly secret?: Bytes) {
    this.h = this.make();
  }
  private make(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', buf(this.secret));
  }
  update(data: Bytes): void {
    this.h.update(buf(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.h.digest());
  }
  reset(): void {
    this.h = this.make();
  }
}

const EXECUTE_API = /^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/;

/** Whether requests to this URL need SigV4: 'auto' signs API Gateway hosts only. */
export function needsSigning(url: URL, mode: boolean | undefined): boolean {
  return mode ?? EXECUTE_API.test(url.hostname);
}

let signer: SignatureV4 | undefined;

/** fetch, signed for execute-api when `sign` is true. */
export async function apiFetch(url: string, init: { method: string; headers: Record<string, string>; body?: Uint8Array | string }, sign: boolean): Promise<Response> {
  if (!sign) return fetch(url, init);
  const u = new URL(url);
  if (!signer) {
    const region = EXECUTE_API.exec(u.hostname)?.[1] ?? clientConfig('SFN').region;
    // The SDK's default credential chain (env, profile, SSO, instance role), through a client's resolved config.
    const credentials = new SFNClient({ region }).config.credentials;
    signer = new SignatureV4({ service: 'execute-api', region, credentials, sha256: NodeSha256 });
  }
  const query: Record<string, string> = {};
  for (const [k, v] of u.searchParams) query[k] = v;
  const signed = await signer.sign({
    method: init.method,
    protocol: u.protocol,
    hostname: u.hostname,
    ...(u.port ? { port: Number(u.port) } : {}),
    path: u.pathname,
    query,
    headers: { ...init.headers, host: u.host },
    body: init.body,
  });
  // fetch sets Host itself (to the same value, which the signature covers).
  const { host: _host, ...headers } = signed.headers;
  return fetch(url, { method: init.method, headers, ...(init.body !== undefined ? { body: init.body } : {}) });
}
