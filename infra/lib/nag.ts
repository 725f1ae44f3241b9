import { type App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks, HIPAASecurityChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';

/**
 * The cdk-nag packs the app is held to. cdk-nag 3 runs them as CDK policy-validation plugins: a finding
 * that is not acknowledged fails `cdk synth` (exit code 1, listed in the validation report).
 */
export function nagPacks(): (AwsSolutionsChecks | HIPAASecurityChecks)[] {
  return [new AwsSolutionsChecks(), new HIPAASecurityChecks()];
}

/** Adds the packs to the app. */
export function applyNag(app: App): void {
  Validations.of(app).addPlugins(...nagPacks());
}

/**
 * Acknowledges cdk-nag findings on a construct and everything under it, one reason per finding id
 * (`Rule` or `Rule[Finding]`, e.g. `AwsSolutions-IAM5[Resource::*]`).
 */
export function ack(scope: IConstruct, reasons: Record<string, string>): void {
  for (const [id, reason] of Object.entries(reasons)) Validations.of(scope).acknowledge({ id, reason });
}
