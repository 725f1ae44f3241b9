/**
 * The local Step Functions API: an HTTP server on loopback that speaks the AWS JSON 1.0 protocol of Step
 * Functions (POST /, X-Amz-Target: AWSStepFunctions.<Op>) in front of the local interpreter, so the very
 * @aws-sdk/client-sfn code that starts and follows runs on AWS does the same here. One state machine;
 * executions run in the background and keep their history in memory for the life of the process.
 * SigV4 headers are accepted and not checked (loopback only).
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { ExecutionEvent, ExecutionOptions, ExecutionResult } from './stepfunctions.ts';
import { LOCAL_ACCOUNT, LOCAL_REGION } from './template.ts';
import { listenWithFallback, localServerOptions, type LocalServerOptions } from './listen.ts';

export type ExecutionStatus = 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'ABORTED';

/** Runs one execution; resolves when it ends (runExecution bound to the definition and handlers). */
export type ExecutionRunner = (input: unknown, opts: ExecutionOptions) => Promise<ExecutionResult>;

export interface SfnApiOptions extends LocalServerOptions {
  stateMachineName: string;
  /** ASL definition, returned by DescribeStateMachine. */
  definition: Record<string, unknown>;
  run: ExecutionRunner;
  /** @default 0 (any free port); a taken non-zero port falls back to any free one */
  port?: number;
  address?: string;
}

