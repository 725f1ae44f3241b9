/**
 * Cell segmentation on the bundled SegPC-2021 images (raw JPEGs decoded with sharp) and on small
 * synthetic images whose answers are known.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import sharp from 'sharp';
import type { GrayImage, RgbImage } from '../layers/core/src/types.ts';
import {
  cellCrops,
  contentRegion,
  encodeCropPng,
  getCv,
  labelCells,
  liveMatCount,
  maskComponents,
  overlayPng,
  roiImage,
  roiMaskPng,
  segmentationQuality,
  segmentCells,
  type Segmentation,
} from '../layers/core/src/segment/index.ts';

const DATA = new URL('./data/segpc2021/', import.meta.url);
/** Sparse with lavender glass, pale cytoplasm on grey glass, typical, crowded, crowded with pale cells. */
const IDS = ['106', '1722', '2001', '9905', '9795'];

async function loadImage(id: string, clahe = false): Promise<RgbImage> {
  let pipeline = sharp(new URL(`images/${id}.jpg`, DATA).pathname).removeAlpha();
  if (clahe) pipeline = pipeline.clahe({ width: 64, height: 64, maxSlope: 3 });
  const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

async function loadMask(id: string): Promise<GrayImage> {
  const { data, info } = await sharp(new URL(`masks/${id}.jpg`, DATA).pathname).greyscale().raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 1);
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

const cache = new Map<string, Promise<{ img: RgbImage; mask: GrayImage; seg: Segmentation }>>();
function sample(id: string) {
  let entry = cache.get(id);
  if (entry === undefined) {
    entry = (async () => {
      const img = await loadImage(id);
      return { img, mask: await loadMask(id), seg: await segmentCells(img) };
    })();
    cache.set(id, entry);
  }
  return entry;
}

/** Mask components big enough to be cells (the JPEG masks have a few specks of noise). */
function cellComponents(mask: GrayImage): number {
  const { count, areas } = maskComponents(mask);
  let n = 0;
  for (let k = 1; k <= count; k++) if (areas[k] >= 0.002 * mask.width * mask.height) n++;
  return n;
}

/** Deterministic noise so synthetic images are not unrealistically flat. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface Disc {
  x: number;
  y: number;
  r: number;
  rgb: [number, number, number];
}

/** Glass with painted discs (later discs on top) and +-4 levels of noise. */
function synthetic(width: number, height: number, discs: Disc[], glass: [number, number, number] = [186, 183, 196]): RgbImage {
  const data = new Uint8Array(width * height * 3);
  const rnd = prng(42);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let rgb = glass;
      for (const d of discs) if ((x - d.x) ** 2 + (y - d.y) ** 2 <= d.r * d.r) rgb = d.rgb;
      for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, rgb[c] + Math.round(rnd() * 8 - 4)));
    }
  }
  return { width, height, data };
}

const NUCLEUS: [number, number, number] = [92, 58, 142];
const CYTOPLASM: [number, number, number] = [118, 110, 178];
const RED_CELL: [number, number, number] = [205, 150, 162];

/** Two plasma-like cells (nucleus + blue cytoplasm) and one red cell. */
function twoCellsAndARedCell(): RgbImage {
  return synthetic(256, 200, [
    { x: 70, y: 70, r: 34, rgb: CYTOPLASM },
    { x: 62, y: 66, r: 21, rgb: NUCLEUS },
    { x: 180, y: 130, r: 34, rgb: CYTOPLASM },
    { x: 186, y: 136, r: 21, rgb: NUCLEUS },
    { x: 190, y: 45, r: 18, rgb: RED_CELL },
  ]);
}

/** Bytes in use on the OpenCV WebAssembly heap: heap size minus what can still be malloc'ed without growing it. */
async function wasmBytesInUse(): Promise<number> {
  const cv = (await getCv()) as unknown as { HEAPU8: Uint8Array; _malloc(n: number): number; _free(p: number): void };
  const block = 1 << 20;
  const size = cv.HEAPU8.byteLength;
  const blocks: number[] = [];
  let fitted = 0;
  for (;;) {
    const p = cv._malloc(block);
    if (p === 0) break;
    blocks.push(p);
    if (cv.HEAPU8.byteLength !== size) break; // this one needed the heap to grow
    fitted++;
  }
  for (const p of blocks) cv._free(p);
  return size - fitted * block;
}

