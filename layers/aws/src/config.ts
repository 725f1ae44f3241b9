/**
 * Where the AWS clients connect and which buckets they use, read from the environment only, so one handler
 * runs unchanged on AWS, on LocalStack and on the local cloud.
 *
 * - AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_SFN, else AWS_ENDPOINT_URL: service endpoint (unset on AWS).
 * - S3_FORCE_PATH_STYLE: "true" for path-style URLs; @default true when an endpoint is set (LocalStack, local).
 * - AWS_REGION: @default us-east-1 when unset (the local cloud has no region).
 * - RAW_BUCKET, WORK_BUCKET, MODELS_BUCKET: bucket names, set by the CDK app or the local cloud.
 */
import { InvalidInputError } from '../../core/src/errors.ts';

export interface ClientConfig {
  region: string;
  endpoint?: string;
  forcePathStyle?: boolean;
}

export function clientConfig(service: 'S3' | 'SFN', env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const endpoint = env[`AWS_ENDPOINT_URL_${service}`] || env.AWS_ENDPOINT_URL || undefined;
  const config: ClientConfig = { region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1' };
  if (endpoint) config.endpoint = endpoint;
  if (service === 'S3') {
    const flag = env.S3_FORCE_PATH_STYLE;
    config.forcePathStyle = flag === undefined || flag === '' ? Boolean(endpoint) : flag === 'true' || flag === '1';
  }
  return config;
}

export type BucketRole = 'raw' | 'work' | 'models';

const BUCKET_ENV: Record<BucketRole, string> = { raw: 'RAW_BUCKET', work: 'WORK_BUCKET', models: 'MODELS_BUCKET' };

/** The bucket name for a role; a missing variable is a deployment error, so say which one. */
export function bucketName(role: BucketRole, env: NodeJS.ProcessEnv = process.env): string {
  const name = env[BUCKET_ENV[role]];
  if (!name) throw new InvalidInputError(`environment variable ${BUCKET_ENV[role]} is not set (the ${role} bucket name)`);
  return name;
}

/**
 * S3_MAX_KEY_SEGMENT_BYTES: the longest `/`-separated key segment the S3 store can hold, or undefined for no
 * limit beyond S3's 1024-byte keys (AWS, LocalStack). The local cloud sets it: its S3 keeps objects in files
 * named after the key's segments.
 */
export function maxKeySegmentBytes(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const text = env.S3_MAX_KEY_SEGMENT_BYTES;
  if (text === undefined || text.trim() === '') return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) throw new InvalidInputError(`environment variable S3_MAX_KEY_SEGMENT_BYTES must be a positive integer, got ${JSON.stringify(text)}`);
  return value;
}
