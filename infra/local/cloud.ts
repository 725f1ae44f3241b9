/**
 * The embedded local cloud: the buckets, S3 notifications, state machine and API of the CDK app, run on one
 * machine against real local parts (s3rver over HTTP, aws-local-stepfunctions, the real handlers, an HTTP API).
 * Everything it wires comes from the synthesized template (infra/local/template.ts).
 */
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { LOCAL_BUCKET_NAMES, synthesizeLocal, type LocalApp } from './template.ts';
import { startLocalS3, useLocalS3Environment, type LocalS3 } from './s3.ts';
import { EventDispatcher, type EventHandler, type Notification } from './dispatcher.ts';
import { runExecution, type ExecutionOptions, type ExecutionResult, type TaskHandler } from './stepfunctions.ts';
import { startLocalApi, type ApiHandler, type LocalApi } from './api.ts';
import { startSfnApi, type LocalSfnApi } from './sfn-api.ts';
import { BUCKET_ROLES, STACK_NAME } from '../lib/names.ts';

export interface LocalCloudOptions {
  /** Where the local S3 keeps its data. @default ".myeloscope" in the working directory */
  stateDir?: string;
  /** Start from empty buckets. @default false (objects persist across runs) */
  fresh?: boolean;
  /** @default 4569, or any free port when taken; 0 for any free port */
  s3Port?: number;
  /** @default 8787, or any free port when taken; 0 for any free port */
  apiPort?: number;
  /** Local Step Functions API. @default 8083, or any free port when taken; 0 for any free port */
  sfnPort?: number;
  /** Concurrent S3-triggered invocations. @default 2 (the cores of the reference machine) */
  concurrency?: number;
  /** Time a client has to send a whole request to the local S3, API or Step Functions API. @default 30000 */
  requestTimeoutMs?: number;
  /** Receives each delivered S3 event's handler result. */
  onDelivered?: (fn: string, key: string, result: unknown) => void;
}

export interface LocalCloud {
  app: LocalApp;
  s3: LocalS3;
  api: LocalApi;
  /** The Step Functions API (AWS JSON 1.0) in front of the local interpreter: what @aws-sdk/client-sfn talks to. */
  sfn: LocalSfnApi;
  buckets: { raw: string; work: string; models: string };
  dispatcher: EventDispatcher;
  /** Resolves when every S3-triggered invocation so far has finished (including the ones they caused). */
  idle(): Promise<void>;
  /** Runs the training state machine in-process, bypassing the Step Functions API. */
  runTraining(input: unknown, opts: ExecutionOptions): Promise<ExecutionResult>;
  close(): Promise<void>;
}

const FUNCTIONS_DIR = new URL('../../functions/', import.meta.url);

export async function startLocalCloud(opts: LocalCloudOptions = {}): Promise<LocalCloud> {
  const stateDir = opts.stateDir ?? join(process.cwd(), '.myeloscope');
  const s3Dir = join(stateDir, 's3');
  if (opts.fresh) await rm(s3Dir, { recursive: true, force: true });
  const app = await synthesizeLocal();
  // The names the resolved local definition refers to (template.ts).
  const buckets = { ...LOCAL_BUCKET_NAMES };
  const timeouts = opts.requestTimeoutMs !== undefined ? { requestTimeoutMs: opts.requestTimeoutMs } : {};
  // The buckets' CORS rules as the template declares them (the web page PUTs large images to presigned URLs).
  const cors = Object.fromEntries(BUCKET_ROLES.map((role) => [buckets[role], app.buckets[role].cors]));
  const s3 = await startLocalS3({ directory: s3Dir, buckets: Object.values(buckets), cors, port: opts.s3Port ?? 4569, ...timeouts });

  // The handlers read their configuration at module load, as on Lambda: set it before importing them.
  useLocalS3Environment(s3.endpoint);

  const handlers: Record<string, (event: never) => Promise<unknown>> = {};
  for (const name of Object.keys(app.functions)) {
    const mod = (await import(new URL(`${name}/index.ts`, FUNCTIONS_DIR).href)) as { handler?: (event: never) => Promise<unknown> };
    if (typeof mod.handler !== 'function') throw new Error(`functions/${name}/index.ts exports no handler`);
    handlers[name] = mod.handler;
  }

  const notifications: Notification[] = app.notifications.map((n) => ({
    bucketName: buckets[n.bucket],
    events: n.events,
    ...(n.prefix ? { prefix: n.prefix } : {}),
    ...(n.suffix ? { suffix: n.suffix } : {}),
    function: n.function,
  }));
  const dispatcher = new EventDispatcher(notifications, handlers as Record<string, EventHandler>, {
    concurrency: opts.concurrency ?? 2,
    ...(opts.onDelivered ? { onDelivered: opts.onDelivered } : {}),
  });
  s3.onEvent((event) => dispatcher.accept(event));

  const api = await startLocalApi({
    routes: app.api.routes,
    handlers: handlers as Record<string, ApiHandler>,
    binaryMediaTypes: app.api.binaryMediaTypes,
    port: opts.apiPort ?? 8787,
    ...timeouts,
    // The web page, served beside the API as a static host would on AWS.
    staticDir: new URL('../../functions/web/', import.meta.url),
  });

  const runTraining = (input: unknown, execOpts: ExecutionOptions): Promise<ExecutionResult> =>
    runExecution(app.stateMachine.definition, app.stateMachine.taskFunctions, handlers as Record<string, TaskHandler>, input, execOpts);
  const sfn = await startSfnApi({
    stateMachineName: stateMachineName(app),
    definition: app.stateMachine.definition,
    run: runTraining,
    port: opts.sfnPort ?? 8083,
    ...timeouts,
  });
  // Clients in this process (and the env lines `serve` prints) find the workflow as they would on AWS.
  process.env.AWS_ENDPOINT_URL_SFN = sfn.endpoint;
  process.env.STATE_MACHINE_ARN = sfn.stateMachineArn;

  return {
    app,
    s3,
    api,
    sfn,
    buckets,
    dispatcher,
    // A handler's writes trigger further events a moment later: idle twice in a row means settled.
    async idle() {
      for (;;) {
        await dispatcher.idle();
        await new Promise((r) => setTimeout(r, 50));
        if (dispatcher.isIdle()) return;
      }
    },
    runTraining,
    async close() {
      await sfn.close();
      await api.close();
      await s3.close();
    },
  };
}

/** The template's StateMachineName when the CDK app sets one, else "<stack>Training" (AWS would generate one). */
function stateMachineName(app: LocalApp): string {
  const resources = (app.template.Resources ?? {}) as Record<string, { Properties?: { StateMachineName?: unknown } }>;
  const name = resources[app.stateMachine.logicalId]?.Properties?.StateMachineName;
  return typeof name === 'string' && name ? name : `${STACK_NAME}Training`;
}
