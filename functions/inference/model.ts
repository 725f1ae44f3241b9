/**
 * The latest published model, loaded once per container. A warm container re-reads models/latest.json at
 * most every MODEL_REFRESH_SECONDS (0 = on every request) and swaps in a newer run; the old model is
 * disposed once the requests still using it have finished.
 */
import * as tf from '@tensorflow/tfjs';
import { LATEST_POINTER_KEY } from '../../layers/core/src/keys.ts';
import { initBackend } from '../../layers/core/src/ml/backend.ts';
import { loadModel } from '../../layers/core/src/ml/io.ts';
import type { S3Store } from '../../layers/aws/src/s3.ts';
import { log } from '../../layers/aws/src/events.ts';
import type { LatestPointer } from '../publish/index.ts';
import { NoModelError } from './http.ts';

export interface LoadedModel {
  runId: string;
  publishedAt: string;
  model: tf.LayersModel;
  inputSize: number;
  inUse: number;
  retired: boolean;
}

export class ModelCache {
  private current: LoadedModel | undefined;
  private checkedAt = 0;
  private pending: Promise<LoadedModel> | undefined;

  constructor(
    private readonly store: S3Store,
    private readonly refreshMs: number,
    private readonly defaultInputSize: number,
  ) {}

  /** Runs fn with the latest model, which stays alive (undisposed) until fn settles. */
  async use<T>(fn: (m: LoadedModel) => Promise<T>): Promise<T> {
    const m = await this.latest();
    m.inUse++;
    try {
      return await fn(m);
    } finally {
      m.inUse--;
      if (m.retired && m.inUse === 0) m.model.dispose();
    }
  }

  private latest(): Promise<LoadedModel> {
    if (this.current && Date.now() - this.checkedAt < this.refreshMs) return Promise.resolve(this.current);
    // One refresh at a time: concurrent requests share it.
    this.pending ??= this.refresh().finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async refresh(): Promise<LoadedModel> {
    if (!(await this.store.exists(LATEST_POINTER_KEY))) throw new NoModelError();
    const pointer = await this.store.getJson<LatestPointer>(LATEST_POINTER_KEY);
    this.checkedAt = Date.now();
    if (this.current?.runId === pointer.runId) return this.current;
    await initBackend();
    const model = await loadModel(this.store, pointer.modelPrefix);
    const shape = model.inputs[0]?.shape;
    const inputSize = typeof shape?.[1] === 'number' ? shape[1] : this.defaultInputSize;
    const previous = this.current;
    this.current = { runId: pointer.runId, publishedAt: pointer.publishedAt, model, inputSize, inUse: 0, retired: false };
    if (previous) {
      previous.retired = true;
      if (previous.inUse === 0) previous.model.dispose();
    }
    log('info', 'model loaded', { runId: pointer.runId, replaced: previous?.runId ?? null });
    return this.current;
  }
}
