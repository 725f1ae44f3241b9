import { Duration, RemovalPolicy, Tags } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { BUCKET_TAG, type BucketRole } from './names.ts';

export interface StorageProps {
  /**
   * What happens to the buckets when the stack is deleted. They hold patient-derived images and models:
   * keep them unless told otherwise.
   * @default RemovalPolicy.RETAIN
   */
  removalPolicy?: RemovalPolicy;
}

/**
 * The three buckets: raw uploads (versioned: the originals), work (pipeline outputs and training runs) and
 * models (published models). All private, encrypted, TLS-only, with ACLs disabled.
 */
export class Storage extends Construct {
  readonly raw: s3.Bucket;
  readonly work: s3.Bucket;
  readonly models: s3.Bucket;

  constructor(scope: Construct, id: string, props: StorageProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.raw = this.bucket('Raw', 'raw', removalPolicy, true);
    this.work = this.bucket('Work', 'work', removalPolicy, false);
    this.models = this.bucket('Models', 'models', removalPolicy, false);
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
      // Large uploads that never complete still cost storage.
      lifecycleRules: [{ id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) }],
    });
    Tags.of(bucket).add(BUCKET_TAG, role);
    return bucket;
  }
}
