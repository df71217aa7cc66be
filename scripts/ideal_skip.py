"""How much of the 20-step MNIST sample an ideal exact skip could leave out, step by step.

Exact skipping (src/engine/kernels/cpu/skip.rs) may leave out a key only when its squared
distance exceeds the nearest key's by more than Delta = 2 sigma^2 (ln K + 24 ln 2 + 1). This
script counts, with the true nearest key and every distance computed in float64, the share of
keys within Delta: the least any exact skip must still fold, however good its bounds. Weighted
by each step's dense work (keys x P^2), it bounds what exact skipping can give the whole sample.

Queries are the interior pixels (their whole window inside the image) of a bundled digit left
out of the bank, noised to each step's t on the reference's cosine schedule; keys are every
interior P x P patch of the other 1999 digits, merged where at least 40% repeat (the kernel's
rule). Numbers are for the MNIST ResNet preset the bench's sample uses.

    python3 scripts/ideal_skip.py            # numpy only; about a minute
"""
import json
import os
import struct
import zlib

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fixture_ref import ref, root

PRESET = [15, 15, 15, 15, 15, 13, 11, 11, 11, 11, 9, 9, 7, 7, 7, 5, 5, 5, 3, 3]  # paper, MNIST ResNet
QUERIES = 120


def read_png(path):
    """An 8-bit PNG (gray or RGB, not interlaced) as uint8 [H, W, C], with the stdlib alone."""
    data, at, idat = open(path, "rb").read(), 8, b""
    while at < len(data):
        (n,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + n]
        at += 12 + n
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8, f"{path}: only 8-bit PNGs are read here"
        elif kind == b"IDAT":
            idat += body
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw, stride = zlib.decompress(idat), w * ch
    out, prev = np.zeros((h, stride), np.uint8), np.zeros(stride, np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for x in range(stride):
            left = cur[x - ch] if x >= ch else 0
            upleft = prev[x - ch] if x >= ch else 0
            up = prev[x]
            if f == 0:
                pred = 0
            elif f == 1:
                pred = left
            elif f == 2:
                pred = up
            elif f == 3:
                pred = (left + up) // 2
            else:
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else upleft)
            cur[x] = (line[x] + pred) & 255
        out[y], prev = cur, cur
    return out.reshape(h, w, ch)


def bundled(name):
    """The bundled set as float [N, H, W] in [-1, 1] (gray sets only)."""
    folder = os.path.join(root, "assets", "datasets")
    meta = json.load(open(os.path.join(folder, name + ".json")))
    sheet = read_png(os.path.join(folder, name + ".png"))[:, :, 0]
    w, cols = meta["width"], meta["columns"]
    tiles = [sheet[(k // cols) * w : (k // cols + 1) * w, (k % cols) * w : (k % cols + 1) * w] for k in range(len(meta["labels"]))]
    return np.stack(tiles).astype(np.float64) / 255 * 2 - 1


def main():
    images = bundled("mnist")
    images -= images.mean()  # the kernel's centring; distances do not change
    bank, left_out = images[:-1], images[-1]
    ts = [1 - 0.05 * i for i in range(20)]
    work, kept_work, banks = [], [], {}
    rng = np.random.default_rng(0)
    print("   t   P   keys    sigma  kept share (mean, median over query pixels)")
    for t, p in zip(ts, PRESET):
        abar = float(ref.alpha_bar(t))
        a, s2 = np.sqrt(abar), 1 - abar
        if p not in banks:
            keys = sliding_window_view(bank, (p, p), axis=(1, 2)).reshape(-1, p * p)
            distinct = np.unique(keys, axis=0)
            keys = distinct if len(distinct) <= 0.6 * len(keys) else keys
            banks[p] = (keys, (keys**2).sum(1))
        keys, norms = banks[p]
        x = a * left_out + np.sqrt(s2) * rng.standard_normal(left_out.shape)
        queries = sliding_window_view(x, (p, p)).reshape(-1, p * p)
        queries = queries[rng.choice(len(queries), min(QUERIES, len(queries)), replace=False)]
        dots = np.concatenate([queries @ keys[j : j + 100_000].T for j in range(0, len(keys), 100_000)], 1)
        dist = abar * norms[None] - 2 * a * dots + (queries**2).sum(1)[:, None]  # [Q, K]
        delta = 2 * s2 * (np.log(len(keys)) + 24 * np.log(2) + 1)
        share = (dist <= dist.min(1, keepdims=True) + delta).mean(1)
        print(f"{t:5.2f} {p:3d} {len(keys):7d} {np.sqrt(s2):6.3f}  {share.mean():.4f}  {np.median(share):.4f}", flush=True)
        work.append(len(keys) * p * p)
        kept_work.append(len(keys) * p * p * share.mean())
    kept = sum(kept_work) / sum(work)
    print(f"an ideal exact skip still folds {kept:.3f} of the sample's dense work: at most {1 / kept:.2f}x faster")


if __name__ == "__main__":
    main()
