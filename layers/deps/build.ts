/**
 * Builds the "deps" Lambda layer from the local node_modules: the packages esbuild cannot bundle well
 * (a native addon, a 10 MB Emscripten file, .wasm binaries). Copying only, no network and no Docker, so
 * `cdk synth` works offline.
 *
 * Usage as a script: `npx tsx layers/deps/build.ts <outDir> [--flat]`
 *   <outDir>/nodejs/node_modules/... (layer layout), or <outDir>/node_modules/... with --flat
 *   (inside a function bundle, for LocalStack Community, which has no layers).
 */
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface LayerPackage {
  /** npm package name, as imported. */
  name: string;
  /**
   * Optional dependencies to copy too: the platform builds Lambda needs (x86_64 glibc Linux). Other
   * optional dependencies (other platforms) are skipped.
   * @default []
   */
  platformPackages?: readonly string[];
  /**
   * Copy only files whose path inside the package matches (package.json is always kept), and skip the
   * package's dependencies: for packages whose JavaScript is bundled and only data files are needed.
   * @default every file except type declarations, source maps and sources
   */
  only?: RegExp;
  /**
   * Files not needed at run time, besides type declarations, source maps and Markdown (paths inside the
   * package, '/'-separated).
   * @default none
   */
  skip?: RegExp;
}

/** What the layer holds. */
export const LAYER_PACKAGES: readonly LayerPackage[] = [
  // Native addon: its own JS must stay next to the .node binary and libvips, which it loads by path.
  { name: 'sharp', platformPackages: ['@img/sharp-linux-x64', '@img/sharp-libvips-linux-x64'], skip: /^src(\/|$)/ },
  // One ~10 MB Emscripten file with the wasm inlined: slow to bundle and nothing to tree-shake.
  { name: '@techstark/opencv-js' },
  // Its JS is bundled into the functions; the .wasm binaries are fetched at run time from TFJS_WASM_PATH.
  { name: '@tensorflow/tfjs-backend-wasm', only: /^dist\/[^/]+\.wasm$/ },
];

/** Module names the function bundles must leave as imports: the layer provides them. */
export const EXTERNAL_MODULES: readonly string[] = LAYER_PACKAGES.filter((p) => !p.only).map((p) => p.name);

/** Where Lambda mounts a Node.js layer's modules. */
export const LAYER_NODE_MODULES = '/opt/nodejs/node_modules';

/** The directory of the TensorFlow.js .wasm files under a node_modules directory (trailing slash: a URL prefix). */
export function tfjsWasmDir(nodeModules: string): string {
  return `${nodeModules}/@tensorflow/tfjs-backend-wasm/dist/`;
}

/** The repository's node_modules, whatever the working directory. */
export const DEFAULT_NODE_MODULES = fileURLToPath(new URL('../../node_modules/', import.meta.url));

export interface BuildOptions {
  /** @default DEFAULT_NODE_MODULES */
  nodeModules?: string;
  /**
   * Put packages in <outDir>/node_modules instead of the layer layout <outDir>/nodejs/node_modules.
   * @default false
   */
  flat?: boolean;
}

interface PackageJson {
  name?: string;
  version?: string;
  dependencies?: Record<string, string>;
}

/** Never needed at run time (paths inside a package, '/'-separated). */
const NOT_RUNTIME = /(\.d\.[cm]?ts|\.map|\.md)$/;

/**
 * Copies LAYER_PACKAGES and their runtime dependencies into outDir, keeping each package's place relative
 * to node_modules so Node resolves them the same way. Returns the copied package paths (relative to
 * node_modules) with versions. Throws, naming the fix, when something is not installed.
 */
export function buildDepsLayer(outDir: string, opts: BuildOptions = {}): string[] {
  const root = opts.nodeModules ?? DEFAULT_NODE_MODULES;
  const target = opts.flat ? join(outDir, 'node_modules') : join(outDir, 'nodejs', 'node_modules');
  const copied = new Map<string, string>();

  const copyPackage = (dir: string, spec: LayerPackage | undefined): void => {
    const rel = relative(root, dir).split(sep).join('/');
    if (copied.has(rel)) return;
    const pkg = readPackageJson(dir);
    copied.set(rel, pkg.version ?? '?');
    const dest = join(target, rel);
    mkdirSync(dest, { recursive: true });
    if (spec?.only) {
      // Data files only: copy package.json and the matching files, nothing else.
      const files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => f.split(sep).join('/'));
      for (const inner of ['package.json', ...files.filter((f) => spec.only?.test(f))]) {
        mkdirSync(dirname(join(dest, inner)), { recursive: true });
        copyFileSync(join(dir, inner), join(dest, inner));
      }
      return;
    }
    cpSync(dir, dest, {
      recursive: true,
      // Layers are zipped with the files they point to; a symlink out of the package would dangle.
      dereference: true,
      filter: (src) => {
        const inner = relative(dir, src).split(sep).join('/');
        // Nested node_modules are copied as dependencies below, and only those actually needed.
        if (inner === 'node_modules' || inner.startsWith('node_modules/')) return false;
        return inner === '' || !(NOT_RUNTIME.test(inner) || spec?.skip?.test(inner));
      },
    });
    const deps = [...Object.keys(pkg.dependencies ?? {}), ...(spec?.platformPackages ?? [])];
    for (const dep of deps) copyPackage(resolvePackageDir(dep, dir, root, spec?.name ?? pkg.name ?? rel), undefined);
  };

  for (const spec of LAYER_PACKAGES) {
    const dir = join(root, spec.name);
    if (!existsSync(join(dir, 'package.json'))) throw missing(spec.name, 'the layer');
    copyPackage(dir, spec);
  }
  return [...copied].map(([rel, version]) => `${rel}@${version}`);
}

/** Node's lookup: the nearest node_modules/<name> from the requiring package up to the root. */
function resolvePackageDir(name: string, fromDir: string, root: string, requiredBy: string): string {
  let dir = fromDir;
  for (;;) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (relative(root, dir) === '' || dir === dirname(dir)) break;
    dir = dirname(dir);
  }
  const hoisted = join(root, name);
  if (existsSync(join(hoisted, 'package.json'))) return hoisted;
  throw missing(name, requiredBy);
}

function missing(name: string, requiredBy: string): Error {
  const hint = name.startsWith('@img/')
    ? ` Lambda runs x86_64 Linux: on another platform install its build with \`npm install --os=linux --cpu=x64 --libc=glibc sharp\`.`
    : ' Run `npm ci`.';
  return new Error(`deps layer: package "${name}" (needed by ${requiredBy}) is not in node_modules.${hint}`);
}

function readPackageJson(dir: string): PackageJson {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as PackageJson;
}

// Run as a script: build into the directory given.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const outDir = args.find((a) => !a.startsWith('--'));
  if (!outDir) {
    console.error('usage: tsx layers/deps/build.ts <outDir> [--flat]');
    process.exit(2);
  }
  const packages = buildDepsLayer(outDir, { flat: args.includes('--flat') });
  console.log(`deps: ${packages.length} packages copied to ${outDir}`);
}
