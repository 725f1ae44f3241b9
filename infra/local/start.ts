/**
 * `npm start`: the whole pipeline on this machine, on the bundled real bone-marrow images. Uploads them to the
 * local raw bucket, lets the S3 notifications run preprocess and segment, runs the training state machine
 * synthesized by the CDK app, and predicts a held-out image over HTTP. Then keeps the API up (unless --exit).
 */
import { parseArgs } from 'node:util';
import { readdir, readFile, mkdir, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startLocalCloud } from './cloud.ts';
import { setLogSink } from '../../layers/aws/src/events.ts';
import { DEFAULT_PARAMS, type RunState, type Manifest } from '../../layers/core/src/workflow.ts';

const HELP = `Usage: npm start -- [options]

Runs Myeloscope end to end on this machine: local S3, S3-triggered preprocess and segment, the training
state machine from the CDK app, and the inference API on a local port.

Options:
  --data <dir>       folder with images/ and masks/ (default: test/data/segpc2021, the bundled SegPC-2021 sample)
  --dataset <name>   dataset name in the raw keys (default: segpc)
  --limit <n>        use only the first n images
  --epochs <n>       training epochs (default: the workflow default)
  --fresh            start from empty local buckets (default: keep .myeloscope/ from earlier runs)
  --api-port <port>  inference API port (default 8787; another free port if taken)
  --s3-port <port>   local S3 port (default 4569; another free port if taken)
  --exit             stop after the demo prediction instead of serving the API
  -h, --help         show this help`;

const { values: args } = parseArgs({
  options: {
    data: { type: 'string', default: 'test/data/segpc2021' },
    dataset: { type: 'string', default: 'segpc' },
    limit: { type: 'string' },
    epochs: { type: 'string' },
    fresh: { type: 'boolean', default: false },
    'api-port': { type: 'string', default: '8787' },
    's3-port': { type: 'string', default: '4569' },
    exit: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(HELP);
  process.exit(0);
}

function intArg(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`--${name} must be a whole number (got ${v})`);
    process.exit(2);
  }
  return n;
}

const t0 = performance.now();
const tty = process.stdout.isTTY === true;
let lastStatus = 0;
/** A progress line: redrawn in place on a terminal, printed every few seconds (and at the end) in a log. */
function status(line: string, final = false): void {
  if (tty) {
    process.stdout.write(`\r${line}\x1b[K${final ? '\n' : ''}`);
  } else if (final || performance.now() - lastStatus > 5000) {
    lastStatus = performance.now();
    console.log(line);
  }
}
const timings: [string, number][] = [];
const stageStart = () => performance.now();
const stageEnd = (name: string, start: number) => timings.push([name, (performance.now() - start) / 1000]);
const stateDir = join(process.cwd(), '.myeloscope');
await mkdir(stateDir, { recursive: true });
const logFile = join(stateDir, 'handlers.log');
const epochsLabel = args.epochs ?? String(DEFAULT_PARAMS.epochs);

