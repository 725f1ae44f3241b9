"""OpenCV baseline of Myeloscope's preprocessing: imread -> resize INTER_AREA to fit 512 -> Lab -> CLAHE(1.0, 8x8)
on L -> back to BGR. Prints one JSON line: per-repeat images/second over the listed files.

  python3 preprocess_cv.py --threads 2 --repeats 1 [--save-dir DIR] FILE...

Timed: the whole loop (read from disk + decode + resize + colour conversions + CLAHE), interpreter start and
imports excluded, as the Node side excludes its own. --save-dir writes the outputs as PNG (after timing).
"""
import argparse
import json
import os
import sys
import time

import cv2

ap = argparse.ArgumentParser()
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--repeats', type=int, default=1)
ap.add_argument('--max-size', type=int, default=512)
ap.add_argument('--save-dir')
ap.add_argument('files', nargs='+')
a = ap.parse_args()
cv2.setNumThreads(a.threads)
clahe = cv2.createCLAHE(clipLimit=1.0, tileGridSize=(8, 8))


def preprocess(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f'cannot read {path}')
    h, w = img.shape[:2]
    longest = max(w, h)
    if longest > a.max_size:
        s = a.max_size / longest
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2Lab)
    l, aa, bb = cv2.split(lab)
    lab = cv2.merge((clahe.apply(l), aa, bb))
    return cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)


preprocess(a.files[0])  # warm-up (first-call allocations)
runs = []
for _ in range(a.repeats):
    t0 = time.perf_counter()
    for f in a.files:
        preprocess(f)
    runs.append(len(a.files) / (time.perf_counter() - t0))
if a.save_dir:
    for f in a.files:
        cv2.imwrite(os.path.join(a.save_dir, os.path.splitext(os.path.basename(f))[0] + '.png'), preprocess(f))
print(json.dumps({'imagesPerSecond': runs, 'threads': cv2.getNumThreads(), 'opencv': cv2.__version__,
                  'python': sys.version.split()[0]}))
