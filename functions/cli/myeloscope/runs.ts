/**
 * train, follow, status: training runs through the Step Functions API (layers/aws/src/workflow-client.ts),
 * the same calls against AWS and the local cloud.
 */
import type { HistoryEvent, RunDescription } from '../../../layers/aws/src/workflow-client.ts';
import { GetExecutionHistoryCommand } from '@aws-sdk/client-sfn';
import { describeRun, followRun, runOutput, sfnClient, startRun, stateOf } from '../../../layers/aws/src/workflow-client.ts';
import { clientConfig } from '../../../layers/aws/src/config.ts';
import { runWarnings, type RunState } from '../../../layers/core/src/workflow.ts';
import type { FollowOpts, StatusOpts, TrainOpts } from '../myeloscope.ts';
import { EXIT, toCliError } from './errors.ts';

/** The process environment with the flags' overrides. */
export function sfnEnv(endpoint: string | undefined): NodeJS.ProcessEnv {
  return endpoint ? { ...process.env, AWS_ENDPOINT_URL_SFN: endpoint } : process.env;
}

/** A connection or not-found error, said with where it happened (local executions live only as long as `serve`). */
function explain(err: unknown, env: NodeJS.ProcessEnv) {
  const e = toCliError(err, where(env));
  if (e.exitCode === EXIT.notFound && clientConfig('SFN', env).endpoint && (err as Error).name === 'ExecutionDoesNotExist') {
    e.message += ' (the local cloud keeps executions in memory: a restarted `serve` has none of the earlier ones)';
  }
  return e;
}

const where = (env: NodeJS.ProcessEnv) => `Step Functions at ${clientConfig('SFN', env).endpoint ?? `AWS (${clientConfig('SFN', env).region})`}`;

