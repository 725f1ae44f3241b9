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
import { FUNCTION_NAMES, type FunctionName } from './names.ts';
import { Storage } from './storage.ts';
import { TrainingWorkflow } from './training-workflow.ts';

/** Context key: `true` copies the deps into every function bundle instead of a layer (LocalStack Community). */
export const DEPS_IN_BUNDLE_CONTEXT = 'myeloscope:depsInBundle';

interface FunctionSizing {
  memorySize: number;
  timeout: Duration;
  usesTfjsWasm?: boolean;
}

const SIZING: Record<FunctionName, FunctionSizing> = {
  preprocess: { memorySize: 2048, timeout: Duration.minutes(2) },
  segment: { memorySize: 2048, timeout: Duration.minutes(2) },
  'prepare-dataset': { memorySize: 1024, timeout: Duration.minutes(5) },
  // Lambda's ceiling for now; training moves to a GPU container later.
  train: { memorySize: 10240, timeout: Duration.minutes(15), usesTfjsWasm: true },
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
  readonly functions: Record<FunctionName, HandlerFunction>;
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
      FUNCTION_NAMES.map((name) => [
        name,
        new HandlerFunction(this, `${pascalCase(name)}Function`, { name, ...SIZING[name], environment, depsLayer }),
      ]),
    ) as Record<FunctionName, HandlerFunction>;

    // Least privilege, by key prefix. No function may write where its own trigger listens: preprocess is
    // triggered by raw/ and writes only to work; segment is triggered by work processed/*.png and writes
    // only segmented/. (Read grants include s3:ListBucket, so a missing key is a 404, not a 403.)
    const { raw, work, models } = storage;
    raw.grantRead(fns.preprocess, `${RAW_PREFIX}*`);
    work.grantRead(fns.preprocess, `${PROCESSED_PREFIX}*`);
    work.grantPut(fns.preprocess, `${PROCESSED_PREFIX}*`);
    work.grantPut(fns.preprocess, `${QUARANTINE_PREFIX}*`);
    work.grantDelete(fns.preprocess, `${QUARANTINE_PREFIX}*`);

    work.grantRead(fns.segment, `${PROCESSED_PREFIX}*`);
    work.grantRead(fns.segment, `${SEGMENTED_PREFIX}*`);
    work.grantPut(fns.segment, `${SEGMENTED_PREFIX}*`);

    for (const fn of [fns['prepare-dataset'], fns.train, fns.evaluate]) {
      work.grantRead(fn, `${SEGMENTED_PREFIX}*`);
      work.grantRead(fn, `${RUNS_PREFIX}*`);
      work.grantPut(fn, `${RUNS_PREFIX}*`);
    }

    work.grantRead(fns.publish, `${RUNS_PREFIX}*`);
    models.grantRead(fns.publish, `${MODELS_PREFIX}*`);
    models.grantPut(fns.publish, `${MODELS_PREFIX}*`);

    models.grantRead(fns.inference, `${MODELS_PREFIX}*`);

    raw.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.LambdaDestination(fns.preprocess), {
      prefix: RAW_PREFIX,
    });
    work.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.LambdaDestination(fns.segment), {
      prefix: PROCESSED_PREFIX,
      suffix: PROCESSED_SUFFIX,
    });

    const training = new TrainingWorkflow(this, 'Training', {
      functions: {
        'prepare-dataset': fns['prepare-dataset'],
        train: fns.train,
        evaluate: fns.evaluate,
        publish: fns.publish,
      },
    });
    const api = new InferenceApi(this, 'Inference', { handler: fns.inference });

    new CfnOutput(this, 'RawBucketName', { value: raw.bucketName, description: 'Upload images under raw/' });
    new CfnOutput(this, 'WorkBucketName', { value: work.bucketName });
    new CfnOutput(this, 'ModelsBucketName', { value: models.bucketName });
    new CfnOutput(this, 'ApiUrl', { value: api.api.url, description: 'Base URL of the inference API' });
    new CfnOutput(this, 'PredictUrl', { value: api.predictUrl, description: 'POST an image here (SigV4-signed)' });
    new CfnOutput(this, 'StateMachineArn', { value: training.stateMachine.stateMachineArn });

    this.storage = storage;
    this.functions = fns;
    this.training = training;
    this.api = api;
  }
}

function pascalCase(name: string): string {
  return name.replace(/(^|-)([a-z])/g, (_m, _dash: string, c: string) => c.toUpperCase());
}
