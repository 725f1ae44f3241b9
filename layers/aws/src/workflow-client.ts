/**
 * Starts and follows training runs through the Step Functions API with @aws-sdk/client-sfn: the same code
 * drives AWS and the local cloud (infra/local/sfn-api.ts), which differ only in the endpoint from config.ts
 * (AWS_ENDPOINT_URL_SFN / AWS_ENDPOINT_URL) and the state machine ARN (STATE_MACHINE_ARN).
 */
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  SFNClient,
  StartExecutionCommand,
  type DescribeExecutionCommandOutput,
  type HistoryEvent,
} from '@aws-sdk/client-sfn';
import { parseRunInput } from '../../core/src/workflow.ts';
import { clientConfig } from './config.ts';

export type { HistoryEvent } from '@aws-sdk/client-sfn';
export type RunDescription = Omit<DescribeExecutionCommandOutput, '$metadata'>;

/** Configuration is missing or wrong (no state machine ARN): not the user's input, not a failed run. */
export class WorkflowConfigError extends Error {
  override name = 'WorkflowConfigError';
}

export interface WorkflowClientOptions {
  client?: SFNClient;
  /** @default env STATE_MACHINE_ARN */
  stateMachineArn?: string;
  env?: NodeJS.ProcessEnv;
}

export function sfnClient(env: NodeJS.ProcessEnv = process.env): SFNClient {
  return new SFNClient(clientConfig('SFN', env));
}

export function stateMachineArn(opts: WorkflowClientOptions = {}): string {
  const arn = opts.stateMachineArn ?? (opts.env ?? process.env).STATE_MACHINE_ARN;
  if (!arn) throw new WorkflowConfigError('STATE_MACHINE_ARN is not set (the training state machine ARN: a stack output on AWS, printed by `myeloscope serve` locally)');
  return arn;
}

export interface StartRunOptions extends WorkflowClientOptions {
  /** Execution name (also the run id unless the input sets runId). @default a generated name */
  name?: string;
}

export interface StartedRun {
  executionArn: string;
  startDate: Date;
}

/** Starts a training run. Bad input throws InvalidInputError (core/errors.ts) before anything starts. */
export async function startRun(input: unknown, opts: StartRunOptions = {}): Promise<StartedRun> {
  parseRunInput(input);
  const arn = stateMachineArn(opts);
  const client = opts.client ?? sfnClient(opts.env);
  const out = await client.send(
    new StartExecutionCommand({ stateMachineArn: arn, input: JSON.stringify(input ?? {}), ...(opts.name ? { name: opts.name } : {}) }),
  );
  if (!out.executionArn) throw new Error('StartExecution returned no executionArn');
  return { executionArn: out.executionArn, startDate: out.startDate ?? new Date() };
}

export async function describeRun(executionArn: string, opts: WorkflowClientOptions = {}): Promise<RunDescription> {
  const client = opts.client ?? sfnClient(opts.env);
  const { $metadata: _, ...description } = await client.send(new DescribeExecutionCommand({ executionArn }));
  return description;
}

export interface FollowOptions extends WorkflowClientOptions {
  /** Called once per history event, in order, as events appear. */
  onEvent?: (event: HistoryEvent) => void | Promise<void>;
  /** @default 1000 locally, 5000 on AWS (history calls are throttled there) */
  pollMs?: number;
  signal?: AbortSignal;
}

export const TERMINAL_STATUSES = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED']);

/** Polls until the execution ends, reporting each new history event; resolves the final description. */
export async function followRun(executionArn: string, opts: FollowOptions = {}): Promise<RunDescription> {
  const client = opts.client ?? sfnClient(opts.env);
  const local = Boolean(clientConfig('SFN', opts.env).endpoint);
  const pollMs = opts.pollMs ?? (local ? 1000 : 5000);
  let lastId = 0;
  for (;;) {
    // Describe first: once it says ended, the history read after it is complete.
    const description = await describeRun(executionArn, { ...opts, client });
    let nextToken: string | undefined;
    do {
      const page = await client.send(new GetExecutionHistoryCommand({ executionArn, maxResults: 1000, ...(nextToken ? { nextToken } : {}) }));
      for (const ev of page.events ?? []) {
        if ((ev.id ?? 0) <= lastId) continue;
        lastId = ev.id ?? lastId;
        await opts.onEvent?.(ev);
      }
      nextToken = page.nextToken;
    } while (nextToken);
    if (TERMINAL_STATUSES.has(description.status ?? '')) return description;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, pollMs);
      opts.signal?.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(opts.signal?.reason ?? new Error('aborted'));
      }, { once: true });
    });
  }
}

/** The run's output (a RunState on success), parsed. */
export function runOutput<T>(description: RunDescription): T | undefined {
  return description.output ? (JSON.parse(description.output) as T) : undefined;
}

/** The state name of a *StateEntered / *StateExited event, else undefined. */
export function stateOf(ev: HistoryEvent): string | undefined {
  return ev.stateEnteredEventDetails?.name ?? ev.stateExitedEventDetails?.name;
}
