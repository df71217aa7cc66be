//! Every golden case of `tests/fixtures/manifest.json` against the engine on the CPU backend,
//! and a few through the real `morphogen` binary with the flags `check_cli.py` uses.

mod common;

use common::*;
use morphogen::engine::{Boundary, Call, Control, MachineKind, NoiseSchedule, PatchSchedule, Sampler, SamplerConfig};
use serde_json::Value;

use burn::tensor::Device;

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

/// A case's input, expected output and the call that should produce it.
fn case(c: &Value) -> (Vec<f32>, Vec<f32>, Call) {
    let (_, x) = npy(c["input"].as_str().unwrap());
    let (_, expected) = npy(c["expected"].as_str().unwrap());
    let schedule = NoiseSchedule::by_name(c["schedule"].as_str().unwrap()).unwrap();
    let machine = MachineKind::parse(c["machine"].as_str().unwrap()).unwrap();
    let boundary = c.get("boundary").and_then(Value::as_str).map(|b| Boundary::parse(b).unwrap()).unwrap_or_default();
    let patch = c.get("patch").and_then(Value::as_u64).unwrap_or(3) as usize;
    let call = Call::new(machine, boundary, patch, schedule.alpha_bar(c["t"].as_f64().unwrap()));
    (x, expected, call)
}

#[test]
fn every_single_call_case_is_within_tolerance() {
    single_call_cases(&Device::flex());
}

fn single_call_cases(device: &Device) {
    let cases = manifest();
    let mut checked = 0;
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    let mut sets: std::collections::HashMap<String, morphogen::engine::Denoiser> = Default::default();
    for c in cases.iter().filter(|c| c.get("kind").is_none()) {
        let train = c["train"].as_str().unwrap().to_string();
        let den = sets.entry(train.clone()).or_insert_with(|| training_on(&train, device).0);
        let (x, expected, call) = case(c);
        let got = den.denoise(&x, &call, &mut Control::none()).unwrap().x0;
        let err = max_abs_diff(&got, &expected);
        worst = worst.max(err);
        let tol = c["tolerance"].as_f64().unwrap();
        if err.is_nan() || err > tol {
            failures.push(format!("{}: max err {err:.2e} > {tol}", c["expected"]));
        }
        checked += 1;
    }
    assert_eq!(checked, 132, "the manifest should hold 132 single-call cases");
    assert!(failures.is_empty(), "{} of {checked} cases fail:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{checked} golden cases pass, worst error {worst:.2e}");
}

/// t = 0.05 and t = 0.95 for every machine (scripts/make_extreme_fixtures.py): x̂₀ within the
/// same tolerance as the rest, and the mean softmax entropy within 1e-3 nats (plus 0.1%) of the
/// float64 reference. At t = 0.05 the logits reach 1e4, where an entropy accumulated as
/// m + ln s − Σp·l/s in float32 was off by whole nats.
#[test]
fn both_ends_of_the_noise_range_match_the_reference_with_entropy() {
    both_ends(&Device::flex());
}