test('contentRegion finds the flat padding bands, and only them', async () => {
  for (const id of IDS) {
    for (const clahe of [false, true]) {
      const r = contentRegion(await loadImage(id, clahe));
      // 4:3 slides resized to 512x512: 64-row bands; JPEG blurs the last rows into the slide.
      assert.ok(r.y >= 60 && r.y <= 70, `${id} clahe=${clahe}: top band ${r.y}`);
      const bottom = 512 - r.y - r.height;
      assert.ok(bottom >= 60 && bottom <= 70, `${id} clahe=${clahe}: bottom band ${bottom}`);
      assert.deepEqual([r.x, r.width], [0, 512], `${id}: no side bands`);
    }
  }
  // No padding: edge lines of plain glass may count as flat, but at most the tips of objects are cut.
  const r = contentRegion(twoCellsAndARedCell());
  assert.ok(r.y <= 27 + 2 && r.x <= 36 + 2 && r.y + r.height >= 164 - 2 && r.x + r.width >= 214 - 2, JSON.stringify(r));
  const touching = synthetic(100, 100, [{ x: 50, y: 0, r: 20, rgb: NUCLEUS }, { x: 50, y: 99, r: 20, rgb: NUCLEUS }, { x: 0, y: 50, r: 20, rgb: NUCLEUS }, { x: 99, y: 50, r: 20, rgb: NUCLEUS }]);
  assert.deepEqual(contentRegion(touching), { x: 0, y: 0, width: 100, height: 100 });
  const flat = synthetic(64, 64, [], [208, 196, 210]);
  assert.equal(contentRegion(flat).height * contentRegion(flat).width, 0);
});

test('synthetic: finds each nucleus with its cytoplasm and ignores the red cell', async () => {
  const seg = await segmentCells(twoCellsAndARedCell());
  assert.equal(seg.cells.length, 2);
  const [a, b] = seg.cells;
  // Ids follow centroid order (top first); each cell is the whole 34-px disc (area ~3630).
  assert.ok(Math.abs(a.centroid.x - 70) < 4 && Math.abs(a.centroid.y - 70) < 4, JSON.stringify(a));
  assert.ok(Math.abs(b.centroid.x - 180) < 4 && Math.abs(b.centroid.y - 130) < 4, JSON.stringify(b));
  for (const c of seg.cells) assert.ok(c.area > 0.85 * Math.PI * 34 ** 2 && c.area < 1.15 * Math.PI * 34 ** 2, `area ${c.area}`);
  assert.equal(seg.labels[45 * 256 + 190], 0, 'red cell centre is background');
  const flat = await segmentCells(synthetic(128, 96, []));
  assert.equal(flat.cells.length, 0);
});

test('finds a plausible number of cells with consistent geometry', async () => {
  for (const id of IDS) {
    const { mask, seg } = await sample(id);
    const comps = cellComponents(mask);
    assert.ok(seg.cells.length >= comps, `${id}: ${seg.cells.length} cells < ${comps} plasma-cell components`);
    assert.ok(seg.cells.length <= 60, `${id}: ${seg.cells.length} cells is absurd for a 512x512 field`);
    const counts = new Map<number, number>();
    for (const l of seg.labels) if (l !== 0) counts.set(l, (counts.get(l) ?? 0) + 1);
    assert.deepEqual(seg.cells.map((c) => c.id), seg.cells.map((_, i) => i + 1), 'ids are 1..n');
    assert.equal(counts.size, seg.cells.length, 'every id owns pixels and no other ids exist');
    let previous = -Infinity;
    for (const c of seg.cells) {
      assert.equal(c.area, counts.get(c.id));
      assert.ok(Math.round(c.centroid.y) >= previous, 'ordered by centroid y');
      previous = Math.round(c.centroid.y);
      const { x, y, width, height } = c.bbox;
      assert.ok(x >= 0 && y >= 0 && x + width <= seg.width && y + height <= seg.height);
      assert.ok(c.centroid.x >= x && c.centroid.x < x + width && c.centroid.y >= y && c.centroid.y < y + height);
    }
    const roiCount = seg.roiMask.data.reduce((n, v) => n + (v === 255 ? 1 : 0), 0);
    assert.equal(roiCount, [...counts.values()].reduce((a, b) => a + b, 0));
  }
});

