import { type CfnElement, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type * as batch from 'aws-cdk-lib/aws-batch';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { RUNS_PREFIX } from '../../layers/core/src/keys.ts';
import { ack } from './nag.ts';
import {
  QUALITY_GATE_FAILED_STATE,
  QUALITY_GATE_STATE,
  RUN_FAILED_STATE,
  RUN_INPUT_FAILED_STATE,
  RUN_SUCCEEDED_STATE,
  TRAIN_OUTPUTS_STATE,
  TRAINING_STEPS,
} from './names.ts';

type StepFunction = (typeof TRAINING_STEPS)[number]['fn'];
type LambdaStepFunction = Exclude<StepFunction, 'train'>;

/** The AWS Batch job that runs the train step. */
export interface TrainJob {
  jobQueue: batch.IJobQueue;
  jobDefinition: batch.IJobDefinition;
  /**
   * Limit for the Train state: queueing for an instance plus every attempt of the job.
   * @default Duration.hours(4) (three one-hour attempts and an hour of queueing)
   */
  timeout?: Duration;
}

export interface TrainingWorkflowProps {
  /** The Lambda function of each step but Train, by folder name. */
  functions: Record<LambdaStepFunction, lambda.IFunction>;
  /** The GPU job of the Train step. */
  trainJob: TrainJob;
  /** The work bucket, to name the train step's outputs in the state (s3://<bucket>/runs/<runId>/...). */
  workBucket: s3.IBucket;
  /** Limit for a whole execution. @default Duration.hours(6) */
  timeout?: Duration;
  /** @default RetentionDays.ONE_MONTH */
  logRetention?: logs.RetentionDays;
  /**
   * Limit for each Lambda step. Set explicitly: a Task without TimeoutSeconds gets the ASL default of 60 s in
   * the local interpreter. @default Duration.minutes(15) (the Lambda maximum)
   */
  taskTimeout?: Duration;
}

/**
 * The training state machine: PrepareDataset -> Train (AWS Batch GPU job) -> TrainOutputs -> Evaluate ->
 * QualityGate -> Publish. The run state object flows through every step: each Lambda gets it whole and
 * returns it with its own outputs added (S3 URIs and small scalars only). The Batch job cannot return a
 * value (`.sync` yields the job description), so Train keeps its input (ResultPath null) and the model's
 * keys, which derive from the run id, are added by a Pass state. Any step's failure ends in RunFailed; a run
 * whose held-out ROC AUC is missing or below params.minRocAuc ends in QualityGateFailed, unpublished.
 *
 * State names are a contract: the local cloud binds handlers by them (see names.ts).
 */
export class TrainingWorkflow extends Construct {
  readonly stateMachine: sfn.StateMachine;

  constructor(scope: Construct, id: string, props: TrainingWorkflowProps) {
    super(scope, id);
    const failed = new sfn.Fail(this, RUN_FAILED_STATE, {
      stateName: RUN_FAILED_STATE,
      comment: 'A step failed after its retries: the error and cause are those of the failed step.',
      errorPath: '$.error.Error',
      causePath: '$.error.Cause',
    });
    // Keep the state that reached the failed step next to the error, for the execution history.
    const catchAll = (task: sfn.TaskStateBase) => task.addCatch(failed, { errors: [sfn.Errors.ALL], resultPath: '$.error' });
    // The first step's state is the execution input, which may not be an object (5, [1, 2], "x"): ResultPath
    // $.error cannot attach to it and the step's own reason would be lost to States.ResultPathMatchFailure.
    // Its error replaces the state instead (the input stays in the execution history): no ResultPath, whose
    // default is $ (aws-local-stepfunctions 3.0 mishandles an explicit "$" on a Catch; the default it handles).
    const inputFailed = new sfn.Fail(this, RUN_INPUT_FAILED_STATE, {
      stateName: RUN_INPUT_FAILED_STATE,
      comment: 'PrepareDataset failed (usually on the execution input): its error and cause.',
      errorPath: '$.Error',
      causePath: '$.Cause',
    });

    const lambdaStep = (state: string, fn: LambdaStepFunction, first: boolean): tasks.LambdaInvoke => {
      const task = new tasks.LambdaInvoke(this, state, {
        stateName: state,
        lambdaFunction: props.functions[fn],
        // The ASL Resource is then the function ARN itself and the result is the handler's return value.
        payloadResponseOnly: true,
        taskTimeout: sfn.Timeout.duration(props.taskTimeout ?? Duration.minutes(15)),
        // Adds retries on Lambda service errors (2 s, x2 backoff, 6 attempts).
        retryOnServiceExceptions: true,
        // The first step gets the execution input and name (the run id defaults to the name); the others
        // get the state as it is.
        ...(first ? { payload: sfn.TaskInput.fromObject({ 'input.$': '$', 'executionName.$': '$$.Execution.Name' }) } : {}),
      });
      // Throttling clears up with time: back off longer than for service errors, with jitter.
      task.addRetry({
        errors: ['Lambda.TooManyRequestsException'],
        interval: Duration.seconds(5),
        maxAttempts: 5,
        backoffRate: 2,
        jitterStrategy: sfn.JitterType.FULL,
      });
      if (first) task.addCatch(inputFailed, { errors: [sfn.Errors.ALL] });
      else catchAll(task);
      return task;
    };

    const trainState = TRAINING_STEPS[1].state;
    const train = new BatchSubmitJobWithStateTimeout(this, trainState, {
      stateName: trainState,
      stateTimeout: props.trainJob.timeout ?? Duration.hours(4),
      jobName: 'myeloscope-train',
      jobQueueArn: props.trainJob.jobQueue.jobQueueArn,
      jobDefinitionArn: props.trainJob.jobDefinition.jobDefinitionArn,
      // The container reads the whole state from RUN_STATE (functions/train/container.ts).
      containerOverrides: {
        environment: { RUN_STATE: sfn.JsonPath.jsonToString(sfn.JsonPath.objectAt('$')) },
      },
      integrationPattern: sfn.IntegrationPattern.RUN_JOB,
      // The job description is not the run state: keep the input, on AWS and locally alike.
      resultPath: sfn.JsonPath.DISCARD,
    });
    // Batch API errors (throttling, 5xx) on submit or describe; the job's own retries are its retry strategy.
    train.addRetry({
      errors: ['Batch.AWSBatchException', 'Batch.ServerException'],
      interval: Duration.seconds(10),
      maxAttempts: 4,
      backoffRate: 2,
      jitterStrategy: sfn.JitterType.FULL,
    });
    catchAll(train);

    // What the train handler used to return, from the keys it writes to (layers/core/src/keys.ts runKeys).
    // Two Pass states: JSONPath can merge objects (States.JsonMerge) but not build one in the same step.
    const runDir = `s3://${props.workBucket.bucketName}/${RUNS_PREFIX}{}/`;
    const trainOutputs = new sfn.Pass(this, TRAIN_OUTPUTS_STATE, {
      stateName: TRAIN_OUTPUTS_STATE,
      comment: 'The model and training history keys of the run (the Batch job writes them, it cannot return them)',
      parameters: {
        'state.$': '$',
        outputs: {
          modelUri: sfn.JsonPath.format(`${runDir}model/`, sfn.JsonPath.stringAt('$.runId')),
          trainingUri: sfn.JsonPath.format(`${runDir}training.json`, sfn.JsonPath.stringAt('$.runId')),
        },
      },
    });
    const mergeTrainOutputs = new sfn.Pass(this, `Merge${TRAIN_OUTPUTS_STATE}`, {
      stateName: `Merge${TRAIN_OUTPUTS_STATE}`,
      parameters: { 'state.$': 'States.JsonMerge($.state, $.outputs, false)' },
      outputPath: '$.state',
    });

    const gateFailed = new sfn.Fail(this, QUALITY_GATE_FAILED_STATE, {
      stateName: QUALITY_GATE_FAILED_STATE,
      comment: 'The held-out ROC AUC is missing or below params.minRocAuc: nothing was published.',
      error: QUALITY_GATE_FAILED_STATE,
      causePath: '$.qualityGate.cause',
    });
    // stringAt only names the path: States.Format prints numbers as they are.
    const gateCause = (id: string, format: string, ...args: string[]) =>
      new sfn.Pass(this, id, {
        stateName: id,
        parameters: { cause: sfn.JsonPath.format(format, ...args) },
        resultPath: '$.qualityGate',
      }).next(gateFailed);
    const noAuc = gateCause(
      'RocAucMissing',
      'run {}: no held-out ROC AUC (the test split lacks one of the classes), so the quality gate minRocAuc {} cannot be checked; not published',
      sfn.JsonPath.stringAt('$.runId'),
      sfn.JsonPath.stringAt('$.params.minRocAuc'),
    );
    const lowAuc = gateCause(
      'RocAucBelowGate',
      'run {}: held-out ROC AUC {} is below the quality gate minRocAuc {}; not published',
      sfn.JsonPath.stringAt('$.runId'),
      sfn.JsonPath.stringAt('$.metrics.rocAuc'),
      sfn.JsonPath.stringAt('$.params.minRocAuc'),
    );

    const [prepare, , evaluate, publish] = TRAINING_STEPS;
    const publishStep = lambdaStep(publish.state, publish.fn, false);
    // Rules are tried in order: a missing ROC AUC never reaches the numeric comparison. Not(IsPresent) rather
    // than IsPresent false: same meaning, and aws-local-stepfunctions 3.0 never matches IsPresent false.
    const gate = new sfn.Choice(this, QUALITY_GATE_STATE, {
      stateName: QUALITY_GATE_STATE,
      comment: 'Publish only a model whose held-out ROC AUC reaches params.minRocAuc',
    })
      .when(sfn.Condition.not(sfn.Condition.isPresent('$.metrics.rocAuc')), noAuc)
      .when(sfn.Condition.isNull('$.metrics.rocAuc'), noAuc)
      .when(sfn.Condition.numberLessThanJsonPath('$.metrics.rocAuc', '$.params.minRocAuc'), lowAuc)
      .otherwise(publishStep.next(new sfn.Succeed(this, RUN_SUCCEEDED_STATE, { stateName: RUN_SUCCEEDED_STATE })));

    const chain = sfn.Chain.start(lambdaStep(prepare.state, prepare.fn, true))
      .next(train)
      .next(trainOutputs)
      .next(mergeTrainOutputs)
      .next(lambdaStep(evaluate.state, evaluate.fn, false))
      .next(gate);

    const logGroup = new logs.LogGroup(this, 'Logs', {
      // Under /aws/vendedlogs/ so the CloudWatch Logs resource policy does not grow with each log group.
      logGroupName: `/aws/vendedlogs/states/${Stack.of(this).stackName}-training`,
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      comment: 'Myeloscope training: PrepareDataset -> Train (GPU) -> Evaluate -> QualityGate -> Publish',
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromChainable(chain),
      timeout: props.timeout ?? Duration.hours(6),
      tracingEnabled: true,
      // The state holds only URIs and scalars: logging it is safe and makes failures readable.
      logs: { destination: logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
    });
    const stack = Stack.of(this);
    const fnArn = (fn: lambda.IFunction) => `<${stack.getLogicalId(fn.node.defaultChild as CfnElement)}.Arn>`;
    ack(this.stateMachine, {
      'AwsSolutions-IAM5[Resource::*]': 'CloudWatch Logs delivery and X-Ray actions have no resource-level permissions.',
      ...Object.fromEntries(
        Object.values(props.functions).map((fn) => [
          `AwsSolutions-IAM5[Resource::${fnArn(fn)}:*]`,
          'The CDK LambdaInvoke grant: the function and its versions/aliases, nothing else.',
        ]),
      ),
      'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:job-definition/*]':
        'The CDK BatchSubmitJob grant: a job definition ARN carries its revision, which changes at every deployment.',
      'HIPAA.Security-IAMNoInlinePolicy': 'The CDK task grants, scoped to this one role and removed with it.',
    });
    ack(logGroup, {
      'HIPAA.Security-CloudWatchLogGroupEncrypted': 'Encrypted at rest by CloudWatch Logs; the state holds S3 URIs and scalars only.',
    });
  }
}

/**
 * BatchSubmitJob turns `taskTimeout` into the job's attempt timeout and leaves the state without
 * TimeoutSeconds. Here the job definition keeps its per-attempt limit and the state gets its own, which
 * covers queueing for an instance and every attempt.
 */
class BatchSubmitJobWithStateTimeout extends tasks.BatchSubmitJob {
  private readonly stateTimeout: Duration;

  constructor(scope: Construct, id: string, props: tasks.BatchSubmitJobProps & { stateTimeout: Duration }) {
    const { stateTimeout, ...rest } = props;
    super(scope, id, rest);
    this.stateTimeout = stateTimeout;
  }

  override toStateJson(topLevelQueryLanguage?: sfn.QueryLanguage): object {
    return { ...super.toStateJson(topLevelQueryLanguage), TimeoutSeconds: this.stateTimeout.toSeconds() };
  }
}
