/** serve: the local cloud of `npm start`, kept up with nothing run, and the env lines that point the CLI at it. */
import { appendFile, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { ServeOpts } from '../myeloscope.ts';
import { setLogSink } from '../../../layers/aws/src/events.ts';

export async function serve(opts: ServeOpts): Promise<void> {
  const stateDir = resolve(opts.stateDir);
  await mkdir(stateDir, { recursive: true });
  const logFile = join(stateDir, 'handlers.log');
  // Handler logs go to a file (the local CloudWatch); epochs, warnings and errors also to stderr, so runs can be watched here.
  setLogSink((level, message, fields) => {
    void appendFile(logFile, `${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
    if (message === 'epoch') {
      const f = fields as { runId?: string; epoch: number; loss: number; acc: number; valLoss?: number; valAcc?: number; seconds: number };
      const val = f.valLoss !== undefined ? `  val_loss ${f.valLoss.toFixed(4)}  val_acc ${(f.valAcc ?? 0).toFixed(3)}` : '';
      process.stderr.write(`[train] ${f.runId ?? ''} epoch ${f.epoch}  loss ${f.loss.toFixed(4)}  acc ${f.acc.toFixed(3)}${val}  (${f.seconds.toFixed(1)} s)\n`);
    } else if (level !== 'info') {
      process.stderr.write(`[${level}] ${message} ${JSON.stringify(fields)}\n`);
    }
  });
  const { installCrashHandler } = await import('../../../infra/local/crash.ts');
  installCrashHandler('myeloscope serve (the local cloud)');
  process.stderr.write('starting the local cloud (synthesizing the CDK app)...\n');
  const { startLocalCloud } = await import('../../../infra/local/cloud.ts');
  const cloud = await startLocalCloud({
    stateDir,
    ...(opts.fresh ? { fresh: true } : {}),
    s3Port: opts.s3Port,
    sfnPort: opts.sfnPort,
    apiPort: opts.apiPort,
    onDelivered: (fn, key) => process.stderr.write(`[s3 event] ${fn} ${key}\n`),
  });
  const env: [string, string][] = [
    ['AWS_ENDPOINT_URL', cloud.s3.endpoint],
    ['AWS_ENDPOINT_URL_SFN', cloud.sfn.endpoint],
    ['AWS_REGION', process.env.AWS_REGION ?? 'us-east-1'],
    // The local S3 checks signatures against these fixed credentials; the Step Functions API ignores them.
    ['AWS_ACCESS_KEY_ID', 'S3RVER'],
    ['AWS_SECRET_ACCESS_KEY', 'S3RVER'],
    ['RAW_BUCKET', cloud.buckets.raw],
    // The ledger (npm run ledger, without --local) reads the work bucket too.
    ['WORK_BUCKET', cloud.buckets.work],
    ['STATE_MACHINE_ARN', cloud.sfn.stateMachineArn],
    ['MYELOSCOPE_API_URL', cloud.api.url],
  ];
  process.stderr.write(
    `\nMyeloscope local cloud: S3 ${cloud.s3.endpoint}, Step Functions ${cloud.sfn.endpoint}, API ${cloud.api.url} (data in ${stateDir})\n` +
      'In another shell, export these, then use myeloscope upload / train / follow / status / predict:\n\n',
  );
  process.stdout.write(`${env.map(([k, v]) => `export ${k}=${v}`).join('\n')}\n`);
  process.stderr.write(`\nHandler logs: ${logFile}. Ctrl+C to stop.\n`);
  await new Promise<void>((done) => {
    const stop = () => void cloud.close().finally(done);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
