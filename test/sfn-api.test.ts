/**
 * The local Step Functions API driven by the real @aws-sdk/client-sfn over HTTP, as against AWS: start a run,
 * follow it to its end with the workflow client, read its history; bad input and unknown executions fail
 * the AWS way.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  DescribeExecutionCommand,
  DescribeStateMachineCommand,
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  GetExecutionHistoryCommand,
  ListExecutionsCommand,
  ListStateMachinesCommand,
  SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import { startLocalCloud, type LocalCloud } from '../infra/local/cloud.ts';
import { setLogSink } from '../layers/aws/src/events.ts';
import { followRun, runOutput, sfnClient, startRun, type HistoryEvent } from '../layers/aws/src/workflow-client.ts';
import type { RunState } from '../layers/core/src/workflow.ts';

const DATA = 'test/data/segpc2021';
let cloud: LocalCloud;
let stateDir: string;
let sfn: SFNClient;

before(async () => {
  setLogSink(() => undefined);
  stateDir = await mkdtemp(join(tmpdir(), 'myeloscope-sfn-'));
  cloud = await startLocalCloud({ stateDir, fresh: true, s3Port: 0, apiPort: 0, sfnPort: 0 });
  // The client configured from the environment the local cloud set, exactly as the CLI makes it.
  sfn = sfnClient();
  const s3 = new S3Client({ endpoint: cloud.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  const files = (await readdir(join(DATA, 'images'))).sort().slice(0, 6);
  for (const f of files) {
    await s3.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: `raw/sfn/myeloma/masks/${f}`, Body: await readFile(join(DATA, 'masks', f)) }));
    await s3.send(new PutObjectCommand({ Bucket: cloud.buckets.raw, Key: `raw/sfn/myeloma/${f}`, Body: await readFile(join(DATA, 'images', f)) }));
  }
  await cloud.idle();
  assert.deepEqual(cloud.dispatcher.failures, []);
});

after(async () => {
  await cloud?.sfn.idle();
  await cloud?.close();
  await rm(stateDir, { recursive: true, force: true });
});

test('the state machine is listed and described, named from the stack', async () => {
  assert.equal(process.env.STATE_MACHINE_ARN, cloud.sfn.stateMachineArn);
  assert.match(cloud.sfn.stateMachineArn, /^arn:aws:states:us-east-1:000000000000:stateMachine:MyeloscopeTraining$/);
  const listed = await sfn.send(new ListStateMachinesCommand({}));
  assert.deepEqual(listed.stateMachines?.map((m) => m.stateMachineArn), [cloud.sfn.stateMachineArn]);
  const described = await sfn.send(new DescribeStateMachineCommand({ stateMachineArn: cloud.sfn.stateMachineArn }));
  assert.equal(described.status, 'ACTIVE');
  assert.equal((JSON.parse(described.definition ?? '{}') as { StartAt?: string }).StartAt, 'PrepareDataset');
});

test('StartExecution runs in the background; followRun reports the history and the result', async () => {
  // minRocAuc 0: one epoch on six images is not meant to pass the quality gate, only to run every step.
  const input = { dataset: 'sfn', epochs: 1, runId: 'sfn-run-1', minRocAuc: 0 };
  const started = await startRun(input, { name: 'sfn-exec-1' });
  assert.equal(started.executionArn, 'arn:aws:states:us-east-1:000000000000:execution:MyeloscopeTraining:sfn-exec-1');
  assert.ok(started.startDate instanceof Date);

  // Same name and input while running: the same execution (idempotent); different input: a conflict.
  const again = await sfn.send(new StartExecutionCommand({ stateMachineArn: cloud.sfn.stateMachineArn, name: 'sfn-exec-1', input: JSON.stringify(input) }));
  assert.equal(again.executionArn, started.executionArn);
  await assert.rejects(
    sfn.send(new StartExecutionCommand({ stateMachineArn: cloud.sfn.stateMachineArn, name: 'sfn-exec-1', input: '{"dataset":"other"}' })),
    (err: unknown) => err instanceof ExecutionAlreadyExists,
  );

  const running = await sfn.send(new DescribeExecutionCommand({ executionArn: started.executionArn }));
  assert.equal(running.status, 'RUNNING');

  const seen: HistoryEvent[] = [];
  const final = await followRun(started.executionArn, { pollMs: 200, onEvent: (ev) => void seen.push(ev) });
  assert.equal(final.status, 'SUCCEEDED', `${final.error}: ${final.cause}`);
  assert.ok(final.stopDate instanceof Date && final.startDate instanceof Date && final.stopDate >= final.startDate);
  assert.deepEqual(JSON.parse(final.input ?? ''), input);
  const run = runOutput<RunState>(final);
  assert.equal(run?.runId, 'sfn-run-1');
  assert.ok(run?.publishedUri?.includes('models/sfn-run-1/'));

  // Each event once, in order, ids consecutive.
  assert.deepEqual(seen.map((e) => e.id), seen.map((_, i) => i + 1));
  assert.ok(seen.every((e, i) => e.previousEventId === i && e.timestamp instanceof Date));
  assert.equal(seen[0]?.type, 'ExecutionStarted');
  assert.equal(seen.at(-1)?.type, 'ExecutionSucceeded');
  const entered = seen.filter((e) => e.type?.endsWith('StateEntered')).map((e) => e.stateEnteredEventDetails?.name);
  const steps = ['PrepareDataset', 'Train', 'Evaluate', 'Publish'];
  assert.deepEqual(entered.filter((n) => steps.includes(n ?? '')), steps, `states entered: ${entered.join(', ')}`);
  // Between a step's entered and exited events: the call, as AWS records a Lambda function or a service integration (Batch).
  for (const step of steps) {
    const from = seen.findIndex((e) => e.type === 'TaskStateEntered' && e.stateEnteredEventDetails?.name === step);
    const to = seen.findIndex((e) => e.type === 'TaskStateExited' && e.stateExitedEventDetails?.name === step);
    assert.ok(from >= 0 && to > from, `${step} entered then exited`);
    const call = seen.slice(from + 1, to).map((e) => e.type);
    assert.ok(
      ['LambdaFunctionScheduled,LambdaFunctionStarted,LambdaFunctionSucceeded', 'TaskScheduled,TaskStarted,TaskSubmitted,TaskSucceeded'].includes(call.join(',')),
      `${step}: ${call.join(', ')}`,
    );
  }
  assert.deepEqual(JSON.parse(seen[0]?.executionStartedEventDetails?.input ?? ''), input);

  // The history API itself: reverse order, pages of maxResults with nextToken.
  const reversed = await sfn.send(new GetExecutionHistoryCommand({ executionArn: started.executionArn, reverseOrder: true, maxResults: 1 }));
  assert.equal(reversed.events?.[0]?.type, 'ExecutionSucceeded');
  const paged: HistoryEvent[] = [];
  let nextToken: string | undefined;
  do {
    const page = await sfn.send(new GetExecutionHistoryCommand({ executionArn: started.executionArn, maxResults: 7, ...(nextToken ? { nextToken } : {}) }));
    paged.push(...(page.events ?? []));
    nextToken = page.nextToken;
  } while (nextToken);
  assert.deepEqual(paged.map((e) => e.id), seen.map((e) => e.id));

  // Once closed, the name cannot be reused (as on AWS).
  await assert.rejects(
    sfn.send(new StartExecutionCommand({ stateMachineArn: cloud.sfn.stateMachineArn, name: 'sfn-exec-1', input: JSON.stringify(input) })),
    (err: unknown) => err instanceof ExecutionAlreadyExists,
  );
  const listed = await sfn.send(new ListExecutionsCommand({ stateMachineArn: cloud.sfn.stateMachineArn, statusFilter: 'SUCCEEDED' }));
  assert.ok(listed.executions?.some((e) => e.executionArn === started.executionArn));
});

test('bad input: the client refuses it before starting; started anyway, the run fails with the reason', async () => {
  await assert.rejects(startRun({ dataset: 'sfn', epochs: 0 }, { name: 'sfn-never' }), /epochs/);
  await assert.rejects(sfn.send(new DescribeExecutionCommand({ executionArn: `${cloud.sfn.stateMachineArn.replace(':stateMachine:', ':execution:')}:sfn-never` })), ExecutionDoesNotExist);

  const { executionArn } = await sfn.send(new StartExecutionCommand({ stateMachineArn: cloud.sfn.stateMachineArn, name: 'sfn-bad', input: JSON.stringify({ dataset: 'sfn', epochs: 0 }) }));
  const final = await followRun(executionArn as string, { pollMs: 100 });
  assert.equal(final.status, 'FAILED');
  assert.match(`${final.error} ${final.cause}`, /epochs must be an integer/);
  const history = await sfn.send(new GetExecutionHistoryCommand({ executionArn }));
  const types = history.events?.map((e) => e.type);
  assert.deepEqual(types, ['ExecutionStarted', 'TaskStateEntered', 'LambdaFunctionScheduled', 'LambdaFunctionStarted', 'LambdaFunctionFailed', 'TaskStateExited', 'FailStateEntered', 'ExecutionFailed']);
  assert.match(history.events?.at(-1)?.executionFailedEventDetails?.cause ?? '', /epochs/);

  // Any JSON is a valid execution input on AWS: one that is not an object fails with PrepareDataset's reason.
  for (const [i, input] of ['[1,2]', '5', '"text"'].entries()) {
    const started = await sfn.send(new StartExecutionCommand({ stateMachineArn: cloud.sfn.stateMachineArn, name: `sfn-not-object-${i}`, input }));
    const f = await followRun(started.executionArn as string, { pollMs: 100 });
    assert.equal(f.status, 'FAILED', input);
    assert.equal(f.error, 'InvalidInputError', input);
    assert.match(f.cause ?? '', /execution input must be a JSON object/, input);
  }
});

test('a run id that is already published is refused before training, and its files are left alone', async () => {
  const input = { dataset: 'sfn', epochs: 1, runId: 'sfn-run-taken', minRocAuc: 0 };
  const first = await followRun((await startRun(input, { name: 'sfn-taken-1' })).executionArn, { pollMs: 200 });
  assert.equal(first.status, 'SUCCEEDED', `${first.error}: ${first.cause}`);
  const s3 = new S3Client({ endpoint: cloud.s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  const manifestEtag = async () => (await s3.send(new HeadObjectCommand({ Bucket: cloud.buckets.work, Key: 'runs/sfn-run-taken/manifest.json' }))).ETag;
  const before = await manifestEtag();

  const second = await startRun(input, { name: 'sfn-taken-2' });
  const final = await followRun(second.executionArn, { pollMs: 100 });
  assert.equal(final.status, 'FAILED');
  assert.equal(final.error, 'InvalidInputError');
  assert.match(final.cause ?? '', /run id 'sfn-run-taken' is already published/);
  const history = await sfn.send(new GetExecutionHistoryCommand({ executionArn: second.executionArn }));
  const entered = history.events?.filter((e) => e.type?.endsWith('StateEntered')).map((e) => e.stateEnteredEventDetails?.name);
  assert.deepEqual(entered, ['PrepareDataset', 'PrepareDatasetFailed'], 'nothing trained');
  assert.equal(await manifestEtag(), before, 'the published run\'s working files are untouched');
});

test('unknown executions and malformed requests get AWS errors', async () => {
  await assert.rejects(
    sfn.send(new DescribeExecutionCommand({ executionArn: 'arn:aws:states:us-east-1:000000000000:execution:MyeloscopeTraining:nope' })),
    (err: unknown) => err instanceof ExecutionDoesNotExist && err.$metadata.httpStatusCode === 400 && /nope/.test(err.message),
  );
  await assert.rejects(sfn.send(new GetExecutionHistoryCommand({ executionArn: 'arn:aws:states:us-east-1:000000000000:execution:MyeloscopeTraining:nope' })), ExecutionDoesNotExist);
  await assert.rejects(sfn.send(new DescribeExecutionCommand({ executionArn: 'not-an-arn' })), { name: 'InvalidArn' });
  await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: `${cloud.sfn.stateMachineArn}X` })), { name: 'StateMachineDoesNotExist' });
  await assert.rejects(sfn.send(new StartExecutionCommand({ stateMachineArn: cloud.sfn.stateMachineArn, input: '{not json' })), { name: 'InvalidExecutionInput' });
  // Raw protocol: an unknown operation.
  const res = await fetch(cloud.sfn.endpoint, { method: 'POST', headers: { 'x-amz-target': 'AWSStepFunctions.StopExecution', 'content-type': 'application/x-amz-json-1.0' }, body: '{}' });
  assert.equal(res.status, 400);
  assert.equal(((await res.json()) as { __type: string }).__type, 'UnknownOperationException');
});