test('labels by mask overlap match the plasma-cell masks', async () => {
  for (const id of IDS) {
    const { mask, seg } = await sample(id);
    const cells = labelCells(seg, mask);
    assert.ok(cells.every((c) => c.maskOverlap !== undefined && c.maskOverlap >= 0 && c.maskOverlap <= 1));
    assert.ok(cells.every((c) => c.label === (c.maskOverlap! >= 0.5 ? 'plasma' : 'other')));
    assert.ok(cells.some((c) => c.label === 'other'), `${id}: every image has non-plasma nucleated cells`);
    const q = segmentationQuality(seg, mask);
    // Most mask components are covered by the plasma cells found inside them.
    assert.ok(q.groupRecall50 >= 0.75, `${id}: group recall ${q.groupRecall50}`);
    assert.ok(q.dice >= 0.75, `${id}: Dice ${q.dice}`);
    assert.ok(q.plasmaCells >= q.maskComponents - 1, `${id}: ${q.plasmaCells} plasma cells for ${q.maskComponents} components`);
  }
});

test('padding bands produce no cells', async () => {
  for (const id of IDS) {
    for (const clahe of [false, true]) {
      const seg = clahe ? await segmentCells(await loadImage(id, true)) : (await sample(id)).seg;
      for (let p = 0; p < seg.labels.length; p++) {
        if (seg.labels[p] === 0) continue;
        const y = Math.floor(p / seg.width);
        // Rows 0-63 and 448-511 are padding; JPEG blends one or two rows next to the slide.
        assert.ok(y >= 62 && y < 450, `${id} clahe=${clahe}: cell ${seg.labels[p]} reaches row ${y} inside a band`);
      }
    }
  }
  // Synthetic letterbox: bands of the dataset's padding colour around the two cells.
  const inner = twoCellsAndARedCell();
  const padded = synthetic(256, 300, [], [208, 196, 210]);
  padded.data.set(inner.data, 50 * 256 * 3);
  const seg = await segmentCells(padded);
  assert.equal(seg.cells.length, 2);
  assert.ok(seg.cells.every((c) => c.bbox.y >= 50 && c.bbox.y + c.bbox.height <= 250));
});

test('works at the original SegPC resolution (2048x1536): parameters scale with the image', async () => {
  const { seg } = await sample('9905');
  // The slide part of the 512x512 image (rows 64-447), enlarged to the size of the source BMPs.
  const { data, info } = await sharp(new URL('images/9905.jpg', DATA).pathname)
    .extract({ left: 0, top: 64, width: 512, height: 384 })
    .resize(2048, 1536)
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  const big = await segmentCells({ width: info.width, height: info.height, data: new Uint8Array(data) });
  assert.deepEqual(contentRegion({ width: info.width, height: info.height, data: new Uint8Array(data) }), { x: 0, y: 0, width: 2048, height: 1536 });
  const n = seg.cells.length;
  assert.ok(Math.abs(big.cells.length - n) <= Math.max(2, 0.2 * n), `${big.cells.length} cells at 2048x1536 vs ${n} at 512`);
  // Same cells, 4x the linear size: median area ~16x.
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
  const ratio = median(big.cells.map((c) => c.area)) / median(seg.cells.map((c) => c.area));
  assert.ok(ratio > 12 && ratio < 20, `median area ratio ${ratio}`);
});

test('segmentation is deterministic', async () => {
  const { img, seg } = await sample('9905');
  const again = await segmentCells({ ...img, data: Uint8Array.from(img.data) });
  assert.deepEqual(again.cells, seg.cells);
  assert.ok(Buffer.from(again.labels.buffer).equals(Buffer.from(seg.labels.buffer)));
  assert.ok(Buffer.from(again.roiMask.data).equals(Buffer.from(seg.roiMask.data)));
});

