import { type CfnElement, Duration, RemovalPolicy, Size, Stack, Tags } from 'aws-cdk-lib';
import * as batch from 'aws-cdk-lib/aws-batch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { RUNS_PREFIX, SEGMENTED_PREFIX } from '../../layers/core/src/keys.ts';
import { ack } from './nag.ts';
import { FUNCTION_TAG } from './names.ts';

/** Context key: the tag of the training image to run. */
export const TRAIN_IMAGE_TAG_CONTEXT = 'myeloscope:trainImageTag';

/** What the container writes besides the model, for whoever needs the handler's return value. */
export const TRAIN_OUTPUT_FILE = 'train-output.json';

export interface GpuTrainingProps {
  vpc: ec2.IVpc;
  /** The work bucket: the job reads the manifest and crops there and writes the model back. */
  workBucket: s3.IBucket;
  /** Tag of the image in `repository` to run. @default 'latest' */
  imageTag?: string;
  /** GPU instance types Batch may launch (each with at least one NVIDIA GPU). @default [g4dn.xlarge] */
  instanceTypes?: ec2.InstanceType[];
  /** Upper bound on running vCPUs (4 per g4dn.xlarge). @default 8 */
  maxvCpus?: number;
  /** Spot capacity (~70% cheaper; a reclaimed instance is retried by the job's retry strategy). @default true */
  spot?: boolean;
  /** vCPUs of the job. @default 4 (all of a g4dn.xlarge) */
  vcpus?: number;
  /** @default 14 GiB (a g4dn.xlarge has 16 GiB, less what the ECS agent and OS keep) */
  memory?: Size;
  /** Limit for one attempt of the job. @default Duration.hours(1) */
  attemptTimeout?: Duration;
  /** Attempts of the job, for infrastructure failures only. @default 3 */
  attempts?: number;
  /** @default RetentionDays.ONE_MONTH */
  logRetention?: logs.RetentionDays;
}

/**
 * The train step as an AWS Batch GPU job: an ECR repository for the image built from
 * functions/train/Dockerfile, a managed EC2 compute environment of GPU instances that scales to zero, a job
 * queue and a job definition that asks for one GPU. The container runs functions/train/container.ts, which
 * calls the same handler as the local cloud.
 */
export class GpuTraining extends Construct {
  readonly repository: ecr.Repository;
  readonly jobQueue: batch.JobQueue;
  readonly jobDefinition: batch.EcsJobDefinition;
  /** The role of the training code (S3 access), distinct from the execution role (image pull, logs). */
  readonly jobRole: iam.Role;
  readonly executionRole: iam.Role;
  readonly attempts: number;
  readonly attemptTimeout: Duration;

  constructor(scope: Construct, id: string, props: GpuTrainingProps) {
    super(scope, id);
    this.attempts = props.attempts ?? 3;
    this.attemptTimeout = props.attemptTimeout ?? Duration.hours(1);
    const spot = props.spot ?? true;

    this.repository = new ecr.Repository(this, 'Repository', {
      imageScanOnPush: true,
      // Images are rebuilt from the repository: keep the recent ones for rollback, not every build.
      lifecycleRules: [{ description: 'keep the 10 newest images', maxImageCount: 10 }],
      removalPolicy: RemovalPolicy.RETAIN,
    });

    const computeEnvironment = new batch.ManagedEc2EcsComputeEnvironment(this, 'ComputeEnvironment', {
      vpc: props.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      instanceTypes: props.instanceTypes ?? [new ec2.InstanceType('g4dn.xlarge')],
      // Otherwise Batch adds "optimal" (CPU-only) families to the list.
      useOptimalInstanceClasses: false,
      // The GPU AMI (NVIDIA driver and container toolkit); the AL2023 default has no driver.
      images: [{ imageType: batch.EcsMachineImageType.ECS_AL2_NVIDIA }],
      minvCpus: 0,
      maxvCpus: props.maxvCpus ?? 8,
      spot,
      ...(spot ? { allocationStrategy: batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED } : {}),
      replaceComputeEnvironment: true,
    });
    ack(computeEnvironment, {
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role]':
        'The AWS-managed policy of ECS container instances: the ECS agent on the Batch instances needs exactly it.',
    });

