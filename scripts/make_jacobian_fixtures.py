#!/usr/bin/env python3
"""Expected `morphogen inspect --jacobian` answers: central finite differences of the float64
reference (../shared/reference/els_ref.py). For each case, J[o, c, h, w] = ∂x̂₀[o, row, col] /
∂x_t[c, h, w], each input value moved by ±h; for the patch machines only the pixels of the
clicked pixel's window are moved (elsewhere J is 0 by construction, which the test checks on
the engine's side).

Usage: python3 scripts/make_jacobian_fixtures.py [path/to/els_ref.py]
Writes tests/fixtures/jacobian_*.npy and tests/fixtures/manifest_jacobian.json.
"""
import json
import os

import numpy as np

from fixture_ref import fx, ref

H_STEP = 1e-5

# The Gaussian and PCA-locality references decompose the same covariance on every call: one
# decomposition per training set serves all the perturbed calls (the result is identical).
_eigh = np.linalg.eigh
_eigh_cache = {}


def _cached_eigh(a):
    key = (a.shape, hash(a.tobytes()))
    if key not in _eigh_cache:
        _eigh_cache[key] = _eigh(a)
    return _eigh_cache[key]


np.linalg.eigh = _cached_eigh


def denoiser(machine, boundary, train, ab, P):
    if machine == "gaussian":
        return lambda x: ref.gaussian_denoise(x, train, ab)
    if machine == "pca-locality":
        return lambda x: ref.pca_locality_denoise(x, train, ab)
    if machine == "ideal":
        return lambda x: ref.is_denoise(x, train, ab)
    if machine == "local":
        return lambda x: ref.ls_denoise(x, train, ab, P)
    return lambda x: ref.els_denoise(x, train, ab, P, boundary=boundary)


def window(machine, boundary, P, row, col, H, W):
    """The input pixels (h, w) the output pixel can depend on."""
    if machine in ("ideal", "gaussian", "pca-locality"):
        return [(h, w) for h in range(H) for w in range(W)]
    r = P // 2
    out = set()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            h, w = row + dy, col + dx
            if boundary == "circular" and machine == "els":
                out.add((h % H, w % W))
            elif 0 <= h < H and 0 <= w < W:
                out.add((h, w))
    return sorted(out)


def main():
    cases = []
    sets = [
        ("mnist12", "mnist12_train.npy", "mnist12_t0.5_P7_noise_x.npy", [(14, 13), (10, 8)]),
        ("emoji8", "emoji8_16px_train.npy", "emoji8_16px_t0.5_P7_noise_x.npy", [(8, 7), (0, 5), (15, 15)]),
    ]
    for tag, train_name, x_name, pixels in sets:
        train = np.load(os.path.join(fx, train_name)).astype(float)
        if train.ndim == 3:
            train = train[:, None]
        x = np.load(os.path.join(fx, x_name)).astype(float)
        if x.ndim == 2:
            x = x[None]
        C, H, W = x.shape
        # Ideal at t = 0.95: at 0.5 one training image takes all the weight and J is ~0.
        for machine, boundary, P, t in [
            ("els", "zeros", 5, 0.5),
            ("els", "circular", 5, 0.5),
            ("local", "zeros", 5, 0.5),
            ("ideal", "zeros", 0, 0.95),
            ("gaussian", "zeros", 0, 0.5),
            ("pca-locality", "zeros", 0, 0.7),
        ]:
            ab = float(ref.alpha_bar(t))
            f = denoiser(machine, boundary, train, ab, P)
            for row, col in pixels:
                if machine in ("ideal", "gaussian", "pca-locality") and (row, col) != pixels[0]:
                    continue  # one pixel is enough: every pixel reads the whole image
                J = np.zeros((C, C, H, W))
                for (h, w) in window(machine, boundary, P, row, col, H, W):
                    for c in range(C):
                        xp, xm = x.copy(), x.copy()
                        xp[c, h, w] += H_STEP
                        xm[c, h, w] -= H_STEP
                        fp, fm = np.asarray(f(xp)), np.asarray(f(xm))
                        if fp.ndim == 2:
                            fp, fm = fp[None], fm[None]
                        J[:, c, h, w] = (fp[:, row, col] - fm[:, row, col]) / (2 * H_STEP)
                name = f"jacobian_{tag}_{machine}_{boundary}_P{P}_{row}_{col}.npy"
                np.save(os.path.join(fx, name), J)
                cases.append({"train": train_name, "input": x_name, "t": t, "schedule": "cosine",
                              "machine": machine, "boundary": boundary, "patch": P, "pixel": [row, col],
                              "expected": name, "max_abs": float(np.abs(J).max())})
                print(name, float(np.abs(J).max()))
    with open(os.path.join(fx, "manifest_jacobian.json"), "w") as fh:
        json.dump({"about": "central finite differences (h = 1e-5) of els_ref.py; see scripts/make_jacobian_fixtures.py",
                   "cases": cases}, fh, indent=1)
    print(f"{len(cases)} jacobian cases")


main()
