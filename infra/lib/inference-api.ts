import { Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

/** Bodies API Gateway hands to the function base64-encoded instead of as (mangled) text. */
export const DEFAULT_BINARY_MEDIA_TYPES = ['image/*', 'application/octet-stream', 'multipart/form-data'];

/** Where POST /uploads lets clients PUT images (work bucket); nothing is triggered by this prefix. */
export const UPLOADS_PREFIX = 'uploads/';

export interface ApiKeyOptions {
  /** Requests per second for one key. @default 10 */
  rateLimit?: number;
  /** @default 20 */
  burstLimit?: number;
  /** Requests per day for one key. @default 10000 */
  quotaPerDay?: number;
}

export interface InferenceApiProps {
  /** The function behind POST /predict, POST /uploads and GET /report (Lambda proxy integration). */
  handler: lambda.IFunction;
  /**
   * The bucket POST /uploads presigns PUTs into (the work bucket), under UPLOADS_PREFIX. When given, the
   * handler may read and write `uploads/*` there (a presigned URL carries its signer's permissions) and,
   * for a lambda.Function, gets UPLOADS_PREFIX in its environment. Without it /uploads hands out URLs that
   * S3 refuses: grant `work.grantReadWrite(handler, 'uploads/*')` yourself.
   */
  uploadsBucket?: s3.IBucket;
  /**
   * Who may call the API. IAM means SigV4-signed requests from principals allowed `execute-api:Invoke`.
   * @default apigw.AuthorizationType.IAM
   */
  authorizationType?: apigw.AuthorizationType.IAM | apigw.AuthorizationType.NONE;
  /**
   * Also require an API key (header x-api-key) with a usage plan (per-key throttle and daily quota). The key's
   * value is not in the template: read it with `aws apigateway get-api-key --include-value`.
   * @default undefined: no API key
   */
  apiKey?: ApiKeyOptions | true;
  /** Origins the web page may call the API from (CORS). @default apigw.Cors.ALL_ORIGINS */
  corsAllowOrigins?: string[];
  /** @default DEFAULT_BINARY_MEDIA_TYPES */
  binaryMediaTypes?: string[];
  /** @default 'prod' */
  stageName?: string;
  /** Steady-state requests per second for the stage. @default 20 */
  throttlingRateLimit?: number;
  /** @default 40 */
  throttlingBurstLimit?: number;
}

/**
 * The REST API of the inference function:
 * - POST /predict: an image body (<= ~4.5 MB: Lambda takes 6 MB and the body arrives base64-encoded), or
 *   ?key=uploads/... for an image uploaded through POST /uploads; ?explain=all|<ids> adds saliency maps.
 * - POST /uploads: a presigned S3 PUT URL for larger images (API Gateway stops at 10 MB, Lambda at 6 MB).
 * - GET /report: the latest model's evaluation report.
 * IAM auth by default, CORS for the web page (preflight answered by API Gateway; error responses carry the
 * CORS header too), stage throttling, and optionally API keys with a usage plan.
 */
export class InferenceApi extends Construct {
  readonly api: apigw.RestApi;
  readonly predictMethod: apigw.Method;
  readonly uploadsMethod: apigw.Method;
  readonly reportMethod: apigw.Method;
  readonly apiKey?: apigw.IApiKey;
  readonly usagePlan?: apigw.UsagePlan;

  constructor(scope: Construct, id: string, props: InferenceApiProps) {
    super(scope, id);
    const allowOrigins = props.corsAllowOrigins ?? apigw.Cors.ALL_ORIGINS;
    this.api = new apigw.RestApi(this, 'Api', {
      restApiName: 'myeloscope',
      description: 'Myeloscope inference: POST /predict with a bone-marrow image, POST /uploads, GET /report',
      endpointTypes: [apigw.EndpointType.REGIONAL],
      binaryMediaTypes: props.binaryMediaTypes ?? DEFAULT_BINARY_MEDIA_TYPES,
      // The account-wide API Gateway logging role is a singleton: leave it to the account's owner.
      cloudWatchRole: false,
      defaultCorsPreflightOptions: {
        allowOrigins,
        allowMethods: ['GET', 'POST', 'OPTIONS'],
        allowHeaders: apigw.Cors.DEFAULT_HEADERS,
      },
      deployOptions: {
        stageName: props.stageName ?? 'prod',
        tracingEnabled: true,
        throttlingRateLimit: props.throttlingRateLimit ?? 20,
        throttlingBurstLimit: props.throttlingBurstLimit ?? 40,
      },
    });
    // API Gateway's own errors (403 unsigned, 429 throttled, 413, 5xx) must be readable by the page too.
    const origin = allowOrigins.length === 1 ? `'${allowOrigins[0]}'` : "'*'";
    for (const [gid, type] of [['Default4xx', apigw.ResponseType.DEFAULT_4XX], ['Default5xx', apigw.ResponseType.DEFAULT_5XX]] as const) {
      this.api.addGatewayResponse(gid, { type, responseHeaders: { 'Access-Control-Allow-Origin': origin } });
    }

    const integration = new apigw.LambdaIntegration(props.handler, { proxy: true });
    const methodOptions: apigw.MethodOptions = {
      authorizationType: props.authorizationType ?? apigw.AuthorizationType.IAM,
      ...(props.apiKey ? { apiKeyRequired: true } : {}),
    };
    this.predictMethod = this.api.root.addResource('predict').addMethod('POST', integration, methodOptions);
    this.uploadsMethod = this.api.root.addResource('uploads').addMethod('POST', integration, methodOptions);
    this.reportMethod = this.api.root.addResource('report').addMethod('GET', integration, methodOptions);
    // Browsers send CORS preflights without credentials: the OPTIONS mocks must stay unauthenticated.
    for (const resource of [this.api.root, ...this.api.root.node.children]) {
      const preflight = resource.node.tryFindChild('OPTIONS');
      if (!(preflight instanceof apigw.Method)) continue;
      for (const id of ['AwsSolutions-APIG4', 'AwsSolutions-COG4']) {
        Validations.of(preflight).acknowledge({ id, reason: 'CORS preflight: a MOCK integration returning only CORS headers; browsers send it without credentials.' });
      }
    }

    if (props.uploadsBucket) {
      props.uploadsBucket.grantReadWrite(props.handler, `${UPLOADS_PREFIX}*`);
      if (props.handler instanceof lambda.Function) props.handler.addEnvironment('UPLOADS_PREFIX', UPLOADS_PREFIX);
    }

    if (props.apiKey) {
      const o: ApiKeyOptions = props.apiKey === true ? {} : props.apiKey;
      this.apiKey = this.api.addApiKey('ApiKey', { description: 'Myeloscope inference API key' });
      this.usagePlan = this.api.addUsagePlan('UsagePlan', {
        throttle: { rateLimit: o.rateLimit ?? 10, burstLimit: o.burstLimit ?? 20 },
        quota: { limit: o.quotaPerDay ?? 10_000, period: apigw.Period.DAY },
        apiStages: [{ api: this.api, stage: this.api.deploymentStage }],
      });
      this.usagePlan.addApiKey(this.apiKey);
    }
  }

  /** The URL of POST /predict. */
  get predictUrl(): string {
    return this.api.urlForPath('/predict');
  }

  /** The URL of POST /uploads. */
  get uploadsUrl(): string {
    return this.api.urlForPath('/uploads');
  }
}
