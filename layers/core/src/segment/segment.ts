/**
 * Classical segmentation of nucleated cells in Jenner/Wright-Giemsa bone-marrow images.
 *
 * Giemsa stains nuclei purple (they absorb green, and red more than blue) and plasma-cell cytoplasm
 * blue (absorbs red, not blue); red cells are pink or grey and the glass is pale. Colours are turned
 * into optical density (OD) relative to the image's own background, which removes illumination and
 * white-balance differences between slides, and two scores are derived:
 *   nucleus score = OD(green) - OD(red)   purple chromatin; blue cytoplasm and grey red cells stay low
 *                   (capped by OD(red), so pink red cells, which absorb green but not red, stay low too)
 *   stain score   = OD(red)   - OD(blue)  basophilic material: nuclei and cytoplasm, not red cells/glass
 * Near-black nuclei (erythroblasts) are not purple; a plain darkness test catches them.
 * Steps: find padding bands -> Otsu threshold of the nucleus score -> open/close/fill holes -> split
 * touching nuclei at distance-transform necks -> grow each nucleus (geodesic nearest-nucleus) through
 * stained pixels within a maximum cytoplasm width -> drop too small/large cells -> ids by centroid.
 * Measured on the 75 bundled SegPC-2021 images by functions/cli/seg-quality.ts.
 */
import type { BBox, Cell, GrayImage, RgbImage } from '../types.ts';
import { type Cv, type MatScope, withCv } from './opencv.ts';

export interface Segmentation {
  cells: Cell[];
  /** Per pixel, row-major: 0 background, else the id of the cell that owns the pixel. */
  labels: Int32Array;
  /** 255 inside any cell, 0 elsewhere. */
  roiMask: GrayImage;
  width: number;
  height: number;
}

/**
 * Lengths are in pixels and areas in pixels² for an image whose longer side is `referenceSize`
 * (512 by default, the size the pipeline works at); they are scaled for other sizes.
 */
export interface SegmentOptions {
  /** Nuclei smaller than this are debris or platelets (default 150). */
  minNucleusArea?: number;
  /** Cells smaller than this are dropped (default 300). */
  minArea?: number;
  /** Cells larger than this are artefacts and are dropped (default 40000). */
  maxArea?: number;
  /** How far a cell may extend beyond its nucleus (default 40). */
  maxCytoplasmWidth?: number;
  /** Multiplies the Otsu threshold of the nucleus score (default 1). */
  nucleusThresholdScale?: number;
  /** Minimum stain score, in OD units, for a pixel to be cytoplasm (default 0.06). */
  cytoplasmMinOd?: number;
  /**
   * A nucleus blob splits where its distance-transform cores (depth >= ratio x the blob's deepest point)
   * fall apart (default 0.6; 0 disables splitting).
   */
  splitDepthRatio?: number;
  /** Side length the values above are given for (default 512). */
  referenceSize?: number;
}

interface ResolvedOptions {
  minNucleusArea: number;
  minArea: number;
  maxArea: number;
  maxCytoplasmWidth: number;
  nucleusThresholdScale: number;
  cytoplasmMinOd: number;
  splitDepthRatio: number;
  /** Linear scale of this image relative to the reference side. */
  scale: number;
}

function resolveOptions(img: RgbImage, opts: SegmentOptions): ResolvedOptions {
  const reference = opts.referenceSize ?? 512;
  if (!(reference > 0)) throw new RangeError(`referenceSize must be positive, got ${reference}`);
  const scale = Math.max(img.width, img.height) / reference;
  const area = (v: number) => v * scale * scale;
  return {
    minNucleusArea: area(opts.minNucleusArea ?? 150),
    minArea: area(opts.minArea ?? 300),
    maxArea: area(opts.maxArea ?? 40000),
    maxCytoplasmWidth: (opts.maxCytoplasmWidth ?? 40) * scale,
    nucleusThresholdScale: opts.nucleusThresholdScale ?? 1,
    cytoplasmMinOd: opts.cytoplasmMinOd ?? 0.06,
    splitDepthRatio: opts.splitDepthRatio ?? 0.6,
    scale,
  };
}

