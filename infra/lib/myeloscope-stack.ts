import { CfnOutput, Duration, Stack, type StackProps } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import type { Construct } from 'constructs';
import {
  MODELS_PREFIX,
  PROCESSED_PREFIX,
  PROCESSED_SUFFIX,
  QUARANTINE_PREFIX,
  RAW_PREFIX,
  RUNS_PREFIX,
  SEGMENTED_PREFIX,
} from '../../layers/core/src/keys.ts';
import { DepsLayer } from './deps-layer.ts';
import { HandlerFunction } from './handler-function.ts';
import { InferenceApi } from './inference-api.ts';
import { GpuTraining, TRAIN_IMAGE_TAG_CONTEXT } from './gpu-training.ts';
import { ack } from './nag.ts';
import { LAMBDA_FUNCTION_NAMES, type LambdaFunctionName } from './names.ts';
import { Network } from './network.ts';
import { Storage } from './storage.ts';
import { TrainingWorkflow } from './training-workflow.ts';

/** Context key: `true` copies the deps into every function bundle instead of a layer (LocalStack Community). */
export const DEPS_IN_BUNDLE_CONTEXT = 'myeloscope:depsInBundle';

interface FunctionSizing {
  memorySize: number;
  timeout: Duration;
  usesTfjsWasm?: boolean;
}

const SIZING: Record<LambdaFunctionName, FunctionSizing> = {
  preprocess: { memorySize: 2048, timeout: Duration.minutes(2) },
  segment: { memorySize: 2048, timeout: Duration.minutes(2) },
  'prepare-dataset': { memorySize: 1024, timeout: Duration.minutes(5) },
  evaluate: { memorySize: 4096, timeout: Duration.minutes(10), usesTfjsWasm: true },
  publish: { memorySize: 1024, timeout: Duration.minutes(2) },
  // API Gateway gives up after 29 s: a longer timeout would only bill for answers nobody receives.
  inference: { memorySize: 3008, timeout: Duration.seconds(29), usesTfjsWasm: true },
};

export type MyeloscopeStackProps = StackProps;

/**
 * Myeloscope: S3-triggered preprocessing and segmentation, a Step Functions training workflow and an
 * inference API. This stack only wires the constructs; each one documents its own choices.
 */
export class MyeloscopeStack extends Stack {
  readonly storage: Storage;
  readonly functions: Record<LambdaFunctionName, HandlerFunction>;
  readonly network: Network;
  readonly gpuTraining: GpuTraining;
  readonly training: TrainingWorkflow;
  readonly api: InferenceApi;

  constructor(scope: Construct, id: string, props: MyeloscopeStackProps = {}) {
    super(scope, id, props);
    const storage = new Storage(this, 'Storage');
    // Context values from the command line (-c) arrive as strings.
    const depsInBundle = String(this.node.tryGetContext(DEPS_IN_BUNDLE_CONTEXT)) === 'true';
    const depsLayer = depsInBundle ? undefined : new DepsLayer(this, 'DepsLayer');

    const environment = {
      RAW_BUCKET: storage.raw.bucketName,
      WORK_BUCKET: storage.work.bucketName,
      MODELS_BUCKET: storage.models.bucketName,
    };
    const fns = Object.fromEntries(
      LAMBDA_FUNCTION_NAMES.map((name) => [
        name,
        new HandlerFunction(this, `${pascalCase(name)}Function`, { name, ...SIZING[name], environment, depsLayer }),
      ]),
    ) as Record<LambdaFunctionName, HandlerFunction>;

    // Least privilege, by key prefix. No function may write where its own trigger listens: preprocess is
    // triggered by raw/ and writes only to work; segment is triggered by work processed/*.png and writes
    // only segmented/. (Read grants include s3:ListBucket, so a missing key is a 404, not a 403.)
    const { raw, work, models } = storage;
    const read = (bucket: s3.Bucket, fn: HandlerFunction, prefix: string) => grant('read', bucket, fn, prefix);
    const put = (bucket: s3.Bucket, fn: HandlerFunction, prefix: string) => grant('put', bucket, fn, prefix);
    read(raw, fns.preprocess, `${RAW_PREFIX}*`);
    read(work, fns.preprocess, `${PROCESSED_PREFIX}*`);
    put(work, fns.preprocess, `${PROCESSED_PREFIX}*`);
    put(work, fns.preprocess, `${QUARANTINE_PREFIX}*`);
    grant('delete', work, fns.preprocess, `${QUARANTINE_PREFIX}*`);

    read(work, fns.segment, `${PROCESSED_PREFIX}*`);
    read(work, fns.segment, `${SEGMENTED_PREFIX}*`);
    put(work, fns.segment, `${SEGMENTED_PREFIX}*`);

    for (const fn of [fns['prepare-dataset'], fns.evaluate]) {
      read(work, fn, `${SEGMENTED_PREFIX}*`);
      read(work, fn, `${RUNS_PREFIX}*`);
      put(work, fn, `${RUNS_PREFIX}*`);
    }
    // PrepareDataset refuses a run id that is already published, before anything is trained or written.
    read(models, fns['prepare-dataset'], `${MODELS_PREFIX}*/published.json`);

    read(work, fns.publish, `${RUNS_PREFIX}*`);
    read(models, fns.publish, `${MODELS_PREFIX}*`);
    put(models, fns.publish, `${MODELS_PREFIX}*`);

    read(models, fns.inference, `${MODELS_PREFIX}*`);

    raw.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.LambdaDestination(fns.preprocess), {
      prefix: RAW_PREFIX,
    });
    work.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.LambdaDestination(fns.segment), {
      prefix: PROCESSED_PREFIX,
      suffix: PROCESSED_SUFFIX,
    });

    // Training runs on a GPU in AWS Batch (see gpu-training.ts); its S3 grants are the job role's.
    const network = new Network(this, 'Network');
    const imageTag = this.node.tryGetContext(TRAIN_IMAGE_TAG_CONTEXT) as string | undefined;
    const gpuTraining = new GpuTraining(this, 'GpuTraining', {
      vpc: network.vpc,
      workBucket: work,
      ...(imageTag ? { imageTag: String(imageTag) } : {}),
    });

    const training = new TrainingWorkflow(this, 'Training', {
      functions: {
        'prepare-dataset': fns['prepare-dataset'],
        evaluate: fns.evaluate,
        publish: fns.publish,
      },
      trainJob: {
        jobQueue: gpuTraining.jobQueue,
        jobDefinition: gpuTraining.jobDefinition,
        // Every attempt of the job, plus an hour to get a Spot GPU instance.
        timeout: Duration.minutes(gpuTraining.attempts * gpuTraining.attemptTimeout.toMinutes() + 60),
      },
      workBucket: work,
    });
    // Presigned uploads for images above the API payload limit: inference signs PUTs to, and reads, work uploads/*.
    read(work, fns.inference, 'uploads/*');
    put(work, fns.inference, 'uploads/*');
    const api = new InferenceApi(this, 'Inference', { handler: fns.inference });
    // inference-api.ts is another team's file: its findings are acknowledged here, on its constructs.
    ackApi(api);

    // CDK's singleton that configures the S3 notifications at deploy time.
    for (const child of this.node.children) {
      if (!child.node.id.startsWith('BucketNotificationsHandler')) continue;
      ack(child, {
        'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]':
          "CDK's deploy-time notifications handler: the AWS-managed logging policy.",
      });
    }
    for (const bucket of [raw, work]) {
      ack(bucket, {
        'HIPAA.Security-IAMNoInlinePolicy': "CDK's notifications handler policy (s3:PutBucketNotification on this bucket only).",
      });
    }

    new CfnOutput(this, 'RawBucketName', { value: raw.bucketName, description: 'Upload images under raw/' });
    new CfnOutput(this, 'WorkBucketName', { value: work.bucketName });
    new CfnOutput(this, 'ModelsBucketName', { value: models.bucketName });
    new CfnOutput(this, 'ApiUrl', { value: api.api.url, description: 'Base URL of the inference API' });
    new CfnOutput(this, 'PredictUrl', { value: api.predictUrl, description: 'POST an image here (SigV4-signed)' });
    new CfnOutput(this, 'StateMachineArn', { value: training.stateMachine.stateMachineArn });
    new CfnOutput(this, 'TrainImageRepositoryUri', {
      value: gpuTraining.repository.repositoryUri,
      description: 'Push the image of functions/train/Dockerfile here (see infra/README.md)',
    });

    this.storage = storage;
    this.functions = fns;
    this.network = network;
    this.gpuTraining = gpuTraining;
    this.training = training;
    this.api = api;
  }
}