export interface LocalSfnApi {
  /** e.g. http://127.0.0.1:8083: the AWS_ENDPOINT_URL_SFN of the clients. */
  endpoint: string;
  port: number;
  stateMachineArn: string;
  server: Server;
  /** Resolves when every execution started so far has ended. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

/** A history event in the shape of the AWS API (timestamps in epoch seconds, as AWS JSON sends them). */
type HistoryEvent = { id: number; previousEventId: number; timestamp: number; type: string } & Record<string, unknown>;

interface Execution {
  executionArn: string;
  name: string;
  input: string;
  status: ExecutionStatus;
  startDate: number;
  stopDate?: number;
  output?: string;
  error?: string;
  cause?: string;
  events: HistoryEvent[];
  done: Promise<void>;
}

class ApiError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

const seconds = (ms: number) => ms / 1000;
const MAX_BODY = 1024 * 1024;
/** Step Functions limits a name to 80 characters without whitespace, wildcards or control characters. */
const NAME_PATTERN = /^[^\s<>{}[\]?*"#%\\^|~`$&,;:/\u0000-\u001f\u007f-\u009f]{1,80}$/;

export async function startSfnApi(opts: SfnApiOptions): Promise<LocalSfnApi> {
  const address = opts.address ?? '127.0.0.1';
  const stateMachineArn = `arn:aws:states:${LOCAL_REGION}:${LOCAL_ACCOUNT}:stateMachine:${opts.stateMachineName}`;
  const executionPrefix = `arn:aws:states:${LOCAL_REGION}:${LOCAL_ACCOUNT}:execution:${opts.stateMachineName}:`;
  const creationDate = seconds(Date.now());
  const executions = new Map<string, Execution>();
  const tasks = taskResources(opts.definition);

  function checkStateMachine(arn: unknown): void {
    if (typeof arn !== 'string' || !arn.startsWith('arn:')) throw new ApiError('InvalidArn', `Invalid Arn: '${String(arn)}'`);
    if (arn !== stateMachineArn) throw new ApiError('StateMachineDoesNotExist', `State Machine Does Not Exist: '${arn}'`);
  }

  function execution(arn: unknown): Execution {
    if (typeof arn !== 'string' || !arn.startsWith('arn:aws:states:')) throw new ApiError('InvalidArn', `Invalid Arn: '${String(arn)}'`);
    const e = executions.get(arn);
    if (!e) throw new ApiError('ExecutionDoesNotExist', `Execution Does Not Exist: '${arn}'`);
    return e;
  }

  function start(body: Record<string, unknown>): { executionArn: string; startDate: number } {
    checkStateMachine(body.stateMachineArn);
    const name = body.name === undefined ? randomUUID() : body.name;
    if (typeof name !== 'string' || !NAME_PATTERN.test(name)) throw new ApiError('InvalidName', `Invalid Name: '${String(name)}'`);
    const inputText = body.input === undefined ? '{}' : body.input;
    if (typeof inputText !== 'string') throw new ApiError('InvalidExecutionInput', 'input must be a string of JSON');
    let input: unknown;
    try {
      input = JSON.parse(inputText);
    } catch (err) {
      throw new ApiError('InvalidExecutionInput', `Invalid State Machine Execution Input: '${(err as Error).message}'`);
    }
    const executionArn = executionPrefix + name;
    const existing = executions.get(executionArn);
    if (existing) {
      // As on AWS (standard workflows): the same name and input while running is the same call; anything else is a conflict.
      if (existing.status === 'RUNNING' && JSON.stringify(JSON.parse(existing.input)) === JSON.stringify(input)) {
        return { executionArn, startDate: existing.startDate };
      }
      throw new ApiError('ExecutionAlreadyExists', `Execution Already Exists: '${executionArn}'`);
    }
    const ex: Execution = { executionArn, name, input: inputText, status: 'RUNNING', startDate: seconds(Date.now()), events: [], done: Promise.resolve() };
    executions.set(executionArn, ex);
    const history = new HistoryBuilder(ex.events, tasks, stateMachineArn);
    ex.done = opts
      .run(input, { name, executionArn, onEvent: (ev) => history.add(ev) })
      .then((result) => {
        ex.status = result.status;
        if (result.status === 'SUCCEEDED') ex.output = JSON.stringify(result.output ?? null);
        else {
          ex.error = result.error ?? 'States.Runtime';
          ex.cause = result.cause ?? '';
        }
        history.finish(result);
      })
      .catch((err: unknown) => {
        // The runner itself broke (e.g. a missing handler): the execution fails with the reason.
        ex.status = 'FAILED';
        ex.error = 'States.Runtime';
        ex.cause = err instanceof Error ? err.message : String(err);
        history.fail(ex.error, ex.cause);
      })
      .finally(() => {
        ex.stopDate = seconds(Date.now());
      });
    return { executionArn, startDate: ex.startDate };
  }

  function describe(ex: Execution): Record<string, unknown> {
    return {
      executionArn: ex.executionArn,
      stateMachineArn,
      name: ex.name,
      status: ex.status,
      startDate: ex.startDate,
      ...(ex.stopDate !== undefined ? { stopDate: ex.stopDate } : {}),
      input: ex.input,
      inputDetails: { included: true },
      ...(ex.output !== undefined ? { output: ex.output, outputDetails: { included: true } } : {}),
      ...(ex.error !== undefined ? { error: ex.error, cause: ex.cause ?? '' } : {}),
    };
  }

  function page<T>(items: T[], body: Record<string, unknown>, defaultMax: number): { items: T[]; nextToken?: string } {
    const max = typeof body.maxResults === 'number' && body.maxResults > 0 ? Math.min(body.maxResults, 1000) : defaultMax;
    let from = 0;
    if (body.nextToken !== undefined) {
      from = typeof body.nextToken === 'string' ? Number.parseInt(body.nextToken, 10) : NaN;
      if (!Number.isInteger(from) || from < 0 || from > items.length) throw new ApiError('InvalidToken', `Invalid Token: '${String(body.nextToken)}'`);
    }
    const slice = items.slice(from, from + max);
    return from + max < items.length ? { items: slice, nextToken: String(from + max) } : { items: slice };
  }

  const operations: Record<string, (body: Record<string, unknown>) => unknown> = {
    StartExecution: (body) => start(body),
    DescribeExecution: (body) => describe(execution(body.executionArn)),
    GetExecutionHistory: (body) => {
      const ex = execution(body.executionArn);
      const includeData = body.includeExecutionData !== false;
      let events = includeData ? ex.events : ex.events.map(withoutData);
      if (body.reverseOrder === true) events = [...events].reverse();
      const { items, nextToken } = page(events, body, 1000);
      return nextToken ? { events: items, nextToken } : { events: items };
    },
    ListExecutions: (body) => {
      checkStateMachine(body.stateMachineArn);
      const filter = typeof body.statusFilter === 'string' ? body.statusFilter : undefined;
      // Newest first, as AWS lists them.
      const all = [...executions.values()].filter((e) => !filter || e.status === filter).reverse();
      const { items, nextToken } = page(all, body, 100);
      const listed = items.map((e) => ({
        executionArn: e.executionArn,
        stateMachineArn,
        name: e.name,
        status: e.status,
        startDate: e.startDate,
        ...(e.stopDate !== undefined ? { stopDate: e.stopDate } : {}),
      }));
      return nextToken ? { executions: listed, nextToken } : { executions: listed };
    },
    ListStateMachines: () => ({ stateMachines: [{ stateMachineArn, name: opts.stateMachineName, type: 'STANDARD', creationDate }] }),
    DescribeStateMachine: (body) => {
      checkStateMachine(body.stateMachineArn);
      return {
        stateMachineArn,
        name: opts.stateMachineName,
        status: 'ACTIVE',
        definition: JSON.stringify(opts.definition),
        roleArn: `arn:aws:iam::${LOCAL_ACCOUNT}:role/local`,
        type: 'STANDARD',
        creationDate,
      };
    },
  };

  const server = createServer(localServerOptions(opts), (req, res) => {
    void (async () => {
      const send = (status: number, payload: unknown) => {
        const text = JSON.stringify(payload);
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'content-length': Buffer.byteLength(text), 'x-amzn-requestid': randomUUID() });
        res.end(text);
      };
      try {
        const target = String(req.headers['x-amz-target'] ?? '');
        const op = target.startsWith('AWSStepFunctions.') ? target.slice('AWSStepFunctions.'.length) : '';
        const handler = req.method === 'POST' ? operations[op] : undefined;
        if (!handler) {
          send(400, { __type: 'UnknownOperationException', message: `unsupported operation ${req.method} ${target || '(no X-Amz-Target)'}; supported: ${Object.keys(operations).join(', ')}` });
          return;
        }
        const text = await readBody(req);
        let body: unknown;
        try {
          body = text ? JSON.parse(text) : {};
        } catch {
          throw new ApiError('SerializationException', 'request body is not JSON');
        }
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ApiError('SerializationException', 'request body must be a JSON object');
        send(200, handler(body as Record<string, unknown>));
      } catch (err) {
        if (err instanceof ApiError) send(400, { __type: err.type, message: err.message });
        else send(500, { __type: 'InternalFailure', message: err instanceof Error ? err.message : String(err) });
      }
    })();
  });

