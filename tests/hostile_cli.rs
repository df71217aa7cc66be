//! Hostile input on the command line: every case is one clean line on stderr that names the
//! file or flag, a non-zero exit, and never a panic or an abort.

mod common;

use std::path::Path;
use std::process::Command;

use morphogen::data::write_npy_f32;

const BIN: &str = env!("CARGO_BIN_EXE_morphogen");

/// Runs the binary and returns its stderr, asserting a clean failure.
fn fails(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} should fail; stderr: {err}");
    assert_eq!(o.status.code(), Some(1), "{args:?} exited with {:?} (a crash?): {err}", o.status);
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:") && !l.starts_with("warning:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    err
}

/// A tiny 8×8 gray training set and a noisy input, as files.
fn setup(dir: &Path) -> (String, String) {
    let train = dir.join("train.npy");
    let values: Vec<f32> = (0..6 * 64).map(|i| ((i * 37 % 17) as f32 / 8.5) - 1.0).collect();
    write_npy_f32(&train, &[6, 8, 8], &values).unwrap();
    let x = dir.join("x.npy");
    write_npy_f32(&x, &[8, 8], &vec![0.1; 64]).unwrap();
    (train.to_string_lossy().into_owned(), x.to_string_lossy().into_owned())
}

#[test]
fn denoise_refuses_bad_times_patches_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let (train, x) = setup(dir.path());
    let out = dir.path().join("y.npy");
    let out = out.to_str().unwrap();
    let base = |t: &str, machine: &str, patch: &str, boundary: &str, input: &str| -> Vec<String> {
        [
            "denoise",
            "--dataset",
            &train,
            "--input",
            input,
            "--t",
            t,
            "--machine",
            machine,
            "--patch",
            patch,
            "--boundary",
            boundary,
            "--out",
            out,
            "--device",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for t in ["NaN", "0", "1.5", "inf"] {
        let e = run(base(t, "els", "3", "zeros", &x));
        assert!(e.contains("--t must be in (0, 1]"), "t = {t}: {e}");
    }
    // A zero-padded window past the largest that changes anything is computed at that one,
    // with a note, and gives its answer exactly.
    let bin = env!("CARGO_BIN_EXE_morphogen");
    let at = |patch: &str| {
        let args = base("0.5", "els", patch, "zeros", &x);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.push("--force");
        let o = common::morphogen_at(bin, &args);
        assert!(o.status.success(), "--patch {patch}: {}", String::from_utf8_lossy(&o.stderr));
        (String::from_utf8_lossy(&o.stderr).into_owned(), std::fs::read(out).unwrap())
    };
    let (note, huge) = at("9999");
    assert!(note.contains("--patch 9999") && note.contains("computing at 15"), "{note}");
    assert_eq!(note.trim().lines().count(), 1, "one line: {note}");
    let (quiet, largest) = at("15");
    assert!(quiet.trim().is_empty(), "{quiet}");
    assert_eq!(huge, largest, "P = 9999 is P = 15 on 8×8 images");
    std::fs::remove_file(out).unwrap();
    let e = run(base("0.5", "els", "9", "circular", &x));
    assert!(e.contains("--patch 9") && e.contains("circular window"), "{e}");
    let e = run(base("0.5", "local", "4", "zeros", &x));
    assert!(e.contains("must be odd"), "{e}");
    let nan = dir.path().join("nan.npy");
    let mut v = vec![0.1f32; 64];
    v[10] = f32::NAN;
    write_npy_f32(&nan, &[8, 8], &v).unwrap();
    let e = run(base("0.5", "els", "3", "zeros", nan.to_str().unwrap()));
    assert!(e.contains("nan.npy") && e.contains("value #10"), "{e}");
    assert!(!Path::new(out).exists(), "nothing is written on failure");
}

#[test]
fn recipes_and_flags_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = setup(dir.path());
    let recipe = dir.path().join("recipe.json");
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let r = recipe.to_str().unwrap();
    std::fs::write(&recipe, r#"{ "steps": -3 }"#).unwrap();
    let e = fails(&["sample", "--recipe", r, "--out-dir", out]);
    assert!(e.contains("recipe.json") && e.contains("'steps'"), "{e}");
    std::fs::write(&recipe, r#"{ "sampler": { "steps": -3 } }"#).unwrap();
    let e = fails(&["sample", "--recipe", r, "--out-dir", out]);
    assert!(e.contains("sampler.steps"), "{e}");
    std::fs::write(&recipe, r#"{ "dataset_hash": "ünïcödé ünïcödé" }"#).unwrap();
    let e = fails(&["sample", "--recipe", r, "--out-dir", out]);
    assert!(e.contains("dataset_hash"), "{e}");
    assert!(!Path::new(out).exists(), "a refused recipe creates no folder");

    let e = fails(&["bench", "--n", "0", "--device", "cpu"]);
    assert!(e.contains("--n must be between 1"), "{e}");
    let e = fails(&["bench", "--n-rgb", "100001", "--device", "cpu"]);
    assert!(e.contains("--n-rgb"), "{e}");
    let e = fails(&["bench", "--reps", "0", "--device", "cpu"]);
    assert!(e.contains("--reps"), "{e}");

    // a real run to export from
    let o = Command::new(BIN)
        .args(["sample", "--dataset", &train, "--steps", "3", "--patch", "3", "--device", "cpu", "--out-dir", out])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gif = dir.path().join("a.gif");
    let gif = gif.to_str().unwrap();
    let e = fails(&["export", "--run", out, "--gif", gif, "--scale", "4000000000"]);
    assert!(e.contains("--scale"), "{e}");
    let e = fails(&["export", "--run", out, "--gif", gif, "--hold", "1e12"]);
    assert!(e.contains("--hold"), "{e}");
    for fps in ["0", "101", "NaN"] {
        let e = fails(&["export", "--run", out, "--gif", gif, "--fps", fps]);
        assert!(e.contains("--fps"), "{fps}: {e}");
    }
    assert!(!Path::new(gif).exists());

    // The run's own recipe replays; with another dataset hash it is refused: that run could
    // not be reproduced from this data.
    let text = std::fs::read_to_string(Path::new(out).join("recipe.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["dataset_hash"].as_str().map(str::len), Some(64), "the run recorded its data");
    v["dataset_hash"] = serde_json::Value::String("0".repeat(64));
    std::fs::write(&recipe, v.to_string()).unwrap();
    let other = dir.path().join("other");
    let e = fails(&["sample", "--recipe", r, "--out-dir", other.to_str().unwrap()]);
    assert!(e.contains("recipe.json") && e.contains("no longer matches"), "{e}");
    assert!(!other.exists());

    // the same folder again: no overwrite without --force
    let e = fails(&["sample", "--dataset", &train, "--steps", "3", "--device", "cpu", "--out-dir", out]);
    assert!(e.contains("not empty") && e.contains("--force"), "{e}");

    // a trajectory whose images have two channels
    let traj = Path::new(out).join("trajectory_x0.npy");
    write_npy_f32(&traj, &[3, 2, 4, 8], &[0.0; 3 * 64]).unwrap();
    write_npy_f32(&Path::new(out).join("trajectory_xt.npy"), &[3, 2, 4, 8], &[0.0; 3 * 64]).unwrap();
    let e = fails(&["export", "--run", out, "--gif", gif]);
    assert!(e.contains("C must be 1 or 3"), "{e}");
}

#[test]
fn sample_refuses_a_machine_too_large_for_memory() {
    let dir = tempfile::tempdir().unwrap();
    // 128×128 RGB: the equivariant machine would need 24·3·16384² bytes ≈ 19 GB
    let train = dir.path().join("big.npy");
    write_npy_f32(&train, &[1, 3, 128, 128], &vec![0.0; 3 * 128 * 128]).unwrap();
    let out = dir.path().join("out");
    let e = fails(&[
        "sample",
        "--dataset",
        train.to_str().unwrap(),
        "--machine",
        "equivariant",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("Equivariant") && e.contains("GB") && e.contains("limit"), "{e}");
}

/// A successful headless command says nothing about displays, even with XDG_RUNTIME_DIR unset
/// (the GPU probe's libwayland used to print eight "error:" lines on a run that worked).
#[test]
fn a_headless_run_without_xdg_runtime_dir_prints_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (train, _) = setup(dir.path());
    let out = dir.path().join("run");
    let o = Command::new(BIN)
        .args(["sample", "--dataset", &train, "--steps", "2", "--out-dir", out.to_str().unwrap()])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("error"), "a successful run printed an error: {err}");
    assert!(out.join("final.png").exists());
}

/// `train --minutes 0` is refused like `--steps 0`, instead of writing a one-step model.
#[test]
fn train_refuses_a_zero_or_absurd_time_budget() {
    for minutes in ["0", "-1", "NaN", "1e9"] {
        let flag = format!("--minutes={minutes}");
        let err = fails(&["train", "--dataset", "mnist", "--out", "/tmp/never.mgcnn", &flag]);
        assert!(err.contains("--minutes must be more than 0"), "{minutes}: {err}");
    }
}

/// Every registered machine is named in the `--machine` help of each command that takes one.
#[test]
fn every_machine_is_listed_in_the_help() {
    for command in ["sample", "denoise", "inspect"] {
        let o = Command::new(BIN).args([command, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        let all = morphogen::engine::MachineKind::all();
        let listed = all.iter().filter(|m| help.contains(m.name())).count();
        assert_eq!(listed, all.len(), "{command} --help: {help}");
        assert!(listed >= 8);
    }
}

/// A run from seeded noise that starts late says its result can only be noise (it once ended
/// on the initial noise without a word); from t = 1, or from a given x, it says nothing.
#[test]
fn a_late_start_from_noise_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (train, x) = setup(dir.path());
    let run = |extra: &[&str], name: &str| {
        let out = dir.path().join(name);
        let mut args = vec!["sample", "--dataset", &train, "--steps", "2", "--out-dir", out.to_str().unwrap()];
        args.extend(extra);
        let o = Command::new(BIN).args(&args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let late = run(&["--t-start", "0.3"], "late");
    assert!(late.contains("warning: t start 0.30 on pure noise") && late.contains("can only be noise"), "{late}");
    assert!(!run(&[], "full").contains("warning"));
    assert!(!run(&["--t-start", "0.3", "--init", &x], "init").contains("warning"));
    // The threshold: ᾱ(t) > 0.2, t ≈ 0.71 on the cosine schedule.
    let cfg = |t_start| morphogen::engine::SamplerConfig { t_start, ..Default::default() };
    assert!(cfg(0.70).noise_start_warning().is_some() && cfg(0.73).noise_start_warning().is_none());
}
