/**
 * PrepareDataset step: reads every segmented/<dataset>/.../cells.json and builds the run's manifest, split by
 * source image (never by crop), seeded.
 * - cells task: one sample per labelled cell crop (plasma / other from the masks).
 * - images task: one sample per ROI-masked image, labelled by its folder raw/<dataset>/<label>/; the manifest
 *   carries an audit of what else coincides with the labels.
 */
import { InvalidInputError } from '../../layers/core/src/errors.ts';
import { modelKeys, runKeys, SEGMENTED_PREFIX } from '../../layers/core/src/keys.ts';
import type { CellsRecord } from '../../layers/core/src/pipeline.ts';
import { splitBySource } from '../../layers/core/src/ml/split.ts';
import { auditImageLabels } from '../../layers/core/src/audit.ts';
import {
  parseRunInput,
  runIdFromExecutionName,
  splitWarnings,
  type Manifest,
  type ManifestSample,
  type RunParams,
  type RunState,
} from '../../layers/core/src/workflow.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';

const work = new S3Store(bucketName('work'));
const models = new S3Store(bucketName('models'));

export interface PrepareDatasetEvent {
  input: unknown;
  executionName: string;
}

type Sample = Omit<ManifestSample, 'split'>;
type Source = Manifest['sources'][number];

interface Collected {
  sources: Source[];
  samples: Sample[];
  classes: [string, string];
  audit?: Manifest['audit'];
}

export async function handler(event: PrepareDatasetEvent): Promise<RunState> {
  const { runId: requested, params } = parseRunInput(event.input);
  const runId = requested ?? runIdFromExecutionName(event.executionName);
  const keys = runKeys(runId);
  // Checked first: a taken run id would otherwise train in full, fail at Publish, and leave its files over
  // the published run's working copy under runs/<runId>/.
  const publishedAt = modelKeys(runId);
  if (await models.exists(publishedAt.published)) {
    throw new InvalidInputError(
      `run id '${runId}' is already published (${models.uri(publishedAt.dir)}); run ids are immutable: choose another runId, or leave it out to use the execution name`,
    );
  }
  const prefix = `${SEGMENTED_PREFIX}${params.dataset}/`;
  const records: { cellsKey: string; etag: string; record: CellsRecord }[] = [];
  for (const cellsKey of (await work.list(prefix)).filter((k) => k.endsWith('/cells.json'))) {
    const head = await work.head(cellsKey);
    if (head) records.push({ cellsKey, etag: head.etag, record: await work.getJson<CellsRecord>(cellsKey) });
  }
  const collected = params.task === 'images' ? collectImages(records, params, prefix) : collectCells(records, params, prefix);
  const { sources, samples, classes, audit } = collected;
  const split = splitBySource(samples, { seed: params.seed, testFraction: params.testFraction, valFraction: params.valFraction });
  const tagged: ManifestSample[] = [
    ...split.train.map((s) => ({ ...s, split: 'train' as const })),
    ...split.val.map((s) => ({ ...s, split: 'val' as const })),
    ...split.test.map((s) => ({ ...s, split: 'test' as const })),
  ];
  const manifest: Manifest = { runId, createdAt: new Date().toISOString(), params, classes, ...(audit ? { audit } : {}), sources, samples: tagged };
  await work.putJson(keys.manifest, manifest);
  const counts = { train: split.train.length, val: split.val.length, test: split.test.length, sources: sources.length };
  const auditWarnings = audit?.filter((f) => f.separatesLabels).map((f) => f.message);
  const imagesIn = (part: { sourceImage: string }[]) => new Set(part.map((s) => s.sourceImage)).size;
  const warnings = splitWarnings({ train: imagesIn(split.train), val: imagesIn(split.val), test: imagesIn(split.test) }, params);
  log('info', 'manifest written', { runId, task: params.task, ...counts });
  for (const w of auditWarnings ?? []) log('warn', 'audit', { runId, warning: w });
  for (const w of warnings) log('warn', 'split', { runId, warning: w });
  return {
    runId,
    params,
    manifestUri: work.uri(keys.manifest),
    counts,
    classes,
    ...(auditWarnings ? { auditWarnings } : {}),
    ...(warnings.length ? { warnings } : {}),
  };
}

function sourceOf(r: { cellsKey: string; etag: string; record: CellsRecord }): Source {
  return {
    image: r.record.imageKey,
    imageEtag: r.record.imageEtag,
    maskEtag: r.record.maskEtag,
    cellsKey: r.cellsKey,
    cellsEtag: r.etag,
    sourceKey: r.record.sourceKey,
  };
}

function collectCells(records: { cellsKey: string; etag: string; record: CellsRecord }[], params: RunParams, prefix: string): Collected {
  // Only images with a plasma-cell mask carry cell labels; the others are for counting, not training.
  const labelled = records.filter((r) => r.record.maskKey);
  if (labelled.length < 3) {
    throw new InvalidInputError(
      `dataset "${params.dataset}" has ${labelled.length} segmented image(s) with plasma-cell masks under ${work.uri(prefix)}; at least 3 are needed to split by image`,
    );
  }
  const samples: Sample[] = [];
  for (const { record } of labelled) {
    for (const cell of record.cells) {
      if (!cell.label) continue;
      samples.push({
        id: `${record.imageKey}#${cell.id}`,
        sourceImage: record.imageKey,
        cellId: cell.id,
        cropKey: cell.crop,
        cropEtag: cell.cropEtag,
        label: cell.label === 'plasma' ? 1 : 0,
      });
    }
  }
  return { sources: labelled.map(sourceOf), samples, classes: ['other', 'plasma'] };
}

function collectImages(records: { cellsKey: string; etag: string; record: CellsRecord }[], params: RunParams, prefix: string): Collected {
  const labels = [...new Set(records.map((r) => r.record.label))].sort();
  if (labels.length !== 2) {
    throw new InvalidInputError(
      `the images task needs exactly 2 labels under raw/${params.dataset}/<label>/; found ${labels.length} (${labels.join(', ') || 'none'}) in ${work.uri(prefix)}. ` +
        'Every bundled SegPC image comes from a myeloma patient: use task "cells" for them.',
    );
  }
  const classes = labels as [string, string];
  const perLabel = labels.map((l) => records.filter((r) => r.record.label === l).length);
  if (Math.min(...perLabel) < 3) {
    throw new InvalidInputError(`the images task needs at least 3 images per label; found ${labels.map((l, i) => `${l}: ${perLabel[i]}`).join(', ')}`);
  }
  const samples: Sample[] = records.map(({ record, etag }) => ({
    id: record.imageKey,
    sourceImage: record.imageKey,
    cellId: 0,
    // The ROI-masked image is what the original project fed its CNN.
    cropKey: record.outputs.roiImage,
    // cells.json names the exact segmentation the ROI image came from.
    cropEtag: etag,
    label: record.label === classes[1] ? 1 : 0,
  }));
  const audit = auditImageLabels(
    records.map(({ record }) => ({ label: record.label, sourceKey: record.sourceKey, width: record.width, height: record.height })),
  );
  return { sources: records.map(sourceOf), samples, classes, audit };
}
