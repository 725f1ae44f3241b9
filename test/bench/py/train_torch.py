"""PyTorch (CPU) baseline of Myeloscope's training step: the architecture of buildCellModel (model.ts), Adam 1e-3,
class-weighted binary cross-entropy, batch 32, dihedral augmentation per sample, on N random 64x64x3 crops.

  python3 train_torch.py --threads 2 --samples 1000 --epochs 3 --batch 32

Prints one JSON line: seconds per epoch (every epoch; the caller drops the first as warm-up).
Architecture: conv 3->16 3x3 stride 2, then 3x (conv 3x3 stride 1 + 2x2 max-pool) 16->32->64->128, ReLU after
each conv, global average pooling, dropout 0.3, dense 128->1, sigmoid (97,569 parameters, as the TF.js model).
Padding: TF 'same' with stride 2 pads 0 top/left and 1 bottom/right; torch padding=1 pads 1 on each side.
Same work, windows shifted by one pixel: irrelevant to timing.
"""
import argparse
import json
import sys
import time

import torch
from torch import nn

ap = argparse.ArgumentParser()
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--samples', type=int, default=1000)
ap.add_argument('--epochs', type=int, default=3)
ap.add_argument('--batch', type=int, default=32)
ap.add_argument('--size', type=int, default=64)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(42)


def block(cin, cout, pool, stride=1):
    layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


model = nn.Sequential(
    *block(3, 16, False, 2), *block(16, 32, True), *block(32, 64, True), *block(64, 128, True),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, 1), nn.Sigmoid(),
)
params = sum(p.numel() for p in model.parameters())
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.rand(a.samples, 3, a.size, a.size)
y = (torch.arange(a.samples) % 3 == 0).float().unsqueeze(1)  # a third positives, like the crops
n1 = float(y.sum())
w1, w0 = a.samples / (2 * n1), a.samples / (2 * (a.samples - n1))
gen = torch.Generator().manual_seed(7)


def dihedral(t, k):
    if k & 1:
        t = t.transpose(2, 3)
    if k & 2:
        t = t.flip(2)
    if k & 4:
        t = t.flip(3)
    return t


epochs = []
model.train()
for _ in range(a.epochs):
    t0 = time.perf_counter()
    order = torch.randperm(a.samples, generator=gen)
    for start in range(0, a.samples, a.batch):
        idx = order[start:start + a.batch]
        ks = torch.randint(0, 8, (idx.numel(),), generator=gen)
        parts, ids = [], []
        for k in range(8):
            sel = idx[ks == k]
            if sel.numel():
                parts.append(dihedral(x[sel], k))
                ids.append(sel)
        xb = torch.cat(parts)
        ids = torch.cat(ids)
        yb = y[ids]
        wb = torch.where(yb == 1, torch.tensor(w1), torch.tensor(w0))
        p = model(xb).clamp(1e-7, 1 - 1e-7)
        loss = (nn.functional.binary_cross_entropy(p, yb, reduction='none') * wb).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # sync, as the Node loop reads the loss every batch
    epochs.append(time.perf_counter() - t0)
print(json.dumps({'secondsPerEpoch': epochs, 'threads': torch.get_num_threads(), 'torch': torch.__version__,
                  'parameters': params, 'python': sys.version.split()[0]}))
