//! The later closed-form machines (Gaussian / Wiener, PSPC-Square, PCA-locality): golden
//! cases from the float64 reference (scripts/make_machine_fixtures.py), their reductions to
//! the older machines, their maps and inspector, and the size limit of the Gaussian ones.

mod common;

use std::collections::HashMap;

use burn::tensor::Device;
use common::*;
use morphogen::engine::{Boundary, Call, Control, Denoiser, ImageShape, MachineKind, NoiseSchedule};
use serde_json::Value;

fn call(machine: MachineKind, patch: usize, alpha_bar: f64) -> Call {
    Call::new(machine, Boundary::Zeros, patch, alpha_bar)
}

fn ab(t: f64) -> f64 {
    NoiseSchedule::by_name("cosine").unwrap().alpha_bar(t)
}

fn machine_cases(device: &Device) {
    let text = std::fs::read_to_string(fixtures().join("manifest_machines.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut sets: HashMap<String, Denoiser> = HashMap::new();
    let mut worst: HashMap<String, f64> = HashMap::new();
    let mut failures = Vec::new();
    let cases = v["cases"].as_array().unwrap();
    for c in cases {
        let train = c["train"].as_str().unwrap().to_string();
        let den = sets.entry(train.clone()).or_insert_with(|| training_on(&train, device).0);
        let (_, x) = npy(c["input"].as_str().unwrap());
        let (_, expected) = npy(c["expected"].as_str().unwrap());
        let machine = MachineKind::parse(c["machine"].as_str().unwrap()).unwrap();
        let patch = c.get("patch").and_then(Value::as_u64).unwrap_or(3) as usize;
        let call = call(machine, patch, ab(c["t"].as_f64().unwrap()));
        let got = den.denoise(&x, &call, &mut Control::none()).unwrap().x0;
        let err = max_abs_diff(&got, &expected);
        let w = worst.entry(format!("{} P{patch}", machine.name())).or_default();
        *w = w.max(err);
        if err.is_nan() || err > c["tolerance"].as_f64().unwrap() {
            failures.push(format!("{}: max err {err:.2e}", c["expected"]));
        }
    }
    assert_eq!(cases.len(), 128, "the manifest holds 128 cases");
    assert!(failures.is_empty(), "{} of {} cases fail:\n{}", failures.len(), cases.len(), failures.join("\n"));
    eprintln!("{} cases pass; worst error per machine: {worst:?}", cases.len());
}

#[test]
fn every_later_machine_matches_the_reference() {
    machine_cases(&Device::flex());
}

/// The same cases through burn's wgpu backend (lavapipe in CI-less runs, a real GPU on the
/// device machine): the new machines are plain burn ops, so they run on any device.
#[test]
#[ignore = "needs a wgpu adapter (lavapipe is enough): cargo test --release --test machines -- --ignored"]
fn every_later_machine_matches_the_reference_on_the_gpu() {
    machine_cases(&gpu());
}

#[test]
fn gaussian_returns_x_at_no_noise_and_the_mean_at_pure_noise() {
    // N > D and i.i.d. values: S is well conditioned, so W → I as s² → 0.
    let shape = ImageShape { c: 1, h: 6, w: 5 };
    let n = 300;
    let images = random_set(n, shape, 4);
    let mut den = Denoiser::new(&images, n, shape, &Device::flex());
    let x = random_set(1, shape, 99);
    let got = den.denoise(&x, &call(MachineKind::Gaussian, 0, 1.0 - 1e-9), &mut Control::none()).unwrap().x0;
    assert!(max_abs_diff(&got, &x) < 1e-4, "ᾱ → 1 should return x: {}", max_abs_diff(&got, &x));
    let mean: Vec<f32> = (0..shape.len())
        .map(|i| (0..n).map(|k| images[k * shape.len() + i] as f64).sum::<f64>() as f32 / n as f32)
        .collect();
    let got = den.denoise(&x, &call(MachineKind::Gaussian, 0, 1e-12), &mut Control::none()).unwrap().x0;
    assert!(max_abs_diff(&got, &mean) < 1e-4, "ᾱ → 0 should return μ: {}", max_abs_diff(&got, &mean));
    // And it is not the identity in between.
    let mid = den.denoise(&x, &call(MachineKind::Gaussian, 0, 0.5), &mut Control::none()).unwrap().x0;
    assert!(max_abs_diff(&mid, &x) > 0.05 && max_abs_diff(&mid, &mean) > 0.05);
}

#[test]
fn pspc_reduces_to_ideal_at_the_image_side_and_to_local_at_one_pixel() {
    let (mut den, shape, _) = training("mnist12_train.npy");
    for t in [0.1, 0.5, 0.9] {
        let x = random_set(1, shape, (t * 100.0) as u64);
        let mut get = |m: MachineKind, p: usize| den.denoise(&x, &call(m, p, ab(t)), &mut Control::none()).unwrap().x0;
        let pspc = get(MachineKind::Pspc, 28);
        let ideal = get(MachineKind::Ideal, 0);
        assert!(max_abs_diff(&pspc, &ideal) < 1e-4, "t = {t}: PSPC at P = 28 vs Ideal {}", max_abs_diff(&pspc, &ideal));
        let pspc1 = get(MachineKind::Pspc, 1);
        let local1 = get(MachineKind::Local, 1);
        assert!(max_abs_diff(&pspc1, &local1) < 1e-4, "t = {t}: PSPC at P = 1 vs Local at P = 1");
        // In between it is neither.
        let pspc7 = get(MachineKind::Pspc, 7);
        assert!(max_abs_diff(&pspc7, &ideal) > 1e-2 && max_abs_diff(&pspc7, &local1) > 1e-2);
    }
}

#[test]
fn pca_locality_with_threshold_zero_is_the_ideal_machine() {
    let (mut den, shape, _) = training("emoji8_16px_train.npy");
    for t in [0.2, 0.6] {
        let x = random_set(1, shape, 7);
        let c = call(MachineKind::PcaLocality, 0, ab(t));
        den.pca_threshold = 0.0;
        let all = den.denoise(&x, &c, &mut Control::none()).unwrap().x0;
        let ideal = den.denoise(&x, &call(MachineKind::Ideal, 0, ab(t)), &mut Control::none()).unwrap().x0;
        assert!(max_abs_diff(&all, &ideal) < 1e-4, "t = {t}: {}", max_abs_diff(&all, &ideal));
        den.pca_threshold = 0.02;
        let local = den.denoise(&x, &c, &mut Control::none()).unwrap().x0;
        assert!(max_abs_diff(&local, &ideal) > 1e-2, "the learned windows change the result");
    }
}

#[test]
fn gaussian_machines_refuse_images_above_their_limit_by_name() {
    let shape = ImageShape { c: 3, h: 64, w: 64 };
    let den = Denoiser::new(&random_set(2, shape, 1), 2, shape, &Device::flex());
    for m in [MachineKind::Gaussian, MachineKind::PcaLocality] {
        let err = den.check_call(&call(m, 0, 0.5)).unwrap_err();
        assert!(err.contains("12288") && err.contains("4096"), "{err}");
        assert!(err.contains(m.title()), "{err}");
    }
    // PSPC has no covariance: the same images are fine.
    den.check_call(&call(MachineKind::Pspc, 7, 0.5)).unwrap();
    // 64×64 gray is exactly at the limit.
    let gray = ImageShape { c: 1, h: 64, w: 64 };
    let den = Denoiser::new(&random_set(2, gray, 1), 2, gray, &Device::flex());
    den.check_call(&call(MachineKind::Gaussian, 0, 0.5)).unwrap();
}

#[test]
fn the_inspector_agrees_with_the_machines_at_every_inspected_pixel() {
    let (mut den, shape, _) = training("mnist12_train.npy");
    let (_, images) = npy("mnist12_train.npy");
    let (_, x) = npy("machines_mnist12_t0.3_near_x.npy");
    let pixels = [(0, 0), (14, 14), (27, 3), (9, 20)];
    for (m, p) in
        [(MachineKind::Gaussian, 0), (MachineKind::Pspc, 3), (MachineKind::Pspc, 7), (MachineKind::PcaLocality, 0)]
    {
        let mut c = call(m, p, ab(0.3));
        c.maps = true;
        let out = den.denoise(&x, &c, &mut Control::none()).unwrap();
        let maps = out.maps.clone().expect("maps were asked for");
        for (y, px) in pixels {
            let ins = den.inspect(&x, &c, y, px, 5, &Control::none()).unwrap();
            let i = y * shape.w + px;
            assert!(
                (ins.x0[0] - out.x0[i] as f64).abs() < 1e-4,
                "{m:?} P{p} at ({y}, {px}): {} vs {}",
                ins.x0[0],
                out.x0[i]
            );
            if m == MachineKind::Gaussian {
                let f = ins.filter.as_ref().expect("a filter row");
                assert_eq!(f.len(), shape.pixels());
                assert!(ins.votes.is_empty());
                assert_eq!(maps.winner[i], u32::MAX, "no vote, no winner");
            } else {
                assert!((ins.weight_sum - 1.0).abs() < 1e-9);
                assert_eq!(
                    ins.votes[0].image as u32, maps.winner[i],
                    "{m:?} P{p} at ({y}, {px}): top vote is the map's winner"
                );
                assert!(
                    (ins.entropy - maps.entropy[i] as f64).abs() < 1e-3,
                    "{m:?}: entropy {} vs {}",
                    ins.entropy,
                    maps.entropy[i]
                );
            }
            if m == MachineKind::PcaLocality {
                let window = ins.window.as_ref().expect("a learned window");
                let windows = maps.windows.as_ref().expect("maps carry the windows");
                assert_eq!(*window, windows.window(i), "inspector and map agree on the window");
                // A pixel that varies over the training set reads a window of other pixels that
                // vary with it (with only 12 images, max|M| is 85, so the 2% cut is 1.7 and even
                // the pixel itself, M = 1, falls below it: the reference agrees); a pixel that is
                // the same in every image (MNIST's border) has a zero row and column in W, so its
                // window is empty and its softmax uniform.
                let varies = (1..12).any(|k| images[k * shape.len() + i] != images[i]);
                assert_eq!(!window.is_empty(), varies, "({y}, {px}): window {window:?}");
            }
        }
        // The mean of the entropy map is the entropy the call reports.
        let mean = maps.entropy.iter().map(|&e| e as f64).sum::<f64>() / maps.entropy.len() as f64;
        assert!((mean - out.entropy as f64).abs() < 1e-4, "{m:?}: {mean} vs {}", out.entropy);
    }
}

#[test]
fn the_gaussian_filter_row_reproduces_the_pixel() {
    // x̂₀ at a pixel is μ + Σⱼ W[pixel, j] (z − μ)ⱼ: the row the inspector shows is the whole
    // story, checked against the fitted mean.
    let (mut den, shape, n) = training("machines_blobs9x6_train.npy");
    let (_, images) = npy("machines_blobs9x6_train.npy");
    let (_, x) = npy("machines_blobs9x6_t0.6_near_x.npy");
    let a_bar = ab(0.6);
    let mu: Vec<f64> =
        (0..shape.len()).map(|i| (0..n).map(|k| images[k * shape.len() + i] as f64).sum::<f64>() / n as f64).collect();
    for (y, px) in [(0, 0), (4, 3), (8, 5)] {
        let ins = den.inspect(&x, &call(MachineKind::Gaussian, 0, a_bar), y, px, 5, &Control::none()).unwrap();
        let f = ins.filter.unwrap();
        let i = y * shape.w + px;
        let want = mu[i] + f.iter().enumerate().map(|(j, w)| w * (x[j] as f64 / a_bar.sqrt() - mu[j])).sum::<f64>();
        assert!((ins.x0[0] - want).abs() < 1e-9, "{} vs {want}", ins.x0[0]);
        assert!(f[i] > 0.0 && f[i] <= 1.0 + 1e-9, "a pixel keeps part of itself: {}", f[i]);
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_morphogen");

fn morphogen(args: &[&str]) -> std::process::Output {
    morphogen_at(BIN, args)
}

/// `sample --machine gaussian|pspc|pca-locality` runs headless, records the machine in its
/// recipe, and the recipe reproduces the run exactly.
#[test]
fn the_later_machines_sample_from_the_cli_and_their_recipes_reproduce_them() {
    let dir = tempfile::tempdir().unwrap();
    for m in ["gaussian", "pspc", "pca-locality"] {
        let a = dir.path().join(format!("{m}-a"));
        let b = dir.path().join(format!("{m}-b"));
        let out = morphogen(&[
            "sample",
            "--dataset",
            "digits8",
            "--machine",
            m,
            "--steps",
            "6",
            "--seed",
            "4",
            "--device",
            "cpu",
            "--out-dir",
            a.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{m}: {}", String::from_utf8_lossy(&out.stderr));
        let recipe: Value = serde_json::from_str(&std::fs::read_to_string(a.join("recipe.json")).unwrap()).unwrap();
        assert_eq!(recipe["sampler"]["machine"], m, "{recipe}");
        let out = morphogen(&[
            "sample",
            "--recipe",
            a.join("recipe.json").to_str().unwrap(),
            "--out-dir",
            b.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{m}: {}", String::from_utf8_lossy(&out.stderr));
        let first = std::fs::read(a.join("trajectory_x0.npy")).unwrap();
        assert_eq!(first, std::fs::read(b.join("trajectory_x0.npy")).unwrap(), "{m}: the recipe reproduces the run");
    }
}

/// `inspect` on the Gaussian machine prints the pixel's Wiener-filter row (H rows of W
/// values), and on PCA-locality the learned window, with votes that sum to one.
#[test]
fn inspect_prints_the_filter_row_and_the_learned_window() {
    let train = fixtures().join("machines_blobs9x6_train.npy");
    let x = fixtures().join("machines_blobs9x6_t0.3_near_x.npy");
    let run = |m: &str| -> Value {
        let out = morphogen(&[
            "inspect",
            "--dataset",
            train.to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--t",
            "0.3",
            "--machine",
            m,
            "--pixel",
            "4,2",
            "--top",
            "500",
        ]);
        assert!(out.status.success(), "{m}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let g = run("gaussian");
    let rows = g["filter"].as_array().expect("a filter row");
    assert_eq!((rows.len(), rows[0].as_array().unwrap().len()), (9, 6));
    assert!(g["weights"].as_array().unwrap().is_empty(), "the Gaussian machine has no votes");
    let p = run("pca-locality");
    let window = p["window"].as_array().expect("a window");
    assert!(!window.is_empty() && window.len() < 54, "a window is part of the image: {}", window.len());
    let total: f64 = p["weights"].as_array().unwrap().iter().map(|w| w["weight"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "all 80 votes listed sum to 1: {total}");
    assert!(run("pspc")["window"].is_null(), "PSPC's windows are squares");
}

/// Both shipped MNIST networks, the ResNet and the UNet (its stride-2 convolutions,
/// upsampling, concatenation and crop), through burn's wgpu backend: the same x̂₀ as on the
/// CPU, to float32 rounding, at three noise levels.
#[test]
#[ignore = "needs a wgpu adapter (lavapipe is enough): cargo test --release --test machines -- --ignored"]
fn the_shipped_networks_give_the_cpus_x0_on_the_gpu() {
    let unet = repo_root().join("assets/models/mnist-unet.mgcnn");
    let mut compared = 0;
    for weights in [None, Some(unet.as_path())] {
        let mut runs = Vec::new();
        for device in [Device::flex(), gpu()] {
            let (mut den, shape, _) = training_on("mnist12_train.npy", &device);
            morphogen::engine::machines::cnn::attach(&mut den, Some("mnist"), weights);
            let x = random_set(1, shape, 5);
            let out: Vec<Vec<f32>> = [0.2, 0.5, 0.9]
                .into_iter()
                .map(|t| den.denoise(&x, &call(MachineKind::Cnn, 1, ab(t)), &mut Control::none()).unwrap().x0)
                .collect();
            runs.push(out);
        }
        for (cpu, gpu) in runs[0].iter().zip(&runs[1]) {
            assert!(cpu.iter().chain(gpu).all(|v| v.is_finite()), "{weights:?}: a NaN");
            let d = max_abs_diff(cpu, gpu);
            assert!(d < 1e-4, "{weights:?}: the GPU's x̂₀ is {d} from the CPU's");
            compared += 1;
        }
    }
    assert_eq!(compared, 6);
}
