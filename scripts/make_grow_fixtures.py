#!/usr/bin/env python3
"""Golden cases for growing and painting (issue "Grow") from the float64 reference
(../shared/reference/els_ref.py, which takes a canvas of another size than the training images):

* single calls on canvases larger (40x36) and smaller (20x24) than the 28x28 MNIST digits and
  on a 24x20 canvas over the 16x16 RGB emoji, ELS with both boundaries;
* per-pixel patch maps (three P in bands, and a disc of P = 1) for ELS (both boundaries) and the
  Local machine, and one on a 40x36 canvas;
* whole runs: a locality map (half x0.5, half x2), edits (noise, set, stamp) at chosen steps,
  and canvases of 36x40 with both boundaries.

The runs follow the engine's DDIM loop step for step (t_k = t_start (n - k) / n, the last step
landing on abar = 1), with each step's edits applied to x_t before it is denoised, and the
edits' noise drawn from a port of the engine's seeded generator (src/engine/sampling/noise.rs).

Usage: python3 scripts/make_grow_fixtures.py [path/to/els_ref.py]
Writes tests/fixtures/grow_*.npy and tests/fixtures/manifest_grow.json.
"""
import json
import math
import os

import numpy as np

from fixture_ref import fx, ref

M64 = (1 << 64) - 1


def splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def gaussian(seed, stream, n):
    """The engine's `noise::gaussian`: SplitMix64 into Box-Muller, f64 then f32."""
    state = seed ^ ((stream * 0xD6E8FEB86659FD93) & M64)
    state, _ = splitmix(state)
    out = []
    while len(out) < n:
        state, a = splitmix(state)
        state, b = splitmix(state)
        u1 = ((a >> 11) + 1.0) / float(1 << 53)
        u2 = (b >> 11) / float(1 << 53)
        r = math.sqrt(-2.0 * math.log(u1))
        ang = 2.0 * math.pi * u2
        out += [np.float32(r * math.cos(ang)), np.float32(r * math.sin(ang))]
    return np.array(out[:n], dtype=np.float32)


def round_to_odd(v):
    """The engine's round_to_odd (Rust's round: halves away from zero)."""
    if not np.isfinite(v) or v <= 1.0:
        return 1
    return int(2.0 * math.floor((v - 1.0) / 2.0 + 0.5) + 1.0)


def els(x, train, ab, P, boundary):
    return ref.els_denoise(x, train, ab, P, boundary=boundary)


def patch_map_denoise(x, train, ab, pmap, machine, boundary):
    """Pixel by pixel, the uniform call at that pixel's P."""
    out = np.zeros_like(x)
    for P in np.unique(pmap):
        full = ref.ls_denoise(x, train, ab, int(P)) if machine == "local" else els(x, train, ab, int(P), boundary)
        sel = pmap == P
        out[..., sel] = full[..., sel]
    return out


def save(name, arr):
    np.save(os.path.join(fx, name), np.asarray(arr, dtype=np.float32))
    return name


def save_int(name, arr):
    np.save(os.path.join(fx, name), np.asarray(arr, dtype=np.int32))
    return name


rng = np.random.default_rng(19)
mnist = np.load(os.path.join(fx, "mnist12_train.npy")).astype(np.float64)[:, 0]  # (12, 28, 28)
emoji = np.load(os.path.join(fx, "emoji8_16px_train.npy")).astype(np.float64)  # (8, 3, 16, 16)
cases = []


def canvas_x(train, h, w, ab, rng):
    """A noisy canvas tiled from training images (rolled), as a run would see it."""
    c_shape = train.shape[1:-2]
    th, tw = train.shape[-2:]
    img = np.zeros(c_shape + (h, w))
    for i in range(0, h, th):
        for j in range(0, w, tw):
            k = rng.integers(len(train))
            tile = train[k][..., : min(th, h - i), : min(tw, w - j)]
            img[..., i:i + tile.shape[-2], j:j + tile.shape[-1]] = tile
    return np.sqrt(ab) * img + np.sqrt(1 - ab) * rng.standard_normal(img.shape)


# ---- single calls on other canvases
calls = [("mnist12", mnist, 40, 36, t, b, P) for t in (0.3, 0.7) for b in ("zeros", "circular") for P in (3, 7)]
calls += [("mnist12", mnist, 20, 24, 0.5, b, 5) for b in ("zeros", "circular")]
calls += [("emoji8", emoji, 24, 20, 0.4, b, 5) for b in ("zeros", "circular")]
for set_name, train, h, w, t, boundary, P in calls:
    ab = float(ref.alpha_bar(t))
    x = canvas_x(train, h, w, ab, rng)
    tag = f"grow_{set_name}_{h}x{w}_t{t}_P{P}_{boundary}"
    cases.append({
        "kind": "call", "train": f"{set_name}_train.npy" if set_name == "mnist12" else "emoji8_16px_train.npy",
        "input": save(tag + "_x.npy", x), "expected": save(tag + "_els.npy", els(x, train, ab, P, boundary)),
        "machine": "els", "boundary": boundary, "patch": P, "alpha_bar": ab, "tolerance": 2e-4,
    })

