/** predict: POST images to the inference API, one summary row per image (CSV or JSON). */
import { access, constants, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import type { PredictOpts } from '../myeloscope.ts';
import { CliError, EXIT, toCliError } from './errors.ts';
import { contentType, imagesIn, kindOf, pool, progressBar } from './common.ts';

/** The API's direct POST limit (functions/inference MAX_DIRECT_BYTES default); larger images go through /uploads. */
const MAX_DIRECT_BYTES = 4_500_000;

export interface PredictRow {
  file: string;
  /** HTTP status of the prediction (0: not sent). */
  status: number;
  runId: string;
  nucleatedCellCount: number | null;
  plasmaCellCount: number | null;
  plasmaCellFraction: number | null;
  call: string;
  threshold: number | null;
  error: string;
}

interface PredictBody {
  runId?: string;
  nucleatedCellCount?: number;
  plasmaCellCount?: number;
  plasmaCellFraction?: number;
  call?: { label?: string; threshold?: number };
  overlayPng?: string;
  error?: { code?: string; message?: string };
  message?: string;
}

const COLUMNS: (keyof PredictRow)[] = ['file', 'status', 'runId', 'nucleatedCellCount', 'plasmaCellCount', 'plasmaCellFraction', 'call', 'threshold', 'error'];

export function apiUrl(flag: string | undefined): string {
  const raw = flag ?? process.env.MYELOSCOPE_API_URL;
  if (!raw) throw new CliError('no API URL: set MYELOSCOPE_API_URL or pass --api <url> (`myeloscope serve` prints it for the local cloud; on AWS it is the stack output)', EXIT.notFound);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliError(`not a URL: ${raw}`, EXIT.usage);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError(`the API URL must be http(s): ${raw}`, EXIT.usage);
  return url.href.replace(/\/+$/, '');
}

type Send = (url: string, init: { method: string; headers: Record<string, string>; body?: Uint8Array | string }) => Promise<Response>;

export async function predict(target: string, opts: PredictOpts): Promise<void> {
  const api = apiUrl(opts.api);
  let send: Send = (url, init) => fetch(url, init);
  const { needsSigning, apiFetch } = await import('./sign.ts');
  if (needsSigning(new URL(api), opts.sign)) send = (url, init) => apiFetch(url, init, true);
  const kind = await kindOf(target);
  const files = kind === 'dir' ? (await imagesIn(target)).map((f) => join(target, f)) : [target];
  if (files.length === 0) throw new CliError(`no images (jpg, png, tif, bmp, webp, gif) in ${target}`, EXIT.notFound);
  // Checked before any image is sent: a typo in --out must not cost a whole folder's predictions.
  if (opts.out) await checkOutFolder(opts.out);
  const format = opts.format ?? (opts.out && extname(opts.out).toLowerCase() === '.json' ? 'json' : 'csv');
  if (opts.overlays) await mkdir(opts.overlays, { recursive: true });

  const rows: PredictRow[] = new Array<PredictRow>(files.length);
  const bar = progressBar('predict', files.length);
  try {
    await pool(
      files.map((file, i) => ({ file, i })),
      opts.concurrency,
      async ({ file, i }) => {
        const { row, overlay } = await predictOne(api, file, send);
        rows[i] = row;
        if (overlay && opts.overlays) await writeFile(join(opts.overlays, `${basename(file, extname(file))}.overlay.png`), overlay);
        bar.tick(basename(file));
      },
    );
  } catch (err) {
    throw toCliError(err, `the API at ${api}`);
  } finally {
    bar.stop();
  }

  const text = format === 'json' ? `${JSON.stringify(rows, null, 2)}\n` : toCsv(rows);
  if (opts.out) {
    await writeFile(opts.out, text);
    process.stderr.write(`wrote ${rows.length} result${rows.length === 1 ? '' : 's'} to ${opts.out}\n`);
  } else {
    process.stdout.write(text);
  }
  const failed = rows.filter((r) => r.error).length;
  if (failed) {
    process.stderr.write(`myeloscope: ${failed} of ${rows.length} image${rows.length === 1 ? '' : 's'} failed (see the error column)\n`);
    process.exitCode = EXIT.failed;
  }
}

async function predictOne(api: string, file: string, send: Send): Promise<{ row: PredictRow; overlay?: Buffer }> {
  const bytes = await readFile(file);
  const type = contentType(file);
  let res: Response;
  if (bytes.length <= MAX_DIRECT_BYTES) {
    res = await send(`${api}/predict`, { method: 'POST', headers: { 'content-type': type }, body: bytes });
  } else {
    // Too large for a direct POST through API Gateway and Lambda: upload to a presigned URL, then predict by key.
    const up = await send(`${api}/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ contentType: type }) });
    const grant = (await up.json().catch(() => ({}))) as { uploadUrl?: string; key?: string; headers?: Record<string, string>; error?: { message?: string } };
    if (!up.ok || !grant.uploadUrl || !grant.key) return { row: errorRow(file, up.status, grant.error?.message ?? `POST /uploads: HTTP ${up.status}`) };
    const put = await fetch(grant.uploadUrl, { method: 'PUT', headers: grant.headers ?? { 'content-type': type }, body: bytes });
    if (!put.ok) return { row: errorRow(file, put.status, `upload PUT: HTTP ${put.status}`) };
    res = await send(`${api}/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: grant.key }) });
  }
  const body = (await res.json().catch(() => ({}))) as PredictBody;
  if (!res.ok) return { row: errorRow(file, res.status, body.error?.message ?? body.message ?? `HTTP ${res.status}`) };
  return {
    row: {
      file,
      status: res.status,
      runId: body.runId ?? '',
      nucleatedCellCount: body.nucleatedCellCount ?? null,
      plasmaCellCount: body.plasmaCellCount ?? null,
      plasmaCellFraction: body.plasmaCellFraction ?? null,
      call: body.call?.label ?? '',
      threshold: body.call?.threshold ?? null,
      error: '',
    },
    ...(body.overlayPng ? { overlay: Buffer.from(body.overlayPng, 'base64') } : {}),
  };
}

/** The folder --out goes in must exist and be writable (it is not created: a wrong path is more likely a typo). */
async function checkOutFolder(out: string): Promise<void> {
  const dir = dirname(resolve(out));
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new CliError(`--out ${out}: the folder ${dir} does not exist`, EXIT.notFound);
  try {
    await access(dir, constants.W_OK);
  } catch {
    throw new CliError(`--out ${out}: the folder ${dir} is not writable`, EXIT.notFound);
  }
  if ((await stat(out).catch(() => undefined))?.isDirectory()) throw new CliError(`--out ${out} is a folder: name a file`, EXIT.usage);
}

function errorRow(file: string, status: number, error: string): PredictRow {
  return { file, status, runId: '', nucleatedCellCount: null, plasmaCellCount: null, plasmaCellFraction: null, call: '', threshold: null, error };
}

const cell = (v: unknown) => {
  const s = v === null || v === undefined ? '' : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

export function toCsv(rows: PredictRow[]): string {
  return [COLUMNS.join(','), ...rows.map((r) => COLUMNS.map((c) => cell(r[c])).join(','))].join('\n') + '\n';
}
