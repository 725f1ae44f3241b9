/**
 * Faults lose nothing:
 * - handlers that crash on their first attempt (before or after their writes) are redelivered by the dispatcher
 *   (as Lambda's asynchronous invocation retries twice) and the run completes with no duplicate output; a key
 *   whose handler fails for good shows up in the ledger as missing, and a redrive recovers it;
 * - the local cloud stopped mid-ingest and restarted on the same state: the ledger lists what has no outcome,
 *   a redrive (copy onto itself -> S3 event) re-delivers it, and nothing is missing after;
 * - a training task that fails is retried as the definition's Retry says, then caught: the execution FAILS
 *   with the error and cause. The assertions read Retry/Catch from the synthesized definition.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Event } from 'aws-lambda';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { synthesizeLocal, type LocalApp } from '../infra/local/template.ts';
import { startLocalS3, type LocalS3 } from '../infra/local/s3.ts';
import { EventDispatcher, type EventHandler, type Notification } from '../infra/local/dispatcher.ts';
import { startLocalCloud } from '../infra/local/cloud.ts';
import { runExecution, type TaskHandler } from '../infra/local/stepfunctions.ts';
import { setLogSink } from '../layers/aws/src/events.ts';
import { decodeEventKey, S3Store } from '../layers/aws/src/s3.ts';
import { formatLedger, readLedger, redrive } from '../functions/cli/ledger.ts';

const DATA = 'test/data/segpc2021';
const BUCKETS = { raw: 'myeloscope-raw', work: 'myeloscope-work', models: 'myeloscope-models' };
let app: LocalApp;
let stateDir: string;
let s3: LocalS3 | undefined;
/** The handlers' S3 client is made once per process (as on Lambda): every S3 here must use this port. */
let port = 0;
let files: string[] = [];

type Handler = (e: S3Event) => Promise<unknown>;
let preprocess: Handler;
let segment: Handler;

function clientFor(endpoint: string): S3Client {
  return new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
}

async function put(client: S3Client, key: string, body: Uint8Array) {
  await client.send(new PutObjectCommand({ Bucket: BUCKETS.raw, Key: key, Body: body }));
}

const stores = () => ({ raw: new S3Store(BUCKETS.raw), work: new S3Store(BUCKETS.work) });

before(async () => {
  setLogSink(() => undefined);
  stateDir = await mkdtemp(join(tmpdir(), 'myeloscope-faults-'));
  app = await synthesizeLocal();
  s3 = await startLocalS3({ directory: join(stateDir, 's3'), buckets: Object.values(BUCKETS), port: 0 });
  port = s3.port;
  // As infra/local/cloud.ts configures the handlers, before they are imported.
  Object.assign(process.env, {
    AWS_ENDPOINT_URL: s3.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    S3_FORCE_PATH_STYLE: 'true',
    RAW_BUCKET: BUCKETS.raw,
    WORK_BUCKET: BUCKETS.work,
    MODELS_BUCKET: BUCKETS.models,
  });
  preprocess = ((await import('../functions/preprocess/index.ts')) as { handler: Handler }).handler;
  segment = ((await import('../functions/segment/index.ts')) as { handler: Handler }).handler;
  files = (await readdir(join(DATA, 'images'))).sort().slice(0, 6);
});

after(async () => {
  await s3?.close();
  await rm(stateDir, { recursive: true, force: true });
});