/** Rectangle of the image that holds the slide, inside any flat padding bands. */
export interface Region {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * Find flat padding bands (letterbox/pillarbox added when an image was resized with its aspect ratio
 * kept) and return the rectangle inside them. A band line has every pixel close to the colour of the
 * outermost line: one pixel of a cell ends the band. JPEG ringing and chroma upsampling blur the band
 * edge, so up to a few more lines that are still mostly band-coloured are added. Edge lines of plain
 * glass may pass as band too: they hold no cell, and only the tips of objects below them can be cut.
 */
export function contentRegion(img: RgbImage): Region {
  const { width: w, height: h, data } = img;
  // JPEG blocks and CLAHE perturb a flat colour by up to ~15 levels.
  const tol = 20;
  const closeCount = (start: number, step: number, count: number, ref: readonly number[]): number => {
    let close = 0;
    for (let k = 0, p = start; k < count; k++, p += step) {
      const i = p * 3;
      if (
        Math.abs(data[i] - ref[0]) <= tol &&
        Math.abs(data[i + 1] - ref[1]) <= tol &&
        Math.abs(data[i + 2] - ref[2]) <= tol
      ) {
        close++;
      }
    }
    return close;
  };
  const medianColour = (start: number, step: number, count: number): number[] => {
    const out: number[] = [];
    for (let c = 0; c < 3; c++) {
      const v: number[] = [];
      for (let k = 0, p = start; k < count; k++, p += step) v.push(data[p * 3 + c]);
      v.sort((a, b) => a - b);
      out.push(v[v.length >> 1]);
    }
    return out;
  };
  // A row is `w` pixels with step 1; a column is `h` pixels with step w.
  const bandDepth = (lineStart: (i: number) => number, step: number, count: number, lines: number): number => {
    const ref = medianColour(lineStart(0), step, count);
    let n = 0;
    while (n < lines && closeCount(lineStart(n), step, count, ref) === count) n++;
    if (n === 0) return 0;
    const transition = Math.max(2, Math.round(lines / 128));
    for (let k = 0; k < transition && n < lines && closeCount(lineStart(n), step, count, ref) >= 0.5 * count; k++) n++;
    return n;
  };
  const top = bandDepth((i) => i * w, 1, w, h);
  const bottom = bandDepth((i) => (h - 1 - i) * w, 1, w, h);
  const left = bandDepth((i) => i, w, h, w);
  const right = bandDepth((i) => w - 1 - i, w, h, w);
  const y0 = Math.min(top, h);
  const y1 = Math.max(y0, h - bottom);
  const x0 = Math.min(left, w);
  const x1 = Math.max(x0, w - right);
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}

/** Otsu threshold of a 256-bin histogram: the level t maximising between-class variance of [0,t] vs (t,255]. */
export function otsuThreshold(hist: ArrayLike<number>): number {
  let total = 0;
  let sumAll = 0;
  for (let i = 0; i < 256; i++) {
    total += hist[i];
    sumAll += i * hist[i];
  }
  if (total === 0) return 0;
  let wB = 0;
  let sumB = 0;
  let best = 0;
  let bestT = 0;
  for (let t = 0; t < 256; t++) {
    wB += hist[t];
    if (wB === 0) continue;
    const wF = total - wB;
    if (wF === 0) break;
    sumB += t * hist[t];
    const mB = sumB / wB;
    const mF = (sumAll - sumB) / wF;
    const between = wB * wF * (mB - mF) * (mB - mF);
    if (between > best) {
      best = between;
      bestT = t;
    }
  }
  return bestT;
}

/** Background colour: per-channel median of the brightest 10% of the region (plain slide glass). */
function backgroundColour(img: RgbImage, r: Region): [number, number, number] {
  const { width: w, data } = img;
  const hist = new Float64Array(766);
  for (let y = r.y; y < r.y + r.height; y++) {
    for (let x = r.x, i = (y * w + x) * 3; x < r.x + r.width; x++, i += 3) hist[data[i] + data[i + 1] + data[i + 2]]++;
  }
  const n = r.width * r.height;
  let cut = 765;
  for (let acc = 0; cut > 0; cut--) {
    acc += hist[cut];
    if (acc >= 0.1 * n) break;
  }
  const chans = [new Float64Array(256), new Float64Array(256), new Float64Array(256)];
  let count = 0;
  for (let y = r.y; y < r.y + r.height; y++) {
    for (let x = r.x, i = (y * w + x) * 3; x < r.x + r.width; x++, i += 3) {
      if (data[i] + data[i + 1] + data[i + 2] < cut) continue;
      chans[0][data[i]]++;
      chans[1][data[i + 1]]++;
      chans[2][data[i + 2]]++;
      count++;
    }
  }
  const median = (hc: Float64Array): number => {
    let acc = 0;
    for (let v = 0; v < 256; v++) {
      acc += hc[v];
      if (acc * 2 >= count) return v;
    }
    return 255;
  };
  return [median(chans[0]), median(chans[1]), median(chans[2])];
}

/** 8-bit scale of the scores: 1 OD unit -> 200 levels, so nuclei (0.3-1.2 OD) sit mid-range. */
const OD_SCALE = 200;
/**
 * Red-channel OD above which a pixel is nucleus whatever its hue: erythroblast and pyknotic nuclei are
 * near-black navy, absorbing red and green alike, so their purple score is low.
 */
const DARK_NUCLEUS_OD = 1.4;

interface Features {
  /** min(OD(G) - OD(R), 2 OD(R) - 0.2), scaled and clipped to 0..255; 0 outside the region. */
  nucleus: Uint8Array;
  /** OD(R) - OD(B), scaled and clipped to 0..255; 0 outside the region. */
  stain: Uint8Array;
  /** 1 where OD(R) > DARK_NUCLEUS_OD. */
  dark: Uint8Array;
}

function computeFeatures(img: RgbImage, r: Region): Features {
  const { width: w, height: h, data } = img;
  // Lookup per channel: OD = ln((bg+1)/(v+1)), 0 on glass, positive where stain absorbs.
  const [odR, odG, odB] = backgroundColour(img, r).map((b) => {
    const t = new Float32Array(256);
    for (let v = 0; v < 256; v++) t[v] = Math.log((b + 1) / (v + 1));
    return t;
  });
  const nucleus = new Uint8Array(w * h);
  const stain = new Uint8Array(w * h);
  const dark = new Uint8Array(w * h);
  const to8 = (v: number) => (v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v));
  for (let y = r.y; y < r.y + r.height; y++) {
    for (let x = r.x, p = y * w + x; x < r.x + r.width; x++, p++) {
      const red = odR[data[p * 3]];
      // Purple, and absorbing red too: pink red cells absorb green but hardly any red.
      nucleus[p] = to8(Math.min(odG[data[p * 3 + 1]] - red, 2 * red - 0.2) * OD_SCALE);
      stain[p] = to8((red - odB[data[p * 3 + 2]]) * OD_SCALE);
      dark[p] = red > DARK_NUCLEUS_OD ? 1 : 0;
    }
  }
  return { nucleus, stain, dark };
}

