/**
 * `npm start`: the whole pipeline on this machine, on the bundled real bone-marrow images. Uploads them to the
 * local raw bucket, lets the S3 notifications run preprocess and segment, runs the training state machine
 * synthesized by the CDK app, and predicts a held-out image over HTTP. Then keeps the API up (unless --exit).
 */
import { parseArgs } from 'node:util';
import { readdir, readFile, mkdir, appendFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startLocalCloud } from './cloud.ts';
import { installCrashHandler } from './crash.ts';
import { setLogSink } from '../../layers/aws/src/events.ts';
import { DEFAULT_PARAMS, parseRunInput, runWarnings, type RunState, type Manifest } from '../../layers/core/src/workflow.ts';
import { followRun, runOutput, startRun, stateOf } from '../../layers/aws/src/workflow-client.ts';

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
  --sfn-port <port>  local Step Functions API port (default 8083; another free port if taken)
  --exit             stop after the demo prediction instead of serving the API
  -h, --help         show this help`;

let parsed;
try {
  parsed = parseArgs({
    options: {
      data: { type: 'string', default: 'test/data/segpc2021' },
      dataset: { type: 'string', default: 'segpc' },
      limit: { type: 'string' },
      epochs: { type: 'string' },
      fresh: { type: 'boolean', default: false },
      'api-port': { type: 'string', default: '8787' },
      's3-port': { type: 'string', default: '4569' },
      'sfn-port': { type: 'string', default: '8083' },
      exit: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (err) {
  console.error(`${(err as Error).message}\nRun npm start -- --help for the options.`);
  process.exit(2);
}
const args = parsed.values;
if (args.help) {
  console.log(HELP);
  process.exit(0);
}

function usage(message: string): never {
  console.error(`${message}\nRun npm start -- --help for the options.`);
  process.exit(2);
}

function intArg(name: string, v: string | undefined, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) usage(`--${name} must be a whole number ${max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`} (got ${v})`);
  return n;
}

// Every option is checked before anything starts.
const apiPort = intArg('api-port', args['api-port'], 0, 65535) ?? 8787;
const s3Port = intArg('s3-port', args['s3-port'], 0, 65535) ?? 4569;
const sfnPort = intArg('sfn-port', args['sfn-port'], 0, 65535) ?? 8083;
const limit = intArg('limit', args.limit, 1);
const epochs = intArg('epochs', args.epochs, 1);
const trainingInput: Record<string, unknown> = { dataset: args.dataset, ...(epochs ? { epochs } : {}) };
try {
  parseRunInput(trainingInput);
} catch (err) {
  usage(`invalid option: ${(err as Error).message}`);
}
const dataDir = resolve(args.data as string);
let imageFiles: string[];
try {
  imageFiles = (await readdir(join(dataDir, 'images')))
    .filter((f) => !f.startsWith('.'))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
} catch {
  usage(`--data ${args.data}: expected a folder with images/ (and masks/) inside, but ${join(dataDir, 'images')} cannot be read`);
}
const chosen = limit ? imageFiles.slice(0, limit) : imageFiles;
if (chosen.length === 0) usage(`no images in ${join(dataDir, 'images')}`);

installCrashHandler('npm start (the local cloud)');
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
// Per image, the latest segmentation: an image is segmented again when its mask lands after it.
const cellsByImage = new Map<string, { cells: number; plasma: number }>();
const cloud = await startLocalCloud({
  fresh: args.fresh,
  apiPort,
  s3Port,
  sfnPort,
  onDelivered: (fn, _key, result) => {
    for (const r of (result as { results?: { status: string; cells?: string; cellCount?: number; plasmaCount?: number }[] }).results ?? []) {
      outcomes.set(`${fn}:${r.status}`, (outcomes.get(`${fn}:${r.status}`) ?? 0) + 1);
      if (fn === 'segment' && r.status === 'segmented' && r.cells) {
        cellsByImage.set(r.cells, { cells: r.cellCount ?? 0, plasma: r.plasmaCount ?? 0 });
      }
    }
  },
});
stageEnd('start local cloud (synth + S3 + API)', s);
console.log(`[1/5] local cloud up: S3 ${cloud.s3.endpoint}, Step Functions ${cloud.sfn.endpoint}, API ${cloud.api.url} (state in .myeloscope/)`);

// Upload: masks first, so each image's segment run already sees its mask (either order works).
s = stageStart();
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
const sum = (f: 'cells' | 'plasma') => [...cellsByImage.values()].reduce((a, v) => a + v[f], 0);
console.log(
  `      preprocess: ${count('preprocess:processed')} processed, ${count('preprocess:unchanged')} unchanged, ${count('preprocess:quarantined')} quarantined` +
    ` | segment: ${cellsByImage.size} images segmented (${sum('cells')} cells, ${sum('plasma')} plasma by mask; ${count('segment:segmented')} runs), ${count('segment:unchanged')} events found them unchanged`,
);
for (const f of cloud.dispatcher.failures) console.log(`      FAILED ${f.function} ${f.key}: ${f.error}`);

