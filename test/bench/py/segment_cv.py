"""Native-OpenCV port of layers/core/src/segment/segment.ts (segmentCells), for timing against OpenCV.js.

  python3 segment_cv.py --threads 1 --repeats 3 FILE.png...   (the preprocessed RGB images, lossless PNG)

Prints one JSON line: per-repeat images/second (segmentation only: images are decoded before the clock
starts, as the Node side segments decoded images) and the cell count per image (last repeat).
Same steps and constants as segment.ts: padding-band detection, background colour (median of the brightest
10 %), optical-density scores, Otsu of the nucleus score, open/close with the same ellipses, hole filling by
4-connected components of the inverse, 8-connected nucleus components with the area floor, distance
transform (L2, 5x5 mask) cores at 0.6 of each blob's depth, core growth, cytoplasm mask, distance cap, region
growing and the area filter. Different: region growing (a FIFO breadth-first search in segment.ts) is done by
repeated 4-neighbour dilation of the label image with cv2.dilate (same geodesic distance layers; a pixel
reached by two cells at the same distance goes to the higher id instead of the first in queue order); Otsu
and the band detection are vectorised numpy, not loops. Cell ids are not renumbered by centroid (not timed work).
"""
import argparse
import json
import time

import cv2
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--repeats', type=int, default=1)
ap.add_argument('files', nargs='+')
a = ap.parse_args()
cv2.setNumThreads(a.threads)

OD_SCALE = 200
DARK_NUCLEUS_OD = 1.4
CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def content_region(img):
    h, w, _ = img.shape
    tol = 20
    d = img.astype(np.int16)

    def band_depth(lines):  # lines: [n_lines, count, 3], outermost first
        n_lines, count = lines.shape[0], lines.shape[1]
        ref = np.sort(lines[0], axis=0)[count >> 1]
        close = (np.abs(lines - ref) <= tol).all(axis=2).sum(axis=1)
        n = 0
        while n < n_lines and close[n] == count:
            n += 1
        if n == 0:
            return 0
        transition = max(2, round(n_lines / 128))
        k = 0
        while k < transition and n < n_lines and close[n] >= 0.5 * count:
            n += 1
            k += 1
        return n

    top = band_depth(d)
    bottom = band_depth(d[::-1])
    left = band_depth(d.transpose(1, 0, 2))
    right = band_depth(d.transpose(1, 0, 2)[::-1])
    y0 = min(top, h)
    y1 = max(y0, h - bottom)
    x0 = min(left, w)
    x1 = max(x0, w - right)
    return x0, y0, x1 - x0, y1 - y0


def otsu(hist):
    total = hist.sum()
    if total == 0:
        return 0
    levels = np.arange(256, dtype=np.float64)
    w_b = np.cumsum(hist)
    sum_b = np.cumsum(levels * hist)
    w_f = total - w_b
    valid = (w_b > 0) & (w_f > 0)
    m_b = np.where(valid, sum_b / np.maximum(w_b, 1), 0)
    m_f = np.where(valid, (sum_b[-1] - sum_b) / np.maximum(w_f, 1), 0)
    between = np.where(valid, w_b * w_f * (m_b - m_f) ** 2, 0)
    return int(np.argmax(between)) if between.max() > 0 else 0