test('handlers that crash on a first attempt are redelivered; a key that always fails is found by the ledger and redriven', async () => {
  const attempts = new Map<string, number>();
  const keyOf = (e: S3Event) => decodeEventKey(e.Records[0]?.s3.object.key ?? '');
  const flaky =
    (name: string, real: Handler): EventHandler =>
    async (event) => {
      const key = keyOf(event);
      const n = (attempts.get(`${name} ${key}`) ?? 0) + 1;
      attempts.set(`${name} ${key}`, n);
      if (key.includes('crash-before') && n === 1) throw new Error('simulated crash before any write');
      if (name === 'preprocess' && key.includes('always-fails')) throw new Error('simulated outage for this key');
      const result = await real(event);
      // Crashed after its writes but before returning: the redelivery must find the work done, not redo it twice.
      if (key.includes('crash-after') && n === 1) throw new Error('simulated crash after the writes');
      return result;
    };
  const notifications: Notification[] = app.notifications.map((n) => ({
    bucketName: BUCKETS[n.bucket],
    events: n.events,
    ...(n.prefix ? { prefix: n.prefix } : {}),
    ...(n.suffix ? { suffix: n.suffix } : {}),
    function: n.function,
  }));
  const dispatcher = new EventDispatcher(notifications, { preprocess: flaky('preprocess', preprocess), segment: flaky('segment', segment) }, { concurrency: 2 });
  s3!.onEvent((e) => dispatcher.accept(e));
  const idle = async () => {
    for (;;) {
      await dispatcher.idle();
      await new Promise((r) => setTimeout(r, 50));
      if (dispatcher.isIdle()) return;
    }
  };
  const client = clientFor(s3!.endpoint);
  const names = ['crash-before', 'crash-after', 'always-fails', 'fine'];
  for (const [i, name] of names.entries()) {
    const f = files[i] as string;
    await put(client, `raw/faults/myeloma/masks/${name}.jpg`, await readFile(join(DATA, 'masks', f)));
    await put(client, `raw/faults/myeloma/${name}.jpg`, await readFile(join(DATA, 'images', f)));
  }
  await idle();

  const pre = dispatcher.stats.get('preprocess');
  const seg = dispatcher.stats.get('segment');
  // crash-before and crash-after: one retry each for the image and the mask (4); always-fails: 2 retries x 2 keys.
  assert.equal(pre?.retried, 4 + 4, JSON.stringify(pre));
  // processed/faults/myeloma/crash-*.png and masks/crash-*.png also crash once in segment.
  assert.equal(seg?.retried, 4, JSON.stringify(seg));
  assert.deepEqual(dispatcher.failures.map((f) => f.key).sort(), ['raw/faults/myeloma/always-fails.jpg', 'raw/faults/myeloma/masks/always-fails.jpg']);

  let ledger = await readLedger(stores(), { dataset: 'faults' });
  assert.equal(ledger.counts.missing, 2, formatLedger(ledger));
  assert.deepEqual(ledger.entries.filter((e) => e.status === 'missing').map((e) => e.key).sort(), dispatcher.failures.map((f) => f.key).sort());
  for (const name of ['crash-before', 'crash-after', 'fine']) {
    assert.equal(ledger.entries.find((e) => e.key === `raw/faults/myeloma/${name}.jpg`)?.status, 'segmented', name);
  }
  // Once the outage is over, the redrive re-delivers exactly the missing ones.
  const redriven = await redrive(ledger, stores(), { preprocess, segment });
  assert.deepEqual(redriven.sort(), ['raw/faults/myeloma/always-fails.jpg', 'raw/faults/myeloma/masks/always-fails.jpg']);
  await idle();
  ledger = await readLedger(stores(), { dataset: 'faults' });
  assert.equal(ledger.counts.missing, 0, formatLedger(ledger));
  assert.equal(ledger.counts.raw, ledger.counts.processed + ledger.counts.quarantined);
  assert.equal(ledger.byStatus.segmented, 4);
  await s3!.close();
  s3 = undefined;
});