s = stageStart();
// e.g. run-2026-12-03T19-28-07Z-3kyk: sortable, unique, key-safe.
const runName = `run-${new Date().toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}-${Math.random().toString(36).slice(2, 6)}`;
const input = trainingInput;
console.log(`[4/5] training state machine (definition from the CDK template), execution ${runName}`);
// Started and followed through the Step Functions API, exactly as against AWS (cloud.ts set the endpoint and ARN).
const stateTimings: Record<string, number> = {};
const enteredAt = new Map<string, number>();
let executionArn: string;
try {
  ({ executionArn } = await startRun(input, { name: runName }));
} catch (err) {
  // Bad input (e.g. --dataset with a "/") is refused before a run starts: say why, without a stack.
  console.error(`\nCannot start the training run: ${(err as Error).message}`);
  await cloud.close();
  process.exit(2);
}
const result = await followRun(executionArn, {
  pollMs: 250,
  onEvent: (ev) => {
    const state = stateOf(ev);
    if (!state || !ev.type) return;
    const at = ev.timestamp?.getTime() ?? Date.now();
    if (ev.type.endsWith('StateEntered')) {
      enteredAt.set(state, at);
      console.log(`  -> ${state}`);
    } else if (ev.type.endsWith('StateExited')) {
      const secs = (at - (enteredAt.get(state) ?? at)) / 1000;
      stateTimings[state] = (stateTimings[state] ?? 0) + secs;
      console.log(`  <- ${state} (${secs.toFixed(1)} s)`);
    }
  },
});
stageEnd('training workflow', s);
if (result.status !== 'SUCCEEDED') {
  console.error(`\nTraining execution ${runName} ${result.status}: ${result.error}: ${result.cause}`);
  console.error(`Handler logs: ${logFile}`);
  await cloud.close();
  process.exit(1);
}
for (const [state, secs] of Object.entries(stateTimings)) timings.push([`  ${state}`, secs]);
const run = runOutput<RunState>(result) as RunState;

s = stageStart();
const manifestKey = run.manifestUri.replace(`s3://${cloud.buckets.work}/`, '');
const manifest = JSON.parse(
  Buffer.from(await (await fetchObject(client, cloud.buckets.work, manifestKey))).toString('utf8'),
) as Manifest;
// Predict an image the model never saw: a held-out source image of this run, from the data folder.
const stem = (f: string) => f.replace(/\.[^./]+$/, '');
const testNames = new Set(manifest.samples.filter((x) => x.split === 'test').map((x) => stem(x.sourceImage.split('/').pop() ?? '')));
const heldOut = imageFiles.find((f) => testNames.has(stem(f)));
const demoFile = heldOut ?? (chosen[0] as string);
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
for (const w of runWarnings(run)) console.log(`Warning:       ${w}`);
if (m) {
  // Each value with its bootstrap interval over held-out images (null interval: undefined in every replicate).
  const withCi = (v: number | null, ci: [number, number] | null, d = 3) =>
    v === null || !Number.isFinite(v) ? 'n/a' : `${v.toFixed(d)}${ci ? ` [${ci[0].toFixed(d)}, ${ci[1].toFixed(d)}]` : ''}`;
  console.log(`Held-out:      ${m.testCells} cells from ${m.testImages} images; ${Math.round(m.ciLevel * 100)} % intervals from ${m.bootstrapReplicates} bootstrap resamples of the images`);
  console.log(`               ROC AUC ${withCi(m.rocAuc, m.rocAucCi)}, accuracy ${withCi(m.accuracy, m.accuracyCi)}, balanced accuracy ${withCi(m.balancedAccuracy, m.balancedAccuracyCi)}`);
  console.log(`               plasma-cell count per image: mean absolute error ${withCi(m.meanAbsCountError, m.meanAbsCountErrorCi, 2)}`);
}
console.log(`Model:         ${run.publishedUri}model.json (and models/latest.json)`);
console.log(`Report:        ${run.reportUri}`);
// A copy of the self-contained HTML report on disk, to open in a browser.
const reportMatch = /^s3:\/\/([^/]+)\/(.+)$/.exec(run.reportUri ?? '');
if (reportMatch) {
  try {
    const { writeFile } = await import('node:fs/promises');
    const localReport = join(stateDir, 'reports', run.runId, 'report.html');
    await mkdir(join(stateDir, 'reports', run.runId), { recursive: true });
    await writeFile(localReport, await fetchObject(client, reportMatch[1] as string, reportMatch[2] as string));
    console.log(`               open ${localReport}`);
  } catch (err) {
    console.log(`               (could not copy the report locally: ${(err as Error).message})`);
  }
}
console.log(`Evaluation:    ${run.evaluationUri}`);
console.log(`\nPOST ${cloud.api.url}/predict with ${demoPath}${heldOut ? ' (held out from training)' : ' (no held-out image of this run is in --data: this one may have been trained on)'} -> HTTP ${response.status}`);
if (response.ok) {
  console.log(
    `  model ${prediction.runId}: ${prediction.nucleatedCellCount} nucleated cells, ${prediction.plasmaCellCount} plasma cells ` +
      `(fraction ${prediction.plasmaCellFraction}); call: ${prediction.call?.label} (threshold ${prediction.call?.threshold})`,
  );
} else {
  console.log(`  error: ${prediction.error?.message}`);
}
const curl = `curl -s -X POST -H 'Content-Type: image/jpeg' --data-binary @${demoPath} ${cloud.api.url}/predict | head -c 600; echo`;
if (args.exit || !response.ok) {
  // npm run serve listens on the default port, whatever port this run used.
  const serveCurl = curl.replace(cloud.api.url, 'http://127.0.0.1:8787');
  console.log(`\nThe API is stopped (--exit). npm run serve starts it again with this model; then:\n  ${serveCurl}`);
  await cloud.close();
  process.exit(response.ok ? 0 : 1);
}
console.log(`\nTry it yourself (or open ${cloud.api.url}/ in a browser):\n  ${curl}`);
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
