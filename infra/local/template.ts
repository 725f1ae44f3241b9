/**
 * The bridge between the CDK app and the local cloud: synthesizes the real stack in-process, without
 * bundling (a few seconds), and reads back from its CloudFormation template what the local cloud wires:
 * buckets, functions, S3 notifications, the training state machine (as plain ASL) and the API routes.
 * Nothing here restates the infrastructure: change the CDK app and the local cloud follows.
 *
 * A "function" is a Lambda function or an AWS Batch job definition tagged with its folder (the GPU train
 * job): locally both run the folder's `handler`, and a Batch submitJob Task is bound to the folder of the
 * job definition it submits.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../lib/app.ts';
import { BUCKET_ROLES, BUCKET_TAG, type BucketRole, FUNCTION_TAG, STACK_NAME } from '../lib/names.ts';

export interface LocalFunction {
  logicalId: string;
  /** How it runs on AWS. */
  kind: 'lambda' | 'batch';
  /** Environment.Variables as in the template: bucket names are `{ Ref: <bucket logicalId> }`. */
  environment: Record<string, unknown>;
  timeoutSeconds?: number;
  memoryMB?: number;
}

export interface LocalNotification {
  bucket: BucketRole;
  events: string[];
  prefix?: string;
  suffix?: string;
  /** Function folder name. */
  function: string;
}

export interface LocalRoute {
  method: string;
  /** e.g. /predict */
  path: string;
  /** Function folder name. */
  function: string;
  /** e.g. AWS_IAM or NONE. */
  authorizationType: string;
}

/** A bucket's CORS rule as CloudFormation writes it (AWS::S3::Bucket CorsConfiguration.CorsRules). */
export interface LocalCorsRule {
  AllowedMethods: string[];
  AllowedOrigins: string[];
  AllowedHeaders?: string[];
  ExposedHeaders?: string[];
  MaxAge?: number;
}

export interface LocalApp {
  template: Record<string, unknown>;
  buckets: Record<BucketRole, { logicalId: string; cors: LocalCorsRule[] }>;
  /** By function folder name. */
  functions: Record<string, LocalFunction>;
  notifications: LocalNotification[];
  stateMachine: {
    logicalId: string;
    /**
     * ASL JSON; each Lambda ARN is localFunctionArn(<folder name>), each Batch job definition
     * localJobDefinitionArn(<folder name>), each bucket name LOCAL_BUCKET_NAMES[<role>].
     */
    definition: Record<string, unknown>;
    /** Task state name -> function folder name. */
    taskFunctions: Record<string, string>;
  };
  api: { routes: LocalRoute[]; binaryMediaTypes: string[] };
}

export interface SynthesizeLocalOptions {
  /** Where to write the cloud assembly. @default a temporary directory, removed afterwards */
  outdir?: string;
}

/** Values the template leaves to deploy time, fixed for the local cloud. */
export const LOCAL_REGION = 'us-east-1';
export const LOCAL_ACCOUNT = '000000000000';

/** The ARN a function folder name stands for in the resolved state machine definition. */
export function localFunctionArn(name: string): string {
  return `arn:aws:lambda:${LOCAL_REGION}:${LOCAL_ACCOUNT}:function:${name}`;
}

/** The ARN a Batch job definition tagged with a function folder name stands for in the definition. */
export function localJobDefinitionArn(name: string): string {
  return `arn:aws:batch:${LOCAL_REGION}:${LOCAL_ACCOUNT}:job-definition/${name}:1`;
}

/** The ARN every Batch job queue stands for in the definition (the local cloud has no queues). */
export const LOCAL_JOB_QUEUE_ARN = `arn:aws:batch:${LOCAL_REGION}:${LOCAL_ACCOUNT}:job-queue/local`;

/**
 * Bucket names in the resolved definition (a Pass state names the model's S3 URI): the names the local
 * cloud gives its buckets (defined beside the local S3, which light-weight tools import without CDK).
 */
