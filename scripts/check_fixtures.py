"""Runs every single-call golden case of a fixtures folder through the morphogen CLI on a given
device and prints failures, then a summary line. Needs numpy. Derived from
../shared/reference/check_cli.py (which always uses the CPU).

usage: python3 scripts/check_fixtures.py BINARY FIXTURES_DIR [cpu|gpu] [MANIFEST] [TRAIN_SUBSTRING]
(TRAIN_SUBSTRING keeps only the cases whose training set's name contains it, e.g. mnist12.)
"""
import json, os, subprocess, sys, tempfile, time
import numpy as np

binary, d = sys.argv[1], sys.argv[2]
device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
manifest = sys.argv[4] if len(sys.argv) > 4 else "manifest.json"
only = sys.argv[5] if len(sys.argv) > 5 else ""
m = json.load(open(os.path.join(d, manifest)))
tmp = tempfile.mkdtemp()
bad, n, worst, started = 0, 0, 0.0, time.time()
for i, c in enumerate(m["cases"]):
    if c.get("kind") == "trajectory" or only not in c["train"]:
        continue
    n += 1
    out = os.path.join(tmp, f"o{i}.npy")
    p = lambda k: os.path.join(d, c[k])
    cmd = [binary, "denoise", "--dataset", p("train"), "--input", p("input"), "--t", str(c["t"]),
           "--machine", c["machine"], "--schedule", c["schedule"], "--out", out, "--device", device]
    if "boundary" in c: cmd += ["--boundary", c["boundary"]]
    if "patch" in c: cmd += ["--patch", str(c["patch"])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        bad += 1; print("FAIL", c["expected"], "exit", r.returncode, r.stderr.strip()[-300:]); continue
    exp = np.load(p("expected"))
    got = np.load(out).reshape(exp.shape)
    err = float(np.abs(got.astype(np.float64) - exp).max()); worst = max(worst, err)
    if not err <= c["tolerance"]:
        bad += 1; print("FAIL", c["expected"], "max err", err, "tol", c["tolerance"])
print(f"{device}: {n - bad}/{n} golden cases pass (worst error {worst:.1e}, {time.time() - started:.0f} s)")
sys.exit(1 if bad else 0)
