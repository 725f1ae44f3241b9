import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { MyeloscopeStack } from './myeloscope-stack.ts';
import { applyNag } from './nag.ts';
import { STACK_NAME } from './names.ts';

export interface CreateAppOptions {
  /** Cloud assembly directory. @default the CDK default (cdk.out, or what the CLI asks for) */
  outdir?: string;
  /** Extra context, over cdk.json's (the CLI's -c still wins). @default {} */
  context?: Record<string, unknown>;
  /**
   * Run CDK's built-in CloudFormation template validation at synth (a few seconds of wasm): worth it for
   * `cdk synth` and tests, not for the local cloud, which re-reads an unchanged template at every start.
   * @default true
   */
  validation?: boolean;
  /**
   * Hold the app to cdk-nag's AwsSolutions and HIPAA Security packs at synth (see nag.ts). The local cloud
   * turns it off: it only reads the template back, and `cdk synth` and the tests check it.
   * @default true
   */
  nag?: boolean;
}

/**
 * cdk.json's context (the feature flags). The CLI passes it to the app itself; reading it here too makes
 * an app built in-process (tests, the local cloud) synthesize the same template as `cdk synth`.
 */
export function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')) as {
    context?: Record<string, unknown>;
  };
  return cdkJson.context ?? {};
}

/**
 * The Myeloscope app: one environment-agnostic stack (no account or region, so nothing is looked up and
 * the same template deploys anywhere, LocalStack included).
 */
export function createApp(opts: CreateAppOptions = {}): { app: App; stack: MyeloscopeStack } {
  const app = new App({
    ...(opts.outdir ? { outdir: opts.outdir } : {}),
    context: { ...cdkJsonContext(), ...opts.context },
    ...(opts.validation === false ? { builtinCloudFormationValidation: false, treeMetadata: false } : {}),
  });
  const stack = new MyeloscopeStack(app, STACK_NAME, {
    description: 'Myeloscope: multiple-myeloma plasma cells in bone-marrow microscopy',
  });
  if (opts.nag !== false) applyNag(app);
  return { app, stack };
}
