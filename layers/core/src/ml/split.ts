/**
 * Train/validation/test split by source image. Crops of one image share stain, focus and often the same
 * cells seen twice, so splitting by crop would leak the test set into training and inflate every metric.
 */
import { InvalidInputError } from '../errors.ts';
import { deriveSeed, shuffle } from './random.ts';

export interface SplitOptions {
  seed: number;
  /** Fraction of source images for testing. Default 0.2. */
  testFraction?: number;
  /** Fraction of source images for validation (early stopping, curves). Default 0.1. */
  valFraction?: number;
}

export interface Split<T> {
  train: T[];
  val: T[];
  test: T[];
}

interface Source {
  id: string;
  n: number;
  positives: number;
}

/**
 * Deterministic for a seed: source ids are sorted first, so the input order of samples does not matter.
 * Stratified: sources are grouped by plasma content (none / below median / above median share of plasma
 * crops), each group shuffled with the seed, and the groups interleaved evenly before cutting test, val,
 * train off the sequence; then, when there are enough images with plasma cells, test (>= 2) and val (>= 3)
 * are guaranteed at least one. Fractions count source images, not crops. Train always keeps an image.
 * Samples keep their input order within each side.
 */
export function splitBySource<T extends { sourceImage: string; label?: number }>(
  samples: readonly T[],
  opts: SplitOptions,
): Split<T> {
  const testFraction = opts.testFraction ?? 0.2;
  const valFraction = opts.valFraction ?? 0.1;
  if (!(testFraction >= 0 && valFraction >= 0 && testFraction + valFraction < 1)) {
    throw new InvalidInputError(`invalid split fractions: test ${testFraction}, val ${valFraction} (each >= 0, sum < 1)`);
  }
  if (!Number.isInteger(opts.seed)) throw new InvalidInputError(`split seed must be an integer, got ${opts.seed}`);

  const byId = new Map<string, Source>();
  for (const s of samples) {
    const src = byId.get(s.sourceImage) ?? { id: s.sourceImage, n: 0, positives: 0 };
    src.n++;
    if (s.label === 1) src.positives++;
    byId.set(s.sourceImage, src);
  }
  // Code-unit order, not localeCompare: identical on every machine.
  const sources = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const total = sources.length;

  // Strata by plasma content, so that the sides see similar class balance.
  const withPlasma = sources.filter((s) => s.positives > 0);
  const shares = withPlasma.map((s) => s.positives / s.n).sort((a, b) => a - b);
  const median = shares.length > 0 ? shares[Math.floor((shares.length - 1) / 2)] : 0;
  const strata: Source[][] = [
    sources.filter((s) => s.positives === 0),
    withPlasma.filter((s) => s.positives / s.n <= median),
    withPlasma.filter((s) => s.positives / s.n > median),
  ];

  // Even interleave: item j of a stratum of size k sits at (j + 0.5) / k along the sequence.
  const keyed: { src: Source; key: number; stratum: number }[] = [];
  strata.forEach((group, g) => {
    shuffle(group, deriveSeed(opts.seed, 'split', g)).forEach((src, j) => {
      keyed.push({ src, key: (j + 0.5) / group.length, stratum: g });
    });
  });
  // Ties between strata are broken by a seeded permutation of the strata, not by their fixed order.
  const strataRank = shuffle([0, 1, 2], deriveSeed(opts.seed, 'split-strata'));
  keyed.sort((a, b) => a.key - b.key || strataRank.indexOf(a.stratum) - strataRank.indexOf(b.stratum));
  const order = keyed.map((k) => k.src);

  // Counts: rounded fractions, at least one test image when asked for one, train never empty.
  let nTest = testFraction > 0 ? Math.max(1, Math.round(total * testFraction)) : 0;
  let nVal = valFraction > 0 ? Math.round(total * valFraction) : 0;
  while (nTest + nVal > total - 1 && nVal > 0) nVal--;
  while (nTest + nVal > total - 1 && nTest > 0) nTest--;

  const test = order.slice(0, nTest);
  const val = order.slice(nTest, nTest + nVal);
  const train = order.slice(nTest + nVal);
  // Make sure the held-out sides contain plasma cells when there are enough such images to spare.
  const ensurePlasma = (side: Source[], minWithPlasma: number): void => {
    if (side.length === 0 || withPlasma.length < minWithPlasma || side.some((s) => s.positives > 0)) return;
    const donorIdx = train.findIndex((s) => s.positives > 0);
    if (donorIdx < 0 || train.filter((s) => s.positives > 0).length < 2) return;
    const donor = train[donorIdx];
    train[donorIdx] = side[side.length - 1];
    side[side.length - 1] = donor;
  };
  ensurePlasma(test, 2);
  ensurePlasma(val, 3);

  const sideOf = new Map<string, 'train' | 'val' | 'test'>();
  for (const s of train) sideOf.set(s.id, 'train');
  for (const s of val) sideOf.set(s.id, 'val');
  for (const s of test) sideOf.set(s.id, 'test');
  const out: Split<T> = { train: [], val: [], test: [] };
  for (const s of samples) out[sideOf.get(s.sourceImage) ?? 'train'].push(s);
  return out;
}
