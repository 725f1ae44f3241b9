/**
 * What the local cloud's processes print when something throws that nobody catches: one short line with the
 * error (and a few stack frames), not Node's default, which first prints the source line of the throw. That
 * line was often the whole minified tfjs-backend-wasm or OpenCV.js script, whose Emscripten glue rethrows
 * every uncaught exception from its own listener, burying the real error under megabytes of code.
 */
import { inspect } from 'node:util';

const MAX_LINE = 240;

/** The error as a few readable lines: name, message, up to `frames` stack frames, each line cut short. */
export function formatCrash(err: unknown, frames = 4): string {
  const cut = (line: string) => (line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}…` : line);
  if (!(err instanceof Error)) return cut(`uncaught ${inspect(err, { depth: 2, breakLength: Infinity })}`);
  const code = (err as NodeJS.ErrnoException).code;
  const head = `${err.name}${code ? ` [${code}]` : ''}: ${err.message}`;
  const stack = (err.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l)).slice(0, frames);
  return [head, ...stack].map(cut).join('\n');
}

/**
 * Takes over uncaught exceptions (and unhandled rejections, which Node raises as such) for this process:
 * prints `<who> crashed: <error>` and exits 1. A capture callback, not a listener: listeners such as
 * Emscripten's are then not called at all. For entry points only (start, serve), never in a library.
 */
export function installCrashHandler(who: string): void {
  process.setUncaughtExceptionCaptureCallback((err: unknown) => {
    const full = process.env.MYELOSCOPE_DEBUG && err instanceof Error ? `\n${err.stack ?? ''}` : '';
    process.stderr.write(`${who} crashed: ${formatCrash(err)}${full}\n(MYELOSCOPE_DEBUG=1 prints the whole stack)\n`);
    process.exit(1);
  });
}
