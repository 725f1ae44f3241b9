/**
 * The CDK app: the template's security and wiring (synthesized once, without bundling), the local-cloud
 * bridge (synthesizeLocal), and real esbuild/layer bundling of one function, loaded the way Lambda would.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { cdkJsonContext, createApp } from '../infra/lib/app.ts';
import { DepsLayer } from '../infra/lib/deps-layer.ts';
import { HandlerFunction } from '../infra/lib/handler-function.ts';
import '../infra/local/polyfill.ts';
import { nagPacks } from '../infra/lib/nag.ts';
import {
  FUNCTION_NAMES,
  FUNCTION_TAG,
  LAMBDA_FUNCTION_NAMES,
  QUALITY_GATE_FAILED_STATE,
  STACK_NAME,
  TRAINING_STEPS,
} from '../infra/lib/names.ts';
import { runExecution } from '../infra/local/stepfunctions.ts';
import {
  LOCAL_BUCKET_NAMES,
  LOCAL_JOB_QUEUE_ARN,
  localFunctionArn,
  localJobDefinitionArn,
  synthesizeLocal,
  type LocalApp,
} from '../infra/local/template.ts';

interface AslResult {
  isValid: boolean;
  errorsText: (separator?: string) => string;
}
// asl-validator is CommonJS without type declarations.
const aslValidator = createRequire(import.meta.url)('asl-validator') as (definition: unknown) => AslResult;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };
interface Resource {
  Type: string;
  Properties: JsonObject;
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
}

const temps: string[] = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

const obj = (v: Json | undefined): JsonObject => (v !== null && typeof v === 'object' && !Array.isArray(v) ? v : {});
const arr = (v: Json | undefined): Json[] => (Array.isArray(v) ? v : v === undefined ? [] : [v]);
const tag = (r: Resource, key: string) => arr(r.Properties.Tags).map(obj).find((t) => t.Key === key)?.Value;
const ref = (v: Json | undefined) => obj(v).Ref;
const getAtt = (v: Json | undefined) => {
  const att = obj(v)['Fn::GetAtt'];
  return Array.isArray(att) ? String(att[0]) : undefined;
};

describe('template (no bundling)', () => {
  let template: Template;
  let resources: Record<string, Resource>;
  let app: App;
  let stack: Stack;
  const byType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);
  /** Function folder name -> logical id. */
  const fnIds = new Map<string, string>();
  const bucketIds = new Map<string, string>();

  before(() => {
    const built = createApp({ outdir: tempDir('myeloscope-cdk-'), context: { 'aws:cdk:bundling-stacks': [] }, validation: false });
    app = built.app;
    stack = built.stack;
    template = Template.fromStack(built.stack);
    resources = template.toJSON().Resources as Record<string, Resource>;
    for (const [id, r] of byType('AWS::Lambda::Function')) {
      const name = tag(r, FUNCTION_TAG);
      if (typeof name === 'string') fnIds.set(name, id);
    }
    for (const [id, r] of byType('AWS::S3::Bucket')) {
      const role = tag(r, 'myeloscope:bucket');
      if (typeof role === 'string') bucketIds.set(role, id);
    }
  });

  test('is environment-agnostic: no account or region, no context lookups', () => {
    const assembly = app.synth();
    const stack = assembly.getStackByName(STACK_NAME);
    assert.equal(stack.environment.account, 'unknown-account');
    assert.equal(stack.environment.region, 'unknown-region');
    assert.equal(assembly.manifest.missing, undefined, 'no lookups that need credentials');
    const text = JSON.stringify(stack.template);
    assert.doesNotMatch(text, /\b\d{12}\b/, 'no hard-coded account id');
    assert.doesNotMatch(text, /"(us|eu|ap|sa|ca|me|af)-[a-z]+-\d"/, 'no hard-coded region');
  });

  test('three buckets: private, encrypted, ACLs off, kept on delete, raw and models versioned, tagged, access-logged', () => {
    const logBuckets = byType('AWS::S3::Bucket').filter(([id]) => ![...bucketIds.values()].includes(id));
    assert.equal(logBuckets.length, 1, 'one access log bucket');
    const [logId] = logBuckets[0] as [string, Resource];
    assert.deepEqual([...bucketIds.keys()].sort(), ['models', 'raw', 'work']);
    for (const [role, id] of bucketIds) {
      const r = resources[id] as Resource;
      assert.deepEqual(r.Properties.PublicAccessBlockConfiguration, {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      assert.deepEqual(r.Properties.BucketEncryption, {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      });
      assert.deepEqual(r.Properties.OwnershipControls, { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] });
      assert.equal(r.DeletionPolicy, 'Retain');
      assert.equal(r.UpdateReplacePolicy, 'Retain');
      const versioned = obj(r.Properties.VersioningConfiguration).Status === 'Enabled';
      assert.equal(versioned, role !== 'work', `${role} versioning`);
      assert.deepEqual(r.Properties.LoggingConfiguration, { DestinationBucketName: { Ref: logId }, LogFilePrefix: `${role}/` });
    }
  });

  test('every bucket denies requests without TLS', () => {
    for (const id of bucketIds.values()) {
      template.hasResourceProperties('AWS::S3::BucketPolicy', {
        Bucket: { Ref: id },
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Effect: 'Deny',
              Action: 's3:*',
              Principal: { AWS: '*' },
              Condition: { Bool: { 'aws:SecureTransport': 'false' } },
            }),
          ]),
        },
      });
    }
  });

  test('functions: one per folder but train (a Batch job), Node.js 22 on x86_64, with the deps layer and the bucket names', () => {
    assert.deepEqual([...fnIds.keys()].sort(), [...LAMBDA_FUNCTION_NAMES].sort());
    const layers = byType('AWS::Lambda::LayerVersion');
    assert.equal(layers.length, 1);
    const [layerId, layer] = layers[0] as [string, Resource];
    assert.deepEqual(layer.Properties.CompatibleRuntimes, ['nodejs22.x']);
    assert.deepEqual(layer.Properties.CompatibleArchitectures, ['x86_64']);
    for (const [name, id] of fnIds) {
      const p = (resources[id] as Resource).Properties;
      assert.equal(p.Runtime, 'nodejs22.x', name);
      assert.deepEqual(p.Architectures, ['x86_64'], name);
      assert.equal(p.Handler, 'index.handler', name);
      assert.deepEqual(p.Layers, [{ Ref: layerId }], `${name} uses the deps layer`);
      assert.deepEqual(obj(p.TracingConfig), { Mode: 'Active' });
      const env = obj(obj(p.Environment).Variables);
      assert.deepEqual(env.RAW_BUCKET, { Ref: bucketIds.get('raw') });
      assert.deepEqual(env.WORK_BUCKET, { Ref: bucketIds.get('work') });
      assert.deepEqual(env.MODELS_BUCKET, { Ref: bucketIds.get('models') });
      assert.equal(env.NODE_OPTIONS, '--enable-source-maps');
      const tfjs = ['evaluate', 'inference'].includes(name);
      assert.equal(env.TFJS_WASM_PATH, tfjs ? '/opt/nodejs/node_modules/@tensorflow/tfjs-backend-wasm/dist/' : undefined, name);
    }
    const sizing = (name: string) => {
      const p = (resources[fnIds.get(name) as string] as Resource).Properties;
      return [p.MemorySize, p.Timeout];
    };
    assert.deepEqual(sizing('preprocess'), [2048, 120]);
    assert.deepEqual(sizing('segment'), [2048, 120]);
  });

  test('S3 notifications: raw/ -> preprocess, work processed/*.png -> segment', () => {
    const app = readNotifications();
    assert.deepEqual(app, [
      { bucket: 'raw', events: ['s3:ObjectCreated:*'], rules: { prefix: 'raw/' }, fn: 'preprocess' },
      { bucket: 'work', events: ['s3:ObjectCreated:*'], rules: { prefix: 'processed/', suffix: '.png' }, fn: 'segment' },
    ]);
  });

  test('no function can trigger itself, directly or through another (IAM write grants vs notifications)', () => {
    const notifications = readNotifications();
    const writes = new Map([...fnIds.keys()].map((name) => [name, writeGrants(name)]));
    // Where each function may write, as granted: the loop-free layout the handlers rely on.
    assert.deepEqual(writes.get('preprocess'), ['work:processed/*', 'work:quarantine/*']);
    assert.deepEqual(writes.get('segment'), ['work:segmented/*']);
    assert.deepEqual(writes.get('inference'), ['work:uploads/*'], 'inference only signs uploads, which trigger nothing');
    // Edges: F -> G when F may write under a key that G's notification listens to.
    const edges = new Map<string, string[]>();
    for (const [fn, grants] of writes) {
      const targets = notifications
        .filter((n) => grants.some((g) => overlaps(g, n.bucket, n.rules.prefix ?? '')))
        .map((n) => n.fn);
      edges.set(fn, targets);
    }
    assert.deepEqual(edges.get('preprocess'), ['segment'], 'preprocess output feeds segment');
    const cycle = findCycle(edges);
    assert.equal(cycle, undefined, `trigger loop: ${cycle?.join(' -> ')}`);
  });

  test('API: POST /predict, Lambda proxy, IAM auth, binary media types', () => {
    template.hasResourceProperties('AWS::ApiGateway::RestApi', {
      BinaryMediaTypes: ['image/*', 'application/octet-stream', 'multipart/form-data'],
    });
    template.hasResourceProperties('AWS::ApiGateway::Resource', { PathPart: 'predict' });
    const predictId = byType('AWS::ApiGateway::Resource').find(([, r]) => r.Properties.PathPart === 'predict')?.[0];
    const methods = byType('AWS::ApiGateway::Method').filter(([, r]) => ref(r.Properties.ResourceId) === predictId && r.Properties.HttpMethod === 'POST');
    assert.equal(methods.length, 1);
    const p = (methods[0] as [string, Resource])[1].Properties;
    assert.equal(p.HttpMethod, 'POST');
    assert.equal(p.AuthorizationType, 'AWS_IAM');
    const integration = obj(p.Integration);
    assert.equal(integration.Type, 'AWS_PROXY');
    assert.equal(integration.IntegrationHttpMethod, 'POST');
    assert.match(JSON.stringify(integration.Uri), new RegExp(fnIds.get('inference') as string));
  });

  test('state machine: STANDARD, logged and traced', () => {
    template.resourceCountIs('AWS::StepFunctions::StateMachine', 1);
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      StateMachineType: 'STANDARD',
      TracingConfiguration: { Enabled: true },
      LoggingConfiguration: Match.objectLike({ Level: 'ALL' }),
    });
  });

  test('outputs: bucket names, API URL, state machine ARN', () => {
    const outputs = Object.keys(template.toJSON().Outputs as Record<string, unknown>);
    for (const name of ['RawBucketName', 'WorkBucketName', 'ModelsBucketName', 'ApiUrl', 'StateMachineArn']) {
      assert.ok(outputs.includes(name), `output ${name}`);
    }
  });

  test('GPU training: one GPU per job, an attempt timeout, retries for infrastructure failures only', () => {
    const jobs = byType('AWS::Batch::JobDefinition');
    assert.equal(jobs.length, 1);
    const [, job] = jobs[0] as [string, Resource];
    assert.deepEqual(job.Properties.Tags, { [FUNCTION_TAG]: 'train' });
    assert.deepEqual(job.Properties.PlatformCapabilities, ['EC2']);
    const container = obj(job.Properties.ContainerProperties);
    assert.deepEqual(container.ResourceRequirements, [
      { Type: 'MEMORY', Value: '14336' },
      { Type: 'VCPU', Value: '4' },
      { Type: 'GPU', Value: '1' },
    ]);
    assert.deepEqual(job.Properties.Timeout, { AttemptDurationSeconds: 3600 });
    assert.deepEqual(job.Properties.RetryStrategy, {
      Attempts: 3,
      EvaluateOnExit: [
        { Action: 'RETRY', OnStatusReason: 'Host EC2*' },
        { Action: 'RETRY', OnReason: 'CannotPullContainerError:*' },
        { Action: 'EXIT', OnExitCode: '*' },
      ],
    });
    // The image is the stack's own repository at the configured tag (no Docker at synth).
    const repoId = byType('AWS::ECR::Repository')[0]?.[0];
    assert.match(JSON.stringify(container.Image), new RegExp(`"Ref":"${repoId}"\\},":latest"`));
    const env = Object.fromEntries(arr(container.Environment).map(obj).map((e) => [String(e.Name), e.Value]));
    assert.deepEqual(env.WORK_BUCKET, { Ref: bucketIds.get('work') });

    template.hasResourceProperties('AWS::Batch::ComputeEnvironment', {
      Type: 'managed',
      ComputeResources: Match.objectLike({
        InstanceTypes: ['g4dn.xlarge'],
        MinvCpus: 0,
        Ec2Configuration: [{ ImageType: 'ECS_AL2_NVIDIA' }],
      }),
    });
    // Public subnets only: no NAT gateway to pay for while no job runs.
    template.resourceCountIs('AWS::EC2::NatGateway', 0);
    template.resourceCountIs('AWS::EC2::FlowLog', 1);
  });

  test('least privilege per task: the train job role, its execution role, each step function, the state machine', () => {
    const [, job] = byType('AWS::Batch::JobDefinition')[0] as [string, Resource];
    const container = obj(job.Properties.ContainerProperties);
    const jobRole = getAtt(container.JobRoleArn) as string;
    const executionRole = getAtt(container.ExecutionRoleArn) as string;
    assert.notEqual(jobRole, executionRole);

    const jobStatements = statementsOf(jobRole);
    assert.ok(jobStatements.flatMap((st) => arr(st.Action)).every((a) => String(a).startsWith('s3:')), 'the job role only touches S3');
    assert.deepEqual(s3Grants(jobRole, 's3:PutObject'), ['work:runs/*/model/*', 'work:runs/*/train-output.json', 'work:runs/*/training.json']);
    assert.deepEqual(s3Grants(jobRole, 's3:GetObject'), ['work:runs/*', 'work:segmented/*']);
    assert.deepEqual(s3Grants(jobRole, 's3:DeleteObject'), []);

    const execActions = statementsOf(executionRole).flatMap((st) => arr(st.Action).map(String)).sort();
    assert.deepEqual(execActions, [
      'ecr:BatchCheckLayerAvailability',
      'ecr:BatchGetImage',
      'ecr:GetAuthorizationToken',
      'ecr:GetDownloadUrlForLayer',
      'logs:CreateLogStream',
      'logs:PutLogEvents',
    ]);

    const lambdaRole = (name: string) => getAtt((resources[fnIds.get(name) as string] as Resource).Properties.Role) as string;
    for (const name of ['prepare-dataset', 'evaluate']) {
      assert.deepEqual(s3Grants(lambdaRole(name), 's3:PutObject'), ['work:runs/*'], name);
    }
    assert.deepEqual(s3Grants(lambdaRole('evaluate'), 's3:GetObject'), ['work:runs/*', 'work:segmented/*']);
    // PrepareDataset also reads the published markers, to refuse a taken run id before training.
    assert.deepEqual(s3Grants(lambdaRole('prepare-dataset'), 's3:GetObject'), ['models:models/*/published.json', 'work:runs/*', 'work:segmented/*']);
    assert.deepEqual(s3Grants(lambdaRole('publish'), 's3:PutObject'), ['models:models/*']);
    assert.deepEqual(s3Grants(lambdaRole('publish'), 's3:GetObject'), ['models:models/*', 'work:runs/*']);

    const [, machine] = byType('AWS::StepFunctions::StateMachine')[0] as [string, Resource];
    const machineStatements = statementsOf(getAtt(machine.Properties.RoleArn) as string);
    const invoke = machineStatements.filter((st) => arr(st.Action).includes('lambda:InvokeFunction'));
    const invoked = new Set(invoke.flatMap((st) => arr(st.Resource)).map((r) => getAtt(r) ?? getAtt(arr(arr(obj(r)['Fn::Join'])[1])[0])));
    assert.deepEqual([...invoked].sort(), ['prepare-dataset', 'evaluate', 'publish'].map((n) => fnIds.get(n)).sort());
    const submit = machineStatements.find((st) => arr(st.Action).includes('batch:SubmitJob'));
    assert.ok(submit, 'the state machine may submit the job');
    const queueId = byType('AWS::Batch::JobQueue')[0]?.[0];
    assert.ok(arr(submit.Resource).some((r) => getAtt(r) === queueId || ref(r) === queueId), 'on the training queue');
  });

  test('state machine: Train submits the job to the training queue with the whole state as RUN_STATE', () => {
    const [, machine] = byType('AWS::StepFunctions::StateMachine')[0] as [string, Resource];
    // DefinitionString is an Fn::Join of JSON text and references: read the Train state's Parameters from it.
    const parts = arr(arr(obj(machine.Properties.DefinitionString)['Fn::Join'])[1]);
    const text = parts.map((p) => (typeof p === 'string' ? p : `<${getAtt(p) ?? ref(p)}>`)).join('');
    const jobId = byType('AWS::Batch::JobDefinition')[0]?.[0];
    const queueId = byType('AWS::Batch::JobQueue')[0]?.[0];
    const train = (JSON.parse(text) as { States: Record<string, JsonObject> }).States.Train as JsonObject;
    assert.deepEqual(train.Parameters, {
      JobDefinition: `<${jobId}>`,
      JobName: 'myeloscope-train',
      JobQueue: `<${queueId}>`,
      ContainerOverrides: { Environment: [{ Name: 'RUN_STATE', 'Value.$': 'States.JsonToString($)' }] },
    });
  });

  test('cdk-nag: no unacknowledged AwsSolutions or HIPAA Security finding', () => {
    const findings = nagPacks().flatMap((pack) =>
      pack.validateScope(stack).violations.flatMap((v) => v.violatingResources.map((r) => `${v.ruleName} at ${r.constructPath ?? r.resourceLogicalId}`)),
    );
    assert.deepEqual(findings, []);
  });

  /** The statements of every inline policy attached to a role. */
  function statementsOf(roleId: string): JsonObject[] {
    return byType('AWS::IAM::Policy')
      .filter(([, p]) => arr(p.Properties.Roles).some((r) => ref(r) === roleId))
      .flatMap(([, p]) => arr(obj(p.Properties.PolicyDocument).Statement).map(obj));
  }

  /** `role:keyPattern` of every S3 object resource the role may do `action` on. */
  function s3Grants(roleId: string, action: string): string[] {
    const roleOf = new Map([...bucketIds].map(([role, id]) => [id, role]));
    const out = new Set<string>();
    for (const st of statementsOf(roleId)) {
      if (st.Effect !== 'Allow' || !arr(st.Action).some((a) => iamMatches(String(a), action))) continue;
      for (const res of arr(st.Resource)) {
        const parts = arr(arr(obj(res)['Fn::Join'])[1]);
        const role = roleOf.get(getAtt(parts[0]) ?? '');
        if (role && typeof parts[1] === 'string') out.add(`${role}:${parts[1].replace(/^\//, '')}`);
        else if (getAtt(res) === undefined) out.add(`?:${JSON.stringify(res)}`);
      }
    }
    return [...out].sort();
  }

  /** The S3 notification configurations, by bucket role and function folder name. */
  function readNotifications() {
    const out: { bucket: string; events: Json[]; rules: Record<string, string>; fn: string }[] = [];
    const roleOf = new Map([...bucketIds].map(([role, id]) => [id, role]));
    const nameOf = new Map([...fnIds].map(([name, id]) => [id, name]));
    for (const [, r] of byType('Custom::S3BucketNotifications')) {
      const bucket = roleOf.get(String(obj(r.Properties.BucketName).Ref)) ?? '?';
      assert.deepEqual(arr(obj(r.Properties.NotificationConfiguration).QueueConfigurations), []);
      assert.deepEqual(arr(obj(r.Properties.NotificationConfiguration).TopicConfigurations), []);
      for (const c of arr(obj(r.Properties.NotificationConfiguration).LambdaFunctionConfigurations).map(obj)) {
        const rules = Object.fromEntries(
          arr(obj(obj(c.Filter).Key).FilterRules)
            .map(obj)
            .map((x) => [String(x.Name).toLowerCase(), String(x.Value)]),
        );
        out.push({ bucket, events: arr(c.Events), rules, fn: nameOf.get(getAtt(c.LambdaFunctionArn) ?? '') ?? '?' });
      }
    }
    return out.sort((a, b) => a.bucket.localeCompare(b.bucket));
  }

  /** `role:keyPattern` for every S3 object resource the function's role may create objects in. */
  function writeGrants(name: string): string[] {
    const fn = resources[fnIds.get(name) as string] as Resource;
    const roleId = getAtt(fn.Properties.Role);
    const roleOf = new Map([...bucketIds].map(([role, id]) => [id, role]));
    const out = new Set<string>();
    for (const [, policy] of byType('AWS::IAM::Policy')) {
      if (!arr(policy.Properties.Roles).some((r) => obj(r).Ref === roleId)) continue;
      for (const st of arr(obj(policy.Properties.PolicyDocument).Statement).map(obj)) {
        if (st.Effect !== 'Allow') continue;
        if (!arr(st.Action).some((a) => iamMatches(String(a), 's3:PutObject'))) continue;
        for (const res of arr(st.Resource)) {
          if (res === '*') {
            out.add('*:*');
            continue;
          }
          // { 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, '/prefix/*']] }
          const parts = arr(arr(obj(res)['Fn::Join'])[1]);
          const bucketId = getAtt(parts[0]);
          const role = bucketId ? roleOf.get(bucketId) : undefined;
          if (role && typeof parts[1] === 'string') out.add(`${role}:${parts[1].replace(/^\//, '')}`);
          else if (getAtt(res) === undefined) out.add(`?:${JSON.stringify(res)}`);
        }
      }
    }
    return [...out].sort();
  }
});