test('crops are fixed-size squares of one cell each', async () => {
  const { img, seg } = await sample('2001');
  for (const size of [64, 32]) {
    const crops = cellCrops(img, seg, size);
    assert.deepEqual(crops.map((c) => c.id), seg.cells.map((c) => c.id));
    for (const c of crops) {
      assert.equal(c.image.width, size);
      assert.equal(c.image.height, size);
      assert.equal(c.image.data.length, size * size * 3);
    }
  }
  const png = await encodeCropPng(cellCrops(img, seg)[0].image);
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ['png', 64, 64, 3]);

  // One synthetic cell: masked crops are black outside the cell (corners), unmasked ones show the glass.
  const oneImg = synthetic(160, 160, [{ x: 80, y: 80, r: 34, rgb: CYTOPLASM }, { x: 76, y: 78, r: 21, rgb: NUCLEUS }]);
  const one = await segmentCells(oneImg);
  assert.equal(one.cells.length, 1);
  const [masked] = cellCrops(oneImg, one, 64);
  const [plain] = cellCrops(oneImg, one, 64, { mask: 'none' });
  assert.deepEqual([...masked.image.data.subarray(0, 3)], [0, 0, 0]);
  assert.ok(plain.image.data[0] > 150, 'unmasked corner is glass');
  const centre = (32 * 64 + 32) * 3;
  assert.deepEqual([...masked.image.data.subarray(centre, centre + 3)], [...plain.image.data.subarray(centre, centre + 3)]);
  // A cell at the image edge is zero-padded, not shifted.
  const edge = synthetic(120, 120, [{ x: 10, y: 60, r: 30, rgb: CYTOPLASM }, { x: 8, y: 60, r: 20, rgb: NUCLEUS }]);
  const edgeSeg = await segmentCells(edge);
  assert.equal(edgeSeg.cells.length, 1);
  const [edgeCrop] = cellCrops(edge, edgeSeg, 64, { mask: 'none' });
  assert.deepEqual([...edgeCrop.image.data.subarray((32 * 64) * 3, (32 * 64) * 3 + 3)], [0, 0, 0], 'left edge is padding');
});

test('crops with a minimum side keep the cell size that fitted crops resize away', async () => {
  // A small and a large synthetic cell, far apart: fitted crops show both filling the square alike.
  const img = synthetic(400, 200, [
    { x: 80, y: 100, r: 22, rgb: CYTOPLASM },
    { x: 78, y: 98, r: 13, rgb: NUCLEUS },
    { x: 280, y: 100, r: 50, rgb: CYTOPLASM },
    { x: 276, y: 96, r: 30, rgb: NUCLEUS },
  ]);
  const seg = await segmentCells(img);
  assert.equal(seg.cells.length, 2);
  const cellPixels = (c: { image: RgbImage }): number => {
    let n = 0;
    for (let p = 0; p < c.image.data.length; p += 3) if (c.image.data[p] + c.image.data[p + 1] + c.image.data[p + 2] > 0) n++;
    return n;
  };
  const small = seg.cells.findIndex((c) => c.centroid.x < 200);
  const large = 1 - small;
  const fitted = cellCrops(img, seg, 64).map(cellPixels);
  const scaled = cellCrops(img, seg, 64, { minSide: 112 }).map(cellPixels);
  // Fitted: within 25 % of each other; with the floor the small cell covers about (44/112)^2 of its crop.
  assert.ok(Math.abs(fitted[small] - fitted[large]) / fitted[large] < 0.25, `fitted ${fitted.join(', ')}`);
  assert.ok(scaled[small] < 0.6 * fitted[small], `small cell ${scaled[small]} vs fitted ${fitted[small]}`);
  // The large cell (bbox ~100 px, x 1.2 margin > 112) is cut exactly as without the floor.
  assert.equal(scaled[large], fitted[large]);
  assert.throws(() => cellCrops(img, seg, 64, { minSide: -1 }), RangeError);
});

