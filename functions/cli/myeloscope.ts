#!/usr/bin/env -S npx tsx
/**
 * `myeloscope`: the command line of Myeloscope. The same commands work against AWS and against the local
 * cloud (`myeloscope serve`): every endpoint comes from the environment (AWS_ENDPOINT_URL[_S3|_SFN],
 * RAW_BUCKET, STATE_MACHINE_ARN, MYELOSCOPE_API_URL), with flags to override. Heavy modules (AWS SDK, the
 * local cloud) are imported by the command that needs them, so --help stays fast.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { EXIT, EXIT_CODES_HELP, toCliError } from './myeloscope/errors.ts';
import { DEFAULT_PARAMS } from '../../layers/core/src/workflow.ts';

// The SDK's notice about future Node versions is for developers, not an error of this command: keep stderr for ours.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const ENV_HELP = `
Environment (flags override):
  AWS_ENDPOINT_URL        endpoint of every AWS service (unset on AWS; the local cloud's S3)
  AWS_ENDPOINT_URL_S3     S3 endpoint, if different
  AWS_ENDPOINT_URL_SFN    Step Functions endpoint (the local cloud's Step Functions API)
  AWS_REGION              @default us-east-1
  RAW_BUCKET              the raw images bucket (upload)
  STATE_MACHINE_ARN       the training state machine (train)
  MYELOSCOPE_API_URL      base URL of the inference API (predict)
  MYELOSCOPE_DEBUG=1      print stack traces
\`myeloscope serve\` prints these for the local cloud.`;

const int = (name: string, min?: number) => (v: string) => {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be a whole number`);
  if (min !== undefined && n < min) throw new InvalidArgumentError(`${name} must be at least ${min}`);
  return n;
};
const num = (name: string) => (v: string) => {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
  return n;
};

export function buildProgram(): Command {
  const program = new Command('myeloscope');
  program
    .description('Find multiple-myeloma plasma cells in bone-marrow images: upload images, train and follow runs, predict.')
    .version(pkg.version)
    // Commander must not exit by itself: main() maps its errors to the documented exit codes.
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .addHelpText('after', `${ENV_HELP}\n${EXIT_CODES_HELP}`);

  program
    .command('upload')
    .summary('upload images (and their masks/) to the raw bucket')
    .description(
      'Uploads the images of <folder> to s3://<raw bucket>/raw/<dataset>/<label>/ and the plasma-cell masks in ' +
        '<folder>/masks/ (same file names) to .../<label>/masks/; masks go first. The S3 notifications then ' +
        'preprocess and segment each image. Progress on stderr.',
    )
    .argument('<folder>', 'folder of images (jpg, png, tif, bmp, webp, gif); masks in <folder>/masks/')
    .requiredOption('--dataset <name>', 'dataset name (a folder name, no "/")')
    .requiredOption('--label <label>', 'label folder, e.g. myeloma')
    .option('--bucket <name>', 'raw bucket (default: env RAW_BUCKET)')
    .option('--endpoint <url>', 'S3 endpoint (default: env AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; none on AWS)')
    .option('--concurrency <n>', 'parallel uploads', int('--concurrency', 1), 4)
    .addHelpText('after', `\nExample:\n  myeloscope upload ./slides --dataset clinic --label myeloma\n${EXIT_CODES_HELP}`)
    .action(async (folder: string, opts: UploadOpts) => (await import('./myeloscope/upload.ts')).upload(folder, opts));

  program
    .command('train')
    .summary('start a training run (optionally follow it)')
    .description(
      'Starts an execution of the training state machine (PrepareDataset -> Train -> Evaluate -> Publish) with ' +
        'the given parameters; the input is validated before anything starts. Prints the execution ARN on ' +
        'stdout; with --follow, follows the run to its end (events on stderr, the summary on stdout) and exits ' +
        '2 if the run failed on its input (e.g. a dataset with no segmented images), 1 if it failed otherwise.',
    )
    .option('--dataset <name>', 'dataset to train on (segmented/<dataset>/); default segpc')
    .option('--task <task>', 'what to learn (default cells: plasma cell vs other nucleated cell)')
    .option('--epochs <n>', `training epochs (1-500; default ${DEFAULT_PARAMS.epochs})`, int('--epochs'))
    .option('--seed <n>', 'seed for the split, weights and shuffles (default 42)', int('--seed'))
    .option('--batch-size <n>', 'batch size (default 32)', int('--batch-size'))
    .option('--input-size <n>', 'crop side in pixels (16-256; default 64)', int('--input-size'))
    .option('--min-roc-auc <x>', 'publish only if held-out ROC AUC >= x (0-1; default 0.75)', num('--min-roc-auc'))
    .option('--test-fraction <x>', 'fraction of source images held out (default 0.25)', num('--test-fraction'))
    .option('--val-fraction <x>', 'fraction of source images for validation (default 0.1)', num('--val-fraction'))
    .option('--run-id <id>', 'run id (default: the execution name)')
    .option('--name <name>', 'execution name (default: train-<time>)')
    .option('-f, --follow', 'follow the run to its end; exit 0 only if it succeeded')
    .option('--json', 'with --follow: print the final description as JSON')
    .option('--state-machine-arn <arn>', 'state machine (default: env STATE_MACHINE_ARN)')
    .option('--endpoint <url>', 'Step Functions endpoint (default: env AWS_ENDPOINT_URL_SFN / AWS_ENDPOINT_URL)')
    .addHelpText('after', `\nExamples:\n  myeloscope train --dataset clinic --epochs 5 --follow\n  arn=$(myeloscope train --epochs 2) && myeloscope follow "$arn"\n${EXIT_CODES_HELP}`)
    .action(async (opts: TrainOpts) => (await import('./myeloscope/runs.ts')).train(opts));

  program
    .command('follow')
    .summary('follow a run to its end')
    .description(
      'Prints the states a training execution enters and exits as they happen, then its result. ' +
        'Exits 0 if the run succeeded, 2 if it failed on its input, 1 if it failed otherwise.',
    )
    .argument('<executionArn>', 'execution ARN (printed by train)')
    .option('--poll <ms>', 'poll interval in ms (default 1000 locally, 5000 on AWS)', int('--poll', 1))
    .option('--json', 'print the final description as JSON on stdout')
    .option('--endpoint <url>', 'Step Functions endpoint (default: env AWS_ENDPOINT_URL_SFN / AWS_ENDPOINT_URL)')
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (arn: string, opts: FollowOpts) => (await import('./myeloscope/runs.ts')).follow(arn, opts));

  program
    .command('status')
    .summary('show the status of a run')
    .description(
      'Describes a training execution: status, times, error, and for a finished run its results. ' +
        'Exits 0 if RUNNING or SUCCEEDED, 1 if FAILED, TIMED_OUT or ABORTED, 3 if there is no such execution.',
    )
    .argument('<executionArn>', 'execution ARN (printed by train)')
    .option('--json', 'print the description as JSON on stdout')
    .option('--endpoint <url>', 'Step Functions endpoint (default: env AWS_ENDPOINT_URL_SFN / AWS_ENDPOINT_URL)')
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (arn: string, opts: StatusOpts) => (await import('./myeloscope/runs.ts')).status(arn, opts));

  program
    .command('predict')
    .summary('predict the plasma cells of an image or a folder of images')
    .description(
      'POSTs each image to <api>/predict and writes one summary per image (cells, plasma cells, fraction, call) ' +
        'as CSV (default) or JSON, to stdout or --out (its folder must exist). Images over the direct-upload ' +
        'limit go through POST /uploads. Progress on stderr. Exits 1 if any image failed.',
    )
    .argument('<image-or-folder>', 'an image, or a folder of images (not recursive)')
    .option('--api <url>', 'API base URL (default: env MYELOSCOPE_API_URL)')
    .option('-o, --out <file>', 'write the results here; .json means JSON, anything else CSV')
    .addOption(new Option('--format <format>', 'output format (default: from --out, else csv)').choices(['csv', 'json']))
    .option('--overlays <dir>', 'also save each image\'s overlay PNG in this folder')
    .option('--sign', 'sign requests with SigV4 and your AWS credentials (default: only for *.execute-api.*.amazonaws.com)')
    .option('--no-sign', 'never sign requests')
    .option('--concurrency <n>', 'parallel requests', int('--concurrency', 1), 2)
    .addHelpText('after', `\nExamples:\n  myeloscope predict slide.jpg\n  myeloscope predict ./slides --out results.csv\n${EXIT_CODES_HELP}`)
    .action(async (target: string, opts: PredictOpts) => (await import('./myeloscope/predict.ts')).predict(target, opts));

  program
    .command('serve')
    .summary('run the local cloud (S3, S3 events, Step Functions, API) until Ctrl+C')
    .description(
      'Starts the local cloud of `npm start` without running anything: the local S3 with the app\'s buckets ' +
        'and notifications, the Step Functions API and the inference API, all on loopback. Prints the ' +
        'environment lines to export in another shell so the other commands (and npm run ledger) use it. ' +
        'Ctrl+C stops it.',
    )
    .option('--state-dir <dir>', 'where the local S3 keeps its data', '.myeloscope')
    .option('--fresh', 'start from empty buckets')
    .option('--s3-port <port>', 'local S3 port (another free port if taken; 0: any)', int('--s3-port'), 4569)
    .option('--sfn-port <port>', 'Step Functions API port (another free port if taken; 0: any)', int('--sfn-port'), 8083)
    .option('--api-port <port>', 'inference API port (another free port if taken; 0: any)', int('--api-port'), 8787)
    .addHelpText('after', `\nExample:\n  npm run serve      # then, in another shell, paste the export lines\n${EXIT_CODES_HELP}`)
    .action(async (opts: ServeOpts) => (await import('./myeloscope/serve.ts')).serve(opts));

  return program;
}

export interface UploadOpts {
  dataset: string;
  label: string;
  bucket?: string;
  endpoint?: string;
  concurrency: number;
}
export interface TrainOpts {
  dataset?: string;
  task?: string;
  epochs?: number;
  seed?: number;
  batchSize?: number;
  inputSize?: number;
  minRocAuc?: number;
  testFraction?: number;
  valFraction?: number;
  runId?: string;
  name?: string;
  follow?: boolean;
  json?: boolean;
  stateMachineArn?: string;
  endpoint?: string;
}
export interface FollowOpts {
  poll?: number;
  json?: boolean;
  endpoint?: string;
}
export interface StatusOpts {
  json?: boolean;
  endpoint?: string;
}
export interface PredictOpts {
  api?: string;
  out?: string;
  format?: 'csv' | 'json';
  overlays?: string;
  /** undefined: sign for API Gateway hosts only. */
  sign?: boolean;
  concurrency: number;
}
export interface ServeOpts {
  stateDir: string;
  fresh?: boolean;
  s3Port: number;
  sfnPort: number;
  apiPort: number;
}

/** Runs the CLI; resolves the exit code (serve resolves only when stopped). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; everything else commander reports (unknown command, missing argument) is usage.
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    const e = toCliError(err);
    process.stderr.write(`myeloscope: ${e.message}\n`);
    if (process.env.MYELOSCOPE_DEBUG && e.stack) process.stderr.write(`${e.stack}\n`);
    return e.exitCode;
  }
}

/** Runs the CLI on process.argv and exits with its code. */
export async function run(): Promise<never> {
  // Exit explicitly: idle keep-alive sockets of the AWS clients would otherwise hold the process open.
  process.exit(await main(process.argv.slice(2)));
}

// Run directly (`tsx functions/cli/myeloscope.ts`); the bin (myeloscope.mjs) calls run() itself.
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) await run();
