/**
 * The training workflow's state: what each step of the state machine receives and returns. Steps pass S3 URIs
 * and small scalars only; bulk data stays in S3.
 */
import { InvalidInputError } from './errors.ts';
import { RUN_ID_PATTERN } from './keys.ts';

/**
 * cells: plasma cell vs other nucleated cell, labels from the masks (the honest task on SegPC, where every
 * image is from a myeloma patient). images: image-level labels from the key prefix raw/<dataset>/<label>/,
 * the original project's way; its audit warns when the labels coincide with where the images came from.
 */
export type Task = 'cells' | 'images';

/** Input size when the execution input names none. */
export const DEFAULT_INPUT_SIZE: Record<Task, number> = { cells: 64, images: 128 };

export interface RunParams {
  /** segmented/<dataset>/ is read. @default "segpc" */
  dataset: string;
  /** @default "cells" (plasma cell vs other nucleated cell, labels from the masks) */
  task: Task;
  /** @default 20 (vs 12, paired bootstrap on the bundled data: ROC AUC +0.011 [0.002, 0.020], accuracy +0.061 [0.035, 0.091]) */
  epochs: number;
  /** @default 32 */
  batchSize: number;
  /** Side of the square crops (cells) or images (images) fed to the CNN. @default 64 for cells, 128 for images */
  inputSize: number;
  /** Seeds the split, the initial weights and the shuffles. @default 42 */
  seed: number;
  /** Fraction of source images held out for evaluation. @default 0.25 */
  testFraction: number;
  /** Fraction of source images for validation during training. @default 0.1 */
  valFraction: number;
  /** Quality gate: a run whose held-out ROC AUC is below this is not published. @default 0.75 */
  minRocAuc: number;
}

export const DEFAULT_PARAMS: RunParams = {
  dataset: 'segpc',
  task: 'cells',
  epochs: 20,
  batchSize: 32,
  inputSize: 64,
  seed: 42,
  testFraction: 0.25,
  valFraction: 0.1,
  minRocAuc: 0.75,
};

export interface ManifestSample {
  /** `<sourceImage>#<cellId>` */
  id: string;
  /** The processed image the crop comes from: the unit of the split. */
  sourceImage: string;
  cellId: number;
  cropKey: string;
  /** ETag of the crop object when the manifest was made. */
  cropEtag: string;
  label: 0 | 1;
  split: 'train' | 'val' | 'test';
}

/** What the images task checks: does an image's label coincide with something other than its content? */
export interface AuditFinding {
  attribute: 'folder' | 'size' | 'format' | 'acquisition';
  /** Per label, the values seen (at most a few, most frequent first). */
  valuesByLabel: Record<string, string[]>;
  /** True when no value is shared between labels: a classifier can reach 100 % from it alone. */
  separatesLabels: boolean;
  message: string;
}

export interface Manifest {
  runId: string;
  createdAt: string;
  params: RunParams;
  /** Class names by label value: [label 0, label 1]. */
  classes: [string, string];
  /** images task only: the source-vs-label audit. */
  audit?: AuditFinding[];
  /** Per source image: the ETags of the inputs, so a report can be traced to its exact data. */
  sources: { image: string; imageEtag: string; maskEtag: string | null; cellsKey: string; cellsEtag: string; sourceKey: string | null }[];
  samples: ManifestSample[];
}

/**
 * Held-out metrics the state machine carries (the quality gate reads rocAuc). Each `...Ci` is a percentile
 * interval at `ciLevel` from a bootstrap over held-out source images; null where no replicate was defined.
 */
export interface HeadlineMetrics {
  accuracy: number;
  rocAuc: number | null;
  testCells: number;
  testImages: number;
  accuracyCi: [number, number] | null;
  rocAucCi: [number, number] | null;
  balancedAccuracy: number | null;
  balancedAccuracyCi: [number, number] | null;
  /** Mean over held-out images of |predicted - mask-labelled| plasma-cell count. */
  meanAbsCountError: number | null;
  meanAbsCountErrorCi: [number, number] | null;
  /** e.g. 0.95 */
  ciLevel: number;
  bootstrapReplicates: number;
}

export interface RunState {
  runId: string;
  params: RunParams;
  manifestUri: string;
  counts: { train: number; val: number; test: number; sources: number };
  classes?: [string, string];
  /** images task: the audit's warnings, one line each (empty when nothing coincides). */
  auditWarnings?: string[];
  /** What makes this run's numbers weak (splitWarnings), one line each; shown with its results. */
  warnings?: string[];
  modelUri?: string;
  trainingUri?: string;
  backend?: string;
  evaluationUri?: string;
  metrics?: HeadlineMetrics;
  publishedUri?: string;
  reportUri?: string;
}