export { LOCAL_BUCKET_NAMES } from './s3.ts';
import { LOCAL_BUCKET_NAMES } from './s3.ts';

/** The resource of a Batch SubmitJob task that waits for the job (the `.sync` integration). */
const BATCH_SUBMIT_JOB_SYNC = 'arn:aws:states:::batch:submitJob.sync';

/** The function folder name of an ARN made by localFunctionArn, else undefined. */
export function functionNameFromArn(arn: string): string | undefined {
  const prefix = localFunctionArn('');
  return arn.startsWith(prefix) ? arn.slice(prefix.length) : undefined;
}

export async function synthesizeLocal(opts: SynthesizeLocalOptions = {}): Promise<LocalApp> {
  const outdir = opts.outdir ?? mkdtempSync(join(tmpdir(), 'myeloscope-synth-'));
  try {
    // No stack needs bundling: assets are left unbuilt, which is all a template reader needs.
    const { app } = createApp({ outdir, context: { 'aws:cdk:bundling-stacks': [] }, validation: false, nag: false });
    const template = app.synth().getStackByName(STACK_NAME).template as Record<string, unknown>;
    return readTemplate(template);
  } finally {
    if (!opts.outdir) rmSync(outdir, { recursive: true, force: true });
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

interface Resource {
  Type: string;
  Properties?: JsonObject;
}

/** Reads a synthesized Myeloscope template (exported for tests and other tools). */
export function readTemplate(template: Record<string, unknown>): LocalApp {
  const resources = (template.Resources ?? {}) as Record<string, Resource>;
  const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);

  const buckets = {} as Record<BucketRole, { logicalId: string; cors: LocalCorsRule[] }>;
  const bucketRoleById = new Map<string, BucketRole>();
  for (const [logicalId, r] of ofType('AWS::S3::Bucket')) {
    const role = tagValue(r, BUCKET_TAG);
    if (!role) continue;
    if (!isBucketRole(role)) throw new Error(`bucket ${logicalId}: unknown ${BUCKET_TAG} "${role}"`);
    const corsRules = (r.Properties?.CorsConfiguration as { CorsRules?: LocalCorsRule[] } | undefined)?.CorsRules;
    buckets[role] = { logicalId, cors: Array.isArray(corsRules) ? corsRules : [] };
    bucketRoleById.set(logicalId, role);
  }
  for (const role of BUCKET_ROLES) if (!buckets[role]) throw new Error(`no bucket tagged ${BUCKET_TAG}=${role}`);

  const functions: Record<string, LocalFunction> = {};
  const functionById = new Map<string, string>();
  for (const [logicalId, r] of ofType('AWS::Lambda::Function')) {
    const name = tagValue(r, FUNCTION_TAG);
    if (!name) continue; // CDK's own helpers (e.g. the S3 notifications handler)
    const p = r.Properties ?? {};
    const env = asObject(asObject(p.Environment).Variables);
    functions[name] = {
      logicalId,
      kind: 'lambda',
      environment: env,
      ...(typeof p.Timeout === 'number' ? { timeoutSeconds: p.Timeout } : {}),
      ...(typeof p.MemorySize === 'number' ? { memoryMB: p.MemorySize } : {}),
    };
    functionById.set(logicalId, name);
  }
  const jobDefinitionById = new Map<string, string>();
  for (const [logicalId, r] of ofType('AWS::Batch::JobDefinition')) {
    const name = tagValue(r, FUNCTION_TAG);
    if (!name) continue;
    if (functions[name]) throw new Error(`${logicalId}: function "${name}" is both a Lambda and a Batch job`);
    const p = r.Properties ?? {};
    const container = asObject(p.ContainerProperties);
    const environment = Object.fromEntries(
      asArray(container.Environment)
        .map(asObject)
        .map((e) => [String(e.Name), e.Value ?? null] as const),
    );
    const memory = asArray(container.ResourceRequirements)
      .map(asObject)
      .find((x) => x.Type === 'MEMORY')?.Value;
    const timeout = asObject(p.Timeout).AttemptDurationSeconds;
    functions[name] = {
      logicalId,
      kind: 'batch',
      environment,
      ...(typeof timeout === 'number' ? { timeoutSeconds: timeout } : {}),
      ...(memory !== undefined && memory !== null ? { memoryMB: Number(memory) } : {}),
    };
    jobDefinitionById.set(logicalId, name);
  }

  const functionOf = (value: Json | undefined, where: string): string => {
    const id = getAttTarget(value, 'Arn');
    const name = id === undefined ? undefined : functionById.get(id);
    if (!name) throw new Error(`${where}: not a Myeloscope function ARN: ${JSON.stringify(value)}`);
    return name;
  };

  const notifications: LocalNotification[] = [];
  for (const [logicalId, r] of ofType('Custom::S3BucketNotifications')) {
    const p = r.Properties ?? {};
    const bucketId = refTarget(p.BucketName);
    const bucket = bucketId === undefined ? undefined : bucketRoleById.get(bucketId);
    if (!bucket) throw new Error(`${logicalId}: BucketName is not a Myeloscope bucket`);
    const config = asObject(p.NotificationConfiguration);
    for (const other of ['QueueConfigurations', 'TopicConfigurations'] as const) {
      if (asArray(config[other]).length) throw new Error(`${logicalId}: ${other} are not supported locally`);
    }
    for (const c of asArray(config.LambdaFunctionConfigurations).map(asObject)) {
      const rules = asArray(asObject(asObject(c.Filter).Key).FilterRules).map(asObject);
      const rule = (name: string) => rules.find((x) => String(x.Name).toLowerCase() === name)?.Value;
      const prefix = rule('prefix');
      const suffix = rule('suffix');
      notifications.push({
        bucket,
        events: asArray(c.Events).map(String),
        ...(typeof prefix === 'string' ? { prefix } : {}),
        ...(typeof suffix === 'string' ? { suffix } : {}),
        function: functionOf(c.LambdaFunctionArn, `${logicalId} LambdaFunctionConfigurations`),
      });
    }
  }

  const machines = ofType('AWS::StepFunctions::StateMachine');
  if (machines.length !== 1) throw new Error(`expected one state machine, found ${machines.length}`);
  const [smId, sm] = machines[0] as [string, Resource];
  const queueIds = new Set(ofType('AWS::Batch::JobQueue').map(([id]) => id));
  const resolveRef = (value: Json): Json => {
    const attId = getAttTarget(value, 'Arn');
    const fnName = attId === undefined ? undefined : functionById.get(attId);
    if (fnName) return localFunctionArn(fnName);
    const refId = refTarget(value);
    const jobName = refId === undefined ? undefined : jobDefinitionById.get(refId);
    if (jobName) return localJobDefinitionArn(jobName);
    const queueId = refId ?? getAttTarget(value, 'JobQueueArn');
    if (queueId !== undefined && queueIds.has(queueId)) return LOCAL_JOB_QUEUE_ARN;
    const role = refId === undefined ? undefined : bucketRoleById.get(refId);
    if (role) return LOCAL_BUCKET_NAMES[role];
    throw new Error(`${smId}: cannot resolve ${JSON.stringify(value)} in the definition`);
  };
  const definitionText = resolveIntrinsics(sm.Properties?.DefinitionString ?? null, resolveRef);
  if (typeof definitionText !== 'string') throw new Error(`${smId}: DefinitionString is not a string`);
  const definition = substitute(definitionText, asObject(sm.Properties?.DefinitionSubstitutions ?? {}), resolveRef);
  const taskFunctions: Record<string, string> = {};
  const jobArns = new Map([...jobDefinitionById.values()].map((name) => [localJobDefinitionArn(name), name]));
  forEachState(definition, (stateName, state) => {
    if (state.Type !== 'Task' || typeof state.Resource !== 'string') return;
    const fn = functionNameFromArn(state.Resource);
    if (fn) taskFunctions[stateName] = fn;
    if (state.Resource === BATCH_SUBMIT_JOB_SYNC) {
      // The local handler stands for the whole job (infra/local/stepfunctions.ts gives it the RUN_STATE
      // override, as the container gets it).
      const job = jobArns.get(String(asObject(state.Parameters as Json).JobDefinition));
      if (!job) throw new Error(`${smId}: state ${stateName} submits a job definition that is not a Myeloscope function`);
      taskFunctions[stateName] = job;
    }
  });

  const routes: LocalRoute[] = [];
  const restApis = ofType('AWS::ApiGateway::RestApi');
  if (restApis.length > 1) throw new Error(`expected at most one REST API, found ${restApis.length}`);
  const apiResources = new Map(ofType('AWS::ApiGateway::Resource'));
  const pathOf = (resourceId: Json | undefined): string => {
    if (getAttTarget(resourceId, 'RootResourceId') !== undefined) return '';
    const id = refTarget(resourceId);
    const res = id === undefined ? undefined : apiResources.get(id);
    if (!res?.Properties) throw new Error(`API resource ${JSON.stringify(resourceId)} not found`);
    return `${pathOf(res.Properties.ParentId)}/${String(res.Properties.PathPart)}`;
  };
  for (const [logicalId, r] of ofType('AWS::ApiGateway::Method')) {
    const p = r.Properties ?? {};
    const integration = asObject(p.Integration);
    if (integration.Type !== 'AWS_PROXY') continue; // e.g. CORS preflight mocks
    routes.push({
      method: String(p.HttpMethod),
      path: pathOf(p.ResourceId) || '/',
      function: functionOfUri(integration.Uri, functionById, logicalId),
      authorizationType: String(p.AuthorizationType ?? 'NONE'),
    });
  }
  const binaryMediaTypes = restApis.length ? asArray(restApis[0]?.[1].Properties?.BinaryMediaTypes).map(String) : [];

  return {
    template,
    buckets,
    functions,
    notifications,
    stateMachine: { logicalId: smId, definition, taskFunctions },
    api: { routes, binaryMediaTypes },
  };
}

/**
 * The environment of a function with each bucket Ref replaced by the local bucket name of its role and
 * every value made a string, as Lambda would see it.
 */
export function resolveEnvironment(
  app: LocalApp,
  functionName: string,
  bucketNames: Record<BucketRole, string>,
): Record<string, string> {
  const fn = app.functions[functionName];
  if (!fn) throw new Error(`no function "${functionName}" in the template`);
  const names = new Map(BUCKET_ROLES.map((role) => [app.buckets[role].logicalId, bucketNames[role]]));
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(fn.environment)) {
    const id = refTarget(value as Json);
    const resolved = id === undefined ? value : (names.get(id) ?? PSEUDO[id]);
    if (typeof resolved !== 'string' && typeof resolved !== 'number' && typeof resolved !== 'boolean') {
      throw new Error(`${functionName}: cannot resolve ${key}=${JSON.stringify(value)}`);
    }
    out[key] = String(resolved);
  }
  return out;
}

