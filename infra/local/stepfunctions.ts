/**
 * Runs the state machine definition synthesized by the CDK app with aws-local-stepfunctions, each Task state
 * bound to the local handler of the function its Resource names in the template: the workflow is never
 * written twice.
 */
import './polyfill.ts';
import { StateMachine, type RunOptions, type StateMachineDefinition } from 'aws-local-stepfunctions';

type LocalHandlers = NonNullable<NonNullable<RunOptions['overrides']>['taskResourceLocalHandlers']>;
type LocalHandler = LocalHandlers[string];
/** One event of the interpreter's log (ExecutionStarted, StateEntered, StateExited, StateFailed, ...). */
export type ExecutionEvent = ReturnType<StateMachine['run']>['eventLogs'] extends AsyncGenerator<infer E> ? E : never;

export type TaskHandler = (input: unknown) => Promise<unknown>;

export interface ExecutionResult {
  name: string;
  status: 'SUCCEEDED' | 'FAILED';
  output?: unknown;
  error?: string;
  cause?: string;
  startedAt: Date;
  stoppedAt: Date;
  /** Per state: seconds spent. */
  timings: Record<string, number>;
}

export interface ExecutionOptions {
  name: string;
  /** $$.Execution.Id. @default an ARN under a state machine named "local" */
  executionArn?: string;
  /** Every interpreter event, in order, before the result resolves (the local Step Functions API builds its history from them). */
  onEvent?: (event: ExecutionEvent) => void;
  onStateEntered?: (state: string) => void;
  onStateExited?: (state: string, seconds: number) => void;
}

const BATCH_SUBMIT_JOB = 'arn:aws:states:::batch:submitJob';

/**
 * A Batch SubmitJob task run locally: the job's container gets the run state in its RUN_STATE environment
 * override (functions/train/container.ts), so the handler gets that state; the task's result is a job
 * description, as .sync returns (the state machine discards or ignores it).
 */
function batchJob(state: string, handler: TaskHandler): TaskHandler {
  return async (input) => {
    const params = input as { JobName?: unknown; ContainerOverrides?: { Environment?: { Name?: unknown; Value?: unknown }[] } };
    const value = params.ContainerOverrides?.Environment?.find((e) => e.Name === 'RUN_STATE')?.Value;
    if (typeof value !== 'string') throw new Error(`state ${state}: the Batch job has no RUN_STATE environment override to run locally`);
    await handler(JSON.parse(value) as unknown);
    return { JobName: params.JobName, Status: 'SUCCEEDED' };
  };
}

export async function runExecution(
  definition: Record<string, unknown>,
  taskFunctions: Record<string, string>,
  handlers: Record<string, TaskHandler>,
  input: unknown,
  opts: ExecutionOptions,
): Promise<ExecutionResult> {
  const local: LocalHandlers = {};
  const states = (definition.States ?? {}) as Record<string, unknown>;
  for (const [state, fn] of Object.entries(taskFunctions)) {
    const handler = handlers[fn];
    if (!handler) throw new Error(`state ${state} invokes function "${fn}", which has no local handler`);
    const resource = (states[state] as { Resource?: unknown } | undefined)?.Resource;
    // Handlers take and return JSON: the state machine passes parsed JSON in and serialises what comes out.
    local[state] = (typeof resource === 'string' && resource.startsWith(BATCH_SUBMIT_JOB) ? batchJob(state, handler) : handler) as unknown as LocalHandler;
  }
  const machine = new StateMachine(definition as unknown as StateMachineDefinition, { validationOptions: { checkArn: false } });
  const startedAt = new Date();
  const execution = machine.run(input as never, {
    overrides: { taskResourceLocalHandlers: local, retryIntervalOverrides: {} },
    context: {
      Execution: { Id: opts.executionArn ?? `arn:aws:states:us-east-1:000000000000:execution:local:${opts.name}`, Name: opts.name, StartTime: startedAt.toISOString(), Input: input as never },
    } as never,
  });
  const timings: Record<string, number> = {};
  const entered = new Map<string, number>();
  let failure: { error: string; cause: string } | undefined;
  const follow = (async () => {
    for await (const ev of execution.eventLogs as AsyncGenerator<ExecutionEvent>) {
      opts.onEvent?.(ev);
      if (ev.type === 'ExecutionFailed') {
        // The interpreter's event keeps the Fail state's Error and Cause; the rejection wraps them.
        failure = { error: ev.Error, cause: typeof ev.Cause === 'string' ? ev.Cause : JSON.stringify(ev.Cause) };
      } else if (ev.type === 'StateEntered') {
        entered.set(ev.state.name, ev.timestamp);
        opts.onStateEntered?.(ev.state.name);
      } else if (ev.type === 'StateExited') {
        const seconds = (ev.timestamp - (entered.get(ev.state.name) ?? ev.timestamp)) / 1000;
        timings[ev.state.name] = (timings[ev.state.name] ?? 0) + seconds;
        opts.onStateExited?.(ev.state.name, seconds);
      }
    }
  })();
  try {
    const output = await execution.result;
    await follow.catch(() => undefined);
    return { name: opts.name, status: 'SUCCEEDED', output, startedAt, stoppedAt: new Date(), timings };
  } catch (err) {
    await follow.catch(() => undefined);
    const e = err as Error & { cause?: unknown };
    return {
      name: opts.name,
      status: 'FAILED',
      error: failure?.error ?? e.name,
      cause: failure?.cause ?? e.message,
      startedAt,
      stoppedAt: new Date(),
      timings,
    };
  }
}
