/**
 * Cluster (by source image) bootstrap with percentile intervals. Cells of one image share the patient, the
 * smear and the segmentation, so they are not independent: resampling cells would understate the spread.
 * Resampling whole images with replacement keeps that correlation in every replicate.
 */
import { InvalidInputError } from '../errors.ts';
import { deriveSeed, mulberry32, randomInt } from '../ml/random.ts';

export interface BootstrapOptions {
  /** @default 1000 */
  replicates?: number;
  /** @default 42 */
  seed?: number;
  /** @default 0.95 */
  confidence?: number;
}

export interface BootstrapInterval {
  /** Percentile interval [lo, hi]; null when no replicate gave a defined value. */
  ci: [number, number] | null;
  /** Replicates where the statistic was defined (finite) and entered the interval. */
  valid: number;
  /** Replicates where the statistic was undefined (NaN, e.g. AUC of a one-class resample) and were skipped. */
  skipped: number;
}

/** Quantile of sorted values by linear interpolation between order statistics (R type 7, numpy default). */
export function quantileSorted(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

/**
 * Draws `replicates` resamples of `clusters` clusters with replacement and evaluates `statistic` on each
 * (it receives the drawn cluster indices, repeats included). Returns, per named statistic, the percentile
 * interval over the replicates where it was finite. Same inputs and seed give the same result.
 */
export function clusterBootstrap<K extends string>(
  clusters: number,
  statistic: (drawn: readonly number[]) => Record<K, number>,
  opts: BootstrapOptions = {},
): Record<K, BootstrapInterval> {
  const replicates = opts.replicates ?? 1000;
  const confidence = opts.confidence ?? 0.95;
  if (!Number.isInteger(replicates) || replicates < 1) throw new InvalidInputError(`replicates must be a positive integer (got ${replicates})`);
  if (!(confidence > 0 && confidence < 1)) throw new InvalidInputError(`confidence must be in (0, 1) (got ${confidence})`);
  // A stream of its own so the bootstrap never shares draws with the split or training.
  const rng = mulberry32(deriveSeed(opts.seed ?? 42, 'bootstrap'));
  const values = new Map<K, number[]>();
  const skipped = new Map<K, number>();
  const drawn = new Array<number>(clusters);
  for (let b = 0; b < replicates; b++) {
    for (let i = 0; i < clusters; i++) drawn[i] = randomInt(rng, clusters);
    const stats = statistic(drawn);
    for (const key of Object.keys(stats) as K[]) {
      const v = stats[key];
      if (!values.has(key)) {
        values.set(key, []);
        skipped.set(key, 0);
      }
      if (Number.isFinite(v)) (values.get(key) as number[]).push(v);
      else skipped.set(key, (skipped.get(key) ?? 0) + 1);
    }
  }
  const alpha = (1 - confidence) / 2;
  const out = {} as Record<K, BootstrapInterval>;
  for (const [key, vs] of values) {
    vs.sort((a, b) => a - b);
    out[key] = {
      ci: vs.length ? [quantileSorted(vs, alpha), quantileSorted(vs, 1 - alpha)] : null,
      valid: vs.length,
      skipped: skipped.get(key) ?? 0,
    };
  }
  return out;
}

/** Groups item indices by a key, clusters in order of first appearance (deterministic for a given input). */
export function groupIndices(keys: readonly string[]): { ids: string[]; members: number[][] } {
  const at = new Map<string, number>();
  const ids: string[] = [];
  const members: number[][] = [];
  keys.forEach((k, i) => {
    let c = at.get(k);
    if (c === undefined) {
      c = ids.length;
      at.set(k, c);
      ids.push(k);
      members.push([]);
    }
    (members[c] as number[]).push(i);
  });
  return { ids, members };
}
