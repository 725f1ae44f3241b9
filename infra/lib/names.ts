/**
 * Names shared by the CDK app and the local cloud, which maps the synthesized template back to code by
 * these tags and state names: change them in one place only.
 */

/** Tag on every handler Lambda function: its folder under functions/. */
export const FUNCTION_TAG = 'myeloscope:function';
/** Tag on every bucket: its role. */
export const BUCKET_TAG = 'myeloscope:bucket';

export const BUCKET_ROLES = ['raw', 'work', 'models'] as const;
export type BucketRole = (typeof BUCKET_ROLES)[number];

/** Folders under functions/, each with an index.ts exporting `handler`. */
export const FUNCTION_NAMES = [
  'preprocess',
  'segment',
  'prepare-dataset',
  'train',
  'evaluate',
  'publish',
  'inference',
] as const;
export type FunctionName = (typeof FUNCTION_NAMES)[number];

/**
 * Folders that run as an AWS Batch GPU job rather than a Lambda function: the job definition carries the
 * same FUNCTION_TAG, and functions/<name>/container.ts calls the same `handler`.
 */
export const CONTAINER_FUNCTION_NAMES = ['train'] as const satisfies readonly FunctionName[];
export type ContainerFunctionName = (typeof CONTAINER_FUNCTION_NAMES)[number];
export type LambdaFunctionName = Exclude<FunctionName, ContainerFunctionName>;
/** The folders deployed as Lambda functions. */
export const LAMBDA_FUNCTION_NAMES = FUNCTION_NAMES.filter(
  (name): name is LambdaFunctionName => !(CONTAINER_FUNCTION_NAMES as readonly string[]).includes(name),
);

/** Task states of the training workflow, in order, and the function folder each one runs (Train: as a Batch job). */
export const TRAINING_STEPS = [
  { state: 'PrepareDataset', fn: 'prepare-dataset' },
  { state: 'Train', fn: 'train' },
  { state: 'Evaluate', fn: 'evaluate' },
  { state: 'Publish', fn: 'publish' },
] as const satisfies readonly { state: string; fn: FunctionName }[];

/** Adds the train step's output URIs, which the Batch job cannot return, to the state. */
export const TRAIN_OUTPUTS_STATE = 'TrainOutputs';
/** The Choice after Evaluate: publish only if the held-out ROC AUC reaches params.minRocAuc. */
export const QUALITY_GATE_STATE = 'QualityGate';
/** Where a run below the quality gate ends (nothing published). */
export const QUALITY_GATE_FAILED_STATE = 'QualityGateFailed';

/** Where a failed execution ends. */
export const RUN_FAILED_STATE = 'RunFailed';
/** Where a failure of the first step (PrepareDataset) ends: see training-workflow.ts. */
export const RUN_INPUT_FAILED_STATE = 'PrepareDatasetFailed';
/** Where a successful execution ends. */
export const RUN_SUCCEEDED_STATE = 'RunSucceeded';

/** The stack's id (and CloudFormation name). */
export const STACK_NAME = 'Myeloscope';