    this.jobQueue = new batch.JobQueue(this, 'JobQueue', {
      computeEnvironments: [{ computeEnvironment, order: 1 }],
    });

    this.executionRole = new iam.Role(this, 'ExecutionRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Myeloscope training job: pulls the image and writes the container logs',
    });
    this.jobRole = new iam.Role(this, 'JobRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Myeloscope training job: reads the run and the crops, writes the model and training history',
    });
    // Least privilege by key: the manifest and crops in, runs/<runId>/model/*, training.json and the
    // output file out. The run id is only known at run time, hence the runs/*/ wildcard.
    const work = props.workBucket;
    const reads = [`${RUNS_PREFIX}*`, `${SEGMENTED_PREFIX}*`];
    const writes = [`${RUNS_PREFIX}*/model/*`, `${RUNS_PREFIX}*/training.json`, `${RUNS_PREFIX}*/${TRAIN_OUTPUT_FILE}`];
    for (const key of reads) work.grantRead(this.jobRole, key);
    for (const key of writes) work.grantPut(this.jobRole, key);
    const bucketArn = `<${bucketLogicalId(work)}.Arn>`;
    ack(this.jobRole, {
      ...Object.fromEntries(
        ['s3:GetObject*', 's3:GetBucket*', 's3:List*', 's3:Abort*'].map((action) => [
          `AwsSolutions-IAM5[Action::${action}]`,
          'The action groups of the CDK S3 read/put grants, limited to the keys below.',
        ]),
      ),
      ...Object.fromEntries(
        [...reads, ...writes].map((key) => [
          `AwsSolutions-IAM5[Resource::${bucketArn}/${key}]`,
          'Keys of a run id that exists only at run time: the least the training code reads and writes.',
        ]),
      ),
      'HIPAA.Security-IAMNoInlinePolicy': 'The CDK grants, scoped to this one role and removed with it.',
    });

    const logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.jobDefinition = new batch.EcsJobDefinition(this, 'JobDefinition', {
      container: new batch.EcsEc2ContainerDefinition(this, 'Container', {
        image: ecs.ContainerImage.fromEcrRepository(this.repository, props.imageTag ?? 'latest'),
        cpu: props.vcpus ?? 4,
        memory: props.memory ?? Size.gibibytes(14),
        gpu: 1,
        jobRole: this.jobRole,
        executionRole: this.executionRole,
        logging: ecs.LogDrivers.awsLogs({ streamPrefix: 'train', logGroup }),
        environment: {
          WORK_BUCKET: work.bucketName,
          // Not every container runtime sets it; the S3 client needs it.
          AWS_REGION: Stack.of(this).region,
          NODE_OPTIONS: '--enable-source-maps',
          // Let TensorFlow take GPU memory as it needs it rather than all of it at start.
          TF_FORCE_GPU_ALLOW_GROWTH: 'true',
        },
      }),
      timeout: this.attemptTimeout,
      retryAttempts: this.attempts,
      // Retry what the infrastructure did (a reclaimed Spot instance, a failed pull), not what the code did:
      // a training error would only fail again on another GPU hour. The first matching rule wins.
      retryStrategies: [
        batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
        batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.CANNOT_PULL_CONTAINER),
        batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.NON_ZERO_EXIT_CODE),
      ],
      propagateTags: true,
    });
    // The local cloud binds the Batch task to functions/<tag>/ by this tag, as for the Lambda functions.
    Tags.of(this.jobDefinition).add(FUNCTION_TAG, 'train');
    ack(this.executionRole, {
      'AwsSolutions-IAM5[Resource::*]':
        'ecr:GetAuthorizationToken has no resource-level permissions; the pull itself is limited to the repository.',
      'HIPAA.Security-IAMNoInlinePolicy': 'The CDK grants (image pull, log writes), scoped to this one role.',
    });
    ack(logGroup, {
      'HIPAA.Security-CloudWatchLogGroupEncrypted': 'Encrypted at rest by CloudWatch Logs; the job logs keys, counts and losses, never image data.',
    });
  }
}

/** How cdk-nag names a bucket's ARN in its findings: <LogicalId.Arn>. */
function bucketLogicalId(bucket: s3.IBucket): string {
  return Stack.of(bucket).getLogicalId(bucket.node.defaultChild as CfnElement);
}
