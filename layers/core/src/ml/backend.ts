/**
 * Chooses the TensorFlow.js backend once per process: native TensorFlow when its bindings are installed
 * (tfjs-node-gpu, then tfjs-node; not dependencies of Myeloscope, loaded only if present), else WebAssembly
 * (SIMD, single-threaded, with the missing gradient kernels added), else the pure-JS cpu backend.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { registerWasmGradientKernels } from './wasm-kernels.ts';

export interface BackendInfo {
  /** tf.getBackend() after initialisation: 'tensorflow', 'wasm' or 'cpu'. */
  name: string;
  /** Human-readable: which package, binary and why (e.g. a fallback reason). */
  detail: string;
}

/** The binary we expect on Node: XNNPACK with SIMD, no threads. */
const WASM_SIMD_BINARY = 'tfjs-backend-wasm-simd.wasm';
const NATIVE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

let pending: Promise<BackendInfo> | undefined;

/**
 * Initialises the fastest available backend, or `prefer` ('tensorflow' | 'wasm' | 'cpu') when it is
 * available. Idempotent: later calls return the first call's result whatever they pass.
 */
export function initBackend(prefer?: string, opts: { quiet?: boolean } = {}): Promise<BackendInfo> {
  if (pending === undefined) {
    pending = chooseBackend(prefer).then(
      (info) => {
        // Quiet in gradient workers (ml/shards.ts): the training process has already said which backend.
        if (!opts.quiet) console.info(`[myeloscope/ml] TensorFlow.js backend: ${info.name} (${info.detail})`);
        return info;
      },
      (err: unknown) => {
        // Let a later call try again rather than caching a failure forever.
        pending = undefined;
        throw err;
      },
    );
  }
  return pending;
}

async function chooseBackend(prefer: string | undefined): Promise<BackendInfo> {
  const order = ['tensorflow', 'wasm', 'cpu'];
  if (prefer !== undefined) {
    if (!order.includes(prefer)) throw new Error(`unknown backend '${prefer}': expected one of ${order.join(', ')}`);
    order.splice(order.indexOf(prefer), 1);
    order.unshift(prefer);
  }
  const notes: string[] = [];
  for (const name of order) {
    const info = name === 'tensorflow' ? await tryNative(notes) : name === 'wasm' ? await tryWasm(notes) : await tryCpu();
    if (info !== undefined) {
      if (notes.length > 0) info.detail += `; skipped: ${notes.join('; ')}`;
      return info;
    }
  }
  throw new Error(`no TensorFlow.js backend could be initialised: ${notes.join('; ')}`);
}

async function tryNative(notes: string[]): Promise<BackendInfo | undefined> {
  for (const pkg of NATIVE_PACKAGES) {
    try {
      // A variable specifier keeps bundlers from trying to resolve an optional, uninstalled package.
      const specifier: string = pkg;
      await import(specifier);
    } catch {
      notes.push(`${pkg} not installed`);
      continue;
    }
    // The package registers 'tensorflow' on the tfjs-core it imports; a second copy of tfjs-core would
    // leave ours without it, hence the check rather than trusting the import.
    if (tf.findBackendFactory('tensorflow') == null) {
      notes.push(`${pkg} loaded but registered no 'tensorflow' backend on this @tensorflow/tfjs (version mismatch?)`);
      continue;
    }
    if (await tf.setBackend('tensorflow')) {
      await tf.ready();
      return { name: tf.getBackend(), detail: `${pkg} (native libtensorflow)` };
    }
    notes.push(`${pkg} failed to initialise`);
  }
  return undefined;
}

/** Directory holding the .wasm binaries, ending in a separator (setWasmPaths concatenates file names). */
export function wasmBinaryDir(): string {
  const fromEnv = process.env['TFJS_WASM_PATH'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv.endsWith('/') ? fromEnv : `${fromEnv}/`;
  // The package's main file sits in dist/, next to the binaries.
  const require = createRequire(import.meta.url);
  return path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep;
}

async function tryWasm(notes: string[]): Promise<BackendInfo | undefined> {
  let dir: string;
  try {
    dir = wasmBinaryDir();
  } catch (err) {
    notes.push(`wasm binaries not found (${String(err)}); set TFJS_WASM_PATH`);
    return undefined;
  }
  if (!existsSync(path.join(dir, WASM_SIMD_BINARY)) && !existsSync(path.join(dir, 'tfjs-backend-wasm.wasm'))) {
    notes.push(`no wasm binaries in ${dir}; set TFJS_WASM_PATH`);
    return undefined;
  }
  // The threaded binary spawns Web Workers from Blob URLs, which Node cannot run: force the SIMD-only one.
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  setWasmPaths(dir);
  const kernels = registerWasmGradientKernels();
  let ok = false;
  try {
    ok = await tf.setBackend('wasm');
  } catch (err) {
    notes.push(`wasm failed to initialise: ${String(err)}`);
    return undefined;
  }
  if (!ok) {
    notes.push(`wasm failed to initialise from ${dir}`);
    return undefined;
  }
  await tf.ready();
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
  const binary = simd ? WASM_SIMD_BINARY : 'tfjs-backend-wasm.wasm';
  const added = kernels.length > 0 ? kernels.join(', ') : 'none needed';
  return {
    name: tf.getBackend(),
    detail: `${binary} from ${dir}, threads=${getThreadsCount()}, simd=${simd}, added kernels: ${added}`,
  };
}

async function tryCpu(): Promise<BackendInfo | undefined> {
  if (!(await tf.setBackend('cpu'))) return undefined;
  await tf.ready();
  return { name: tf.getBackend(), detail: 'pure JavaScript (slow: for tests and as a last resort)' };
}