test('renders the ROI mask, ROI image and overlay', async () => {
  const { img, mask, seg } = await sample('106');
  const roi = roiImage(img, seg);
  for (let p = 0; p < seg.labels.length; p++) {
    const inside = seg.labels[p] !== 0;
    for (let c = 0; c < 3; c++) assert.equal(roi.data[p * 3 + c], inside ? img.data[p * 3 + c] : 0);
  }
  const maskPng = await roiMaskPng(seg);
  const maskMeta = await sharp(maskPng).metadata();
  assert.deepEqual([maskMeta.format, maskMeta.width, maskMeta.height, maskMeta.channels], ['png', 512, 512, 1]);
  const maskBack = await sharp(maskPng).greyscale().raw().toBuffer();
  assert.ok(Buffer.from(seg.roiMask.data).equals(maskBack));

  const cells = labelCells(seg, mask);
  const { data: ov, info: ovInfo } = await sharp(await overlayPng(img, seg, cells)).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([ovInfo.width, ovInfo.height, ovInfo.channels], [512, 512, 3]);
  const countColour = (rgb: number[]) => {
    let n = 0;
    for (let i = 0; i < ov.length; i += 3) if (ov[i] === rgb[0] && ov[i + 1] === rgb[1] && ov[i + 2] === rgb[2]) n++;
    return n;
  };
  assert.ok(countColour([255, 40, 40]) > 100, 'plasma contours in red');
  assert.ok(countColour([40, 220, 40]) > 100, 'other contours in green');
  const { data: plain } = await sharp(await overlayPng(img, seg, seg.cells)).raw().toBuffer({ resolveWithObject: true });
  let yellow = 0;
  for (let i = 0; i < plain.length; i += 3) if (plain[i] === 255 && plain[i + 1] === 230 && plain[i + 2] === 0) yellow++;
  assert.ok(yellow > 100, 'unlabelled contours in yellow');
});

/**
 * 10x10 hand-made case. Cells: 1 = rows 1-3 x cols 1-3 (9 px), 2 = rows 6-8 x cols 6-9 (12 px),
 * 3 = rows 0-1 x cols 7-8 (4 px). Mask: A = rows 1-3 x cols 1-4 (12 px), D = row 5 x cols 0-2 (3 px),
 * B = rows 7-8 x cols 6-9 (8 px), plus a 1-px speck at row 9, col 0.
 */
function handMade(): { seg: Segmentation; mask: GrayImage } {
  const w = 10;
  const labels = new Int32Array(100);
  const mask = new Uint8Array(100);
  const fill = (arr: Int32Array | Uint8Array, r0: number, r1: number, c0: number, c1: number, v: number) => {
    for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) arr[r * w + c] = v;
  };
  fill(labels, 1, 3, 1, 3, 1);
  fill(labels, 6, 8, 6, 9, 2);
  fill(labels, 0, 1, 7, 8, 3);
  fill(mask, 1, 3, 1, 4, 250); // lossy-JPEG-like values above the 127 cut
  fill(mask, 5, 5, 0, 2, 200);
  fill(mask, 7, 8, 6, 9, 255);
  fill(mask, 9, 9, 0, 0, 255);
  mask[0] = 127; // at the cut: outside
  const cells = [
    { id: 1, bbox: { x: 1, y: 1, width: 3, height: 3 }, area: 9, centroid: { x: 2, y: 2 } },
    { id: 2, bbox: { x: 6, y: 6, width: 4, height: 3 }, area: 12, centroid: { x: 7.5, y: 7 } },
    { id: 3, bbox: { x: 7, y: 0, width: 2, height: 2 }, area: 4, centroid: { x: 7.5, y: 0.5 } },
  ];
  const roi = new Uint8Array(100).map((_, i) => (labels[i] !== 0 ? 255 : 0));
  return {
    seg: { cells, labels, roiMask: { width: w, height: w, data: roi }, width: w, height: w },
    mask: { width: w, height: w, data: mask },
  };
}

test('labelCells on a hand-made example', () => {
  const { seg, mask } = handMade();
  const cells = labelCells(seg, mask);
  assert.deepEqual(cells.map((c) => c.label), ['plasma', 'plasma', 'other']);
  assert.deepEqual(cells.map((c) => c.maskOverlap), [1, 8 / 12, 0]);
  assert.deepEqual(labelCells(seg, mask, 0.7).map((c) => c.label), ['plasma', 'other', 'other']);
  assert.equal(seg.cells[0].label, undefined, 'input cells are not modified');
  assert.throws(() => labelCells(seg, { width: 5, height: 5, data: new Uint8Array(25) }), RangeError);
});

