/**
 * Gradient kernels for the wasm backend of TensorFlow.js 4.22, built from its own fast (XNNPACK) kernels.
 *
 * Missing: training the cell model on wasm needs exactly one kernel wasm lacks (found by training it with
 * every absent kernel routed through a recorder): Conv2DBackpropFilter, the weight gradient of conv2d.
 * Slow: two gradients the model uses exist on wasm but as plain C++ loops that dominated the profile of a
 * training step (Conv2DBackpropInput 80 ms per layer, MaxPoolGrad 40 ms on the first layer, against 8 ms
 * for a forward conv); Conv2DBackpropInput is replaced by a composition of fast kernels and MaxPoolGrad by
 * one JavaScript pass over the wasm heap, each falling back outside the cases it covers. Each is checked
 * against the cpu backend in test/ml.test.ts.
 * Not needed: the input gradient of the first (stride-2) conv. The tape only differentiates inputs that
 * depend on the trained variables, and the first conv's input is the data, so tfjs never asks for it (a
 * profile of a training step has no Conv2DBackpropInput on [32, 32, 32, 16]); the stride-2 fallback to the
 * stock kernel costs nothing in training.
 * Also replaced, for the training loop's batch assembly: GatherV2 on axis 0 (row copies) and Reverse of
 * NHWC crops along H/W (the flips of the augmentation), both per-element C++ loops in the stock kernels.
 * Profile of a step (test/bench/profile-epoch.ts, batch 32, load ~3.7 on 2 cores): kernel time 211 ms ->
 * 146 ms per batch with the JS MaxPoolGrad (27 -> 7.5 ms), GatherV2 (17 -> <1 ms) and Reverse (14 -> <1 ms).
 * What remains is conv math in XNNPACK: weight gradients ~43 %, forward convs ~22 %, input gradients ~19 %.
 * Tried and rejected for Conv2DBackpropFilter: folding the output columns into the channels (fw strided
 * copies of x, one conv with outW x N channels per tap): 20-25 % slower than the conv below; MatMul-based
 * im2col: 3-6x slower (wasm MatMul is not XNNPACK's GEMM for these shapes).
 *
 * Kernels here call other wasm kernels' functions directly on the backend (as the wasm kernels themselves
 * do): those outputs are not tracked by the engine, so every intermediate is disposed in a finally block
 * and only the returned TensorInfo survives, owned by the engine from then on.
 */
import * as tf from '@tensorflow/tfjs';

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** Runs another wasm kernel directly on the backend: its output is not tracked by the engine, we own it. */
function runWasmKernel(
  backend: tf.KernelBackend,
  kernelName: string,
  inputs: tf.NamedTensorInfoMap,
  attrs: tf.NamedAttrMap,
): tf.TensorInfo {
  const config = tf.getKernel(kernelName, 'wasm');
  if (config === undefined) throw new Error(`wasm backend has no '${kernelName}' kernel`);
  return single(config.kernelFunc({ inputs, backend, attrs }), kernelName);
}

/**
 * dW[a, b, c, o] = sum over n, i, j of xPadded[n, i*sh + a, j*sw + b, c] * dy[n, i, j, o].
 *
 * That sum is itself a convolution, with the roles swapped: input = x transposed to [Cin, H, W, N] (channels
 * = the batch), filter = dy transposed to [outH, outW, N, Cout], dilation = the forward stride, stride 1;
 * the output [Cin, fh, fw, Cout] is dW up to a transpose. One XNNPACK conv is much faster than an im2col
 * (concat + matMul) here: measured 36 ms vs 121-150 ms for the first layer at batch 32.
 */
