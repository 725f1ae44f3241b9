/**
 * The `myeloscope` CLI as a user runs it: a child process of the bin launcher, against a local cloud running
 * in this process, configured only through the environment `myeloscope serve` prints. Exit codes are part of
 * the interface: 0 ok, 1 failed, 2 usage, 3 not found / not configured.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLocalCloud, type LocalCloud } from '../infra/local/cloud.ts';
import { setLogSink } from '../layers/aws/src/events.ts';

const DATA = 'test/data/segpc2021';
const BIN = new URL('../functions/cli/myeloscope.mjs', import.meta.url).pathname;
let cloud: LocalCloud;
let tmp: string;
let env: NodeJS.ProcessEnv;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI asynchronously: the local cloud it talks to lives in this process's event loop. */
function cli(args: string[], childEnv: NodeJS.ProcessEnv = env): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The environment without any Myeloscope or AWS endpoint setting. */
function bareEnv(): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(AWS_|RAW_BUCKET|WORK_BUCKET|MODELS_BUCKET|STATE_MACHINE_ARN|MYELOSCOPE_|S3_FORCE)/.test(k)) out[k] = v;
  }
  return out;
}

before(async () => {
  setLogSink(() => undefined);
  tmp = await mkdtemp(join(tmpdir(), 'myeloscope-cli-'));
  cloud = await startLocalCloud({ stateDir: join(tmp, 'state'), fresh: true, s3Port: 0, apiPort: 0, sfnPort: 0 });
  // Exactly the variables `myeloscope serve` prints.
  env = {
    ...bareEnv(),
    AWS_ENDPOINT_URL: cloud.s3.endpoint,
    AWS_ENDPOINT_URL_SFN: cloud.sfn.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    RAW_BUCKET: cloud.buckets.raw,
    STATE_MACHINE_ARN: cloud.sfn.stateMachineArn,
    MYELOSCOPE_API_URL: cloud.api.url,
  };
});

after(async () => {
  await cloud?.sfn.idle();
  await cloud?.close();
  await rm(tmp, { recursive: true, force: true });
});

test('--help explains the commands and exit codes; usage errors exit 2', async () => {
  const help = await cli(['--help']);
  assert.equal(help.code, 0);
  for (const cmd of ['upload', 'train', 'follow', 'status', 'predict', 'serve']) assert.match(help.stdout, new RegExp(`\\b${cmd}\\b`));
  assert.match(help.stdout, /Exit codes:/);
  const trainHelp = await cli(['train', '--help']);
  assert.equal(trainHelp.code, 0);
  assert.match(trainHelp.stdout, /--min-roc-auc/);

  const unknown = await cli(['frobnicate']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command 'frobnicate'/);
  const badNumber = await cli(['train', '--epochs', 'many']);
  assert.equal(badNumber.code, 2);
  // Invalid run input is refused before a run starts, with the reason and no stack trace.
  const badInput = await cli(['train', '--epochs', '0']);
  assert.equal(badInput.code, 2);
  assert.match(badInput.stderr, /epochs must be an integer from 1 to 500/);
  for (const args of [['predict', DATA, '--concurrency', '0'], ['upload', DATA, '--dataset', 'd', '--label', 'l', '--concurrency', '-1']]) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /--concurrency must be at least 1/);
  }
  assert.doesNotMatch(badInput.stderr, /\n\s+at /);
});