/** IAM action wildcard match. */
function iamMatches(pattern: string, action: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'i');
  return re.test(action);
}

/** Whether a grant `role:pattern` may write a key under `prefix` of bucket `bucket`. */
function overlaps(grant: string, bucket: string, prefix: string): boolean {
  const [role, pattern = ''] = grant.split(/:(.*)/s) as [string, string];
  if (role !== '*' && role !== bucket) return false;
  const literal = pattern.split('*')[0] as string;
  return literal.startsWith(prefix) || prefix.startsWith(literal);
}

function findCycle(edges: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, 'visiting' | 'done'>();
  const walk = (node: string, path: string[]): string[] | undefined => {
    if (state.get(node) === 'visiting') return [...path, node];
    if (state.get(node) === 'done') return undefined;
    state.set(node, 'visiting');
    for (const next of edges.get(node) ?? []) {
      const found = walk(next, [...path, node]);
      if (found) return found;
    }
    state.set(node, 'done');
    return undefined;
  };
  for (const node of edges.keys()) {
    const found = walk(node, []);
    if (found) return found;
  }
  return undefined;
}

describe('synthesizeLocal (the local cloud bridge)', () => {
  let local: LocalApp;
  let seconds = 0;

  before(async () => {
    const started = Date.now();
    local = await synthesizeLocal();
    seconds = (Date.now() - started) / 1000;
  });

  test('is quick: nothing is bundled', () => {
    assert.ok(seconds < 15, `took ${seconds} s`);
  });

  test('the training definition is valid ASL, in order, with each Task bound to its function', () => {
    const definition = local.stateMachine.definition;
    const result = aslValidator(structuredClone(definition));
    assert.ok(result.isValid, result.errorsText('\n'));

    const states = definition.States as Record<string, Record<string, unknown>>;
    assert.equal(definition.StartAt, 'PrepareDataset');
    assert.equal(definition.TimeoutSeconds, 6 * 3600);
    const order: string[] = [];
    for (let name: unknown = definition.StartAt; typeof name === 'string'; name = states[name]?.Next ?? states[name]?.Default) order.push(name);
    assert.deepEqual(order, ['PrepareDataset', 'Train', 'TrainOutputs', 'MergeTrainOutputs', 'Evaluate', 'QualityGate', 'Publish', 'RunSucceeded']);
    assert.equal(states.RunSucceeded?.Type, 'Succeed');
    assert.equal(states.RunFailed?.Type, 'Fail');
    assert.deepEqual(states.PrepareDatasetFailed, {
      Type: 'Fail',
      Comment: 'PrepareDataset failed (usually on the execution input): its error and cause.',
      ErrorPath: '$.Error',
      CausePath: '$.Cause',
    });

    for (const { state, fn } of TRAINING_STEPS) {
      const s = states[state] as Record<string, unknown>;
      assert.equal(s.Type, 'Task');
      assert.equal(local.stateMachine.taskFunctions[state], fn);
      // The first step's state may not be an object (any JSON is a valid execution input): its error replaces it.
      const caught = state === 'PrepareDataset' ? { Next: 'PrepareDatasetFailed' } : { ResultPath: '$.error', Next: 'RunFailed' };
      assert.deepEqual(s.Catch, [{ ErrorEquals: ['States.ALL'], ...caught }]);
      const retry = s.Retry as { ErrorEquals: string[]; BackoffRate?: number }[];
      if (state === 'Train') continue;
      assert.equal(s.Resource, localFunctionArn(fn), `${state} invokes ${fn} directly (payloadResponseOnly)`);
      assert.ok(retry.some((r) => r.ErrorEquals.includes('Lambda.ServiceException') && (r.BackoffRate ?? 1) > 1), `${state} retries`);
      assert.equal(s.ResultPath, undefined, `${state} returns the whole new state`);
      assert.equal(s.TimeoutSeconds, 900, `${state} timeout`);
    }
    assert.deepEqual(states.PrepareDataset?.Parameters, { 'input.$': '$', 'executionName.$': '$$.Execution.Name' });
    assert.deepEqual(Object.keys(local.stateMachine.taskFunctions).sort(), TRAINING_STEPS.map((s) => s.state).sort());
  });

  test('Train submits the GPU job with the state, waits for it, keeps its input, retries and times out', () => {
    const train = (local.stateMachine.definition.States as Record<string, Record<string, Json>>).Train as Record<string, Json>;
    assert.equal(train.Resource, 'arn:aws:states:::batch:submitJob.sync');
    const p = obj(train.Parameters);
    assert.equal(p.JobDefinition, localJobDefinitionArn('train'));
    assert.equal(p.JobQueue, LOCAL_JOB_QUEUE_ARN);
    assert.deepEqual(obj(p.ContainerOverrides).Environment, [{ Name: 'RUN_STATE', 'Value.$': 'States.JsonToString($)' }]);
    assert.equal(p.Timeout, undefined, 'the job definition keeps its per-attempt timeout');
    assert.equal(train.ResultPath, null, 'the job description does not replace the run state');
    assert.equal(train.TimeoutSeconds, 4 * 3600, 'queueing plus three one-hour attempts');
    assert.deepEqual(train.Retry, [
      { ErrorEquals: ['Batch.AWSBatchException', 'Batch.ServerException'], IntervalSeconds: 10, MaxAttempts: 4, BackoffRate: 2, JitterStrategy: 'FULL' },
    ]);
    const states = local.stateMachine.definition.States as Record<string, Record<string, Json>>;
    assert.deepEqual(obj(states.TrainOutputs?.Parameters).outputs, {
      'modelUri.$': `States.Format('s3://${LOCAL_BUCKET_NAMES.work}/runs/{}/model/', $.runId)`,
      'trainingUri.$': `States.Format('s3://${LOCAL_BUCKET_NAMES.work}/runs/{}/training.json', $.runId)`,
    });
  });

  test('the quality gate: a missing, null or low ROC AUC fails the run before Publish', () => {
    const states = local.stateMachine.definition.States as Record<string, Record<string, Json>>;
    assert.equal(states.Evaluate?.Next, 'QualityGate');
    const gate = states.QualityGate as Record<string, Json>;
    assert.equal(gate.Type, 'Choice');
    assert.equal(gate.Default, 'Publish');
    assert.deepEqual(gate.Choices, [
      { Not: { Variable: '$.metrics.rocAuc', IsPresent: true }, Next: 'RocAucMissing' },
      { Variable: '$.metrics.rocAuc', IsNull: true, Next: 'RocAucMissing' },
      { Variable: '$.metrics.rocAuc', NumericLessThanPath: '$.params.minRocAuc', Next: 'RocAucBelowGate' },
    ]);
    for (const reason of ['RocAucMissing', 'RocAucBelowGate']) assert.equal(states[reason]?.Next, QUALITY_GATE_FAILED_STATE);
    assert.deepEqual(states[QUALITY_GATE_FAILED_STATE], {
      Type: 'Fail',
      Comment: 'The held-out ROC AUC is missing or below params.minRocAuc: nothing was published.',
      Error: QUALITY_GATE_FAILED_STATE,
      CausePath: '$.qualityGate.cause',
    });
  });

  test('functions, notifications and routes are read from the template', () => {
    assert.deepEqual(Object.keys(local.functions).sort(), [...FUNCTION_NAMES].sort());
    assert.equal(local.functions.preprocess?.memoryMB, 2048);
    assert.equal(local.functions.preprocess?.kind, 'lambda');
    assert.equal(local.functions.train?.kind, 'batch');
    assert.equal(local.functions.train?.timeoutSeconds, 3600);
    assert.deepEqual(local.functions.train?.environment.WORK_BUCKET, { Ref: local.buckets.work.logicalId });
    assert.deepEqual(local.functions.segment?.environment.WORK_BUCKET, { Ref: local.buckets.work.logicalId });
    assert.deepEqual(
      local.notifications.map((n) => [n.bucket, n.prefix, n.suffix, n.function, n.events]),
      [
        ['raw', 'raw/', undefined, 'preprocess', ['s3:ObjectCreated:*']],
        ['work', 'processed/', '.png', 'segment', ['s3:ObjectCreated:*']],
      ],
    );
    assert.deepEqual(
      local.api.routes.filter((r) => r.path === '/predict'),
      [{ method: 'POST', path: '/predict', function: 'inference', authorizationType: 'AWS_IAM' }],
    );
    assert.deepEqual(local.api.binaryMediaTypes, ['image/*', 'application/octet-stream', 'multipart/form-data']);
  });
});

