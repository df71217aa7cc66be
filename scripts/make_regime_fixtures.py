#!/usr/bin/env python3
"""Expected `morphogen regimes` answers (issue "The science", section 3) from the float64
reference (../shared/reference/els_ref.py).

For each training set:

* the prediction of Biroli, Bonnaire, de Bortoli & Mezard (Nat. Commun. 2024), mapped onto our
  x_t = sqrt(abar) x0 + sqrt(1 - abar) eps:
  - speciation where the top principal direction's signal variance abar * Lambda equals the
    noise's 1 - abar: abar_S = 1 / (1 + Lambda), Lambda the largest eigenvalue of the training
    set's covariance (their t_S = 1/2 ln Lambda for Lambda >> 1, with abar = exp(-2t));
  - collapse where N Gaussians of variance 1 - abar can no longer cover the noised data (its
    Gaussian entropy): 1/2 sum_i ln(1 + abar lambda_i / (1 - abar)) = ln N, solved by bisection
    in logit(abar);
* one Ideal-machine run in the engine's DDIM loop (t_k = t_start (n - k) / n, the last step
  landing on abar = 1) from a saved initial noise, with per step the Ideal posterior's top
  weight, its class (the label with the largest summed weight) and that class's posterior.

The labels are made up (image k has label k mod `classes`): the test hands the engine the same.

Usage: python3 scripts/make_regime_fixtures.py [path/to/els_ref.py]
Writes tests/fixtures/regimes_*.npy and tests/fixtures/manifest_regimes.json.
"""
import json
import math
import os

import numpy as np

from fixture_ref import fx, ref

STEPS = 20


def prediction(train):
    n = train.shape[0]
    x = train.reshape(n, -1)
    xc = x - x.mean(axis=0)
    lam = np.clip(np.linalg.eigvalsh(xc.T @ xc / n), 0.0, None)
    top = float(lam.max())

    def excess(ab):
        return 0.5 * np.sum(np.log1p(ab * lam / (1.0 - ab)))

    lo, hi = -40.0, 40.0  # logit(abar)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if excess(1.0 / (1.0 + math.exp(-mid))) < math.log(n):
            lo = mid
        else:
            hi = mid
    return {"top_eigenvalue": top, "speciation_alpha_bar": 1.0 / (1.0 + top),
            "collapse_alpha_bar": 1.0 / (1.0 + math.exp(-0.5 * (lo + hi))),
            "excess_entropy_at_half": float(excess(0.5))}


def run(train, labels, classes, init):
    x = init.astype(float)
    steps = []
    for k in range(STEPS):
        t = (STEPS - k) / STEPS
        ab = float(ref.alpha_bar(t))
        ab_prev = 1.0 if k + 1 == STEPS else float(ref.alpha_bar((STEPS - k - 1) / STEPS))
        x0, w = ref.is_denoise(x, train, ab, return_weights=True)
        post = np.array([w[labels == c].sum() for c in range(classes)])
        steps.append({"alpha_bar": ab, "top_weight": float(w.max()), "class": int(post.argmax()),
                      "class_posterior": float(post.max()),
                      "runner_up": float(np.sort(post)[-2]) if classes > 1 else 0.0})
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps
    return steps


def main():
    cases = []
    for tag, train_name, classes, seed in [("mnist12", "mnist12_train.npy", 3, 11),
                                           ("emoji8", "emoji8_16px_train.npy", 2, 12)]:
        train = np.load(os.path.join(fx, train_name)).astype(float)
        labels = np.arange(train.shape[0]) % classes
        init = np.random.default_rng(seed).standard_normal(train.shape[1:]).astype(np.float32)
        init_name = f"regimes_{tag}_init.npy"
        np.save(os.path.join(fx, init_name), init)
        case = {"train": train_name, "classes": classes, "init": init_name, "steps": STEPS,
                "schedule": "cosine", "t_start": 1.0, **prediction(train),
                "run": run(train, labels, classes, init[None] if init.ndim == 2 else init)}
        cases.append(case)
        print(tag, {k: v for k, v in case.items() if k != "run"})
        print("  top weight per step:", " ".join(f"{s['top_weight']:.3f}" for s in case["run"]))
        print("  class per step:", " ".join(str(s["class"]) for s in case["run"]))
    with open(os.path.join(fx, "manifest_regimes.json"), "w") as fh:
        json.dump({"about": "Biroli et al. 2024 speciation and collapse, and Ideal runs, from els_ref.py; "
                   "see scripts/make_regime_fixtures.py", "cases": cases}, fh, indent=1)


main()