# ---- per-pixel patch maps
def band_map(h, w):
    pm = np.full((h, w), 3)
    pm[:, w // 3: 2 * w // 3] = 7
    pm[:, 2 * w // 3:] = 11
    yy, xx = np.mgrid[0:h, 0:w]
    pm[(yy - h // 2) ** 2 + (xx - w // 4) ** 2 <= 9] = 1
    return pm


for machine, boundary, h, w in [("els", "zeros", 28, 28), ("els", "circular", 28, 28), ("local", "zeros", 28, 28),
                                ("els", "zeros", 40, 36)]:
    ab = float(ref.alpha_bar(0.5))
    x = canvas_x(mnist, h, w, ab, rng)
    pm = band_map(h, w)
    tag = f"grow_mnist12_{h}x{w}_patchmap_{machine}_{boundary}"
    cases.append({
        "kind": "patch_map", "train": "mnist12_train.npy", "input": save(tag + "_x.npy", x),
        "patch_map": save_int(tag + "_map.npy", pm),
        "expected": save(tag + "_out.npy", patch_map_denoise(x, mnist, ab, pm, machine, boundary)),
        "machine": machine, "boundary": boundary, "alpha_bar": ab, "tolerance": 2e-4,
    })


# ---- whole runs
def apply_edits(x, edits, k, ab, train):
    h, w = x.shape[-2:]
    for e in [e for e in edits if e["step"] == k]:
        mask = np.array([[ch == "#" for ch in row] for row in e["mask"]])
        a, s = math.sqrt(ab), math.sqrt(max(1.0 - ab, 0.0))
        stream = (M64 - k) & M64
        if e["op"] == "set":
            x[mask] = e["value"]
        elif e["op"] == "noise":
            z = gaussian(e["seed"], stream, x.size).reshape(x.shape).astype(np.float64)
            x[mask] = s * z[mask]
        elif e["op"] == "stamp":
            z = gaussian(e["seed"], stream, x.size).reshape(x.shape).astype(np.float64)
            phi = train[e["image"]]
            th, tw = phi.shape[-2:]
            for i, j in zip(*np.nonzero(mask)):
                si, sj = i - e["row"], j - e["col"]
                if 0 <= si < th and 0 <= sj < tw:
                    x[i, j] = a * phi[si, sj] + s * z[i, j]
    return x


def run(train, init, steps, per_step, boundary, edits=(), lmap=None, scale=1.0):
    x = np.array(init, dtype=np.float64)
    h, w = x.shape[-2:]
    th, tw = train.shape[-2:]
    max_p = 2 * max(h, w, th, tw) - 1 if boundary == "zeros" else (min(h, w) if min(h, w) % 2 else min(h, w) - 1)
    xts, x0s, patches = [], [], []
    for k in range(steps):
        t = (steps - k) / steps
        ab = float(ref.alpha_bar(t))
        ab_prev = 1.0 if k + 1 == steps else float(ref.alpha_bar((steps - k - 1) / steps))
        x = apply_edits(x, edits, k, ab, train)
        if lmap is None:
            P = min(round_to_odd(per_step[k] * scale), max_p)
            x0 = els(x, train, ab, P, boundary)
        else:
            pm = np.vectorize(lambda m: min(round_to_odd(per_step[k] * scale * m), max_p))(lmap)
            x0 = patch_map_denoise(x, train, ab, pm, "els", boundary)
        xts.append(x.copy())
        x0s.append(x0)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps
    return np.stack(xts), np.stack(x0s)


def rect_mask(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), dtype=bool)
    m[r0:r1, c0:c1] = True
    return ["".join("#" if v else "." for v in row) for row in m]


runs = []
per_step = [11, 9, 7, 7, 5, 3]
lmap = np.where(np.arange(28)[None, :] < 14, 0.5, 2.0) * np.ones((28, 1))
runs.append(("locality", 28, 28, "zeros", per_step, [], lmap))
edits = [
    {"step": 2, "op": "noise", "seed": 5, "mask": rect_mask(28, 28, 4, 14, 4, 16)},
    {"step": 3, "op": "set", "value": -1.0, "mask": rect_mask(28, 28, 16, 24, 10, 26)},
    {"step": 4, "op": "stamp", "image": 3, "row": 2, "col": -3, "seed": 9, "mask": rect_mask(28, 28, 0, 28, 0, 12)},
]
runs.append(("edits", 28, 28, "zeros", per_step, edits, None))
runs.append(("canvas", 36, 40, "zeros", [11, 9, 7, 5, 3], [], None))
runs.append(("canvas", 36, 40, "circular", [11, 9, 7, 5, 3], [], None))
for kind, h, w, boundary, ps, ed, lm in runs:
    init = rng.standard_normal((h, w))
    xts, x0s = run(mnist, init, len(ps), ps, boundary, ed, lm)
    tag = f"grow_run_{kind}_{h}x{w}_{boundary}"
    case = {
        "kind": "run", "train": "mnist12_train.npy", "input": save(tag + "_init.npy", init),
        "expected_x0": save(tag + "_x0.npy", x0s), "expected_xt": save(tag + "_xt.npy", xts),
        "boundary": boundary, "patch_per_step": ps, "steps": len(ps), "edits": ed,
        "canvas": [h, w], "min_correlation": 0.999, "first_step_tolerance": 2e-4,
    }
    if lm is not None:
        case["locality_map"] = save(tag + "_map.npy", lm)
    cases.append(case)

with open(os.path.join(fx, "manifest_grow.json"), "w") as f:
    json.dump({"generator": "scripts/make_grow_fixtures.py", "cases": cases}, f, indent=1)
print(f"{len(cases)} grow cases written")