describe('quality gate (the synthesized definition run by the local ASL interpreter, stub handlers)', () => {
  let local: LocalApp;
  before(async () => {
    local = await synthesizeLocal();
  });

  /** Runs the workflow with handlers that only pass the state on; Evaluate reports `rocAuc`. */
  async function run(rocAuc: number | null | undefined, input: Record<string, unknown> = {}) {
    const calls: { fn: string; input: Record<string, unknown> }[] = [];
    const stub = (fn: string, step: (state: Record<string, unknown>) => unknown) => async (event: unknown) => {
      calls.push({ fn, input: event as Record<string, unknown> });
      return step(event as Record<string, unknown>);
    };
    const handlers = {
      'prepare-dataset': stub('prepare-dataset', (e) => ({
        runId: 'gate-run',
        params: { minRocAuc: 0.75, ...(e.input as object) },
        manifestUri: `s3://${LOCAL_BUCKET_NAMES.work}/runs/gate-run/manifest.json`,
        counts: { train: 1, val: 1, test: 1, sources: 3 },
      })),
      // Stands for the Batch job: whatever it returns, Train's ResultPath null keeps the state.
      train: stub('train', () => ({ JobId: 'job-1', Status: 'SUCCEEDED' })),
      evaluate: stub('evaluate', (s) => ({ ...s, metrics: { accuracy: 0.8, testCells: 10, testImages: 2, ...(rocAuc === undefined ? {} : { rocAuc }) } })),
      publish: stub('publish', (s) => ({ ...s, publishedUri: 's3://models/x/' })),
    };
    const result = await runExecution(local.stateMachine.definition, local.stateMachine.taskFunctions, handlers, input, { name: `gate-${String(rocAuc)}` });
    return { result, calls: calls.map((c) => c.fn), inputOf: (fn: string) => calls.find((c) => c.fn === fn)?.input };
  }

  test('ROC AUC at or above minRocAuc: published', async () => {
    const { result, calls, inputOf } = await run(0.9);
    assert.equal(result.status, 'SUCCEEDED', `${result.error}: ${result.cause}`);
    assert.deepEqual(calls, ['prepare-dataset', 'train', 'evaluate', 'publish']);
    assert.ok('Publish' in result.timings);
    // Evaluate gets the state as PrepareDataset left it, plus the train step's output URIs.
    assert.deepEqual(inputOf('evaluate'), {
      ...inputOf('train'),
      modelUri: `s3://${LOCAL_BUCKET_NAMES.work}/runs/gate-run/model/`,
      trainingUri: `s3://${LOCAL_BUCKET_NAMES.work}/runs/gate-run/training.json`,
    });
  });

  test('ROC AUC below minRocAuc: QualityGateFailed with the metric and the threshold, nothing published', async () => {
    const { result, calls } = await run(0.6);
    assert.equal(result.status, 'FAILED');
    assert.equal(result.error, QUALITY_GATE_FAILED_STATE);
    assert.match(result.cause ?? '', /ROC AUC 0\.6 is below the quality gate minRocAuc 0\.75/);
    assert.ok(!calls.includes('publish'));
  });

  test('no ROC AUC (null or absent): QualityGateFailed, nothing published', async () => {
    for (const rocAuc of [null, undefined]) {
      const { result, calls } = await run(rocAuc);
      assert.equal(result.status, 'FAILED', String(rocAuc));
      assert.equal(result.error, QUALITY_GATE_FAILED_STATE);
      assert.match(result.cause ?? '', /no held-out ROC AUC/);
      assert.ok(!calls.includes('publish'));
    }
  });

  test('the threshold comes from the execution input', async () => {
    const { result, calls } = await run(0.6, { minRocAuc: 0.5 });
    assert.equal(result.status, 'SUCCEEDED', `${result.error}: ${result.cause}`);
    assert.ok(calls.includes('publish'));
  });
});