const INT_FIELDS = ['epochs', 'batchSize', 'inputSize', 'seed'] as const;
const LIMITS: Record<(typeof INT_FIELDS)[number], [number, number]> = {
  epochs: [1, 500],
  batchSize: [1, 1024],
  inputSize: [16, 256],
  seed: [0, 2 ** 31 - 1],
};

/** Validates execution input: unknown fields and bad values fail fast with the reason. */
export function parseRunInput(input: unknown): { runId?: string; params: RunParams } {
  if (input === null || input === undefined) return { params: { ...DEFAULT_PARAMS } };
  if (typeof input !== 'object' || Array.isArray(input)) throw new InvalidInputError('execution input must be a JSON object');
  const obj = input as Record<string, unknown>;
  const known = new Set<string>(['runId', ...Object.keys(DEFAULT_PARAMS)]);
  const unknown = Object.keys(obj).filter((k) => !known.has(k));
  if (unknown.length) throw new InvalidInputError(`unknown input field(s): ${unknown.join(', ')}; allowed: ${[...known].join(', ')}`);
  const params: RunParams = { ...DEFAULT_PARAMS };
  if (obj.dataset !== undefined) {
    if (typeof obj.dataset !== 'string' || !/^[^/]+$/.test(obj.dataset)) throw new InvalidInputError('dataset must be a folder name without "/"');
    params.dataset = obj.dataset;
  }
  if (obj.task !== undefined) {
    if (obj.task !== 'cells' && obj.task !== 'images') {
      throw new InvalidInputError(`task must be "cells" or "images" (got ${JSON.stringify(obj.task)})`);
    }
    params.task = obj.task;
    if (obj.inputSize === undefined) params.inputSize = DEFAULT_INPUT_SIZE[params.task];
  }
  for (const f of INT_FIELDS) {
    const v = obj[f];
    if (v === undefined) continue;
    const [lo, hi] = LIMITS[f];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
      throw new InvalidInputError(`${f} must be an integer from ${lo} to ${hi} (got ${JSON.stringify(v)})`);
    }
    params[f] = v;
  }
  for (const f of ['testFraction', 'valFraction'] as const) {
    const v = obj[f];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !(v > 0 && v < 0.5)) throw new InvalidInputError(`${f} must be a number above 0 and below 0.5`);
    params[f] = v;
  }
  if (obj.minRocAuc !== undefined) {
    if (typeof obj.minRocAuc !== 'number' || !(obj.minRocAuc >= 0 && obj.minRocAuc <= 1)) {
      throw new InvalidInputError('minRocAuc must be a number from 0 to 1');
    }
    params.minRocAuc = obj.minRocAuc;
  }
  let runId: string | undefined;
  if (obj.runId !== undefined) {
    if (typeof obj.runId !== 'string' || !RUN_ID_PATTERN.test(obj.runId)) {
      throw new InvalidInputError('runId must be 1-80 characters of letters, digits, ".", "_" or "-"');
    }
    runId = obj.runId;
  }
  return runId ? { runId, params } : { params };
}

/** A run id from an execution name, kept to the key-safe alphabet. */
export function runIdFromExecutionName(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 80);
  if (!safe) throw new InvalidInputError(`cannot derive a run id from execution name ${JSON.stringify(name)}`);
  return safe;
}

/** Every warning a run carries (split, then audit), one line each, for whoever shows its results. */
export function runWarnings(run: Pick<RunState, 'warnings' | 'auditWarnings'>): string[] {
  return [...(run.warnings ?? []), ...(run.auditWarnings ?? [])];
}

/** Below this many held-out source images, the bootstrap intervals are too wide to be worth much. */
export const MIN_TEST_IMAGES = 5;

/**
 * Warnings about a split that runs but whose numbers a user should not trust: no validation images, or too
 * few held-out images for the bootstrap over images to mean much (the quality gate then decides on noise).
 */
export function splitWarnings(images: { train: number; val: number; test: number }, params: Pick<RunParams, 'valFraction'>): string[] {
  const out: string[] = [];
  if (images.val === 0 && params.valFraction > 0) {
    out.push(`no validation images (valFraction ${params.valFraction} of ${images.train + images.test} images rounds to none): training ran without a validation check`);
  }
  if (images.test < MIN_TEST_IMAGES) {
    out.push(
      `only ${images.test} held-out image(s): the 95 % intervals resample images and are wide or degenerate, and the quality gate decides on little evidence; upload more images (at least ${Math.ceil(MIN_TEST_IMAGES / 0.25)} for the default testFraction)`,
    );
  }
  return out;
}
