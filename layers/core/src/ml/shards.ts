/**
 * Data-parallel gradients over threads, for the backends that use one core (wasm, whose threaded build
 * cannot start in Node, and cpu): the training loop keeps the model and the optimizer, computes one part of
 * each batch itself and hands the other parts to worker threads, each holding a replica of the model and
 * its own copy of the training crops. Per step a worker gets the current weights (~0.4 MB for the cell
 * model) and its sample indices, and answers with its gradients; the loop averages them, weighted by part
 * size, into exactly the gradient of the whole batch's mean loss, and applies it once.
 * Native TensorFlow (tfjs-node, tfjs-node-gpu) already uses every core or the GPU: one shard there.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

/** What a worker needs to compute gradients: the model, the training set (shared, not copied), its stream. */
export interface ShardInit {
  /** model.toJSON(null, false) */
  topology: unknown;
  backend: string;
  /** Float32 [n, h, w, c] in a SharedArrayBuffer. */
  x: Float32Array;
  xShape: [number, number, number, number];
  labels: Float32Array;
  sampleWeights: Float32Array;
  /** Random stream of the replica's dropout (1, 2, ...; the loop's own model is 0). */
  stream: number;
}

export interface ShardStep {
  /** The trainable weights, in the model's order, when they changed since the last step. */
  weights?: Float32Array[];
  indices: number[];
  transforms: number[];
}

export type ShardRequest = ({ type: 'init' } & ShardInit) | ({ type: 'step' } & ShardStep);

export type ShardReply =
  | { type: 'ready' }
  | { type: 'grads'; n: number; loss: number; hits: number; grads: Float32Array[] }
  | { type: 'error'; message: string };

export interface ShardResult {
  n: number;
  loss: number;
  hits: number;
  grads: Float32Array[];
}

/** A worker died or failed; training cannot continue. */
export class ShardWorkerError extends Error {
  override readonly name = 'ShardWorkerError';
}

const WORKER_FILE = new URL('./shard-worker.mjs', import.meta.url);

/**
 * Default number of gradient shards for a backend: 2 on wasm and cpu, 1 on native TensorFlow. Fixed rather
 * than the machine's core count, because the shard count changes the result (dropout streams, summation
 * order): the same input must give the same model on a laptop and on a 2-core CI machine. The env variable
 * MYELOSCOPE_TRAIN_SHARDS overrides it (1 = the single-thread loop).
 */
export function defaultShards(backend: string, env: NodeJS.ProcessEnv = process.env): number {
  const fromEnv = env['MYELOSCOPE_TRAIN_SHARDS'];
  if (fromEnv !== undefined && fromEnv !== '') {
    const n = Number(fromEnv);
    if (!Number.isInteger(n) || n < 1 || n > 16) throw new RangeError(`MYELOSCOPE_TRAIN_SHARDS must be a whole number from 1 to 16, got '${fromEnv}'`);
    return n;
  }
  return backend === 'wasm' || backend === 'cpu' ? 2 : 1;
}

/** Whether worker threads can be started from this installation (not from a single-file bundle). */
export function shardWorkersAvailable(): boolean {
  return WORKER_FILE.protocol === 'file:' && existsSync(fileURLToPath(WORKER_FILE));
}

/** The worker threads of one training run; close() ends them. */
export class ShardWorkers {
  private failure: Error | undefined;
  private waiting: { resolve: (r: ShardReply) => void; reject: (e: Error) => void }[][];

  private constructor(private readonly workers: Worker[]) {
    this.waiting = workers.map(() => []);
    workers.forEach((w, i) => {
      w.on('message', (m: ShardReply) => {
        const next = this.waiting[i]?.shift();
        if (next === undefined) return;
        if (m.type === 'error') next.reject(new ShardWorkerError(`gradient worker ${i + 1}: ${m.message}`));
        else next.resolve(m);
      });
      w.on('error', (err) => this.fail(new ShardWorkerError(`gradient worker ${i + 1} crashed: ${err.message}`)));
      w.on('exit', (code) => {
        if (code !== 0) this.fail(new ShardWorkerError(`gradient worker ${i + 1} exited with code ${code}`));
      });
    });
  }

  /** Starts `inits.length` workers and waits until each has its backend, model and data ready. */
  static async start(inits: ShardInit[]): Promise<ShardWorkers> {
    const pool = new ShardWorkers(inits.map(() => new Worker(WORKER_FILE)));
    try {
      await Promise.all(inits.map((init, i) => pool.request(i, { type: 'init', ...init })));
    } catch (err) {
      await pool.close();
      throw err;
    }
    return pool;
  }

  /** One step: part i of the batch goes to worker i; resolves with each worker's gradients. */
  async step(parts: ShardStep[]): Promise<ShardResult[]> {
    if (parts.length !== this.workers.length) throw new Error(`${parts.length} parts for ${this.workers.length} workers`);
    const replies = await Promise.all(parts.map((p, i) => this.request(i, { type: 'step', ...p })));
    return replies.map((r) => {
      if (r.type !== 'grads') throw new ShardWorkerError(`unexpected reply '${r.type}' to a step`);
      return { n: r.n, loss: r.loss, hits: r.hits, grads: r.grads };
    });
  }

  async close(): Promise<void> {
    this.failure ??= new ShardWorkerError('gradient workers closed');
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private request(i: number, msg: ShardRequest): Promise<ShardReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting[i]?.push({ resolve, reject });
      this.workers[i]?.postMessage(msg);
    });
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const queue of this.waiting) for (const w of queue.splice(0)) w.reject(err);
  }
}
