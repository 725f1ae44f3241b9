import { Duration, RemovalPolicy, Tags } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { BUCKET_TAG, type BucketRole } from './names.ts';
import { ack } from './nag.ts';

export interface StorageProps {
  /**
   * What happens to the buckets when the stack is deleted. They hold patient-derived images and models:
   * keep them unless told otherwise.
   * @default RemovalPolicy.RETAIN
   */
  removalPolicy?: RemovalPolicy;
  /** How long S3 server access logs are kept. @default Duration.days(365) */
  accessLogRetention?: Duration;
  /** How long presigned uploads for the inference API (work bucket uploads/) are kept. @default Duration.days(1) */
  uploadRetention?: Duration;
  /** Origins the web page is served from, allowed to PUT presigned uploads. @default ['*'] */
  uploadCorsOrigins?: string[];
}

/**
 * The three buckets: raw uploads (versioned: the originals), work (pipeline outputs and training runs) and
 * models (published models, versioned: small, and latest.json's history is the publication record). All
 * private, encrypted, TLS-only, with ACLs disabled, and with server access logs in a fourth bucket.
 */
export class Storage extends Construct {
  readonly raw: s3.Bucket;
  readonly work: s3.Bucket;
  readonly models: s3.Bucket;
  /** S3 server access logs of the three buckets (who read or wrote patient-derived data). */
  readonly accessLogs: s3.Bucket;

  constructor(scope: Construct, id: string, props: StorageProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.accessLogs = new s3.Bucket(this, 'AccessLogs', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      // S3 log delivery supports SSE-S3 only.
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy,
      lifecycleRules: [{ id: 'expire-logs', expiration: props.accessLogRetention ?? Duration.days(365) }],
    });
    ack(this.accessLogs, {
      'HIPAA.Security-S3BucketVersioningEnabled': 'Log objects are written once by S3 log delivery and expire; versions add nothing.',
    });
    this.raw = this.bucket('Raw', 'raw', removalPolicy, true);
    this.work = this.bucket('Work', 'work', removalPolicy, false);
    // Images sent for prediction through presigned uploads are transient: expire them.
    this.work.addLifecycleRule({ id: 'expire-uploads', prefix: 'uploads/', expiration: props.uploadRetention ?? Duration.days(1) });
    // The web page PUTs large images straight to a presigned URL.
    this.work.addCorsRule({
      allowedMethods: [s3.HttpMethods.PUT],
      allowedOrigins: props.uploadCorsOrigins ?? ['*'],
      allowedHeaders: ['content-type'],
      maxAge: 3600,
    });
    this.models = this.bucket('Models', 'models', removalPolicy, true);
    ack(this.work, {
      'HIPAA.Security-S3BucketVersioningEnabled':
        'Intermediates (processed images, crops, runs) are rebuilt from the versioned raw bucket; versions would double the largest bucket.',
    });
    for (const bucket of [this.raw, this.work, this.models, this.accessLogs]) {
      ack(bucket, {
        'HIPAA.Security-S3BucketReplicationEnabled':
          'Single-region research deployment: raw is versioned and retained; cross-region replication is left to the operator.',
        'HIPAA.Security-S3DefaultEncryptionKMS':
          'SSE-S3 (AES-256) at rest: a customer KMS key adds cost and a key policy to manage, and S3 log delivery cannot use one.',
      });
    }
  }

  /** The bucket of a role. */
  get(role: BucketRole): s3.Bucket {
    return this[role];
  }

  private bucket(id: string, role: BucketRole, removalPolicy: RemovalPolicy, versioned: boolean): s3.Bucket {
    const bucket = new s3.Bucket(this, id, {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      versioned,
      removalPolicy,
      serverAccessLogsBucket: this.accessLogs,
      serverAccessLogsPrefix: `${role}/`,
      // Large uploads that never complete still cost storage.
      lifecycleRules: [{ id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) }],
    });
    Tags.of(bucket).add(BUCKET_TAG, role);
    return bucket;
  }
}