export async function train(opts: TrainOpts): Promise<void> {
  const env = sfnEnv(opts.endpoint);
  const input: Record<string, unknown> = {};
  // Flags map one to one to the run input fields; parseRunInput (in startRun) checks values before anything starts.
  const fields = ['dataset', 'task', 'epochs', 'seed', 'batchSize', 'inputSize', 'minRocAuc', 'testFraction', 'valFraction', 'runId'] as const;
  for (const f of fields) if (opts[f] !== undefined) input[f] = opts[f];
  const name = opts.name ?? `train-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  let executionArn: string;
  try {
    ({ executionArn } = await startRun(input, { name, env, ...(opts.stateMachineArn ? { stateMachineArn: opts.stateMachineArn } : {}) }));
  } catch (err) {
    throw explain(err, env);
  }
  process.stdout.write(`${executionArn}\n`);
  if (!opts.follow) {
    process.stderr.write(`started ${name}; follow it with: myeloscope follow ${executionArn}\n`);
    return;
  }
  await followAndReport(executionArn, env, { json: opts.json });
}

export async function follow(executionArn: string, opts: FollowOpts): Promise<void> {
  await followAndReport(executionArn, sfnEnv(opts.endpoint), { json: opts.json, poll: opts.poll });
}

async function followAndReport(executionArn: string, env: NodeJS.ProcessEnv, opts: { json?: boolean | undefined; poll?: number | undefined }): Promise<void> {
  const entered = new Map<string, number>();
  let description: RunDescription;
  try {
    description = await followRun(executionArn, {
      env,
      ...(opts.poll ? { pollMs: opts.poll } : {}),
      onEvent: (ev) => {
        const line = eventLine(ev, entered);
        if (line) process.stderr.write(`${line}\n`);
      },
    });
  } catch (err) {
    throw explain(err, env);
  }
  report(description, opts.json);
  if (description.status === 'SUCCEEDED') return;
  // A run that failed on its input (an unknown dataset, no usable images) is the caller's to fix, not a crash.
  if (description.error && RUN_INPUT_ERRORS.has(description.error)) {
    process.stderr.write(`myeloscope: the run input is invalid: ${causeMessage(description.cause)}\n`);
    process.exitCode = EXIT.usage;
    return;
  }
  process.exitCode = EXIT.failed;
}

/** The error a step raises for a run input it cannot work with (layers/core/src/errors.ts). */
const RUN_INPUT_ERRORS: ReadonlySet<string> = new Set(['InvalidInputError']);

/** A Lambda error cause is JSON with errorMessage; show just that. */
function causeMessage(cause: string | undefined): string {
  if (!cause) return 'no reason given';
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: unknown };
    if (typeof parsed.errorMessage === 'string') return parsed.errorMessage;
  } catch {
    // a plain-text cause
  }
  return cause;
}

export async function status(executionArn: string, opts: StatusOpts): Promise<void> {
  const env = sfnEnv(opts.endpoint);
  let description: RunDescription;
  try {
    description = await describeRun(executionArn, { env });
  } catch (err) {
    throw explain(err, env);
  }
  report(description, opts.json);
  if (description.status === 'RUNNING' && !opts.json) {
    // Where the run is now: the last state it entered, from the newest events.
    try {
      const page = await sfnClient(env).send(new GetExecutionHistoryCommand({ executionArn, reverseOrder: true, maxResults: 50, includeExecutionData: false }));
      const last = page.events?.find((e) => e.type?.endsWith('StateEntered'));
      if (last?.stateEnteredEventDetails?.name) {
        const secs = (Date.now() - (last.timestamp?.getTime() ?? Date.now())) / 1000;
        process.stdout.write(`state:     ${last.stateEnteredEventDetails.name} (for ${secs.toFixed(0)} s)\n`);
      }
    } catch {
      // The status above is the answer; the current state is a courtesy.
    }
  }
  if (description.status !== 'SUCCEEDED' && description.status !== 'RUNNING') process.exitCode = EXIT.failed;
}

const clock = (d: Date | undefined) => (d ?? new Date()).toISOString().slice(11, 19);

/** One line per event worth a human's attention: states entered and exited, failures, the end. */
export function eventLine(ev: HistoryEvent, entered: Map<string, number>): string | undefined {
  const type = ev.type ?? '';
  const state = stateOf(ev);
  const at = ev.timestamp?.getTime() ?? Date.now();
  if (state && type.endsWith('StateEntered')) {
    entered.set(state, at);
    return `${clock(ev.timestamp)}  -> ${state}`;
  }
  if (state && type.endsWith('StateExited')) {
    return `${clock(ev.timestamp)}  <- ${state} (${((at - (entered.get(state) ?? at)) / 1000).toFixed(1)} s)`;
  }
  if (type === 'LambdaFunctionFailed' || type === 'TaskFailed') {
    const d = ev.lambdaFunctionFailedEventDetails ?? ev.taskFailedEventDetails;
    return `${clock(ev.timestamp)}     failed: ${d?.error ?? ''}: ${d?.cause ?? ''}`;
  }
  if (type === 'ExecutionStarted' || type === 'ExecutionSucceeded') return `${clock(ev.timestamp)}  ${type}`;
  if (type === 'ExecutionFailed') return `${clock(ev.timestamp)}  ExecutionFailed: ${ev.executionFailedEventDetails?.error ?? ''}: ${ev.executionFailedEventDetails?.cause ?? ''}`;
  if (type === 'ExecutionTimedOut' || type === 'ExecutionAborted') return `${clock(ev.timestamp)}  ${type}`;
  return undefined;
}

function report(d: RunDescription, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(d, null, 2)}\n`);
    return;
  }
  const lines = [`execution: ${d.executionArn}`, `status:    ${d.status}`, `started:   ${d.startDate?.toISOString() ?? ''}`];
  if (d.stopDate) lines.push(`stopped:   ${d.stopDate.toISOString()} (${((d.stopDate.getTime() - (d.startDate?.getTime() ?? 0)) / 1000).toFixed(1)} s)`);
  if (d.error || d.cause) lines.push(`error:     ${d.error ?? ''}: ${d.cause ?? ''}`);
  let run: RunState | undefined;
  try {
    run = runOutput<RunState>(d);
  } catch {
    run = undefined; // an output that is not a run state: nothing more to say
  }
  if (run) {
    lines.push(`run id:    ${run.runId}`);
    if (run.counts) lines.push(`data:      ${run.counts.sources} images; cells train ${run.counts.train}, val ${run.counts.val}, test ${run.counts.test}`);
    const m = run.metrics;
    if (m) lines.push(`held-out:  accuracy ${m.accuracy.toFixed(3)}, ROC AUC ${m.rocAuc === null ? 'n/a' : m.rocAuc.toFixed(3)} on ${m.testCells} cells from ${m.testImages} images`);
    if (run.publishedUri) lines.push(`model:     ${run.publishedUri}model.json`);
    if (run.reportUri) lines.push(`report:    ${run.reportUri}`);
    for (const w of runWarnings(run)) lines.push(`warning:   ${w}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}
