#!/usr/bin/env python3
"""Expected `morphogen inspect` answers from the float64 reference (../shared/reference/els_ref.py,
`return_weights=True`): for interior, edge and corner pixels, gray and RGB, ELS with both
boundaries, LS (`--machine local`) and Ideal, the top weights with the training image, the
centre (row, col) of its patch, and the pixel's x0 and weight entropy.

Usage: python3 scripts/make_inspect_fixtures.py [path/to/els_ref.py]
Writes tests/fixtures/manifest_inspect.json (inputs are fixtures that already exist).
"""
import json
import os

import numpy as np

from fixture_ref import fx, ref
TOP = 8


def candidates(machine, boundary, x, train, ab, P, row, col):
    """(weights, [(image, row, col)], x0 at the pixel) over every candidate of pixel (row, col)."""
    N, C, H, W = train.shape
    if machine == "ideal":
        x0, w = ref.is_denoise(x, train, ab, return_weights=True)
        return w, [(n, None, None) for n in range(N)], x0[:, row, col]
    if machine == "local":
        x0, w = ref.ls_denoise(x, train, ab, P, return_weights=True)
        return w[:, row, col], [(n, row, col) for n in range(N)], x0[:, row, col]
    x0, blocks = ref.els_denoise(x, train, ab, P, boundary=boundary, return_weights=True)
    pixel = row * W + col
    r = P // 2
    for pix, w in blocks:
        hit = np.nonzero(pix == pixel)[0]
        if len(hit) == 0:
            continue
        q = hit[0]
        if boundary == "circular":
            h1, w1 = H - P + 1, W - P + 1
            locs = [(n, i + r, j + r) for n in range(N) for i in range(h1) for j in range(w1)]
        else:
            ii, jj = np.unravel_index(pix, (H, W))
            locs = [(n, int(ii[k]), int(jj[k])) for n in range(N) for k in range(len(pix))]
        return w[q], locs, x0[:, row, col]
    raise AssertionError("pixel in no block")


def main():
    cases = []
    sets = [
        ("mnist12_train.npy", "mnist12_t0.5_P7_noise_x.npy", 0.5, [(14, 13), (0, 12), (27, 0), (3, 25)]),
        ("emoji8_16px_train.npy", "emoji8_16px_t0.5_P7_noise_x.npy", 0.5, [(8, 7), (0, 5), (15, 15)]),
    ]
    for train_name, x_name, t, pixels in sets:
        train = np.load(os.path.join(fx, train_name)).astype(float)
        x = np.load(os.path.join(fx, x_name)).astype(float)
        if x.ndim == 2:
            x = x[None]
        ab = float(ref.alpha_bar(t))
        for machine, boundary, P in [
            ("els", "zeros", 5),
            ("els", "circular", 5),
            ("els", "zeros", 9),
            ("local", "zeros", 5),
            ("ideal", "zeros", 3),
        ]:
            for row, col in pixels:
                w, locs, x0 = candidates(machine, boundary, x, train, ab, P, row, col)
                order = np.argsort(-w, kind="stable")[:TOP]
                weights = [
                    {"image": int(locs[k][0]), "row": locs[k][1], "col": locs[k][2], "weight": float(w[k])}
                    for k in order
                ]
                wc = np.clip(w, 1e-300, None)
                cases.append(
                    {
                        "train": train_name,
                        "input": x_name,
                        "t": t,
                        "schedule": "cosine",
                        "machine": machine,
                        "boundary": boundary,
                        "patch": P,
                        "pixel": [row, col],
                        "top": TOP,
                        "x0": [float(v) for v in x0],
                        "entropy": float(-(wc * np.log(wc)).sum()),
                        "candidates": int(len(w)),
                        "weights": weights,
                    }
                )
    with open(os.path.join(fx, "manifest_inspect.json"), "w") as f:
        json.dump({"about": "top weights per pixel from els_ref.py; see scripts/make_inspect_fixtures.py",
                   "cases": cases}, f, indent=1)
    print(f"{len(cases)} inspect cases")


main()
