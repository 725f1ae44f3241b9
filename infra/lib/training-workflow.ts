import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { RUN_FAILED_STATE, RUN_SUCCEEDED_STATE, TRAINING_STEPS } from './names.ts';

type StepFunction = (typeof TRAINING_STEPS)[number]['fn'];

export interface TrainingWorkflowProps {
  /** The function of each step, by folder name. */
  functions: Record<StepFunction, lambda.IFunction>;
  /** Limit for a whole execution. @default Duration.hours(2) */
  timeout?: Duration;
  /** @default RetentionDays.ONE_MONTH */
  logRetention?: logs.RetentionDays;
  /**
   * Limit for each step. Set explicitly: a Task without TimeoutSeconds gets the ASL default of 60 s in the
   * local interpreter, far too short for Train. @default Duration.minutes(15) (the Lambda maximum)
   */
  taskTimeout?: Duration;
}

/**
 * The training state machine: PrepareDataset -> Train -> Evaluate -> Publish. The run state object flows
 * through every step: each handler gets it whole and returns it with its own outputs added (S3 URIs and
 * small scalars only, far below the 256 KB state limit). Any step's failure ends in RunFailed.
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

    const steps = TRAINING_STEPS.map(({ state, fn }, i) => {
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
        ...(i === 0
          ? { payload: sfn.TaskInput.fromObject({ 'input.$': '$', 'executionName.$': '$$.Execution.Name' }) }
          : {}),
      });
      // Throttling clears up with time: back off longer than for service errors, with jitter.
      task.addRetry({
        errors: ['Lambda.TooManyRequestsException'],
        interval: Duration.seconds(5),
        maxAttempts: 5,
        backoffRate: 2,
        jitterStrategy: sfn.JitterType.FULL,
      });
      // Keep the state that reached the failed step next to the error, for the execution history.
      task.addCatch(failed, { errors: [sfn.Errors.ALL], resultPath: '$.error' });
      return task;
    });

    let chain: sfn.Chain = sfn.Chain.start(steps[0] as tasks.LambdaInvoke);
    for (const step of steps.slice(1)) chain = chain.next(step);
    chain = chain.next(new sfn.Succeed(this, RUN_SUCCEEDED_STATE, { stateName: RUN_SUCCEEDED_STATE }));

    const logGroup = new logs.LogGroup(this, 'Logs', {
      // Under /aws/vendedlogs/ so the CloudWatch Logs resource policy does not grow with each log group.
      logGroupName: `/aws/vendedlogs/states/${Stack.of(this).stackName}-training`,
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      comment: 'Myeloscope training: PrepareDataset -> Train -> Evaluate -> Publish',
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromChainable(chain),
      timeout: props.timeout ?? Duration.hours(2),
      tracingEnabled: true,
      // The state holds only URIs and scalars: logging it is safe and makes failures readable.
      logs: { destination: logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
    });
  }
}