  const port = await listenWithFallback(server, opts.port, address);
  return {
    endpoint: `http://${address}:${port}`,
    port,
    stateMachineArn,
    server,
    async idle() {
      await Promise.all([...executions.values()].map((e) => e.done));
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new ApiError('ValidationException', `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const DATA_FIELDS = ['input', 'output'] as const;

/** The history without inputs and outputs (includeExecutionData: false). */
function withoutData(ev: HistoryEvent): HistoryEvent {
  const out: HistoryEvent = { ...ev };
  for (const [k, v] of Object.entries(ev)) {
    if (!k.endsWith('EventDetails') || v === null || typeof v !== 'object') continue;
    const details = { ...(v as Record<string, unknown>) };
    for (const f of DATA_FIELDS) delete details[f];
    out[k] = details;
  }
  return out;
}

const json = (v: unknown) => JSON.stringify(v ?? null);
const text = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v ?? null));

type TaskResource = { kind: 'lambda'; resource: string } | { kind: 'service'; resourceType: string; resource: string };

/** What each Task state calls, as its history events name it: a Lambda function or a service integration. */
function taskResources(definition: Record<string, unknown>): Map<string, TaskResource> {
  const out = new Map<string, TaskResource>();
  for (const [name, state] of Object.entries((definition.States ?? {}) as Record<string, { Type?: unknown; Resource?: unknown }>)) {
    if (state.Type !== 'Task' || typeof state.Resource !== 'string') continue;
    const integration = /^arn:aws:states:::([^:]+):(.+)$/.exec(state.Resource);
    if (integration) out.set(name, { kind: 'service', resourceType: integration[1] as string, resource: integration[2] as string });
    else if (state.Resource.startsWith('arn:aws:lambda:')) out.set(name, { kind: 'lambda', resource: state.Resource });
  }
  return out;
}

/** Turns the interpreter's events into AWS history events, in the order AWS records them. */
class HistoryBuilder {
  private lastId = 0;
  /** Task states whose call started and has not ended yet: a caught failure must not also "succeed". */
  private readonly open = new Set<string>();

  constructor(
    private readonly events: HistoryEvent[],
    private readonly tasks: Map<string, TaskResource>,
    private readonly stateMachineArn: string,
  ) {}

  private push(type: string, timestampMs: number, details?: [string, Record<string, unknown>]): void {
    const ev: HistoryEvent = { id: this.lastId + 1, previousEventId: this.lastId, timestamp: seconds(timestampMs), type };
    if (details) ev[details[0]] = details[1];
    this.events.push(ev);
    this.lastId = ev.id;
  }

  private scheduled(state: string, input: unknown, ts: number): void {
    const task = this.tasks.get(state);
    if (!task) return;
    this.open.add(state);
    if (task.kind === 'lambda') {
      this.push('LambdaFunctionScheduled', ts, ['lambdaFunctionScheduledEventDetails', { resource: task.resource, input: json(input), inputDetails: { truncated: false } }]);
      this.push('LambdaFunctionStarted', ts);
    } else {
      const base = { resourceType: task.resourceType, resource: task.resource };
      this.push('TaskScheduled', ts, ['taskScheduledEventDetails', { ...base, region: LOCAL_REGION, parameters: json(input) }]);
      this.push('TaskStarted', ts, ['taskStartedEventDetails', base]);
      this.push('TaskSubmitted', ts, ['taskSubmittedEventDetails', { ...base, output: '{}', outputDetails: { truncated: false } }]);
    }
  }

  private ended(state: string, ts: number, outcome: { output: unknown } | { error: string; cause: string }): void {
    const task = this.tasks.get(state);
    if (!task || !this.open.delete(state)) return;
    if ('output' in outcome) {
      if (task.kind === 'lambda') this.push('LambdaFunctionSucceeded', ts, ['lambdaFunctionSucceededEventDetails', { output: json(outcome.output), outputDetails: { truncated: false } }]);
      else this.push('TaskSucceeded', ts, ['taskSucceededEventDetails', { resourceType: task.resourceType, resource: task.resource, output: json(outcome.output), outputDetails: { truncated: false } }]);
    } else if (task.kind === 'lambda') {
      this.push('LambdaFunctionFailed', ts, ['lambdaFunctionFailedEventDetails', outcome]);
    } else {
      this.push('TaskFailed', ts, ['taskFailedEventDetails', { resourceType: task.resourceType, resource: task.resource, ...outcome }]);
    }
  }

  add(ev: ExecutionEvent): void {
    switch (ev.type) {
      case 'ExecutionStarted':
        this.push('ExecutionStarted', ev.timestamp, [
          'executionStartedEventDetails',
          { input: json(ev.input), inputDetails: { truncated: false }, roleArn: `arn:aws:iam::${LOCAL_ACCOUNT}:role/local`, stateMachineArn: this.stateMachineArn },
        ]);
        break;
      case 'StateEntered':
        this.push(`${ev.state.type}StateEntered`, ev.timestamp, ['stateEnteredEventDetails', { name: ev.state.name, input: json(ev.state.input), inputDetails: { truncated: false } }]);
        this.scheduled(ev.state.name, ev.state.input, ev.timestamp);
        break;
      case 'StateExited':
        // The interpreter reports the state's output (after ResultPath), the closest it has to the call's result.
        this.ended(ev.state.name, ev.timestamp, { output: ev.state.output });
        this.push(`${ev.state.type}StateExited`, ev.timestamp, ['stateExitedEventDetails', { name: ev.state.name, output: json(ev.state.output), outputDetails: { truncated: false } }]);
        break;
      case 'StateFailed':
        this.ended(ev.state.name, ev.timestamp, { error: ev.Error, cause: text(ev.Cause) });
        break;
      case 'StateRetried':
        this.scheduled(ev.state.name, ev.state.input, ev.timestamp);
        break;
      case 'ExecutionSucceeded':
        this.push('ExecutionSucceeded', ev.timestamp, ['executionSucceededEventDetails', { output: json(ev.output), outputDetails: { truncated: false } }]);
        break;
      case 'ExecutionFailed':
        this.push('ExecutionFailed', ev.timestamp, ['executionFailedEventDetails', { error: ev.Error, cause: text(ev.Cause) }]);
        break;
      case 'ExecutionAborted':
        this.push('ExecutionAborted', ev.timestamp, ['executionAbortedEventDetails', {}]);
        break;
      case 'ExecutionTimeout':
        this.push('ExecutionTimedOut', ev.timestamp, ['executionTimedOutEventDetails', {}]);
        break;
      default:
        break; // Map and Parallel events: this workflow has none
    }
  }

  /** Closes the history if the interpreter's own closing event did not arrive. */
  finish(result: ExecutionResult): void {
    const last = this.events.at(-1)?.type;
    if (last === 'ExecutionSucceeded' || last === 'ExecutionFailed' || last === 'ExecutionAborted' || last === 'ExecutionTimedOut') return;
    if (result.status === 'SUCCEEDED') {
      this.push('ExecutionSucceeded', result.stoppedAt.getTime(), ['executionSucceededEventDetails', { output: json(result.output), outputDetails: { truncated: false } }]);
    } else {
      this.fail(result.error ?? 'States.Runtime', result.cause ?? '');
    }
  }

  fail(error: string, cause: string): void {
    this.push('ExecutionFailed', Date.now(), ['executionFailedEventDetails', { error, cause }]);
  }
}