/** S3 grant by key prefix, with its cdk-nag acknowledgements (CDK's action groups, a prefix wildcard). */
function grant(kind: 'read' | 'put' | 'delete', bucket: s3.Bucket, fn: HandlerFunction, prefix: string): void {
  if (kind === 'read') bucket.grantRead(fn, prefix);
  else if (kind === 'put') bucket.grantPut(fn, prefix);
  else bucket.grantDelete(fn, prefix);
  const actions = { read: ['s3:GetObject*', 's3:GetBucket*', 's3:List*'], put: ['s3:Abort*'], delete: ['s3:DeleteObject*'] }[kind];
  const bucketId = Stack.of(bucket).getLogicalId(bucket.node.defaultChild as s3.CfnBucket);
  ack(fn, {
    ...Object.fromEntries(
      actions.map((a) => [`AwsSolutions-IAM5[Action::${a}]`, `The action group of the CDK S3 ${kind} grant, limited to ${prefix}.`]),
    ),
    [`AwsSolutions-IAM5[Resource::<${bucketId}.Arn>/${prefix}]`]: `Keys under ${prefix}: the prefix this function's step owns.`,
  });
}

function pascalCase(name: string): string {
  return name.replace(/(^|-)([a-z])/g, (_m, _dash: string, c: string) => c.toUpperCase());
}

/** cdk-nag findings on the inference API that are choices, not omissions. */
function ackApi(api: InferenceApi): void {
  ack(api.api, {
    'AwsSolutions-APIG2': 'The Lambda validates the body itself (content type, size, decodable image) and answers 400/415.',
    'AwsSolutions-COG4': 'IAM (SigV4) authorization: callers are AWS principals, not Cognito users.',
  });
  ack(api.api.deploymentStage, {
    'AwsSolutions-APIG1': 'Access logging needs the account-wide API Gateway CloudWatch role, which this stack leaves to the account owner.',
    'AwsSolutions-APIG3': 'IAM-authorized, throttled regional API for a few research users: WAF would cost more than the API.',
    'AwsSolutions-APIG6': 'Execution logging needs the account-wide API Gateway CloudWatch role; the Lambda logs every request.',
    'HIPAA.Security-APIGWCacheEnabledAndEncrypted': 'Every prediction is computed from the posted image: there is nothing to cache.',
    'HIPAA.Security-APIGWExecutionLoggingEnabled': 'Execution logging needs the account-wide API Gateway CloudWatch role; the Lambda logs every request.',
    'HIPAA.Security-APIGWSSLEnabled': 'The integration is Lambda (AWS_PROXY), not an HTTP backend: a client certificate would have no one to verify it.',
  });
}