describe('bundling (real esbuild and layer build)', () => {
  /** Synthesizes one function with real bundling and returns the asset directories of its code and layer. */
  function bundle(name: 'inference' | 'segment', withLayer: boolean) {
    const outdir = tempDir('myeloscope-bundle-');
    const app = new App({ outdir, context: cdkJsonContext(), builtinCloudFormationValidation: false });
    const stack = new Stack(app, 'BundleProbe');
    const depsLayer = withLayer ? new DepsLayer(stack, 'Deps') : undefined;
    new HandlerFunction(stack, 'Fn', { name, depsLayer, usesTfjsWasm: name === 'inference' });
    const template = Template.fromStack(stack).toJSON() as { Resources: Record<string, Resource> };
    const assetDir = (key: Json | undefined) => join(outdir, `asset.${String(key).replace(/\.zip$/, '')}`);
    const fn = Object.values(template.Resources).find((r) => r.Type === 'AWS::Lambda::Function' && tag(r, FUNCTION_TAG) === name);
    const layer = Object.values(template.Resources).find((r) => r.Type === 'AWS::Lambda::LayerVersion');
    return {
      code: assetDir(obj(fn?.Properties.Code).S3Key),
      layer: layer ? assetDir(obj(layer.Properties.Content).S3Key) : undefined,
    };
  }

  /** Imports <dir>/index.mjs in a fresh Node process, as the Lambda runtime would, and calls the handler. */
  function invoke(taskDir: string, event: unknown, env: Record<string, string> = {}) {
    const script = `const m = await import(${JSON.stringify(join(taskDir, 'index.mjs'))});
      if (typeof m.handler !== 'function') throw new Error('no handler export');
      console.log(JSON.stringify(await m.handler(${JSON.stringify(event)})));`;
    const run = spawnSync(process.execPath, ['--enable-source-maps', '--input-type=module', '-e', script], {
      cwd: taskDir,
      encoding: 'utf8',
      timeout: 60_000,
      env: {
        PATH: process.env.PATH ?? '',
        AWS_REGION: 'us-east-1',
        RAW_BUCKET: 'raw',
        WORK_BUCKET: 'work',
        MODELS_BUCKET: 'models',
        ...env,
      },
    });
    assert.equal(run.status, 0, `${run.stderr}\n${run.stdout}`);
    return JSON.parse(run.stdout.trim().split('\n').pop() as string) as Record<string, unknown>;
  }

  test('inference bundles into one ES module that loads sharp and OpenCV.js from the layer', () => {
    const { code, layer } = bundle('inference', true);
    assert.ok(layer);
    assert.deepEqual(readdirSync(code).sort(), ['index.mjs', 'index.mjs.map']);
    const modules = join(layer, 'nodejs', 'node_modules');
    for (const file of [
      'sharp/package.json',
      '@img/sharp-linux-x64/package.json',
      '@img/sharp-libvips-linux-x64/package.json',
      '@techstark/opencv-js/dist/opencv.js',
      '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm',
      '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm',
    ]) {
      assert.ok(existsSync(join(modules, file)), `layer has ${file}`);
    }
    const bundleText = readFileSync(join(code, 'index.mjs'), 'utf8');
    assert.doesNotMatch(bundleText, /opencv\.js/, 'OpenCV.js is not inlined');
    // /var/task and /opt/nodejs/node_modules, side by side: the bundle must find its externals there only.
    const sim = tempDir('myeloscope-lambda-');
    cpSync(code, join(sim, 'task'), { recursive: true });
    symlinkSync(modules, join(sim, 'node_modules'), 'dir');
    const response = invoke(join(sim, 'task'), { httpMethod: 'GET' }, { TFJS_WASM_PATH: join(modules, '@tensorflow/tfjs-backend-wasm/dist/') });
    // A request no route takes (405 or 404 by the handler's routing): the bundle loaded and answered.
    assert.ok([404, 405].includes(Number(response.statusCode)), `status ${String(response.statusCode)}`);
  });

  test('without a layer (LocalStack Community) the deps are copied into the bundle', () => {
    const { code, layer } = bundle('segment', false);
    assert.equal(layer, undefined);
    assert.ok(existsSync(join(code, 'node_modules', 'sharp', 'package.json')));
    assert.ok(existsSync(join(code, 'node_modules', '@techstark', 'opencv-js', 'dist', 'opencv.js')));
    const response = invoke(code, { Records: [] });
    assert.deepEqual(response, { results: [] });
  });
});