fn both_ends(device: &Device) {
    let text = std::fs::read_to_string(fixtures().join("manifest_extremes.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut sets: std::collections::HashMap<String, morphogen::engine::Denoiser> = Default::default();
    let mut failures = Vec::new();
    let (mut worst_x, mut worst_h) = (0.0f64, 0.0f64);
    let cases = v["cases"].as_array().unwrap();
    for c in cases {
        let train = c["train"].as_str().unwrap().to_string();
        let den = sets.entry(train.clone()).or_insert_with(|| training_on(&train, device).0);
        let (x, expected, mut call) = case(c);
        call.entropy = true;
        let got = den.denoise(&x, &call, &mut Control::none()).unwrap();
        let err = max_abs_diff(&got.x0, &expected);
        let want_h = c["entropy"].as_f64().unwrap();
        let err_h = (got.entropy as f64 - want_h).abs();
        worst_x = worst_x.max(err);
        worst_h = worst_h.max(err_h);
        if err.is_nan() || err > c["tolerance"].as_f64().unwrap() {
            failures.push(format!("{}: x̂₀ max err {err:.2e}", c["expected"]));
        }
        if err_h.is_nan() || err_h > 1e-3 + 1e-3 * want_h {
            failures.push(format!("{}: entropy {} vs reference {want_h}", c["expected"], got.entropy));
        }
    }
    assert_eq!(cases.len(), 88);
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
    eprintln!("88 extreme cases pass: worst x̂₀ error {worst_x:.2e}, worst entropy error {worst_h:.2e} nats");
}

#[test]
fn trajectories_correlate_at_every_step() {
    let cases: Vec<Value> =
        manifest().into_iter().filter(|c| c.get("kind").and_then(Value::as_str) == Some("trajectory")).collect();
    assert!(cases.len() >= 2, "the manifest holds {} trajectories", cases.len());
    let mut steps_checked = 0;
    for c in &cases {
        let (mut den, shape, _) = training(c["train"].as_str().unwrap());
        let (_, init) = npy(c["input"].as_str().unwrap());
        let (_, expected) = npy(c["expected"].as_str().unwrap());
        let per_step: Vec<u32> =
            c["patch_per_step"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let cfg = SamplerConfig {
            machine: MachineKind::Els,
            boundary: Boundary::parse(c["boundary"].as_str().unwrap()).unwrap(),
            schedule: NoiseSchedule::cosine(),
            patch: PatchSchedule::List { per_step },
            steps: c["steps"].as_u64().unwrap() as usize,
            t_start: c["t_start"].as_f64().unwrap(),
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(cfg, shape, Some(init));
        let len = shape.len();
        let mut k = 0;
        while let Some(step) = sampler.step(&mut den, &mut Control::none()) {
            let step = step.unwrap();
            let r = corr(&step.x0_hat, &expected[k * len..(k + 1) * len]);
            assert!(r >= c["min_correlation"].as_f64().unwrap(), "{} step {k}: correlation {r}", c["expected"]);
            k += 1;
        }
        assert!(
            k > 0 && k * len == expected.len(),
            "{}: {k} steps against the fixture's {}",
            c["expected"],
            expected.len() / len
        );
        steps_checked += k;
    }
    eprintln!("{} trajectories, {steps_checked} steps compared", cases.len());
}

#[test]
fn cli_denoise_and_sample_match_the_fixtures() {
    let bin = env!("CARGO_BIN_EXE_morphogen");
    let dir = tempfile::tempdir().unwrap();
    let f = |n: &str| fixtures().join(n).display().to_string();
    // one ELS zeros case, exactly as check_cli.py calls it
    let out = dir.path().join("y.npy");
    let status = std::process::Command::new(bin)
        .args([
            "denoise",
            "--dataset",
            &f("mnist12_train.npy"),
            "--input",
            &f("mnist12_t0.5_P7_noise_x.npy"),
            "--t",
            "0.5",
        ])
        .args([
            "--machine",
            "els",
            "--schedule",
            "cosine",
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--boundary",
            "zeros",
            "--patch",
            "7",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let (_, got) = morphogen::data::read_npy_f32(&out).unwrap();
    let (_, expected) = npy("mnist12_t0.5_P7_noise_els-zeros.npy");
    assert!(max_abs_diff(&got, &expected) <= 0.002);

    let odir = dir.path().join("traj");
    let status = std::process::Command::new(bin)
        .args([
            "sample",
            "--dataset",
            &f("emoji8_16px_train.npy"),
            "--init",
            &f("emoji8_16px_traj_init.npy"),
            "--machine",
            "els",
        ])
        .args(["--boundary", "zeros", "--steps", "10", "--t-start", "1", "--eta", "0", "--schedule", "cosine"])
        .args(["--patch-schedule", "15,13,11,9,7,7,5,5,3,3", "--out-dir", odir.to_str().unwrap(), "--device", "cpu"])
        .status()
        .unwrap();
    assert!(status.success());
    let (shape, got) = morphogen::data::read_npy_f32(&odir.join("trajectory_x0.npy")).unwrap();
    let (eshape, expected) = npy("emoji8_16px_traj_x0hat.npy");
    assert_eq!(shape, eshape);
    let len = got.len() / shape[0];
    for k in 0..shape[0] {
        let r = corr(&got[k * len..(k + 1) * len], &expected[k * len..(k + 1) * len]);
        assert!(r >= 0.999, "step {k}: {r}");
    }
    for name in ["final.png", "trajectory_xt.npy", "recipe.json", "steps.json"] {
        assert!(odir.join(name).exists(), "{name} missing");
    }
}

/// The wgpu path against the fixtures. Needs a Vulkan/Metal/DX12 adapter (Mesa's lavapipe
/// will do, slowly): `cargo test --release --test golden -- --ignored`.
#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_path_matches_the_fixtures() {
    let device = gpu();
    let mut checked = 0;
    for c in manifest().iter().filter(|c| c.get("kind").is_none() && c["train"] == "mnist12_train.npy") {
        let (shape, train) = npy("mnist12_train.npy");
        let s = morphogen::engine::ImageShape { c: shape[1], h: shape[2], w: shape[3] };
        let mut den = morphogen::engine::Denoiser::new(&train, shape[0], s, &device);
        let (x, expected, call) = case(c);
        let got = den.denoise(&x, &call, &mut Control::none()).unwrap().x0;
        let err = max_abs_diff(&got, &expected);
        assert!(err <= c["tolerance"].as_f64().unwrap(), "{}: {err}", c["expected"]);
        checked += 1;
    }
    assert_eq!(checked, 66);
}

/// All 132 single-call cases (gray, RGB, non-square; every machine) through the GPU path.
#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_every_single_call_case_is_within_tolerance() {
    single_call_cases(&gpu());
}

/// The t = 0.05 / 0.95 cases with their entropies through the GPU path.
#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_both_ends_of_the_noise_range_match_the_reference_with_entropy() {
    both_ends(&gpu());
}
