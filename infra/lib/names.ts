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

/** States of the training workflow, in order, and the function each one invokes. */
export const TRAINING_STEPS = [
  { state: 'PrepareDataset', fn: 'prepare-dataset' },
  { state: 'Train', fn: 'train' },
  { state: 'Evaluate', fn: 'evaluate' },
  { state: 'Publish', fn: 'publish' },
] as const satisfies readonly { state: string; fn: FunctionName }[];

/** Where a failed execution ends. */
export const RUN_FAILED_STATE = 'RunFailed';
/** Where a successful execution ends. */
export const RUN_SUCCEEDED_STATE = 'RunSucceeded';

/** The stack's id (and CloudFormation name). */
export const STACK_NAME = 'Myeloscope';
