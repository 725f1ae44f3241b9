/**
 * Runs the state machine definition synthesized by the CDK app with aws-local-stepfunctions, each Task state
 * bound to the local handler of the function its Resource names in the template: the workflow is never
 * written twice.
 */
import './polyfill.ts';
import { StateMachine, type RunOptions, type StateMachineDefinition } from 'aws-local-stepfunctions';

type LocalHandlers = NonNullable<NonNullable<RunOptions['overrides']>['taskResourceLocalHandlers']>;
type LocalHandler = LocalHandlers[string];
type EventLog = ReturnType<StateMachine['run']>['eventLogs'] extends AsyncGenerator<infer E> ? E : never;

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
  onStateEntered?: (state: string) => void;
  onStateExited?: (state: string, seconds: number) => void;
}

export async function runExecution(
  definition: Record<string, unknown>,
  taskFunctions: Record<string, string>,
  handlers: Record<string, TaskHandler>,
  input: unknown,
  opts: ExecutionOptions,
): Promise<ExecutionResult> {
  const local: LocalHandlers = {};
  for (const [state, fn] of Object.entries(taskFunctions)) {
    const handler = handlers[fn];
    if (!handler) throw new Error(`state ${state} invokes function "${fn}", which has no local handler`);
    // Handlers take and return JSON: the state machine passes parsed JSON in and serialises what comes out.
    local[state] = handler as unknown as LocalHandler;
  }
  const machine = new StateMachine(definition as unknown as StateMachineDefinition, { validationOptions: { checkArn: false } });
  const startedAt = new Date();
  const execution = machine.run(input as never, {
    overrides: { taskResourceLocalHandlers: local, retryIntervalOverrides: {} },
    context: {
      Execution: { Id: `arn:aws:states:us-east-1:000000000000:execution:local:${opts.name}`, Name: opts.name, StartTime: startedAt.toISOString(), Input: input as never },
    } as never,
  });
  const timings: Record<string, number> = {};
  const entered = new Map<string, number>();
  const follow = (async () => {
    for await (const ev of execution.eventLogs as AsyncGenerator<EventLog>) {
      if (ev.type === 'StateEntered') {
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
      error: e.name,
      cause: e.message,
      startedAt,
      stoppedAt: new Date(),
      timings,
    };
  }
}
