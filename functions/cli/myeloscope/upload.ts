/** upload: a folder of images and its masks/ to raw/<dataset>/<label>/ in the raw bucket. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { clientConfig } from '../../../layers/aws/src/config.ts';
import type { UploadOpts } from '../myeloscope.ts';
import { CliError, EXIT, toCliError } from './errors.ts';
import { contentType, imagesIn, kindOf, pool, progressBar } from './common.ts';

/** Same rule as the workflow's dataset: one folder level, so keys stay raw/<dataset>/<label>/<file>. */
const FOLDER_NAME = /^[^/\\]+$/;

export async function upload(folder: string, opts: UploadOpts): Promise<void> {
  for (const [flag, v] of [['--dataset', opts.dataset], ['--label', opts.label]] as const) {
    if (!FOLDER_NAME.test(v) || v === '.' || v === '..') throw new CliError(`${flag} must be a folder name without "/" (got ${JSON.stringify(v)})`, EXIT.usage);
  }
  if ((await kindOf(folder)) !== 'dir') throw new CliError(`${folder} is not a folder`, EXIT.usage);
  const bucket = opts.bucket ?? process.env.RAW_BUCKET;
  if (!bucket) throw new CliError('no raw bucket: set RAW_BUCKET or pass --bucket (`myeloscope serve` prints it for the local cloud)', EXIT.notFound);
  const images = await imagesIn(folder);
  if (images.length === 0) throw new CliError(`no images (jpg, png, tif, bmp, webp, gif) in ${folder}`, EXIT.notFound);
  const masks = await imagesIn(join(folder, 'masks'));

  const env = opts.endpoint ? { ...process.env, AWS_ENDPOINT_URL_S3: opts.endpoint } : process.env;
  const config = clientConfig('S3', env);
  const client = new S3Client(config);
  const prefix = `raw/${opts.dataset}/${opts.label}/`;
  // Masks first: each image's segment run then already finds its mask.
  const jobs = [...masks.map((f) => ({ path: join(folder, 'masks', f), key: `${prefix}masks/${f}` })), ...images.map((f) => ({ path: join(folder, f), key: `${prefix}${f}` }))];
  const bar = progressBar('upload', jobs.length);
  try {
    await pool(jobs, opts.concurrency, async (job) => {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: job.key, Body: await readFile(job.path), ContentType: contentType(job.path) }));
      bar.tick(job.key.slice(prefix.length));
    });
  } catch (err) {
    throw toCliError(err, `S3 at ${config.endpoint ?? `AWS (${config.region})`}`);
  } finally {
    bar.stop();
    client.destroy();
  }
  const unmatched = masks.filter((m) => !images.includes(m)).length;
  process.stdout.write(
    `uploaded ${images.length} images and ${masks.length} masks to s3://${bucket}/${prefix}` +
      `${unmatched ? ` (${unmatched} masks have no image of the same name)` : ''}\n`,
  );
}