/** Histogram of `values` inside the region. */
function regionHistogram(values: Uint8Array, w: number, r: Region): Float64Array {
  const hist = new Float64Array(256);
  for (let y = r.y; y < r.y + r.height; y++) {
    for (let x = r.x, p = y * w + x; x < r.x + r.width; x++, p++) hist[values[p]]++;
  }
  return hist;
}

type Mat = InstanceType<Cv['Mat']>;

function matFrom(cv: Cv, scope: MatScope, data: Uint8Array, w: number, h: number): Mat {
  const m = scope.track(new cv.Mat(h, w, cv.CV_8UC1));
  m.data.set(data);
  return m;
}

function ellipse(cv: Cv, scope: MatScope, radius: number): Mat {
  const d = 2 * Math.max(1, Math.round(radius)) + 1;
  return scope.track(cv.getStructuringElement(cv.MORPH_ELLIPSE, new cv.Size(d, d)));
}

/** Fill holes in place: 4-connected zero regions up to maxHoleArea that do not touch the image border. */
function fillHoles(cv: Cv, scope: MatScope, mask: Mat, maxHoleArea: number): void {
  const w = mask.cols;
  const h = mask.rows;
  const inverted = scope.track(new cv.Mat());
  cv.bitwise_not(mask, inverted);
  const labels = scope.track(new cv.Mat());
  const stats = scope.track(new cv.Mat());
  const centroids = scope.track(new cv.Mat());
  const n = cv.connectedComponentsWithStats(inverted, labels, stats, centroids, 4, cv.CV_32S);
  const fill = new Uint8Array(n);
  let any = false;
  for (let k = 1; k < n; k++) {
    const left = stats.intAt(k, cv.CC_STAT_LEFT);
    const top = stats.intAt(k, cv.CC_STAT_TOP);
    const touchesBorder =
      left === 0 || top === 0 ||
      left + stats.intAt(k, cv.CC_STAT_WIDTH) === w || top + stats.intAt(k, cv.CC_STAT_HEIGHT) === h;
    if (!touchesBorder && stats.intAt(k, cv.CC_STAT_AREA) <= maxHoleArea) {
      fill[k] = 1;
      any = true;
    }
  }
  if (!any) return;
  const l = labels.data32S;
  const d = mask.data;
  for (let p = 0; p < l.length; p++) if (fill[l[p]] !== 0) d[p] = 255;
}

