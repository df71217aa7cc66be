#!/usr/bin/env python3
"""Golden cases for the later closed-form machines (Gaussian / Wiener, PSPC-Square and
PCA-locality) from the float64 reference (../shared/reference/els_ref.py).

Four training sets: the 12 MNIST digits (28x28 gray) and 8 emoji (16x16 RGB) the other
fixtures use, where N < D and the engine decomposes the Gram matrix; and two small non-square
sets of smooth random blobs (9x6 gray, N = 80; 5x4 RGB, N = 90) where N > D and it decomposes
the covariance itself. t = 0.05, 0.3, 0.6, 0.9; a noisy blend of two training images and pure
noise; PSPC at P = 3 and 7 (7 is clamped to the image on the small sets, as the reference does).

Usage: python3 scripts/make_machine_fixtures.py [path/to/els_ref.py]
Writes tests/fixtures/machines_*.npy and tests/fixtures/manifest_machines.json.
"""
import json
import os

import numpy as np

from fixture_ref import fx, ref


def blobs(rng, n, c, h, w):
    """Smooth random images in [-1, 1]: a few Gaussian bumps each, per channel."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, c, h, w))
    for k in range(n):
        for ch in range(c):
            img = np.zeros((h, w))
            for _ in range(3):
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                s = rng.uniform(0.8, 2.5)
                img += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
            out[k, ch] = np.clip(img, -1, 1)
    return out.astype(np.float32)


rng = np.random.default_rng(11)
sets = {
    "mnist12_train.npy": None,
    "emoji8_16px_train.npy": None,
    "machines_blobs9x6_train.npy": blobs(rng, 80, 1, 9, 6),
    "machines_blobs5x4rgb_train.npy": blobs(rng, 90, 3, 5, 4),
}
for name, data in sets.items():
    if data is not None:
        np.save(os.path.join(fx, name), data)


def denoise(machine, x, train, ab, P):
    if machine == "gaussian":
        return ref.gaussian_denoise(x, train, ab)
    if machine == "pca-locality":
        return ref.pca_locality_denoise(x, train, ab)
    return ref.pspc_square_denoise(x, train, ab, P)


cases = []
for train_name in sets:
    train32 = np.load(os.path.join(fx, train_name))
    train = train32.astype(np.float64)
    stem = train_name.replace("_train.npy", "").replace("machines_", "")
    shape = train.shape[1:]
    rng = np.random.default_rng(2027)
    for t in [0.05, 0.3, 0.6, 0.9]:
        ab = float(ref.alpha_bar(t))
        a, s = np.sqrt(ab), np.sqrt(1 - ab)
        blend = 0.7 * train[1] + 0.3 * train[5]
        inputs = {"near": a * blend + s * rng.standard_normal(shape), "noise": rng.standard_normal(shape)}
        for kind, x in inputs.items():
            x = x.astype(np.float32)
            xname = f"machines_{stem}_t{t}_{kind}_x.npy"
            np.save(os.path.join(fx, xname), x)
            for machine, P in [("gaussian", None), ("pspc", 3), ("pspc", 7), ("pca-locality", None)]:
                tag = machine if P is None else f"{machine}-P{P}"
                out = denoise(machine, x.astype(np.float64), train, ab, P).astype(np.float32)
                oname = f"machines_{stem}_t{t}_{kind}_{tag}.npy"
                np.save(os.path.join(fx, oname), out)
                case = {"train": train_name, "input": xname, "expected": oname, "machine": machine, "t": t,
                        "schedule": "cosine", "tolerance": 0.002}
                if P is not None:
                    case["patch"] = P
                cases.append(case)

about = ("x0_hat = denoiser(input) for the Gaussian (Wiener), PSPC-Square and PCA-locality machines "
         "(els_ref.py: gaussian_denoise, pspc_square_denoise, pca_locality_denoise with threshold 0.02); "
         "float32 .npy, images (C,H,W) in [-1,1], training sets (N,C,H,W); alpha_bar(t) = cos^2(pi*t/2.016).")
with open(os.path.join(fx, "manifest_machines.json"), "w") as f:
    json.dump({"about": about, "cases": cases}, f, indent=1)
print(f"{len(cases)} cases")
