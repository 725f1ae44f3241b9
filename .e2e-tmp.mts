// Ad-hoc: run the synthesized preprocess and segment bundles (from cdk.out, layer beside them) against s3rver.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client, PutObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { startLocalS3 } from '/work/main/infra/local/s3.ts';

const out = '/work/main/cdk.out';
const t = JSON.parse(readFileSync(join(out, 'Myeloscope.template.json'), 'utf8'));
const asset = (name: string) => {
  for (const r of Object.values(t.Resources) as any[]) if (r.Type === 'AWS::Lambda::Function' && r.Properties.Tags?.find((x: any) => x.Value === name)) return join(out, 'asset.' + r.Properties.Code.S3Key.replace('.zip', ''));
  throw new Error(name);
};
const layer = join(out, 'asset.' + (Object.values(t.Resources) as any[]).find((r) => r.Type === 'AWS::Lambda::LayerVersion').Properties.Content.S3Key.replace('.zip', ''));
const dir = mkdtempSync(join(tmpdir(), 'e2e-'));
symlinkSync(join(layer, 'nodejs/node_modules'), join(dir, 'node_modules'));
const s3 = await startLocalS3({ directory: join(dir, 's3'), buckets: ['raw', 'work', 'models'] });
const env = { PATH: process.env.PATH!, AWS_REGION: 'us-east-1', AWS_ENDPOINT_URL: s3.endpoint, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', RAW_BUCKET: 'raw', WORK_BUCKET: 'work', MODELS_BUCKET: 'models' };
const client = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
const img = readFileSync('/work/main/test/data/segpc2021/images/106.jpg');
await client.send(new PutObjectCommand({ Bucket: 'raw', Key: 'raw/demo/unknown/106.jpg', Body: img }));
const ev = (bucket: string, key: string) => ({ Records: [{ eventSource: 'aws:s3', eventName: 'ObjectCreated:Put', s3: { bucket: { name: bucket }, object: { key } } }] });
function run(name: string, event: unknown) {
  const task = join(dir, name);
  cpSync(asset(name), task, { recursive: true });
  const r = spawnSync(process.execPath, ['--no-warnings', '--enable-source-maps', '--input-type=module', '-e', `const m = await import(${JSON.stringify(join(task, 'index.mjs'))}); console.log(JSON.stringify(await m.handler(${JSON.stringify(event)})).slice(0, 400));`], { env, encoding: 'utf8', cwd: task });
  console.log(name, r.status, r.stdout.trim().split('\n').slice(-1)[0], r.stderr.slice(-800));
  rmSync(task, { recursive: true });
}
run('preprocess', ev('raw', 'raw/demo/unknown/106.jpg'));
run('segment', ev('work', 'processed/demo/unknown/106.png'));
const list = await client.send(new ListObjectsV2Command({ Bucket: 'work' }));
console.log((list.Contents ?? []).map((o) => o.Key).slice(0, 10), list.KeyCount);
await s3.close();
rmSync(dir, { recursive: true, force: true });