test('segmentationQuality on a hand-made example (hand-computed)', () => {
  const { seg, mask } = handMade();
  const q = segmentationQuality(seg, mask, { minComponentArea: 2 });
  // Plasma union = cells 1+2 = 21 px; mask = 12+3+8+1 = 24 px; intersection = 9+8 = 17.
  assert.ok(Math.abs(q.iou - 17 / 28) < 1e-12, `iou ${q.iou}`);
  assert.ok(Math.abs(q.dice - 34 / 45) < 1e-12, `dice ${q.dice}`);
  // Components in row-major order: A, D, B, speck (dropped: 1 px < 2).
  assert.deepEqual(
    q.instances.map((m) => [m.component, m.area, m.bestCellId]),
    [[1, 12, 1], [2, 3, 0], [3, 8, 2]],
  );
  const ious = q.instances.map((m) => m.bestIou);
  assert.ok(Math.abs(ious[0] - 9 / 12) < 1e-12 && ious[1] === 0 && Math.abs(ious[2] - 8 / 12) < 1e-12, `${ious}`);
  assert.ok(Math.abs(q.meanInstanceIou - (9 / 12 + 8 / 12) / 3) < 1e-12);
  assert.equal(q.matched, 2);
  assert.ok(Math.abs(q.recall50 - 2 / 3) < 1e-12);
  assert.deepEqual(q.instances.map((m) => m.groupIou), [9 / 12, 0, 8 / 12]);
  assert.equal(q.plasmaCells, 2);
  assert.equal(q.maskComponents, 3);
  assert.equal(q.countError, -1);
  assert.equal(q.absCountError, 1);
  assert.equal(q.nucleatedCells, 3);
  // The default minimum component area (0.2% of 100 px = 0.2 px) keeps the speck as a fourth component.
  assert.equal(segmentationQuality(seg, mask).maskComponents, 4);
  // Perfect prediction: the mask equal to the plasma cells.
  const exact = new Uint8Array(100).map((_, i) => (seg.labels[i] === 1 || seg.labels[i] === 2 ? 255 : 0));
  const perfect = segmentationQuality(seg, { width: 10, height: 10, data: exact }, { minComponentArea: 1 });
  assert.deepEqual([perfect.iou, perfect.dice, perfect.recall50, perfect.countError], [1, 1, 1, 0]);
});

test('no OpenCV memory leak across 50 segmentations', async () => {
  const { img } = await sample('9905');
  const cv = await getCv();
  // Warm up: the allocator reaches its working size on the first calls.
  for (let i = 0; i < 3; i++) await segmentCells(img);
  const before = await wasmBytesInUse();

  // The probe itself must see a leak of 4 Mats of 1 MB.
  const leaked = Array.from({ length: 4 }, () => new cv.Mat(1024, 1024, cv.CV_8UC1));
  const withLeak = await wasmBytesInUse();
  for (const m of leaked) m.delete();
  assert.ok(withLeak - before >= 3 << 20, `probe sensitivity: ${withLeak - before} bytes for 4 MB`);

  for (let i = 0; i < 50; i++) {
    await segmentCells(img);
    assert.equal(liveMatCount(), 0, `tracked Mats alive after call ${i + 1}`);
  }
  await overlayPng(img, await segmentCells(img), []);
  const after = await wasmBytesInUse();
  // One 512x512 one-byte Mat is 256 KB; a per-call leak of it would add 12.5 MB.
  assert.ok(after - before < 2 << 20, `heap use grew by ${after - before} bytes over 50 calls`);
});

test('rejects malformed images', async () => {
  await assert.rejects(segmentCells({ width: 10, height: 10, data: new Uint8Array(10) }), RangeError);
  await assert.rejects(segmentCells({ width: 0, height: 10, data: new Uint8Array(0) }), RangeError);
  const { seg } = await sample('106');
  assert.throws(() => roiImage({ width: 4, height: 4, data: new Uint8Array(48) }, seg), RangeError);
  assert.throws(() => cellCrops({ width: 512, height: 512, data: new Uint8Array(512 * 512 * 3) }, seg, 0), RangeError);
});