function conv2DBackpropFilterWasm({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  if (!(backend instanceof tf.KernelBackend)) throw new Error('Conv2DBackpropFilter: unexpected backend object');
  const { x, dy } = inputs;
  if (x === undefined || dy === undefined) throw new Error('Conv2DBackpropFilter: inputs x and dy are required');
  // The engine passes the attributes of the op that recorded this kernel (conv2DBackpropFilter).
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  const channelsFirst = dataFormat === 'NCHW';
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filterShape,
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(dataFormat),
  );
  const { inHeight, inWidth, outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth } = info;
  const padTop = info.padInfo.top;
  const padLeft = info.padInfo.left;
  // Rows/cols past the last window position do not contribute: pad up to it, or crop when 'valid' leaves a rest.
  const padBottom = filterHeight + strideHeight * (outHeight - 1) - inHeight - padTop;
  const padRight = filterWidth + strideWidth * (outWidth - 1) - inWidth - padLeft;

  const temps: tf.TensorInfo[] = [];
  const keep = (t: tf.TensorInfo): tf.TensorInfo => {
    temps.push(t);
    return t;
  };
  try {
    let xT = keep(runWasmKernel(backend, 'Transpose', { x }, { perm: channelsFirst ? [1, 2, 3, 0] : [3, 1, 2, 0] }));
    const dyT = keep(runWasmKernel(backend, 'Transpose', { x: dy }, { perm: channelsFirst ? [2, 3, 0, 1] : [1, 2, 0, 3] }));
    if (padBottom < 0 || padRight < 0) {
      const [c, h, w, n] = xT.shape as [number, number, number, number];
      const size = [c, h + Math.min(padBottom, 0), w + Math.min(padRight, 0), n];
      xT = keep(runWasmKernel(backend, 'Slice', { x: xT }, { begin: [0, 0, 0, 0], size }));
    }
    const explicitPad: tf.backend_util.ExplicitPadding = [
      [0, 0],
      [padTop, Math.max(padBottom, 0)],
      [padLeft, Math.max(padRight, 0)],
      [0, 0],
    ];
    const dwT = keep(
      runWasmKernel(
        backend,
        'Conv2D',
        { x: xT, filter: dyT },
        { strides: [1, 1], pad: explicitPad, dataFormat: 'NHWC', dilations: [strideHeight, strideWidth] },
      ),
    );
    // [Cin, fh, fw, Cout] -> [fh, fw, Cin, Cout]; this one is returned, so it is not in temps.
    return runWasmKernel(backend, 'Transpose', { x: dwT }, { perm: [1, 2, 0, 3] });
  } finally {
    for (const t of temps) backend.disposeData(t.dataId);
  }
}

/**
 * Conv2DBackpropInput (dx of conv2d), stride 1, NHWC: a "full" correlation of dy with the filter rotated by
 * 180 degrees and its in/out channels swapped, i.e. one forward XNNPACK conv. The stock wasm kernel is a
 * plain C++ loop: 78-88 ms per layer at batch 32 against 8-13 ms this way. Anything else (strides > 1,
 * NCHW, padding that would need cropping) goes to the stock kernel.
 */