/** Pseudo parameters, as the local cloud pretends them. */
const PSEUDO: Record<string, string> = {
  'AWS::Partition': 'aws',
  'AWS::Region': LOCAL_REGION,
  'AWS::AccountId': LOCAL_ACCOUNT,
  'AWS::URLSuffix': 'amazonaws.com',
};

/** Evaluates Fn::Join and pseudo-parameter Refs; any other intrinsic goes to resolveRef. */
function resolveIntrinsics(value: Json, resolveRef: (v: Json) => Json): Json {
  if (Array.isArray(value)) return value.map((v) => resolveIntrinsics(v, resolveRef));
  if (value === null || typeof value !== 'object') return value;
  const keys = Object.keys(value);
  if (keys.length === 1 && keys[0] === 'Fn::Join') {
    const [sep, parts] = asArray(value['Fn::Join']) as [Json, Json];
    return asArray(parts)
      .map((part) => {
        const v = resolveIntrinsics(part, resolveRef);
        if (typeof v !== 'string') throw new Error(`Fn::Join part is not a string: ${JSON.stringify(part)}`);
        return v;
      })
      .join(String(sep));
  }
  if (keys.length === 1 && keys[0] === 'Ref' && typeof value.Ref === 'string' && value.Ref in PSEUDO) {
    return PSEUDO[value.Ref] as string;
  }
  const key = keys.length === 1 ? keys[0] : undefined;
  if (key !== undefined && (key === 'Ref' || key.startsWith('Fn::'))) return resolveRef(value);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveIntrinsics(v, resolveRef)]));
}

