import * as apigw from 'aws-cdk-lib/aws-apigateway';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

/** Bodies API Gateway hands to the function base64-encoded instead of as (mangled) text. */
export const DEFAULT_BINARY_MEDIA_TYPES = ['image/*', 'application/octet-stream', 'multipart/form-data'];

export interface InferenceApiProps {
  /** The function behind POST /predict (Lambda proxy integration). */
  handler: lambda.IFunction;
  /**
   * Who may call the API. IAM means SigV4-signed requests from principals allowed `execute-api:Invoke`.
   * @default apigw.AuthorizationType.IAM
   */
  authorizationType?: apigw.AuthorizationType.IAM | apigw.AuthorizationType.NONE;
  /** @default DEFAULT_BINARY_MEDIA_TYPES */
  binaryMediaTypes?: string[];
  /** @default 'prod' */
  stageName?: string;
  /** Steady-state requests per second for the stage. @default 20 */
  throttlingRateLimit?: number;
  /** @default 40 */
  throttlingBurstLimit?: number;
}

/** The REST API of the inference function: POST /predict with an image body. */
export class InferenceApi extends Construct {
  readonly api: apigw.RestApi;
  readonly predictMethod: apigw.Method;

  constructor(scope: Construct, id: string, props: InferenceApiProps) {
    super(scope, id);
    this.api = new apigw.RestApi(this, 'Api', {
      restApiName: 'myeloscope',
      description: 'Myeloscope inference: POST /predict with a bone-marrow image',
      endpointTypes: [apigw.EndpointType.REGIONAL],
      binaryMediaTypes: props.binaryMediaTypes ?? DEFAULT_BINARY_MEDIA_TYPES,
      // The account-wide API Gateway logging role is a singleton: leave it to the account's owner.
      cloudWatchRole: false,
      deployOptions: {
        stageName: props.stageName ?? 'prod',
        tracingEnabled: true,
        throttlingRateLimit: props.throttlingRateLimit ?? 20,
        throttlingBurstLimit: props.throttlingBurstLimit ?? 40,
      },
    });
    this.predictMethod = this.api.root
      .addResource('predict')
      .addMethod('POST', new apigw.LambdaIntegration(props.handler, { proxy: true }), {
        authorizationType: props.authorizationType ?? apigw.AuthorizationType.IAM,
      });
  }

  /** The URL of POST /predict. */
  get predictUrl(): string {
    return this.api.urlForPath('/predict');
  }
}