function conv2DBackpropInputWasm(stock: tf.KernelFunc) {
  return ({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo => {
    if (!(backend instanceof tf.KernelBackend)) throw new Error('Conv2DBackpropInput: unexpected backend object');
    const { dy, filter } = inputs;
    if (dy === undefined || filter === undefined) throw new Error('Conv2DBackpropInput: inputs dy and filter are required');
    const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as unknown as tf.Conv2DBackpropInputAttrs;
    const fallback = (): tf.TensorInfo => single(stock({ inputs, backend, attrs }), 'Conv2DBackpropInput');
    if (dataFormat === 'NCHW') return fallback();
    const info = tf.backend_util.computeConv2DInfo(
      inputShape,
      filter.shape as [number, number, number, number],
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
    if (info.strideHeight !== 1 || info.strideWidth !== 1) return fallback();
    const { inHeight, inWidth, outHeight, outWidth, filterHeight, filterWidth } = info;
    const top = filterHeight - 1 - info.padInfo.top;
    const left = filterWidth - 1 - info.padInfo.left;
    const bottom = inHeight - outHeight + filterHeight - 1 - top;
    const right = inWidth - outWidth + filterWidth - 1 - left;
    if (top < 0 || left < 0 || bottom < 0 || right < 0) return fallback();
    const temps: tf.TensorInfo[] = [];
    try {
      const flipped = runWasmKernel(backend, 'Reverse', { x: filter }, { dims: [0, 1] });
      temps.push(flipped);
      const swapped = runWasmKernel(backend, 'Transpose', { x: flipped }, { perm: [0, 1, 3, 2] });
      temps.push(swapped);
      const explicitPad: tf.backend_util.ExplicitPadding = [[0, 0], [top, bottom], [left, right], [0, 0]];
      return runWasmKernel(
        backend,
        'Conv2D',
        { x: dy, filter: swapped },
        { strides: [1, 1], pad: explicitPad, dataFormat: 'NHWC', dilations: [1, 1] },
      );
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
  };
}

/** The parts of the wasm backend (BackendWasm) that its own JavaScript kernels use to work on its heap. */
interface WasmHeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): tf.backend_util.TypedArray;
}

function isWasmHeapBackend(b: unknown): b is WasmHeapBackend {
  return (
    typeof b === 'object' &&
    b !== null &&
    typeof (b as Partial<WasmHeapBackend>).makeOutput === 'function' &&
    typeof (b as Partial<WasmHeapBackend>).typedArrayFromHeap === 'function'
  );
}

/**
 * MaxPoolGrad for non-overlapping windows (filter = stride, sizes divisible, so no padding: the model's 2x2/2
 * pools), NHWC float32: one pass in JavaScript over the wasm heap, as some stock wasm kernels do. Every input
 * pixel lies in exactly one window; it gets that window's dy if it is the window's first maximum in row-major
 * order (the cpu kernel's rule: strictly greater than everything before it), else 0. The stock kernel is a
 * C++ loop that disagrees with cpu on negative maxima; an earlier composition of 10 whole-tensor wasm ops
 * (upsample, compare, max-pool of priorities) took 14.5 ms on [32, 32, 32, 32] against ~3 ms for this loop.
 * Other pools run the cpu kernel on copies: correctness beats speed on paths the model does not take.
 */
function maxPoolGradWasm() {
  return ({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo => {
    if (!(backend instanceof tf.KernelBackend)) throw new Error('MaxPoolGrad: unexpected backend object');
    const { dy, input, output } = inputs;
    if (dy === undefined || input === undefined || output === undefined) {
      throw new Error('MaxPoolGrad: inputs dy, input and output are required');
    }
    const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tf.MaxPoolGradAttrs;
    const [kh, kw] = typeof filterSize === 'number' ? [filterSize, filterSize] : filterSize;
    const [sh, sw] = typeof strides === 'number' ? [strides, strides] : strides;
    const [n, h, w, c] = input.shape as [number, number, number, number];
    const tiled = kh === sh && kw === sw && h % kh === 0 && w % kw === 0 && (pad === 'valid' || pad === 'same');
    if (
      !tiled ||
      dimRoundingMode !== undefined ||
      input.dtype !== 'float32' ||
      dy.dtype !== 'float32' ||
      !isWasmHeapBackend(backend)
    ) {
      return runOnCpu(backend, 'MaxPoolGrad', inputs, attrs ?? {});
    }
    const out = backend.makeOutput([n, h, w, c], 'float32');
    // Views after the allocation: growing the heap would detach earlier ones.
    const dx = backend.typedArrayFromHeap(out) as Float32Array;
    const x = backend.typedArrayFromHeap(input) as Float32Array;
    const g = backend.typedArrayFromHeap(dy) as Float32Array;
    const oh = h / kh;
    const ow = w / kw;
    const rowStride = w * c;
    if (kh === 2 && kw === 2) {
      // The model's case, unrolled: same rule (first of a, b, d, e in row-major order that is strictly greater).
      for (let b = 0; b < n; b++) {
        for (let oy = 0; oy < oh; oy++) {
          let gi = (b * oh + oy) * ow * c;
          for (let ox = 0; ox < ow; ox++) {
            const p0 = ((b * h + oy * 2) * w + ox * 2) * c;
            for (let ch = 0, pa = p0; ch < c; ch++, pa++, gi++) {
              const pb = pa + c;
              const pd = pa + rowStride;
              const pe = pd + c;
              const va = x[pa]!;
              const vb = x[pb]!;
              const vd = x[pd]!;
              const ve = x[pe]!;
              dx[pa] = 0;
              dx[pb] = 0;
              dx[pd] = 0;
              dx[pe] = 0;
              let best = va;
              let at = va > Number.NEGATIVE_INFINITY ? pa : -1;
              if (vb > best || (at < 0 && vb > Number.NEGATIVE_INFINITY)) (best = vb), (at = pb);
              if (vd > best || (at < 0 && vd > Number.NEGATIVE_INFINITY)) (best = vd), (at = pd);
              if (ve > best || (at < 0 && ve > Number.NEGATIVE_INFINITY)) (best = ve), (at = pe);
              if (at >= 0) dx[at] = g[gi]!;
            }
          }
        }
      }
      return out;
    }
    for (let b = 0; b < n; b++) {
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          const base = ((b * h + oy * kh) * w + ox * kw) * c;
          const gBase = ((b * oh + oy) * ow + ox) * c;
          for (let ch = 0; ch < c; ch++) {
            let best = Number.NEGATIVE_INFINITY;
            let at = -1;
            for (let r = 0; r < kh; r++) {
              for (let q = 0, p = base + r * rowStride + ch; q < kw; q++, p += c) {
                const v = x[p]!;
                dx[p] = 0;
                if (v > best) {
                  best = v;
                  at = p;
                }
              }
            }
            if (at >= 0) dx[at] = g[gBase + ch]!;
          }
        }
      }
    }
    return out;
  };
}

/**
 * GatherV2 along axis 0 (batchDims 0, float32/int32): whole rows copied with TypedArray.set. The training
 * loop gathers each batch from the whole dataset, and the stock kernel's per-element C++ loop took ~17 ms per
 * batch of 32 crops (8 % of a step). Anything else goes to the stock kernel.
 */
function gatherV2Wasm(stock: tf.KernelFunc) {
  return ({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo => {
    const { x, indices } = inputs;
    const { axis, batchDims } = (attrs ?? {}) as unknown as tf.GatherV2Attrs;
    const fallback = (): tf.TensorInfo => single(stock({ inputs, backend, attrs }), 'GatherV2');
    if (x === undefined || indices === undefined || !isWasmHeapBackend(backend) || !(backend instanceof tf.KernelBackend)) return fallback();
    if ((batchDims ?? 0) !== 0 || x.shape.length === 0 || tf.util.parseAxisParam(axis, x.shape)[0] !== 0) return fallback();
    if ((x.dtype !== 'float32' && x.dtype !== 'int32') || indices.dtype !== 'int32') return fallback();
    const rows = x.shape[0]!;
    const row = tf.util.sizeFromShape(x.shape.slice(1));
    const idx = backend.readSync(indices.dataId) as Int32Array;
    for (const i of idx) {
      if (!(i >= 0 && i <= rows - 1)) throw new Error(`GatherV2: the index value ${i} is not in [0, ${rows - 1}]`);
    }
    const out = backend.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
    // Views after the allocation: growing the heap would detach earlier ones.
    const src = backend.typedArrayFromHeap(x);
    const dst = backend.typedArrayFromHeap(out);
    for (let k = 0; k < idx.length; k++) dst.set(src.subarray(idx[k]! * row, (idx[k]! + 1) * row), k * row);
    return out;
  };
}

/**
 * Reverse of a float32 rank-4 tensor along axes 1 and/or 2 (the flips of the training augmentation, on NHWC
 * crops): one JavaScript pass, ~14 ms per batch of 32 crops in the stock kernel. Anything else: stock.
 */
function reverseWasm(stock: tf.KernelFunc) {
  return ({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo => {
    const { x } = inputs;
    const fallback = (): tf.TensorInfo => single(stock({ inputs, backend, attrs }), 'Reverse');
    if (x === undefined || !isWasmHeapBackend(backend) || x.shape.length !== 4 || x.dtype !== 'float32') return fallback();
    const { dims } = (attrs ?? {}) as unknown as tf.ReverseAttrs;
    const axes = tf.util.parseAxisParam(dims, x.shape);
    if (axes.length === 0 || axes.some((a) => a !== 1 && a !== 2)) return fallback();
    const [n, h, w, c] = x.shape as [number, number, number, number];
    const flipRows = axes.includes(1);
    const flipCols = axes.includes(2);
    const out = backend.makeOutput([n, h, w, c], 'float32');
    const src = backend.typedArrayFromHeap(x) as Float32Array;
    const dst = backend.typedArrayFromHeap(out) as Float32Array;
    for (let b = 0; b < n; b++) {
      for (let y = 0; y < h; y++) {
        const sy = flipRows ? h - 1 - y : y;
        const dRow = ((b * h + y) * w) * c;
        const sRow = ((b * h + sy) * w) * c;
        if (!flipCols) {
          dst.set(src.subarray(sRow, sRow + w * c), dRow);
          continue;
        }
        for (let xx = 0, d = dRow; xx < w; xx++) {
          for (let k = 0, s = sRow + (w - 1 - xx) * c; k < c; k++) dst[d++] = src[s + k]!;
        }
      }
    }
    return out;
  };
}

/** Runs the cpu kernel on copies of the inputs and copies the result back into `backend`. */
function runOnCpu(
  backend: tf.KernelBackend,
  kernelName: string,
  inputs: tf.NamedTensorInfoMap,
  attrs: tf.NamedAttrMap,
): tf.TensorInfo {
  const cpu = tf.findBackend('cpu');
  const config = tf.getKernel(kernelName, 'cpu');
  if (cpu === null || config === undefined) throw new Error(`no cpu '${kernelName}' kernel to fall back on`);
  const cpuInputs: tf.NamedTensorInfoMap = {};
  for (const [name, t] of Object.entries(inputs)) {
    if (t === undefined) continue;
    cpuInputs[name] = { dataId: cpu.write(backend.readSync(t.dataId), t.shape, t.dtype), shape: t.shape, dtype: t.dtype };
  }
  try {
    const out = single(config.kernelFunc({ inputs: cpuInputs, backend: cpu, attrs }), kernelName);
    try {
      return { dataId: backend.write(cpu.readSync(out.dataId), out.shape, out.dtype), shape: out.shape, dtype: out.dtype };
    } finally {
      cpu.disposeData(out.dataId);
    }
  } finally {
    for (const t of Object.values(cpuInputs)) if (t !== undefined) cpu.disposeData(t.dataId);
  }
}

function single(out: tf.TensorInfo | tf.TensorInfo[], kernelName: string): tf.TensorInfo {
  if (Array.isArray(out)) throw new Error(`kernel '${kernelName}' returned several tensors`);
  return out;
}

/** Our kernel functions, to recognise them on a second registration call. */
const ours = new WeakSet<tf.KernelFunc>();

/** Replaces a stock wasm kernel by a faster one, which may fall back on the stock one. */
function replaceKernel(kernelName: string, make: (stock: tf.KernelFunc) => tf.KernelFunc): boolean {
  const stock = tf.getKernel(kernelName, 'wasm');
  if (stock === undefined || ours.has(stock.kernelFunc)) return false;
  const kernelFunc = make(stock.kernelFunc);
  ours.add(kernelFunc);
  tf.unregisterKernel(kernelName, 'wasm');
  // Keep the stock setupFunc: when the backend initialises after this, the fallback still needs its bindings.
  tf.registerKernel({ ...stock, kernelFunc });
  return true;
}

/**
 * Registers the missing kernels for 'wasm' and (unless `replaceSlowKernels` is false, an escape hatch and a
 * way to measure the gain) replaces the slow stock kernels a training step uses (two gradients, and the
 * gather and flips that assemble a batch). Idempotent; a kernel missing
 * today but shipped by a future tfjs release is left alone. Returns the names it changed. initBackend calls
 * it before switching to wasm.
 */
export function registerWasmGradientKernels(opts: { replaceSlowKernels?: boolean } = {}): string[] {
  const changed: string[] = [];
  if (tf.getKernel('Conv2DBackpropFilter', 'wasm') === undefined) {
    ours.add(conv2DBackpropFilterWasm);
    tf.registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName: 'wasm', kernelFunc: conv2DBackpropFilterWasm });
    changed.push('Conv2DBackpropFilter');
  }
  if (opts.replaceSlowKernels === false) return changed;
  if (replaceKernel('Conv2DBackpropInput', conv2DBackpropInputWasm)) changed.push('Conv2DBackpropInput (faster)');
  if (replaceKernel('MaxPoolGrad', maxPoolGradWasm)) changed.push('MaxPoolGrad (faster)');
  if (replaceKernel('GatherV2', gatherV2Wasm)) changed.push('GatherV2 (faster)');
  if (replaceKernel('Reverse', reverseWasm)) changed.push('Reverse (faster)');
  return changed;
}