// Handler logs go to a file (the local CloudWatch); epochs and warnings also to the screen.
setLogSink((level, message, fields) => {
  void appendFile(logFile, `${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
  if (message === 'epoch') {
    const f = fields as { epoch: number; loss: number; acc: number; valLoss?: number; valAcc?: number; seconds: number };
    const val = f.valLoss !== undefined ? `  val_loss ${f.valLoss.toFixed(4)}  val_acc ${(f.valAcc ?? 0).toFixed(3)}` : '';
    console.log(`    epoch ${String(f.epoch).padStart(2)}/${epochsLabel}  loss ${f.loss.toFixed(4)}  acc ${f.acc.toFixed(3)}${val}  (${f.seconds.toFixed(1)} s)`);
  } else if (level !== 'info') {
    console.log(`    ${level}: ${message} ${JSON.stringify(fields)}`);
  }
});

console.log('Myeloscope: local run\n');
let s = stageStart();
const outcomes = new Map<string, number>();
let segmentedCells = 0;
let plasmaCells = 0;
const cloud = await startLocalCloud({
  fresh: args.fresh,
  apiPort: intArg('api-port', args['api-port']) ?? 8787,
  s3Port: intArg('s3-port', args['s3-port']) ?? 4569,
  onDelivered: (fn, _key, result) => {
    for (const r of (result as { results?: { status: string; cellCount?: number; plasmaCount?: number }[] }).results ?? []) {
      outcomes.set(`${fn}:${r.status}`, (outcomes.get(`${fn}:${r.status}`) ?? 0) + 1);
      if (fn === 'segment' && r.status === 'segmented') {
        segmentedCells += r.cellCount ?? 0;
        plasmaCells += r.plasmaCount ?? 0;
      }
    }
  },
});
stageEnd('start local cloud (synth + S3 + API)', s);
console.log(`[1/5] local cloud up: S3 ${cloud.s3.endpoint}, API ${cloud.api.url} (state in .myeloscope/)`);

// Upload: masks first, so each image's segment run already sees its mask (either order works).
s = stageStart();
const dataDir = args.data as string;
const imageFiles = (await readdir(join(dataDir, 'images'))).filter((f) => !f.startsWith('.')).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
const limit = intArg('limit', args.limit);
const chosen = limit ? imageFiles.slice(0, limit) : imageFiles;
if (chosen.length === 0) {
  console.error(`no images in ${join(dataDir, 'images')}`);
  process.exit(1);
}
const client = new S3Client({ endpoint: cloud.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
const label = 'myeloma';
let uploaded = 0;
for (const file of chosen) {
  for (const [folder, prefix] of [['masks', 'masks/'], ['images', '']] as const) {
    let body: Buffer;
    try {
      body = await readFile(join(dataDir, folder, file));
    } catch {
      if (folder === 'masks') continue; // an image without a mask is still processed, just not labelled
      throw new Error(`cannot read ${join(dataDir, folder, file)}`);
    }
    await client.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: `raw/${args.dataset}/${label}/${prefix}${file}`, Body: body }));
    uploaded++;
  }
  status(`[2/5] uploading to s3://${cloud.buckets.raw}/raw/${args.dataset}/${label}/: ${uploaded} objects`);
}
status(`[2/5] uploaded ${uploaded} objects (${chosen.length} images and their masks) to s3://${cloud.buckets.raw}/raw/${args.dataset}/${label}/`, true);
stageEnd('upload', s);

s = stageStart();
const done = (k: string) => cloud.dispatcher.stats.get(k)?.delivered ?? 0;
const eventsLine = () => `[3/5] S3-triggered handlers: preprocess ${done('preprocess')}/${uploaded}, segment ${done('segment')}`;
const progress = setInterval(() => status(eventsLine()), 500);
await cloud.idle();
clearInterval(progress);
status(eventsLine(), true);
stageEnd('preprocess + segment (S3-triggered)', s);
const count = (k: string) => outcomes.get(k) ?? 0;
console.log(
  `      preprocess: ${count('preprocess:processed')} processed, ${count('preprocess:unchanged')} unchanged, ${count('preprocess:quarantined')} quarantined` +
    ` | segment: ${count('segment:segmented')} segmented (${segmentedCells} cells, ${plasmaCells} plasma by mask), ${count('segment:unchanged')} unchanged`,
);
for (const f of cloud.dispatcher.failures) console.log(`      FAILED ${f.function} ${f.key}: ${f.error}`);

s = stageStart();
const runName = `run-${new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d\dZ$/, 'Z')}-${Math.random().toString(36).slice(2, 6)}`;
const input: Record<string, unknown> = { dataset: args.dataset };
const epochs = intArg('epochs', args.epochs);
if (epochs) input.epochs = epochs;
console.log(`[4/5] training state machine (definition from the CDK template), execution ${runName}`);
const result = await cloud.runTraining(input, {
  name: runName,
  onStateEntered: (state) => console.log(`  -> ${state}`),
  onStateExited: (state, secs) => console.log(`  <- ${state} (${secs.toFixed(1)} s)`),
});
stageEnd('training workflow', s);
if (result.status !== 'SUCCEEDED') {
  console.error(`\nTraining execution ${runName} FAILED: ${result.error}: ${result.cause}`);
  console.error(`Handler logs: ${logFile}`);
  await cloud.close();
  process.exit(1);
}
for (const [state, secs] of Object.entries(result.timings)) timings.push([`  ${state}`, secs]);
const run = result.output as RunState;

s = stageStart();
const manifestKey = run.manifestUri.replace(`s3://${cloud.buckets.work}/`, '');
const manifest = JSON.parse(
  Buffer.from(await (await fetchObject(client, cloud.buckets.work, manifestKey))).toString('utf8'),
) as Manifest;
// Predict an image the model never saw: the first held-out source image, from the bundled folder.
const testSource = manifest.samples.find((x) => x.split === 'test')?.sourceImage ?? '';
const testName = testSource.split('/').pop()?.replace(/\.png$/, '') ?? '';
const demoFile = chosen.find((f) => f.replace(/\.[^.]+$/, '') === testName) ?? (chosen[0] as string);
const demoPath = join(dataDir, 'images', demoFile);
const response = await fetch(`${cloud.api.url}/predict`, {
  method: 'POST',
  headers: { 'content-type': 'image/jpeg' },
  body: await readFile(demoPath),
});
const prediction = (await response.json()) as {
  runId?: string;
  nucleatedCellCount?: number;
  plasmaCellCount?: number;
  plasmaCellFraction?: number;
  call?: { label: string; threshold: number };
  error?: { message: string };
};
stageEnd('prediction over HTTP', s);

const m = run.metrics;
console.log('\n[5/5] done\n');
console.log('Stage timings:');
for (const [name, secs] of timings) console.log(`  ${name.padEnd(40)} ${secs.toFixed(1).padStart(7)} s`);
console.log(`  ${'total'.padEnd(40)} ${((performance.now() - t0) / 1000).toFixed(1).padStart(7)} s`);
console.log(`\nRun id:        ${run.runId}`);
console.log(`Data:          ${run.counts.sources} images with masks; cells train ${run.counts.train}, val ${run.counts.val}, test ${run.counts.test} (split by source image)`);
console.log(`Backend:       ${run.backend}`);
if (m) {
  console.log(`Held-out:      accuracy ${m.accuracy.toFixed(3)}, ROC AUC ${m.rocAuc === null ? 'n/a' : m.rocAuc.toFixed(3)} on ${m.testCells} cells from ${m.testImages} images`);
}
console.log(`Model:         ${run.publishedUri}model.json (and models/latest.json)`);
console.log(`Report:        ${run.reportUri}`);
console.log(`Evaluation:    ${run.evaluationUri}`);
console.log(`\nPOST ${cloud.api.url}/predict with ${demoPath} -> HTTP ${response.status}`);
if (response.ok) {
  console.log(
    `  model ${prediction.runId}: ${prediction.nucleatedCellCount} nucleated cells, ${prediction.plasmaCellCount} plasma cells ` +
      `(fraction ${prediction.plasmaCellFraction}); call: ${prediction.call?.label} (threshold ${prediction.call?.threshold})`,
  );
} else {
  console.log(`  error: ${prediction.error?.message}`);
}
console.log(`\nTry it yourself:\n  curl -s -X POST -H 'Content-Type: image/jpeg' --data-binary @${demoPath} ${cloud.api.url}/predict | head -c 600; echo`);

if (args.exit || !response.ok) {
  await cloud.close();
  process.exit(response.ok ? 0 : 1);
}
console.log(`\nServing the inference API on ${cloud.api.url} (local S3 on ${cloud.s3.endpoint}). Press Ctrl+C to stop.`);
const stop = async () => {
  await cloud.close();
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());

async function fetchObject(c: S3Client, bucket: string, key: string): Promise<Uint8Array> {
  const { GetObjectCommand } = await import('@aws-sdk/client-s3');
  const out = await c.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return out.Body ? out.Body.transformToByteArray() : new Uint8Array();
}