/**
 * Grow the markers through `allowed` pixels (multi-source BFS, 4-connected): each pixel goes to the
 * geodesically nearest marker, so touching cells split halfway between their nuclei. Deterministic:
 * the queue starts in row-major order.
 */
function growMarkers(markers: Int32Array, allowed: Uint8Array, w: number, h: number): Int32Array {
  const out = Int32Array.from(markers);
  const queue = new Int32Array(w * h);
  let head = 0;
  let tail = 0;
  for (let p = 0; p < out.length; p++) if (out[p] !== 0) queue[tail++] = p;
  const last = w * (h - 1);
  while (head < tail) {
    const p = queue[head++];
    const id = out[p];
    const x = p % w;
    if (x > 0 && out[p - 1] === 0 && allowed[p - 1] !== 0) (out[p - 1] = id), (queue[tail++] = p - 1);
    if (x < w - 1 && out[p + 1] === 0 && allowed[p + 1] !== 0) (out[p + 1] = id), (queue[tail++] = p + 1);
    if (p >= w && out[p - w] === 0 && allowed[p - w] !== 0) (out[p - w] = id), (queue[tail++] = p - w);
    if (p < last && out[p + w] === 0 && allowed[p + w] !== 0) (out[p + w] = id), (queue[tail++] = p + w);
  }
  return out;
}

/**
 * One marker per nucleus. Components of the cleaned nucleus mask below minNucleusArea are dropped.
 * Touching nuclei form one component with a neck: its distance-transform cores (pixels deeper than
 * ratio x the component's deepest point) fall apart into several blobs, and each blob becomes a nucleus,
 * the component's pixels going to the nearest core.
 */