test('missing configuration exits 3 with what to set', async () => {
  const train = await cli(['train'], bareEnv());
  assert.equal(train.code, 3);
  assert.match(train.stderr, /STATE_MACHINE_ARN is not set/);
  const predict = await cli(['predict', DATA], bareEnv());
  assert.equal(predict.code, 3);
  assert.match(predict.stderr, /MYELOSCOPE_API_URL/);
  const upload = await cli(['upload', join(DATA, 'images'), '--dataset', 'x', '--label', 'y'], bareEnv());
  assert.equal(upload.code, 3);
  assert.match(upload.stderr, /RAW_BUCKET/);
  const missing = await cli(['predict', join(tmp, 'no-such-folder')]);
  assert.equal(missing.code, 3);
  assert.match(missing.stderr, /no such file or folder/);
  const unknownRun = await cli(['status', `${cloud.sfn.stateMachineArn.replace(':stateMachine:', ':execution:')}:nope`]);
  assert.equal(unknownRun.code, 3);
  assert.match(unknownRun.stderr, /Execution Does Not Exist/);
  // --out into a folder that does not exist: said before any image is sent.
  const noDir = await cli(['predict', join(DATA, 'images', '106.jpg'), '--out', join(tmp, 'no-such-dir', 'x.csv')]);
  assert.equal(noDir.code, 3, noDir.stderr);
  assert.match(noDir.stderr, /--out .*the folder .*no-such-dir does not exist/);
  assert.doesNotMatch(noDir.stderr, /ENOENT/);
  const down = await cli(['status', 'arn:aws:states:us-east-1:000000000000:execution:MyeloscopeTraining:x'], { ...env, AWS_ENDPOINT_URL_SFN: 'http://127.0.0.1:9' });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach Step Functions at http:\/\/127\.0\.0\.1:9/);
});

test('help texts flow: no hard line breaks inside a command description (commander wraps them)', async () => {
  const { buildProgram } = await import('../functions/cli/myeloscope.ts');
  for (const c of buildProgram().commands) assert.doesNotMatch(c.description(), /\n/, `${c.name()}: ${c.description()}`);
});

test('train --follow of a dataset with no images exits 2 with the reason; an upload the local S3 cannot hold exits 1 saying why', async () => {
  const train = await cli(['train', '--dataset', 'nope', '--epochs', '1', '--name', 'cli-nope', '--follow']);
  assert.equal(train.code, 2, train.stderr);
  assert.match(train.stderr, /the run input is invalid: dataset "nope" has 0 segmented image/);
  // The same --name again: a usage error (exit 2), not a failed run.
  const again = await cli(['train', '--dataset', 'nope', '--epochs', '1', '--name', 'cli-nope']);
  assert.equal(again.code, 2, again.stderr);
  assert.match(again.stderr, /ExecutionAlreadyExists|already exists/i);

  const folder = join(tmp, 'long-names');
  await mkdir(folder);
  await copyFile(join(DATA, 'images', '106.jpg'), join(folder, `${'l'.repeat(236)}.jpg`));
  const up = await cli(['upload', folder, '--dataset', 'cli', '--label', 'long']);
  assert.equal(up.code, 1, up.stderr);
  assert.match(up.stderr, /KeyTooLongError: The local S3 server .*cannot store a path segment over 233 bytes.*AWS S3 allows it/);
  assert.doesNotMatch(up.stderr, /\n\s+at /);
  // Still up.
  assert.equal((await fetch(`${cloud.s3.endpoint}/${cloud.buckets.raw}?list-type=1`)).status < 500, true);
});

