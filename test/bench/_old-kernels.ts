/**
 * Gradient kernels for the wasm backend of TensorFlow.js 4.22, built from its own fast (XNNPACK) kernels.
 *
 * Missing: training the cell model on wasm needs exactly one kernel wasm lacks (found by training it with
 * every absent kernel routed through a recorder): Conv2DBackpropFilter, the weight gradient of conv2d.
 * Slow: two gradients the model uses exist on wasm but as plain C++ loops that dominated the profile of a
 * training step (Conv2DBackpropInput 80 ms per layer, MaxPoolGrad 40 ms on the first layer, against 8 ms
 * for a forward conv); they are replaced by compositions of fast kernels, falling back on the stock kernel
 * outside the cases they cover. Each is checked against the cpu backend in test/ml.test.ts.
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
export function conv2DBackpropFilterWasm({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
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

/**
 * MaxPoolGrad for non-overlapping windows (filter = stride, sizes divisible, so no padding: the model's 2x2/2
 * pools), from whole-tensor kernels; same first-maximum rule as the cpu and stock kernels:
 *   isMax = input == upsample(output)                  (output = the forward max of each window)
 *   prio  = isMax * (k - position in window)           (k = window size, row-major position 0..k-1)
 *   first = prio == upsample(maxPool(prio))            (the earliest maximum of each window)
 *   dx    = first * upsample(dy)
 * Upsampling is nearest-neighbour resize (pixel r of the input maps to window r / k). About twice as fast as
 * the stock kernel's C++ loop (40 ms on [32, 64, 64, 16]). MaxPoolWithArgmax + ScatterNd would be simpler,
 * but the wasm MaxPoolWithArgmax returns index 0 for windows whose max is <= 0 (e.g. all-zero ReLU windows).
 * Other pools run the cpu kernel on copies: the stock wasm MaxPoolGrad disagrees with cpu when a window's
 * max is negative or windows overlap (seen in the tests), and correctness beats speed on paths the model
 * does not take.
 */
export function maxPoolGradWasm() {
  return ({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo => {
    if (!(backend instanceof tf.KernelBackend)) throw new Error('MaxPoolGrad: unexpected backend object');
    const { dy, input, output } = inputs;
    if (dy === undefined || input === undefined || output === undefined) {
      throw new Error('MaxPoolGrad: inputs dy, input and output are required');
    }
    const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tf.MaxPoolGradAttrs;
    const [kh, kw] = typeof filterSize === 'number' ? [filterSize, filterSize] : filterSize;
    const [sh, sw] = typeof strides === 'number' ? [strides, strides] : strides;
    const [, h, w] = input.shape as [number, number, number, number];
    const tiled = kh === sh && kw === sw && h % kh === 0 && w % kw === 0 && (pad === 'valid' || pad === 'same');
    if (!tiled || dimRoundingMode !== undefined || input.dtype !== 'float32' || dy.dtype !== 'float32') {
      return runOnCpu(backend, 'MaxPoolGrad', inputs, attrs ?? {});
    }
    const temps: tf.TensorInfo[] = [];
    const run = (name: string, ins: tf.NamedTensorInfoMap, at: tf.NamedAttrMap = {}): tf.TensorInfo => {
      const t = runWasmKernel(backend, name, ins, at);
      temps.push(t);
      return t;
    };
    const upsample = (t: tf.TensorInfo): tf.TensorInfo =>
      run('ResizeNearestNeighbor', { images: t }, { size: [h, w], alignCorners: false, halfPixelCenters: false });
    try {
      const order = new Float32Array(h * w);
      for (let r = 0; r < h; r++) {
        for (let c = 0; c < w; c++) order[r * w + c] = kh * kw - ((r % kh) * kw + (c % kw));
      }
      const orderInfo: tf.TensorInfo = { dataId: backend.write(order, [1, h, w, 1], 'float32'), shape: [1, h, w, 1], dtype: 'float32' };
      temps.push(orderInfo);
      const isMax = run('Cast', { x: run('Equal', { a: input, b: upsample(output) }) }, { dtype: 'float32' });
      const prio = run('Multiply', { a: isMax, b: orderInfo });
      const best = run('MaxPool', { x: prio }, { filterSize: [kh, kw], strides: [kh, kw], pad: 'valid' });
      const first = run('Cast', { x: run('Equal', { a: prio, b: upsample(best) }) }, { dtype: 'float32' });
      return runWasmKernel(backend, 'Multiply', { a: first, b: upsample(dy) }, {});
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
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
 * way to measure the gain) replaces the slow stock gradients this model uses. Idempotent; a kernel missing
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
  return changed;
}
