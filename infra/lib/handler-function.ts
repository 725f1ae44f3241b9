import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy, Tags } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { LogLevel, NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { EXTERNAL_MODULES, tfjsWasmDir } from '../../layers/deps/build.ts';
import type { DepsLayer } from './deps-layer.ts';
import { ack } from './nag.ts';
import { FUNCTION_TAG, type FunctionName } from './names.ts';

/** The repository root: functions/, layers/ and package-lock.json live there. */
export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Run in the ESM bundle before anything else: bundled CommonJS code (TensorFlow.js, Emscripten glue) calls
 * `require` for Node built-ins, which an ES module does not have.
 */
const REQUIRE_SHIM =
  "import { createRequire as __myeloscopeCreateRequire } from 'node:module'; const require = __myeloscopeCreateRequire(import.meta.url);";

export interface HandlerFunctionProps {
  /** Folder under functions/ with an index.ts exporting `handler`; also the `myeloscope:function` tag. */
  name: FunctionName;
  /** @default 1024 */
  memorySize?: number;
  /** @default Duration.seconds(30) */
  timeout?: Duration;
  /** Added to the common variables (NODE_OPTIONS, TFJS_WASM_PATH). @default {} */
  environment?: Record<string, string>;
  /**
   * The layer with sharp, OpenCV.js and the TensorFlow.js wasm binaries. Without it the same packages are
   * copied into the function's own bundle (for LocalStack Community, which has no layers).
   * @default undefined: packages copied into the bundle
   */
  depsLayer?: DepsLayer;
  /** Sets TFJS_WASM_PATH to the directory of the TensorFlow.js .wasm files. @default false */
  usesTfjsWasm?: boolean;
  /** @default RetentionDays.ONE_MONTH */
  logRetention?: logs.RetentionDays;
  /** @default PROJECT_ROOT */
  projectRoot?: string;
}

/**
 * One handler of functions/<name>/index.ts, bundled locally by esbuild into a single ES module (Node 22,
 * x86_64), with the heavy native/wasm packages left to the deps layer.
 */
export class HandlerFunction extends NodejsFunction {
  readonly handlerName: FunctionName;

  constructor(scope: Construct, id: string, props: HandlerFunctionProps) {
    const root = props.projectRoot ?? PROJECT_ROOT;
    const inBundle = props.depsLayer === undefined;
    const nodeModules = props.depsLayer?.nodeModulesPath ?? '/var/task/node_modules';
    const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      // Logs are diagnostics, not records: they go with the stack.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    super(scope, id, {
      description: `Myeloscope ${props.name}`,
      entry: join(root, 'functions', props.name, 'index.ts'),
      handler: 'handler',
      projectRoot: root,
      depsLockFilePath: join(root, 'package-lock.json'),
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.X86_64,
      memorySize: props.memorySize ?? 1024,
      timeout: props.timeout ?? Duration.seconds(30),
      tracing: lambda.Tracing.ACTIVE,
      logGroup,
      layers: props.depsLayer ? [props.depsLayer.layer] : [],
      environment: {
        NODE_OPTIONS: '--enable-source-maps',
        ...(props.usesTfjsWasm ? { TFJS_WASM_PATH: tfjsWasmDir(nodeModules) } : {}),
        ...props.environment,
      },
      bundling: {
        forceDockerBundling: false,
        format: OutputFormat.ESM,
        target: 'node22',
        // Prefer the ES module builds (TensorFlow.js): they tree-shake and need no interop.
        mainFields: ['module', 'main'],
        minify: true,
        sourceMap: true,
        sourcesContent: false,
        // esbuild's per-bundle size summary is noise in `cdk synth`; warnings and errors still show.
        logLevel: LogLevel.WARNING,
        banner: REQUIRE_SHIM,
        // Emscripten glue reads __dirname/__filename, which ES modules lack.
        define: { __dirname: 'import.meta.dirname', __filename: 'import.meta.filename' },
        // Replaces the default ['@aws-sdk/*']: the SDK is bundled, so the version tested is the one deployed.
        externalModules: [...EXTERNAL_MODULES],
        ...(inBundle
          ? {
              commandHooks: {
                beforeBundling: () => [],
                beforeInstall: () => [],
                afterBundling: (_inputDir: string, outputDir: string) => [copyDepsCommand(root, outputDir)],
              },
            }
          : {}),
      },
    });
    this.handlerName = props.name;
    Tags.of(this).add(FUNCTION_TAG, props.name);
    ack(logGroup, {
      'HIPAA.Security-CloudWatchLogGroupEncrypted':
        'Encrypted at rest by CloudWatch Logs; the handlers log keys and counts, never image data.',
    });
    ack(this, {
      'AwsSolutions-L1': 'Pinned to nodejs22.x: the deps layer (sharp, OpenCV.js) is built and tested for it; upgrades are deliberate.',
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]':
        'The AWS-managed logging policy of every Lambda function: writing its own logs only.',
      'AwsSolutions-IAM5[Resource::*]': 'X-Ray tracing (xray:PutTraceSegments, PutTelemetryRecords) has no resource-level permissions.',
      'HIPAA.Security-IAMNoInlinePolicy': 'The CDK grants, scoped to this one role and removed with it.',
      'HIPAA.Security-LambdaConcurrency':
        'S3 events and the throttled API bound the load; reserving concurrency would take it from the account pool.',
      'HIPAA.Security-LambdaDLQ':
        'S3-triggered failures are quarantined or retried by S3; workflow failures are kept by Step Functions; API calls are synchronous.',
      'HIPAA.Security-LambdaInsideVPC':
        'The functions reach only S3 over TLS with IAM: a VPC would need NAT or endpoints and protect nothing more.',
    });
  }
}

/** Shell command that copies the deps packages into <outputDir>/node_modules (see layers/deps/build.ts). */
function copyDepsCommand(root: string, outputDir: string): string {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
  const script = join(root, 'layers', 'deps', 'build.ts');
  return [process.execPath, tsx, script, outputDir, '--flat'].map(quote).join(' ');
}
