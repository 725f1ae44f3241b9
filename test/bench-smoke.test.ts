/**
 * The bench runner (test/bench/run.ts) in its smoke configuration: 2 images, 1 epoch of 64 samples,
 * 5 requests, 1 repeat. Checks that every section is in the JSON and that each alternative was either
 * measured or marked skipped with a reason. Timings from this run mean nothing (one repeat, tiny sets).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

type Obj = Record<string, unknown>;
const obj = (v: unknown, what: string): Obj => {
  assert.ok(typeof v === 'object' && v !== null, `${what} is missing`);
  return v as Obj;
};
const positive = (v: unknown, what: string): void => assert.ok(typeof v === 'number' && v > 0, `${what}: ${String(v)}`);
/** An alternative is either measured (`key` > 0) or skipped with a reason. */
const measuredOrSkipped = (v: unknown, key: string, what: string): void => {
  const o = obj(v, what);
  if (o['skipped'] !== undefined) assert.match(String(o['skipped']), /\S{3,}/, `${what}: skipped without a reason`);
  else positive(o[key], `${what}.${key}`);
};

const LIMIT_S = Number(process.env.BENCH_SMOKE_MAX_SECONDS ?? 60);

test(`bench runner, smoke configuration, in < ${LIMIT_S} s`, { timeout: 180_000 }, async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'myeloscope-bench-smoke-'));
  try {
    const t0 = performance.now();
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'test/bench/run.ts', '--smoke', '--out', out], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
      child.on('close', (c) => {
        if (c !== 0) t.diagnostic(err);
        resolve(c);
      });
    });
    const seconds = (performance.now() - t0) / 1000;
    assert.equal(code, 0);
    const r = JSON.parse(await readFile(join(out, 'latest.json'), 'utf8')) as Obj;
    t.diagnostic(`smoke bench took ${seconds.toFixed(1)} s; load ${JSON.stringify(obj(r['machine'], 'machine')['loadAtStart'])}`);
    for (const k of ['cpu', 'cores', 'memoryGiB', 'node', 'python', 'opencvPython', 'torch', 'loadAtStart']) {
      assert.ok(obj(r['machine'], 'machine')[k] !== undefined, `machine.${k}`);
    }
    for (const section of ['preprocess', 'segmentation', 'training', 'inference']) {
      assert.equal(obj(r[section], section)['error'], undefined, `${section} failed: ${String(obj(r[section], section)['error'])}`);
    }
    const sets = obj(r['preprocess'], 'preprocess')['sets'];
    assert.ok(Array.isArray(sets) && sets.length >= 1, 'preprocess.sets');
    for (const s of sets as Obj[]) {
      positive(obj(s['myeloscope'], 'preprocess.myeloscope')['imagesPerSecond'], 'preprocess.myeloscope');
      positive(obj(s['proposed'], 'preprocess.proposed')['imagesPerSecond'], 'preprocess.proposed');
      positive(obj(s['proposedCvJs'], 'preprocess.proposedCvJs')['imagesPerSecond'], 'preprocess.proposedCvJs');
      measuredOrSkipped(s['opencvPython'], 'imagesPerSecond', 'preprocess.opencvPython');
      assert.ok(obj(s['stagesMsPerImage'], 'stages')['total'] !== undefined);
    }
    const seg = obj(r['segmentation'], 'segmentation');
    positive(obj(seg['myeloscope'], 'segmentation.myeloscope')['imagesPerSecond'], 'segmentation.myeloscope');
    const cv = obj(seg['opencvPython'], 'segmentation.opencvPython');
    if (cv['skipped'] === undefined) positive(obj(cv['threads1'], 'threads1')['imagesPerSecond'], 'segmentation.opencvPython.threads1');
    else measuredOrSkipped(cv, 'imagesPerSecond', 'segmentation.opencvPython');
    const tr = obj(r['training'], 'training');
    positive(obj(tr['myeloscope'], 'training.myeloscope')['secondsPerEpoch'], 'training.myeloscope');
    assert.equal(tr['samples'], 64);
    const pt = obj(tr['pytorch'], 'training.pytorch');
    if (pt['skipped'] === undefined) positive(obj(pt['threads1'], 'pytorch.threads1')['secondsPerEpoch'], 'training.pytorch.threads1');
    else measuredOrSkipped(pt, 'secondsPerEpoch', 'training.pytorch');
    measuredOrSkipped(tr['keras'], 'secondsPerEpoch', 'training.keras');
    const inf = obj(r['inference'], 'inference');
    const seq = obj(inf['sequential'], 'inference.sequential');
    assert.equal(seq['requests'], 5);
    positive(seq['p50Ms'], 'p50');
    positive(seq['p99Ms'], 'p99');
    positive(obj(inf['coldStart'], 'coldStart')['firstRequestMs'], 'cold first request');
    positive(inf['peakRssMiB'], 'peak RSS');
    assert.match(await readFile(join(out, 'latest.md'), 'utf8'), /\| benchmark \| Myeloscope \| alternative \| ratio \| target \|/);
    assert.ok(seconds < LIMIT_S, `the smoke bench took ${seconds.toFixed(1)} s (limit ${LIMIT_S} s; BENCH_SMOKE_MAX_SECONDS overrides it on a loaded machine)`);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
