/**
 * Seeded pseudo-random numbers. Everything random in training (split, shuffling, augmentation, dropout)
 * draws from here so that a run is reproducible from one integer seed; Math.random is never used.
 */

/** A generator of floats in [0, 1). */
export type Rng = () => number;

/** mulberry32: tiny, fast, 32-bit state; plenty for shuffling and augmentation (not cryptographic). */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A new 32-bit seed from a seed and labels (e.g. deriveSeed(seed, 'shuffle', epoch)), so that independent
 * streams do not share a sequence: adding augmentation must not change the shuffling order.
 */
export function deriveSeed(seed: number, ...salt: (string | number)[]): number {
  // FNV-1a over the textual form: stable across platforms and versions.
  let h = 0x811c9dc5;
  const text = [seed >>> 0, ...salt].join('\u0000');
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // One mulberry32 round to spread the bits of short inputs.
  return Math.floor(mulberry32(h >>> 0)() * 4294967296) >>> 0;
}

/** Integer in [0, n). */
export function randomInt(rng: Rng, n: number): number {
  return Math.min(n - 1, Math.floor(rng() * n));
}

/** Fisher-Yates shuffle into a new array; the input is left untouched. */
export function shuffle<T>(items: readonly T[], seedOrRng: number | Rng): T[] {
  const rng = typeof seedOrRng === 'number' ? mulberry32(seedOrRng) : seedOrRng;
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(rng, i + 1);
    const tmp = out[i];
    out[i] = out[j];
    out[j] = tmp;
  }
  return out;
}
