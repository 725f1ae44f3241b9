/**
 * PrepareDataset step: reads every segmented/<dataset>/.../cells.json with plasma-cell labels, builds the
 * manifest of labelled cell crops and splits it by source image (never by crop), seeded.
 */
import { InvalidInputError } from '../../layers/core/src/errors.ts';
import { runKeys, SEGMENTED_PREFIX } from '../../layers/core/src/keys.ts';
import type { CellsRecord } from '../../layers/core/src/pipeline.ts';
import { splitBySource } from '../../layers/core/src/ml/split.ts';
import {
  parseRunInput,
  runIdFromExecutionName,
  type Manifest,
  type ManifestSample,
  type RunState,
} from '../../layers/core/src/workflow.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';

const work = new S3Store(bucketName('work'));

export interface PrepareDatasetEvent {
  input: unknown;
  executionName: string;
}

export async function handler(event: PrepareDatasetEvent): Promise<RunState> {
  const { runId: requested, params } = parseRunInput(event.input);
  const runId = requested ?? runIdFromExecutionName(event.executionName);
  const keys = runKeys(runId);
  const prefix = `${SEGMENTED_PREFIX}${params.dataset}/`;
  const cellsKeys = (await work.list(prefix)).filter((k) => k.endsWith('/cells.json'));
  const sources: Manifest['sources'] = [];
  const samples: Omit<ManifestSample, 'split'>[] = [];
  for (const cellsKey of cellsKeys) {
    const head = await work.head(cellsKey);
    const record = await work.getJson<CellsRecord>(cellsKey);
    // Only images with a plasma-cell mask carry cell labels; the others are for counting, not training.
    if (!record.maskKey || !head) continue;
    sources.push({
      image: record.imageKey,
      imageEtag: record.imageEtag,
      maskEtag: record.maskEtag,
      cellsKey,
      cellsEtag: head.etag,
      sourceKey: record.sourceKey,
    });
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
  if (sources.length < 3) {
    throw new InvalidInputError(
      `dataset "${params.dataset}" has ${sources.length} segmented image(s) with plasma-cell masks under ${work.uri(prefix)}; at least 3 are needed to split by image`,
    );
  }
  const split = splitBySource(samples, { seed: params.seed, testFraction: params.testFraction, valFraction: params.valFraction });
  const tagged: ManifestSample[] = [
    ...split.train.map((s) => ({ ...s, split: 'train' as const })),
    ...split.val.map((s) => ({ ...s, split: 'val' as const })),
    ...split.test.map((s) => ({ ...s, split: 'test' as const })),
  ];
  const manifest: Manifest = { runId, createdAt: new Date().toISOString(), params, sources, samples: tagged };
  await work.putJson(keys.manifest, manifest);
  const counts = { train: split.train.length, val: split.val.length, test: split.test.length, sources: sources.length };
  log('info', 'manifest written', { runId, ...counts });
  return { runId, params, manifestUri: work.uri(keys.manifest), counts };
}