function nucleusMarkers(cv: Cv, scope: MatScope, nucleusMask: Mat, o: ResolvedOptions): { markers: Int32Array; count: number } {
  const w = nucleusMask.cols;
  const h = nucleusMask.rows;
  const labels = scope.track(new cv.Mat());
  const stats = scope.track(new cv.Mat());
  const centroids = scope.track(new cv.Mat());
  const n = cv.connectedComponentsWithStats(nucleusMask, labels, stats, centroids, 8, cv.CV_32S);
  const keep = new Int32Array(n);
  let kept = 0;
  for (let k = 1; k < n; k++) if (stats.intAt(k, cv.CC_STAT_AREA) >= o.minNucleusArea) keep[k] = ++kept;
  const src = labels.data32S;
  const comp = new Int32Array(w * h);
  for (let i = 0; i < comp.length; i++) comp[i] = keep[src[i]];
  if (o.splitDepthRatio <= 0) return { markers: comp, count: kept };

  const dist = scope.track(new cv.Mat());
  cv.distanceTransform(nucleusMask, dist, cv.DIST_L2, 5);
  let d = dist.data32F;
  const maxDepth = new Float32Array(kept + 1);
  for (let i = 0; i < comp.length; i++) if (comp[i] !== 0 && d[i] > maxDepth[comp[i]]) maxDepth[comp[i]] = d[i];
  const core = new Uint8Array(w * h);
  for (let i = 0; i < comp.length; i++) {
    if (comp[i] !== 0 && d[i] >= o.splitDepthRatio * maxDepth[comp[i]]) core[i] = 255;
  }
  const coreLabels = scope.track(new cv.Mat());
  const nCores = cv.connectedComponents(matFrom(cv, scope, core, w, h), coreLabels, 8, cv.CV_32S);
  const cl = coreLabels.data32S;
  d = dist.data32F; // re-read: the allocations above may have grown (and detached) the wasm heap
  // A core shallower than this is a lobe or a bump, not a nucleus of its own.
  const minCoreDepth = 5 * o.scale;
  const coreDepth = new Float32Array(nCores);
  for (let i = 0; i < cl.length; i++) if (cl[i] !== 0 && d[i] > coreDepth[cl[i]]) coreDepth[cl[i]] = d[i];
  const seeds = new Int32Array(w * h);
  for (let i = 0; i < cl.length; i++) if (cl[i] !== 0 && coreDepth[cl[i]] >= minCoreDepth) seeds[i] = cl[i];
  const inNucleus = new Uint8Array(w * h);
  for (let i = 0; i < comp.length; i++) inNucleus[i] = comp[i] !== 0 ? 1 : 0;
  const split = growMarkers(seeds, inNucleus, w, h);
  // Renumber in row-major order of first pixel; a component without a deep core keeps its extent.
  const ids = new Int32Array(nCores + kept + 1);
  let count = 0;
  const markers = new Int32Array(w * h);
  for (let i = 0; i < comp.length; i++) {
    if (comp[i] === 0) continue;
    const key = split[i] !== 0 ? split[i] : nCores + comp[i];
    if (ids[key] === 0) ids[key] = ++count;
    markers[i] = ids[key];
  }
  return { markers, count };
}

/** Cells from a label image: stats, size filter, and ids renumbered 1..n by centroid (y, then x). */
function finalizeCells(raw: Int32Array, count: number, w: number, h: number, o: ResolvedOptions): Segmentation {
  const area = new Float64Array(count + 1);
  const sx = new Float64Array(count + 1);
  const sy = new Float64Array(count + 1);
  const minX = new Int32Array(count + 1).fill(w);
  const minY = new Int32Array(count + 1).fill(h);
  const maxX = new Int32Array(count + 1).fill(-1);
  const maxY = new Int32Array(count + 1).fill(-1);
  for (let y = 0, p = 0; y < h; y++) {
    for (let x = 0; x < w; x++, p++) {
      const id = raw[p];
      if (id === 0) continue;
      area[id]++;
      sx[id] += x;
      sy[id] += y;
      if (x < minX[id]) minX[id] = x;
      if (x > maxX[id]) maxX[id] = x;
      if (y < minY[id]) minY[id] = y;
      if (y > maxY[id]) maxY[id] = y;
    }
  }
  const kept: { old: number; cx: number; cy: number }[] = [];
  for (let id = 1; id <= count; id++) {
    if (area[id] < o.minArea || area[id] > o.maxArea) continue;
    kept.push({ old: id, cx: sx[id] / area[id], cy: sy[id] / area[id] });
  }
  // Reading order of centroids; rounding y makes cells on the same row sort left to right.
  kept.sort((a, b) => Math.round(a.cy) - Math.round(b.cy) || a.cx - b.cx || a.old - b.old);
  const remap = new Int32Array(count + 1);
  const cells: Cell[] = kept.map((k, i) => {
    remap[k.old] = i + 1;
    const bbox: BBox = {
      x: minX[k.old],
      y: minY[k.old],
      width: maxX[k.old] - minX[k.old] + 1,
      height: maxY[k.old] - minY[k.old] + 1,
    };
    return {
      id: i + 1,
      bbox,
      area: area[k.old],
      centroid: { x: Math.round(k.cx * 100) / 100, y: Math.round(k.cy * 100) / 100 },
    };
  });
  const labels = new Int32Array(w * h);
  const roi = new Uint8Array(w * h);
  for (let p = 0; p < labels.length; p++) {
    const id = remap[raw[p]];
    labels[p] = id;
    if (id !== 0) roi[p] = 255;
  }
  return { cells, labels, roiMask: { width: w, height: h, data: roi }, width: w, height: h };
}

