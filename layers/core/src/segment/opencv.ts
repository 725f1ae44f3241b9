/**
 * One shared OpenCV.js runtime per process, plus a scope helper that frees every Mat it tracks.
 * OpenCV.js Mats live on the WebAssembly heap: the JS garbage collector never frees them, so each
 * one must be `delete()`d explicitly or the heap grows with every image.
 */
/** The OpenCV.js module (the package's own typings). */
export type Cv = typeof import('@techstark/opencv-js');

/** Anything that owns WebAssembly memory: Mat, MatVector, CLAHE... */
export interface Deletable {
  delete(): void;
}

/** The fields of the Emscripten module we rely on before/while the runtime starts. */
interface EmscriptenModule {
  calledRun?: boolean;
  onRuntimeInitialized?: () => void;
  then?: unknown;
  Mat?: unknown;
}

let cvPromise: Promise<Cv> | undefined;

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return v instanceof Promise;
}

/** Resolve once the Emscripten runtime has started (it compiles the wasm asynchronously). */
function whenInitialized(mod: EmscriptenModule): Promise<void> {
  if (mod.calledRun === true || typeof mod.Mat === 'function') return Promise.resolve();
  return new Promise<void>((resolve) => {
    // Chain rather than overwrite: something else may already wait on the same module.
    const previous = mod.onRuntimeInitialized;
    mod.onRuntimeInitialized = () => {
      previous?.();
      resolve();
    };
  });
}

async function load(): Promise<Cv> {
  // Imported on first use: the 10 MB script compiles its wasm on import, which code paths that never
  // segment (and cold starts) should not pay for.
  // Emscripten's Node glue installs process-wide handlers: uncaughtException rethrows (printing the whole
  // 10 MB script) and unhandledRejection aborts the runtime. Those are the host's business: take them off.
  const before = {
    uncaughtException: new Set(process.listeners('uncaughtException')),
    unhandledRejection: new Set(process.listeners('unhandledRejection')),
  };
  const ns: unknown = await import('@techstark/opencv-js');
  for (const l of process.listeners('uncaughtException')) {
    if (!before.uncaughtException.has(l)) process.removeListener('uncaughtException', l);
  }
  for (const l of process.listeners('unhandledRejection')) {
    if (!before.unhandledRejection.has(l)) process.removeListener('unhandledRejection', l);
  }
  // A CommonJS package seen from ESM: module.exports is the namespace's `default`.
  const exported = typeof ns === 'object' && ns !== null && 'default' in ns ? ns.default : ns;
  // Some builds of the package export a Promise of the module, others the module itself.
  const mod = (isPromiseLike(exported) ? await exported : exported) as EmscriptenModule;
  await whenInitialized(mod);
  // This Emscripten build gives the module a `then` that calls back with the module itself: resolving
  // a Promise with it would loop forever. Removing it makes the module an ordinary value.
  if (typeof mod.then === 'function') Reflect.deleteProperty(mod, 'then');
  return mod as unknown as Cv;
}

/** The OpenCV.js runtime, loaded once per process. */
export function getCv(): Promise<Cv> {
  cvPromise ??= load().catch((err: unknown) => {
    cvPromise = undefined; // let a later call retry instead of caching the failure
    throw err;
  });
  return cvPromise;
}

let live = 0;

/** Number of objects tracked by a MatScope and not yet freed: 0 between calls unless something leaks. */
export function liveMatCount(): number {
  return live;
}

/** Collects WebAssembly objects and frees them all at once, in reverse creation order. */
export class MatScope {
  private readonly items: Deletable[] = [];

  track<T extends Deletable>(item: T): T {
    this.items.push(item);
    live++;
    return item;
  }

  dispose(): void {
    let firstError: unknown;
    while (this.items.length > 0) {
      const item = this.items.pop() as Deletable;
      live--;
      try {
        item.delete();
      } catch (err) {
        firstError ??= err; // keep freeing the rest, report the first failure
      }
    }
    if (firstError !== undefined) throw firstError;
  }
}

/** Run `fn` with a fresh scope; every object it tracks is freed afterwards, on success or error. */
export async function withCv<T>(fn: (cv: Cv, scope: MatScope) => T): Promise<T> {
  const cv = await getCv();
  const scope = new MatScope();
  try {
    return fn(cv, scope);
  } finally {
    scope.dispose();
  }
}

/** Size of the WebAssembly heap in bytes (grows when Mats leak; never shrinks). */
export async function wasmHeapBytes(): Promise<number> {
  const cv = await getCv();
  return (cv as unknown as { HEAPU8: Uint8Array }).HEAPU8.byteLength;
}
