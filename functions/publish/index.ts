/**
 * Publish step: copies the run's model, manifest, training history, evaluation and human report (report.html
 * and report/*.png) to the models bucket under models/<runId>/ (never overwritten: a run id publishes once)
 * and then points models/latest.json at it.
 */
import { MyeloscopeError } from '../../layers/core/src/errors.ts';
import { LATEST_POINTER_KEY, modelKeys, runKeys } from '../../layers/core/src/keys.ts';
import type { RunState } from '../../layers/core/src/workflow.ts';
import { reportKeys } from '../../layers/core/src/report/keys.ts';
import { bucketName } from '../../layers/aws/src/config.ts';
import { S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';

const work = new S3Store(bucketName('work'));
const models = new S3Store(bucketName('models'));

/** A different run's artefacts already sit under this run id: refuse rather than overwrite. */
export class RunAlreadyPublishedError extends MyeloscopeError {
  constructor(runId: string) {
    super('run-already-published', `models/${runId}/ already holds a published run with other inputs; run ids are immutable`);
  }
}

export interface LatestPointer {
  runId: string;
  publishedAt: string;
  modelPrefix: string;
  modelUri: string;
  metrics?: RunState['metrics'];
}

export async function handler(state: RunState): Promise<RunState> {
  const src = runKeys(state.runId);
  const dst = modelKeys(state.runId);
  const marker = dst.published;
  const srcReport = reportKeys(src.dir);
  const dstReport = reportKeys(dst.dir);
  const manifestHead = await work.head(src.manifest);
  if (!manifestHead) throw new MyeloscopeError('missing-input', `no manifest at ${work.uri(src.manifest)}`);
  const existing = (await models.exists(marker)) ? await models.getJson<{ manifestEtag: string }>(marker) : undefined;
  if (existing && existing.manifestEtag !== manifestHead.etag) throw new RunAlreadyPublishedError(state.runId);
  if (!existing) {
    const modelFiles = (await work.list(src.modelDir)).map((k) => [k, `${dst.dir}${k.slice(src.modelDir.length)}`] as const);
    const pictures = (await work.list(srcReport.pictures)).map((k) => [k, `${dstReport.pictures}${k.slice(srcReport.pictures.length)}`] as const);
    const copies: (readonly [string, string])[] = [
      ...modelFiles,
      [src.manifest, `${dst.dir}manifest.json`],
      [src.training, `${dst.dir}training.json`],
      [src.evaluation, dst.evaluation],
      ...pictures,
      [srcReport.html, dstReport.html],
    ];
    // Content types matter for the report: a browser opens report.html from a presigned URL only as text/html.
    for (const [from, to] of copies) {
      const obj = await work.getObject(from);
      await models.put(to, obj.body, obj.contentType);
    }
    const report = { runId: state.runId, params: state.params, counts: state.counts, backend: state.backend, metrics: state.metrics };
    await models.putJson(dst.report, report);
    // The marker goes last: its presence means every artefact above is in place.
    await models.putJson(marker, { runId: state.runId, manifestEtag: manifestHead.etag, publishedAt: new Date().toISOString() });
  }
  const pointer: LatestPointer = {
    runId: state.runId,
    publishedAt: new Date().toISOString(),
    modelPrefix: dst.dir,
    modelUri: models.uri(dst.modelJson),
    ...(state.metrics ? { metrics: state.metrics } : {}),
  };
  await models.putJson(LATEST_POINTER_KEY, pointer);
  log('info', 'published', { runId: state.runId, modelUri: pointer.modelUri });
  // reportUri is the human report; report.json beside it stays the machine-readable summary.
  return { ...state, publishedUri: models.uri(dst.dir), reportUri: models.uri(dstReport.html) };
}