/** Applies DefinitionSubstitutions (`${name}` placeholders) and parses the ASL JSON. */
function substitute(text: string, substitutions: JsonObject, resolveRef: (v: Json) => Json): Record<string, unknown> {
  let out = text;
  for (const [name, raw] of Object.entries(substitutions)) {
    const value = resolveIntrinsics(raw, resolveRef);
    out = out.split(`\${${name}}`).join(String(value));
  }
  const parsed = JSON.parse(out) as unknown;
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('definition is not an object');
  return parsed as Record<string, unknown>;
}

/** Visits every state, nested ones (Parallel branches, Map iterators) included. */
function forEachState(node: unknown, visit: (name: string, state: Record<string, unknown>) => void): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (const item of node) forEachState(item, visit);
    return;
  }
  const obj = node as Record<string, unknown>;
  const states = obj.States;
  if (states && typeof states === 'object' && !Array.isArray(states)) {
    for (const [name, state] of Object.entries(states as Record<string, unknown>)) {
      if (state && typeof state === 'object') visit(name, state as Record<string, unknown>);
    }
  }
  for (const [key, value] of Object.entries(obj)) if (key !== 'States') forEachState(value, visit);
  if (states && typeof states === 'object') for (const state of Object.values(states)) forEachState(state, visit);
}

