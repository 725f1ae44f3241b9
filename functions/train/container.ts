/**
 * Entry point of the GPU training container (functions/train/Dockerfile, run by AWS Batch): the run state
 * arrives as JSON in RUN_STATE (the Step Functions task's container override), the same `handler` as the
 * local cloud trains the model, and its return value goes to runs/<runId>/train-output.json, since a Batch
 * job cannot hand a value back to the state machine. A non-zero exit code fails the job.
 */
import { runKeys } from '../../layers/core/src/keys.ts';
import type { RunState } from '../../layers/core/src/workflow.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { log } from '../../layers/aws/src/events.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { handler } from './index.ts';

/** Next to training.json; the job role may write it (infra/lib/gpu-training.ts TRAIN_OUTPUT_FILE). */
const OUTPUT_FILE = 'train-output.json';

function readState(env: NodeJS.ProcessEnv): RunState {
  const text = env.RUN_STATE;
  if (!text) throw new Error('RUN_STATE is not set: the job must be submitted by the training state machine');
  const state = JSON.parse(text) as unknown;
  if (state === null || typeof state !== 'object' || typeof (state as { runId?: unknown }).runId !== 'string') {
    throw new Error('RUN_STATE is not a run state (no runId)');
  }
  return state as RunState;
}

async function main(): Promise<number> {
  try {
    const state = readState(process.env);
    const output = await handler(state);
    const key = `${runKeys(state.runId).dir}${OUTPUT_FILE}`;
    const work = new S3Store(bucketName('work'));
    await work.putJson(key, output);
    log('info', 'training output written', { runId: state.runId, uri: work.uri(key) });
    return 0;
  } catch (err) {
    log('error', 'training failed', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    return 1;
  }
}

// Exit explicitly: native TensorFlow keeps threads alive that would hold the process (and the GPU) open.
process.exit(await main());