function validate(img: RgbImage): void {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`invalid image size ${width}x${height}`);
  }
  if (data.length !== width * height * 3) {
    throw new RangeError(`image data has ${data.length} bytes, expected ${width * height * 3} (RGB)`);
  }
}

/** Find nucleated cells: each is a Giemsa-purple nucleus plus the stained cytoplasm around it. */
export async function segmentCells(img: RgbImage, opts: SegmentOptions = {}): Promise<Segmentation> {
  validate(img);
  const o = resolveOptions(img, opts);
  const { width: w, height: h } = img;
  const region = contentRegion(img);
  if (region.width < 8 || region.height < 8) return finalizeCells(new Int32Array(w * h), 0, w, h, o);
  const f = computeFeatures(img, region);

  // Nuclei: Otsu over the slide area only (the padding would add a spike at 0). The floor keeps a
  // nucleus-free field from being split into two kinds of glass.
  const tN = Math.max(8, otsuThreshold(regionHistogram(f.nucleus, w, region)) * o.nucleusThresholdScale);
  const tS = o.cytoplasmMinOd * OD_SCALE;
  const maxHole = 1500 * o.scale * o.scale;

  const { markers, count, allowed } = await withCv((cv, scope) => {
    const nucleus = new Uint8Array(w * h);
    for (let p = 0; p < nucleus.length; p++) nucleus[p] = f.nucleus[p] > tN || f.dark[p] !== 0 ? 255 : 0;
    const nMat = matFrom(cv, scope, nucleus, w, h);
    // Opening removes specks and thin strands; closing and hole filling bridge pale chromatin.
    cv.morphologyEx(nMat, nMat, cv.MORPH_OPEN, ellipse(cv, scope, 2 * o.scale));
    cv.morphologyEx(nMat, nMat, cv.MORPH_CLOSE, ellipse(cv, scope, 2 * o.scale));
    fillHoles(cv, scope, nMat, maxHole);
    const mk = nucleusMarkers(cv, scope, nMat, o);

    // Cell extent: stained pixels (a fixed OD level: with the background-relative OD it separated
    // cytoplasm from red cells better than Otsu, which lands between cytoplasm and nuclei).
    const fg = new Uint8Array(w * h);
    for (let p = 0; p < fg.length; p++) fg[p] = f.stain[p] > tS || mk.markers[p] !== 0 ? 255 : 0;
    const fMat = matFrom(cv, scope, fg, w, h);
    // A wider opening cuts the thin stained rims of red cells that would otherwise bridge to a cell.
    cv.morphologyEx(fMat, fMat, cv.MORPH_OPEN, ellipse(cv, scope, 3 * o.scale));
    cv.morphologyEx(fMat, fMat, cv.MORPH_CLOSE, ellipse(cv, scope, 2 * o.scale));
    // Holes: the pale perinuclear Golgi zone of plasma cells.
    fillHoles(cv, scope, fMat, maxHole);

    // Cytoplasm is never far from its nucleus: cap the growth by the distance to the nearest nucleus.
    const notNucleus = scope.track(new cv.Mat(h, w, cv.CV_8UC1));
    const nd = notNucleus.data;
    for (let p = 0; p < nd.length; p++) nd[p] = mk.markers[p] === 0 ? 255 : 0;
    const dist = scope.track(new cv.Mat());
    cv.distanceTransform(notNucleus, dist, cv.DIST_L2, 3);
    // Views into the wasm heap are taken after the last allocation: growing the heap detaches them.
    const dd = dist.data32F;
    const filled = fMat.data;
    const allow = new Uint8Array(w * h);
    for (let p = 0; p < allow.length; p++) allow[p] = filled[p] !== 0 && dd[p] <= o.maxCytoplasmWidth ? 1 : 0;
    return { markers: mk.markers, count: mk.count, allowed: allow };
  });

  return finalizeCells(growMarkers(markers, allowed, w, h), count, w, h, o);
}