test('the local cloud stopped mid-ingest and restarted: the ledger finds what has no outcome and a redrive completes it', async () => {
  const cloud1 = await startLocalCloud({ stateDir, s3Port: port, apiPort: 0, sfnPort: 0 } as Parameters<typeof startLocalCloud>[0]);
  assert.equal(cloud1.s3.port, port, 'same port: the handlers keep their S3 client');
  const c1 = clientFor(cloud1.s3.endpoint);
  let delivered = 0;
  const pre1 = () => [...cloud1.dispatcher.stats.values()].reduce((n, s) => n + s.delivered, 0);
  for (const f of files) {
    await put(c1, `raw/restart/myeloma/masks/${f}`, await readFile(join(DATA, 'masks', f)));
    await put(c1, `raw/restart/myeloma/${f}`, await readFile(join(DATA, 'images', f)));
  }
  // Stop while the work is under way: whatever is in flight fails against the stopped S3 and is lost.
  while ((delivered = pre1()) < 3) await new Promise((r) => setTimeout(r, 20));
  await cloud1.close();
  await cloud1.dispatcher.idle();

  // Uploads while nothing delivers events (the notification target is down).
  const bare = await startLocalS3({ directory: join(stateDir, 's3'), buckets: Object.values(BUCKETS), port });
  const cb = clientFor(bare.endpoint);
  await put(cb, 'raw/restart/myeloma/while-down.jpg', await readFile(join(DATA, 'images', files[0] as string)));
  await put(cb, 'raw/restart/myeloma/masks/while-down.jpg', await readFile(join(DATA, 'masks', files[0] as string)));
  await bare.close();

  const cloud2 = await startLocalCloud({ stateDir, s3Port: port, apiPort: 0, sfnPort: 0 } as Parameters<typeof startLocalCloud>[0]);
  try {
    assert.equal(cloud2.s3.port, port);
    let ledger = await readLedger(stores(), { dataset: 'restart' });
    assert.equal(ledger.counts.raw, files.length * 2 + 2);
    assert.ok(ledger.counts.missing >= 2, `at least the uploads made while down are missing (delivered before stop: ${delivered})\n${formatLedger(ledger)}`);
    // Redrive as on AWS: copy each missing raw object onto itself; the notification does the rest.
    await redrive(ledger, stores());
    await cloud2.idle();
    ledger = await readLedger(stores(), { dataset: 'restart' });
    // A redriven image can now be processed with its segment still to run: one more round finishes it.
    if (ledger.counts.missing > 0) {
      await redrive(ledger, stores());
      await cloud2.idle();
      ledger = await readLedger(stores(), { dataset: 'restart' });
    }
    assert.equal(ledger.counts.missing, 0, formatLedger(ledger));
    assert.equal(ledger.byStatus.segmented, files.length + 1);
    assert.deepEqual(cloud2.dispatcher.failures, []);
    assert.equal([...cloud2.dispatcher.stats.values()].reduce((n, s) => n + s.retried, 0), 0);
  } finally {
    await cloud2.close();
  }
});

// ---------------------------------------------------------------------------------------------------
// Training workflow

interface Retrier {
  ErrorEquals: string[];
  MaxAttempts?: number;
  IntervalSeconds?: number;
  BackoffRate?: number;
  MaxDelaySeconds?: number;
}
interface Catcher {
  ErrorEquals: string[];
  Next: string;
}
interface TaskState {
  Type: string;
  Retry?: Retrier[];
  Catch?: Catcher[];
  TimeoutSeconds?: number;
}
interface Definition {
  StartAt: string;
  States: Record<string, TaskState>;
}

/** ASL matching: a retrier or catcher applies to an error by name, States.ALL, or (Task) States.TaskFailed. */
function applies(list: string[], error: string): boolean {
  return list.includes(error) || list.includes('States.ALL') || (error !== 'States.Timeout' && list.includes('States.TaskFailed'));
}

/** Attempts the definition allows for an error: the first matching retrier's MaxAttempts (ASL default 3) + 1. */
function expectedAttempts(state: TaskState, error: string): number {
  const r = (state.Retry ?? []).find((x) => applies(x.ErrorEquals, error));
  return r ? (r.MaxAttempts ?? 3) + 1 : 1;
}

function trainingDefinition(): { def: Definition; trainState: string } {
  const def = structuredClone(app.stateMachine.definition) as unknown as Definition;
  const trainState = Object.entries(app.stateMachine.taskFunctions).find(([, fn]) => fn === 'train')?.[0];
  assert.ok(trainState, 'a state runs the train function');
  // Only the waits are shortened (ASL MaxDelaySeconds caps each backoff): errors, attempts and catchers are the app's.
  for (const r of def.States[trainState]?.Retry ?? []) r.MaxDelaySeconds = 1;
  return { def, trainState };
}