test('upload -> train --follow -> status -> predict a folder as CSV', async () => {
  // A folder as a user has it: images, their masks in masks/, and a file that is not an image.
  const files = (await readdir(join(DATA, 'images'))).sort().slice(0, 6);
  const folder = join(tmp, 'slides');
  await mkdir(join(folder, 'masks'), { recursive: true });
  for (const f of files) {
    await copyFile(join(DATA, 'images', f), join(folder, f));
    await copyFile(join(DATA, 'masks', f), join(folder, 'masks', f));
  }
  await writeFile(join(folder, 'notes.txt'), 'not an image');
  const up = await cli(['upload', folder, '--dataset', 'cli', '--label', 'myeloma']);
  assert.equal(up.code, 0, up.stderr);
  assert.match(up.stdout, /uploaded 6 images and 6 masks to s3:\/\/myeloscope-raw\/raw\/cli\/myeloma\//);
  assert.match(up.stderr, /skipped 1 file\(s\) in .*slides without an image extension: notes\.txt/);
  await cloud.idle();
  assert.deepEqual(cloud.dispatcher.failures, []);

  const train = await cli(['train', '--dataset', 'cli', '--epochs', '1', '--min-roc-auc', '0', '--run-id', 'cli-run-1', '--name', 'cli-exec-1', '--follow']);
  assert.equal(train.code, 0, train.stderr);
  const arn = train.stdout.split('\n')[0] ?? '';
  assert.equal(arn, `${cloud.sfn.stateMachineArn.replace(':stateMachine:', ':execution:')}:cli-exec-1`);
  assert.match(train.stderr, /-> PrepareDataset[\s\S]*<- Train \([\d.]+ s\)[\s\S]*ExecutionSucceeded/);
  assert.match(train.stdout, /status: +SUCCEEDED/);
  assert.match(train.stdout, /run id: +cli-run-1/);
  // Six images leave two held out: the summary says what that means for the numbers.
  assert.match(train.stdout, /warning: +only 2 held-out image\(s\): the 95 % intervals/);

  const status = await cli(['status', arn, '--json']);
  assert.equal(status.code, 0, status.stderr);
  assert.equal((JSON.parse(status.stdout) as { status: string }).status, 'SUCCEEDED');

  const predictDir = join(tmp, 'predict');
  await mkdir(predictDir);
  for (const f of files.slice(0, 3)) await copyFile(join(DATA, 'images', f), join(predictDir, f));
  const predict = await cli(['predict', predictDir]);
  assert.equal(predict.code, 0, predict.stderr);
  const [header, ...rows] = predict.stdout.trim().split('\n');
  assert.equal(header, 'file,status,runId,nucleatedCellCount,plasmaCellCount,plasmaCellFraction,call,threshold,error');
  assert.equal(rows.length, 3);
  assert.deepEqual(rows.map((r) => r.split(',')[0]).sort(), files.slice(0, 3).map((f) => join(predictDir, f)).sort());
  for (const row of rows) {
    const [, code, runId, nucleated, plasma] = row.split(',');
    assert.equal(code, '200');
    assert.equal(runId, 'cli-run-1');
    assert.ok(Number(nucleated) > 0 && Number(plasma) >= 0 && Number(plasma) <= Number(nucleated), row);
  }

  // JSON to a file, and a failed image: exit 1, the other rows still written.
  await writeFile(join(predictDir, 'broken.png'), 'not a PNG');
  const out = join(tmp, 'results.json');
  const partial = await cli(['predict', predictDir, '--out', out]);
  assert.equal(partial.code, 1);
  assert.match(partial.stderr, /1 of 4 images failed/);
  const results = JSON.parse(await readFile(out, 'utf8')) as { file: string; status: number; error: string }[];
  assert.equal(results.length, 4);
  assert.equal(results.find((r) => r.file.endsWith('broken.png'))?.status, 415);
});

test('serve starts a local cloud, prints the env lines to export, and stops cleanly on SIGINT', async () => {
  const child = spawn(process.execPath, [BIN, 'serve', '--state-dir', join(tmp, 'serve'), '--s3-port', '0', '--sfn-port', '0', '--api-port', '0'], {
    env: bareEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve printed no env lines in 40 s: ${stderr}`)), 40_000);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (/MYELOSCOPE_API_URL=/.test(stdout)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const vars = Object.fromEntries([...stdout.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1], m[2]]));
  for (const k of ['AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_SFN', 'RAW_BUCKET', 'WORK_BUCKET', 'STATE_MACHINE_ARN', 'MYELOSCOPE_API_URL']) assert.ok(vars[k], `${k} in ${stdout}`);
  // The printed environment is enough for the other commands.
  const status = await cli(['status', `${String(vars.STATE_MACHINE_ARN).replace(':stateMachine:', ':execution:')}:none`], { ...bareEnv(), ...vars });
  assert.equal(status.code, 3, status.stderr);
  child.kill('SIGINT');
  assert.equal(await closed, 0);
});
