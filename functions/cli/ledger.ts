/**
 * The ledger: where every raw object ended. Nothing lost (each raw object is processed or quarantined with a
 * reason) and nothing unaccounted for.
 *
 *   npm run ledger -- [--json] [--dataset NAME] [--local [--state-dir DIR]] [--redrive]
 *
 * Buckets and endpoint come from the environment, as for the handlers (RAW_BUCKET, WORK_BUCKET,
 * AWS_ENDPOINT_URL...); --local instead starts only the local S3 over the local cloud's state (.myeloscope).
 * Exit code 0 when nothing is missing, 1 when something is, 2 on bad arguments or configuration.
 *
 * Outcome of one raw object (`RawStatus`):
 * - quarantined: quarantine/<raw key>.json exists (it wins over an older processed output: it is the newest verdict);
 * - segmented: an image, processed, with segmented/.../cells.json and no error.json;
 * - segment-failed: an image, processed, whose segmentation left segmented/.../error.json (a processed image that
 *   cannot be segmented, e.g. its mask has another aspect): counted as processed, listed with its reason;
 * - mask / orphan-mask: a mask, processed; orphan when its image has no processed output (yet);
 * - missing: neither processed nor quarantined (an event was lost or the handler failed for good);
 * - unsegmented: an image, processed, with neither cells.json nor error.json (segment's event was lost);
 * - conflict: several raw objects map to one processed key and none is quarantined (state from before preprocess
 *   quarantined name conflicts itself, or a lost event): a redrive lets preprocess quarantine them all.
 * processed = segmented + segment-failed + mask + orphan-mask; missing = missing + unsegmented + conflict;
 * so raw = processed + quarantined + missing always, and the run is complete when missing = 0.
 */
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { S3Event } from 'aws-lambda';
import { CopyObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import {
  parseProcessedKey,
  parseRawKey,
  processedKeyFor,
  segmentedKeys,
  PROCESSED_PREFIX,
  QUARANTINE_PREFIX,
  RAW_PREFIX,
  SEGMENTED_PREFIX,
} from '../../layers/core/src/keys.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { s3Client, S3Store } from '../../layers/aws/src/s3.ts';
import { objectCreatedRecord, setLogSink } from '../../layers/aws/src/events.ts';
import { LOCAL_BUCKET_NAMES } from '../../infra/local/s3.ts';
import { quarantineRecordKey, quarantineRecordKeys } from '../preprocess/outcome-keys.ts';

export type RawStatus =
  | 'segmented'
  | 'segment-failed'
  | 'mask'
  | 'orphan-mask'
  | 'quarantined'
  | 'missing'
  | 'unsegmented'
  | 'conflict';

const PROCESSED_STATUSES: ReadonlySet<RawStatus> = new Set(['segmented', 'segment-failed', 'mask', 'orphan-mask']);
const MISSING_STATUSES: ReadonlySet<RawStatus> = new Set(['missing', 'unsegmented', 'conflict']);

export interface Reason {
  code: string;
  reason: string;
}

export interface LedgerEntry {
  key: string;
  status: RawStatus;
  /** The processed key, when the raw key has one. */
  output?: string;
  /** Why: the quarantine or segmentation error record, when there is one. */
  code?: string;
  reason?: string;
}

export interface Ledger {
  counts: { raw: number; processed: number; quarantined: number; missing: number };
  byStatus: Partial<Record<RawStatus, number>>;
  entries: LedgerEntry[];
  /** Processed objects no raw object accounts for (e.g. its raw object was deleted). */
  orphanOutputs: string[];
}

export interface LedgerInput {
  /** Keys of the raw bucket under raw/. */
  raw: readonly string[];
  /** Keys of the work bucket under processed/, segmented/ and quarantine/. */
  work: readonly string[];
  /** Quarantine and error.json records by their key (code and reason); entries without one still count. */
  records?: ReadonlyMap<string, Reason>;
}

/** Pure: where each raw object ended, from key lists (and the records' reasons). See the module comment. */
export function computeLedger(input: LedgerInput): Ledger {
  const work = new Set(input.work);
  const records = input.records ?? new Map<string, Reason>();
  const entries: LedgerEntry[] = [];
  const claims = new Map<string, string[]>();
  const expectedOutputs = new Set<string>();
  for (const key of [...input.raw].sort()) {
    const qKey = quarantineRecordKeys(key).find((k) => work.has(k)) ?? quarantineRecordKey(key);
    let parts;
    try {
      parts = parseRawKey(key);
    } catch {
      parts = undefined;
    }
    const output = parts ? processedKeyFor(parts) : undefined;
    if (output) expectedOutputs.add(output);
    if (work.has(qKey)) {
      entries.push({ key, status: 'quarantined', ...(output ? { output } : {}), ...(records.get(qKey) ?? {}) });
      continue;
    }
    if (!parts || !output || !work.has(output)) {
      entries.push({ key, status: 'missing', ...(output ? { output } : {}) });
      continue;
    }
    claims.set(output, [...(claims.get(output) ?? []), key]);
    if (parts.isMask) {
      const imageKey = parseProcessedKey(output).imageKey;
      entries.push({ key, status: work.has(imageKey) ? 'mask' : 'orphan-mask', output });
      continue;
    }
    const seg = segmentedKeys(parts);
    const errorKey = `${seg.dir}error.json`;
    if (work.has(errorKey)) entries.push({ key, status: 'segment-failed', output, ...(records.get(errorKey) ?? {}) });
    else if (work.has(seg.cells)) entries.push({ key, status: 'segmented', output });
    else entries.push({ key, status: 'unsegmented', output });
  }
  // Two live raw objects for one processed key: only one of them is really in it.
  for (const keys of claims.values()) {
    if (keys.length < 2) continue;
    for (const e of entries) if (keys.includes(e.key)) e.status = 'conflict';
  }
  const byStatus: Partial<Record<RawStatus, number>> = {};
  for (const e of entries) byStatus[e.status] = (byStatus[e.status] ?? 0) + 1;
  const count = (set: ReadonlySet<RawStatus>) => entries.filter((e) => set.has(e.status)).length;
  const orphanOutputs = input.work.filter((k) => k.startsWith(PROCESSED_PREFIX) && !expectedOutputs.has(k)).sort();
  return {
    counts: {
      raw: entries.length,
      processed: count(PROCESSED_STATUSES),
      quarantined: byStatus.quarantined ?? 0,
      missing: count(MISSING_STATUSES),
    },
    byStatus,
    entries,
    orphanOutputs,
  };
}

// ---------------------------------------------------------------------------------------------------
// S3 glue

export interface LedgerStores {
  raw: S3Store;
  work: S3Store;
}

/** Lists the buckets (optionally one dataset) and reads the reasons of quarantined and failed objects. */
export async function readLedger(stores: LedgerStores, opts: { dataset?: string } = {}): Promise<Ledger> {
  const sub = opts.dataset ? `${opts.dataset}/` : '';
  const [raw, processed, segmented, quarantined] = await Promise.all([
    stores.raw.list(`${RAW_PREFIX}${sub}`),
    stores.work.list(`${PROCESSED_PREFIX}${sub}`),
    stores.work.list(`${SEGMENTED_PREFIX}${sub}`),
    // Long raw keys are recorded under quarantine/_long-keys/, outside any dataset folder: list them all.
    stores.work.list(QUARANTINE_PREFIX),
  ]);
  const work = [...processed, ...segmented.filter((k) => !k.includes('/crops/')), ...quarantined];
  const draft = computeLedger({ raw, work });
  const present = new Set(work);
  const records = new Map<string, Reason>();
  for (const e of draft.entries) {
    const recordKey =
      e.status === 'quarantined' ? quarantineRecordKeys(e.key).find((k) => present.has(k)) : e.status === 'segment-failed' ? `${segmentedKeys(parseRawKey(e.key)).dir}error.json` : undefined;
    if (!recordKey) continue;
    try {
      const r = await stores.work.getJson<Partial<Reason>>(recordKey);
      records.set(recordKey, { code: String(r.code ?? 'unknown'), reason: String(r.reason ?? '') });
    } catch {
      // Deleted between list and get (a re-upload just fixed it): the entry keeps its status without a reason.
    }
  }
  return computeLedger({ raw, work, records });
}

/**
 * Re-delivers raw objects with no outcome the way S3 would: each missing raw object (and each processed image
 * never segmented) is copied onto itself, which emits ObjectCreated:Copy to the notification. With `invoke`,
 * calls the given handlers in-process instead (when no notification is wired, e.g. `--local`).
 */
export async function redrive(
  ledger: Ledger,
  stores: LedgerStores,
  invoke?: { preprocess: (e: S3Event) => Promise<unknown>; segment: (e: S3Event) => Promise<unknown> },
): Promise<string[]> {
  const done: string[] = [];
  for (const e of ledger.entries) {
    const target =
      e.status === 'missing' || e.status === 'conflict' ? { store: stores.raw, key: e.key, fn: 'preprocess' as const } : e.status === 'unsegmented' && e.output ? { store: stores.work, key: e.output, fn: 'segment' as const } : undefined;
    if (!target) continue;
    if (invoke) await invoke[target.fn](s3Event(target.store.bucket, target.key));
    else await copyOntoItself(target.store.bucket, target.key);
    done.push(target.key);
  }
  return done;
}

async function copyOntoItself(bucket: string, key: string): Promise<void> {
  const client = s3Client();
  const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  await client.send(
    new CopyObjectCommand({
      Bucket: bucket,
      Key: key,
      CopySource: `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`,
      // S3 refuses a copy onto itself that changes nothing: REPLACE with the same metadata is the idiom.
      MetadataDirective: 'REPLACE',
      Metadata: head.Metadata ?? {},
      ...(head.ContentType ? { ContentType: head.ContentType } : {}),
    }),
  );
}

function s3Event(bucket: string, key: string): S3Event {
  return { Records: [objectCreatedRecord(bucket, key, { eventName: 'ObjectCreated:Copy', source: 'ledger-redrive' })] };
}

// ---------------------------------------------------------------------------------------------------
// Text output

/** Keys may hold spaces, quotes and control characters: quote the ones that would be ambiguous. */
function showKey(key: string): string {
  return /^[\x21-\x7e\u00a0-\uffff]+$/u.test(key) && !key.includes('"') ? key : JSON.stringify(key);
}

export function formatLedger(ledger: Ledger): string {
  const { counts, byStatus } = ledger;
  const lines = [
    `raw ${counts.raw}  processed ${counts.processed}  quarantined ${counts.quarantined}  missing ${counts.missing}`,
    `  by outcome: ${Object.entries(byStatus).map(([s, n]) => `${s} ${n}`).join(', ') || 'none'}`,
  ];
  const section = (title: string, statuses: RawStatus[]) => {
    const rows = ledger.entries.filter((e) => statuses.includes(e.status));
    if (!rows.length) return;
    lines.push(`${title}:`);
    for (const e of rows) lines.push(`  ${showKey(e.key)}  ${e.status === title ? '' : `${e.status} `}${e.code ?? ''}${e.reason ? `: ${e.reason}` : ''}`.trimEnd());
  };
  section('quarantined', ['quarantined']);
  section('segment-failed', ['segment-failed']);
  section('missing', ['missing', 'unsegmented', 'conflict']);
  if (ledger.orphanOutputs.length) lines.push(`processed outputs with no raw object: ${ledger.orphanOutputs.length}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------
// Command line

const USAGE = `usage: npm run ledger -- [options]
  --json           print the ledger as JSON
  --dataset NAME   only raw/NAME/ (and its outputs)
  --local          read the local cloud's state (starts the local S3 only; no AWS variables needed)
  --state-dir DIR  the local cloud's state folder (default .myeloscope)
  --redrive        re-deliver raw objects with no outcome (copy onto itself; in-process handlers with --local)
  --help, -h
environment (without --local): RAW_BUCKET, WORK_BUCKET and, for a non-AWS S3, AWS_ENDPOINT_URL`;

const LOCAL_BUCKETS = LOCAL_BUCKET_NAMES;

async function main(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        json: { type: 'boolean', default: false },
        dataset: { type: 'string' },
        local: { type: 'boolean', default: false },
        'state-dir': { type: 'string' },
        redrive: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }).values;
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  let close = async (): Promise<void> => undefined;
  if (args.local) {
    const stateDir = args['state-dir'] ?? join(process.cwd(), '.myeloscope');
    const s3Dir = join(stateDir, 's3');
    if (!existsSync(s3Dir)) {
      console.error(`no local cloud state at ${s3Dir}: run \`npm start\` first, or pass --state-dir`);
      return 2;
    }
    const { startLocalS3, useLocalS3Environment } = await import('../../infra/local/s3.ts');
    const s3 = await startLocalS3({ directory: s3Dir, buckets: Object.values(LOCAL_BUCKETS), port: 0 });
    close = () => s3.close();
    // As the local cloud sets them for the handlers.
    useLocalS3Environment(s3.endpoint);
    delete process.env.AWS_PROFILE;
  }
  try {
    let stores: LedgerStores;
    try {
      stores = { raw: new S3Store(bucketName('raw')), work: new S3Store(bucketName('work')) };
    } catch (err) {
      console.error(
        `${err instanceof Error ? err.message : String(err)}\n` +
          'set RAW_BUCKET and WORK_BUCKET (and AWS_ENDPOINT_URL for a non-AWS S3) as for the handlers, or use --local',
      );
      return 2;
    }
    const dataset = args.dataset ? { dataset: args.dataset } : {};
    let ledger = await readLedger(stores, dataset);
    if (args.redrive && ledger.counts.missing > 0) {
      // In-process handlers log JSON lines: keep them off stdout, which carries the ledger (--json).
      if (args.local) setLogSink((level, message, fields) => console.error(JSON.stringify({ level, message, ...fields })));
      const invoke = args.local
        ? {
            preprocess: ((await import('../preprocess/index.ts')) as { handler: (e: S3Event) => Promise<unknown> }).handler,
            segment: ((await import('../segment/index.ts')) as { handler: (e: S3Event) => Promise<unknown> }).handler,
          }
        : undefined;
      const redriven = await redrive(ledger, stores, invoke);
      console.error(`redrove ${redriven.length} object(s)${invoke ? '' : ': their outcome follows once the notifications have run'}`);
      if (invoke) {
        // A preprocessed image needs its segmentation too; the local S3 alone delivers no event for it.
        ledger = await readLedger(stores, dataset);
        await redrive(ledger, stores, invoke);
      }
      ledger = await readLedger(stores, dataset);
    }
    console.log(args.json ? JSON.stringify(ledger, null, 2) : formatLedger(ledger));
    return ledger.counts.missing > 0 ? 1 : 0;
  } finally {
    await close();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : String(err));
      process.exit(1);
    },
  );
}