def background(sub):
    s = sub.astype(np.int32).sum(axis=2).ravel()
    hist = np.bincount(s, minlength=766)
    n = s.size
    acc = np.cumsum(hist[::-1])
    cut = 765 - int(np.searchsorted(acc, 0.1 * n))
    sel = sub.reshape(-1, 3)[s >= cut]
    return [int(np.sort(sel[:, c])[(sel.shape[0] - 1) // 2]) for c in range(3)]


def ellipse(r):
    dd = 2 * max(1, round(r)) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dd, dd))


def fill_holes(mask, max_hole):
    h, w = mask.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.bitwise_not(mask), connectivity=4, ltype=cv2.CV_32S)
    x, y, bw, bh, area = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3], stats[:, 4]
    border = (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
    fill = (~border) & (area <= max_hole)
    fill[0] = False
    if fill.any():
        mask[fill[labels]] = 255


def grow(markers, allowed):
    out = markers.astype(np.float32)
    allow = allowed.astype(bool)
    while True:
        d = cv2.dilate(out, CROSS)
        new = (out == 0) & allow & (d > 0)
        if not new.any():
            return out.astype(np.int32)
        out[new] = d[new]


def segment(img):
    h, w, _ = img.shape
    scale = max(w, h) / 512
    min_nucleus, min_area, max_area = 150 * scale ** 2, 300 * scale ** 2, 40000 * scale ** 2
    max_cyto = 40 * scale
    max_hole = 1500 * scale * scale
    rx, ry, rw, rh = content_region(img)
    if rw < 8 or rh < 8:
        return 0
    sub = img[ry:ry + rh, rx:rx + rw]
    bg = background(sub)
    lut = [np.log((b + 1) / (np.arange(256) + 1)).astype(np.float32) for b in bg]
    red = lut[0][sub[:, :, 0]]
    nuc = np.clip(np.rint(np.minimum(lut[1][sub[:, :, 1]] - red, 2 * red - 0.2) * OD_SCALE), 0, 255).astype(np.uint8)
    stn = np.clip(np.rint((red - lut[2][sub[:, :, 2]]) * OD_SCALE), 0, 255).astype(np.uint8)
    nucleus = np.zeros((h, w), np.uint8)
    stain = np.zeros((h, w), np.uint8)
    dark = np.zeros((h, w), bool)
    nucleus[ry:ry + rh, rx:rx + rw] = nuc
    stain[ry:ry + rh, rx:rx + rw] = stn
    dark[ry:ry + rh, rx:rx + rw] = red > DARK_NUCLEUS_OD
    t_n = max(8, otsu(np.bincount(nuc.ravel(), minlength=256).astype(np.float64)))
    n_mat = np.where((nucleus > t_n) | dark, 255, 0).astype(np.uint8)
    n_mat = cv2.morphologyEx(n_mat, cv2.MORPH_OPEN, ellipse(2 * scale))
    n_mat = cv2.morphologyEx(n_mat, cv2.MORPH_CLOSE, ellipse(2 * scale))
    fill_holes(n_mat, max_hole)
    # nucleus markers
    n, labels, stats, _ = cv2.connectedComponentsWithStats(n_mat, connectivity=8, ltype=cv2.CV_32S)
    keep = np.zeros(n, np.int32)
    big = np.nonzero(stats[:, 4] >= min_nucleus)[0]
    big = big[big > 0]
    keep[big] = np.arange(1, big.size + 1)
    comp = keep[labels]
    dist = cv2.distanceTransform(n_mat, cv2.DIST_L2, 5)
    max_depth = np.zeros(big.size + 1, np.float32)
    np.maximum.at(max_depth, comp.ravel(), dist.ravel())
    core = ((comp != 0) & (dist >= 0.6 * max_depth[comp])).astype(np.uint8) * 255
    n_cores, core_labels = cv2.connectedComponents(core, connectivity=8, ltype=cv2.CV_32S)
    core_depth = np.zeros(n_cores, np.float32)
    np.maximum.at(core_depth, core_labels.ravel(), dist.ravel())
    core_depth[0] = 0
    seeds = np.where(core_depth[core_labels] >= 5 * scale, core_labels, 0)
    split = grow(seeds, comp != 0)
    key = np.where(split != 0, split, n_cores + comp)
    key[comp == 0] = 0
    _, markers = np.unique(key, return_inverse=True)
    markers = markers.reshape(h, w).astype(np.int32)  # 0 stays 0 (smallest key)
    # cell extent
    fg = np.where((stain > 0.06 * OD_SCALE) | (markers != 0), 255, 0).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, ellipse(3 * scale))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, ellipse(2 * scale))
    fill_holes(fg, max_hole)
    not_nucleus = np.where(markers == 0, 255, 0).astype(np.uint8)
    dd = cv2.distanceTransform(not_nucleus, cv2.DIST_L2, 3)
    allowed = (fg != 0) & (dd <= max_cyto)
    cells = grow(markers, allowed)
    area = np.bincount(cells.ravel())
    area[0] = 0
    return int(((area >= min_area) & (area <= max_area)).sum())


images = []
for f in a.files:
    bgr = cv2.imread(f, cv2.IMREAD_COLOR)
    images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
segment(images[0])  # warm-up
runs = []
counts = []
for _ in range(a.repeats):
    t0 = time.perf_counter()
    counts = [segment(im) for im in images]
    runs.append(len(images) / (time.perf_counter() - t0))
print(json.dumps({'imagesPerSecond': runs, 'cellCounts': counts, 'threads': cv2.getNumThreads(), 'opencv': cv2.__version__}))
