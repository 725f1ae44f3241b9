/** Helpers the file-handling commands share: image files of a folder, content types, a small worker pool, progress bars. */
import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import cliProgress from 'cli-progress';
import { CliError, EXIT } from './errors.ts';

export const IMAGE_TYPES: Record<string, string> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.bmp': 'image/bmp',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
};

export const contentType = (file: string) => IMAGE_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';
const isImage = (file: string) => !file.startsWith('.') && extname(file).toLowerCase() in IMAGE_TYPES;

/** What a path is, with a clear error when it is nothing. */
export async function kindOf(path: string): Promise<'file' | 'dir'> {
  try {
    return (await stat(path)).isDirectory() ? 'dir' : 'file';
  } catch {
    throw new CliError(`${path}: no such file or folder`, EXIT.notFound);
  }
}

/** Image files directly in a folder, in natural order; [] when the folder does not exist. Says on stderr what it left out. */
export async function imagesIn(dir: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return [];
  }
  const files: string[] = [];
  const skipped: string[] = [];
  for (const f of entries) {
    if (!(await stat(join(dir, f))).isFile()) continue;
    if (isImage(f)) files.push(f);
    else if (!f.startsWith('.')) skipped.push(f); // .DS_Store and the like are no news
  }
  // Said, not silently dropped: a .jpeg2 or .txt left out may be a surprise.
  if (skipped.length > 0) {
    const shown = skipped.sort().slice(0, 5).join(', ');
    process.stderr.write(`skipped ${skipped.length} file(s) in ${dir} without an image extension: ${shown}${skipped.length > 5 ? ', …' : ''}\n`);
  }
  return files.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
}

/** Runs fn over items, at most `limit` at a time; the first error stops new work and is rethrown. */
export async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed !== undefined) throw failed;
}

/** A progress bar on stderr, drawn only on a terminal (scripts and logs get no control characters). */
export function progressBar(label: string, total: number): { tick(name: string): void; stop(): void } {
  if (!process.stderr.isTTY) return { tick: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: `${label} [{bar}] {value}/{total} {file}`, hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { file: '' });
  return {
    tick: (name) => bar.increment(1, { file: name.length > 40 ? `…${name.slice(-39)}` : name }),
    stop: () => bar.stop(),
  };
}
