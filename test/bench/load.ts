/**
 * `npm run load`: a bounded load test of the local inference endpoint on loopback. Publishes a small model
 * through the real workflow, starts a fresh API process (test/bench/serve.ts), then runs autocannon against
 * POST /predict for a fixed time at a few concurrency levels, sampling the server's memory. Prints latency
 * percentiles, errors and memory per level; writes test/bench/results/load.{json,md}. Exits 1 when any request
 * failed or the server's memory grew between the first and the last level by more than --max-growth.
 *
 *   npm run load -- [--duration 60] [--levels 1,2,4] [--max-growth 0.25]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startLocalCloud } from '../../infra/local/cloud.ts';
import { setLogSink } from '../../layers/aws/src/events.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DATA = path.join(ROOT, 'test/data/segpc2021');
const OUT = path.join(import.meta.dirname, 'results');

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '60' },
    levels: { type: 'string', default: '1,2,4' },
    'max-growth': { type: 'string', default: '0.25' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  console.log('npm run load -- [--duration seconds per level, default 60] [--levels 1,2,4] [--max-growth 0.25]');
  process.exit(0);
}
const duration = Number(values.duration);
const levels = String(values.levels).split(',').map(Number);
const maxGrowth = Number(values['max-growth']);
if (!(duration > 0 && duration <= 600) || levels.some((l) => !Number.isInteger(l) || l < 1 || l > 64) || !(maxGrowth > 0)) {
  console.error('--duration must be 1-600 s, --levels whole numbers 1-64, --max-growth above 0');
  process.exit(2);
}

setLogSink(() => undefined);
const tmp = await mkdtemp(path.join(tmpdir(), 'myeloscope-load-'));
const stateDir = path.join(tmp, 'cloud');

// 1. A published model, through the real workflow (1 epoch: latency does not depend on the weights).
console.error('publishing a model through the local workflow ...');
{
  const cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0, sfnPort: 0 });
  const s3 = new S3Client({ endpoint: cloud.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  const files = (await readdir(path.join(DATA, 'images'))).sort().slice(0, 6);
  for (const f of files) {
    await s3.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: `raw/load/myeloma/masks/${f}`, Body: await readFile(path.join(DATA, 'masks', f)) }));
    await s3.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: `raw/load/myeloma/${f}`, Body: await readFile(path.join(DATA, 'images', f)) }));
  }
  await cloud.idle();
  const exec = await cloud.runTraining({ dataset: 'load', epochs: 1, minRocAuc: 0, runId: 'load-run' }, { name: 'load-exec' });
  s3.destroy();
  await cloud.close();
  if (exec.status !== 'SUCCEEDED') throw new Error(`the training workflow failed: ${exec.error}: ${exec.cause}`);
}

// 2. A fresh API process, its memory read from /proc while the load runs.
const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'serve.ts'), stateDir], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
const url = await new Promise<string>((resolve, reject) => {
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.startsWith('{') && line.includes('"url"')) resolve((JSON.parse(line) as { url: string }).url);
  });
  child.on('exit', (code) => reject(new Error(`the API process exited with ${code}`)));
});
const rssMiB = async (): Promise<number> => {
  const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
};

const body = await readFile(path.join(DATA, 'images', '106.jpg'));
// Warm-up: the first requests load OpenCV.js and the model.
for (let i = 0; i < 5; i++) await fetch(`${url}/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body }).then((r) => r.arrayBuffer());

interface Level {
  connections: number;
  seconds: number;
  requests: number;
  errors: number;
  non2xx: number;
  timeouts: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  rssMiB: { start: number; end: number; max: number };
}
const results: Level[] = [];
for (const connections of levels) {
  console.error(`load: ${connections} connection(s) for ${duration} s ...`);
  const start = await rssMiB();
  let max = start;
  const sampler = setInterval(() => void rssMiB().then((v) => (max = Math.max(max, v))), 1000);
  const r = await autocannon({ url: `${url}/predict`, method: 'POST', headers: { 'content-type': 'image/jpeg' }, body, connections, duration, timeout: 30 });
  clearInterval(sampler);
  const end = await rssMiB();
  results.push({
    connections,
    seconds: duration,
    requests: r.requests.total,
    errors: r.errors,
    non2xx: r.non2xx,
    timeouts: r.timeouts,
    requestsPerSecond: Math.round(r.requests.average * 100) / 100,
    latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max },
    rssMiB: { start: Math.round(start), end: Math.round(end), max: Math.round(Math.max(max, end)) },
  });
}
child.stdin.write('stop\n');
await new Promise((r) => child.on('exit', r));
await rm(tmp, { recursive: true, force: true });

const first = results[0] as Level;
const last = results[results.length - 1] as Level;
const growth = (last.rssMiB.end - first.rssMiB.end) / first.rssMiB.end;
const failed = results.reduce((a, l) => a + l.errors + l.non2xx + l.timeouts, 0);
const md = [
  `Load test (\`npm run load\`, ${new Date().toISOString()}): POST /predict of a 512x512 JPEG to the local API on loopback, ${duration} s per level.`,
  '',
  '| connections | requests | req/s | errors + non-2xx + timeouts | p50 ms | p90 ms | p99 ms | max ms | server RSS MiB start / end / max |',
  '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ...results.map(
    (l) =>
      `| ${l.connections} | ${l.requests} | ${l.requestsPerSecond} | ${l.errors + l.non2xx + l.timeouts} | ${l.latencyMs.p50} | ${l.latencyMs.p90} | ${l.latencyMs.p99} | ${l.latencyMs.max} | ${l.rssMiB.start} / ${l.rssMiB.end} / ${l.rssMiB.max} |`,
  ),
  '',
  `Server memory from the end of the first level to the end of the last: ${(growth * 100).toFixed(1)} % (limit ${(maxGrowth * 100).toFixed(0)} %).`,
].join('\n');
await mkdir(OUT, { recursive: true });
await writeFile(path.join(OUT, 'load.json'), `${JSON.stringify({ duration, levels: results, memoryGrowth: growth }, null, 2)}\n`);
await writeFile(path.join(OUT, 'load.md'), `${md}\n`);
console.log(md);
if (failed > 0 || growth > maxGrowth) {
  console.error(failed > 0 ? `${failed} request(s) failed` : `server memory grew ${(growth * 100).toFixed(1)} %`);
  process.exit(1);
}