/** The function of a Lambda proxy integration URI (arn:...:apigateway:...:lambda:path/.../<fn arn>/invocations). */
function functionOfUri(uri: Json | undefined, functionById: Map<string, string>, where: string): string {
  const found = new Set<string>();
  const walk = (v: Json | undefined): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === 'object') {
      const id = getAttTarget(v, 'Arn');
      const name = id === undefined ? undefined : functionById.get(id);
      if (name) found.add(name);
      else Object.values(v).forEach(walk);
    }
  };
  walk(uri);
  if (found.size !== 1) throw new Error(`${where}: integration Uri names ${found.size} Myeloscope functions`);
  return [...found][0] as string;
}

/** A tag's value: Tags is a list of { Key, Value } for most types, a plain map for some (AWS::Batch::*). */
function tagValue(r: Resource, key: string): string | undefined {
  const tags = r.Properties?.Tags;
  const value = Array.isArray(tags) ? tags.map(asObject).find((t) => t.Key === key)?.Value : asObject(tags)[key];
  return typeof value === 'string' ? value : undefined;
}

function refTarget(value: Json | undefined): string | undefined {
  const obj = value !== null && typeof value === 'object' && !Array.isArray(value) ? value : undefined;
  return obj && Object.keys(obj).length === 1 && typeof obj.Ref === 'string' ? obj.Ref : undefined;
}

function getAttTarget(value: Json | undefined, attribute: string): string | undefined {
  const obj = value !== null && typeof value === 'object' && !Array.isArray(value) ? value : undefined;
  const att = obj && Object.keys(obj).length === 1 ? obj['Fn::GetAtt'] : undefined;
  if (!Array.isArray(att) || att[1] !== attribute || typeof att[0] !== 'string') return undefined;
  return att[0];
}

function isBucketRole(value: string): value is BucketRole {
  return (BUCKET_ROLES as readonly string[]).includes(value);
}

function asObject(value: Json | undefined): JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
}

function asArray(value: Json | undefined): Json[] {
  return Array.isArray(value) ? value : [];
}