function stubs(train: TaskHandler, calls: string[]): Record<string, TaskHandler> {
  const handlers: Record<string, TaskHandler> = {};
  for (const fn of new Set(Object.values(app.stateMachine.taskFunctions))) {
    handlers[fn] = async (input) => {
      calls.push(fn);
      if (fn === 'train') return train(input);
      if (fn === 'prepare-dataset') return { runId: 'faults-run', dataset: 'faults', epochs: 1, counts: { train: 1, validation: 1, test: 1 } };
      throw new Error(`${fn} must not run after a failed training`);
    };
  }
  return handlers;
}

test('a training task failing with a retryable error is retried as the definition says, then the execution fails with the cause', async () => {
  const { def, trainState } = trainingDefinition();
  const state = def.States[trainState] as TaskState;
  const retrier = state.Retry?.[0];
  assert.ok(retrier, `${trainState} has a Retry`);
  const errorName = retrier.ErrorEquals.find((e) => !e.startsWith('States.')) ?? 'States.TaskFailed';
  const calls: string[] = [];
  const t0 = performance.now();
  const exec = await runExecution(
    def as unknown as Record<string, unknown>,
    app.stateMachine.taskFunctions,
    stubs(async () => {
      const err = new Error('the training service is unavailable');
      err.name = errorName;
      throw err;
    }, calls),
    { dataset: 'faults', epochs: 1 },
    { name: 'faults-retry' },
  );
  assert.equal(exec.status, 'FAILED');
  assert.equal(calls.filter((c) => c === 'train').length, expectedAttempts(state, errorName), `attempts for ${errorName}: ${calls.join(',')}`);
  assert.ok(calls.filter((c) => c === 'train').length > 1, 'retried');
  assert.equal(exec.error, errorName);
  assert.match(exec.cause ?? '', /the training service is unavailable/);
  assert.ok(!calls.includes('evaluate') && !calls.includes('publish'));
  const catcher = state.Catch?.find((c) => applies(c.ErrorEquals, errorName));
  assert.equal(catcher && def.States[catcher.Next]?.Type, 'Fail', 'caught into a Fail state');
  console.log(`${trainState}: ${errorName} x${calls.filter((c) => c === 'train').length} in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${exec.error}: ${exec.cause}`);
});

test('a training task failing with a plain error is caught (retried only if the definition says so): FAILED with its cause', async () => {
  const { def, trainState } = trainingDefinition();
  const state = def.States[trainState] as TaskState;
  const calls: string[] = [];
  const exec = await runExecution(
    def as unknown as Record<string, unknown>,
    app.stateMachine.taskFunctions,
    stubs(async () => {
      throw new Error('loss is NaN at epoch 3');
    }, calls),
    { dataset: 'faults', epochs: 1 },
    { name: 'faults-plain' },
  );
  assert.equal(exec.status, 'FAILED');
  assert.equal(calls.filter((c) => c === 'train').length, expectedAttempts(state, 'Error'));
  assert.equal(exec.error, 'Error');
  assert.match(exec.cause ?? '', /loss is NaN at epoch 3/);
});

test('a training task that times out fails the execution with States.Timeout', async () => {
  const { def, trainState } = trainingDefinition();
  const state = def.States[trainState] as TaskState;
  assert.ok((state.TimeoutSeconds ?? 0) > 0, `${trainState} has a timeout`);
  // The real timeout is hours: 1 s here, the Retry and Catch as synthesized.
  state.TimeoutSeconds = 1;
  const calls: string[] = [];
  const exec = await runExecution(
    def as unknown as Record<string, unknown>,
    app.stateMachine.taskFunctions,
    stubs(() => new Promise((resolve) => setTimeout(() => resolve({}), 2500).unref()), calls),
    { dataset: 'faults', epochs: 1 },
    { name: 'faults-timeout' },
  );
  assert.equal(exec.status, 'FAILED');
  assert.equal(exec.error, 'States.Timeout');
  assert.equal(calls.filter((c) => c === 'train').length, expectedAttempts(state, 'States.Timeout'));
});
