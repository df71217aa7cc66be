//! The trained convolutional denoiser: its forward pass, training, weights files, the CNN
//! machine, the `train` / `compare` / `calibrate` commands, and calibration on a toy case.

mod common;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use morphogen::engine::training::network::{Arch, Cnn, CnnHeader, CnnShape, EpsNet, cosine_time};
use morphogen::engine::training::train::{TrainConfig, train};
use morphogen::engine::{
    Boundary, Call, Control, Denoiser, ImageShape, MachineKind, NoiseSchedule, PatchSchedule, SamplerConfig,
};
use serde_json::Value;

const TINY: CnnShape = CnnShape { image_channels: 1, channels: 8, blocks: 2, arch: Arch::ResNet };

fn forward(net: &EpsNet, x: &[f32], t: &[f64]) -> Vec<f32> {
    let b = t.len();
    let x = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [b, 1, 8, 8]), &Device::flex());
    net.forward(x, t).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn header() -> CnnHeader {
    CnnHeader {
        shape: TINY,
        image: [1, 8, 8],
        dataset: "test".into(),
        schedule: "cosine".into(),
        steps: 0,
        batch: 1,
        final_loss: 0.0,
    }
}

#[test]
fn the_forward_pass_keeps_the_shape_and_is_deterministic() {
    let device = Device::flex();
    device.seed(7);
    let net = EpsNet::new(TINY, &device);
    let x = random_set(2, ImageShape { c: 1, h: 8, w: 8 }, 3);
    let x4 = Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 1, 8, 8]), &device);
    assert_eq!(net.forward(x4, &[0.1, 0.9]).dims(), [2, 1, 8, 8]);
    let a = forward(&net, &x, &[0.1, 0.9]);
    assert_eq!(a, forward(&net, &x, &[0.1, 0.9]), "the same input gives the same output");
    assert_ne!(a[..64], forward(&net, &x, &[0.5, 0.9])[..64], "the time embedding reaches the output");
    // Through a weights file and back: the same function.
    let bytes = Cnn::to_bytes(&header(), net).unwrap();
    let back = Cnn::from_bytes(&bytes, &device).unwrap();
    assert_eq!(back.header, header());
    assert_eq!(a, forward(&back.net, &x, &[0.1, 0.9]));
    // Translation equivariance away from the border (zero padding breaks it only within the
    // receptive field of an edge): on a 20×20 image a blob moved by one pixel moves the
    // response by one pixel.
    let big = |at: usize| {
        let mut v = vec![-1f32; 400];
        v[at] = 1.0;
        let x = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 20, 20]), &device);
        back.net.forward(x, &[0.5]).into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    };
    let (r0, r1) = (big(9 * 20 + 9), big(9 * 20 + 10));
    for dy in 0..3 {
        for dx in 0..3 {
            let p = (8 + dy) * 20 + 8 + dx;
            assert!((r0[p] - r1[p + 1]).abs() < 1e-5, "({dy}, {dx}): {} vs {}", r0[p], r1[p + 1]);
        }
    }
    assert!(TINY.receptive_field() == 9 && CnnShape::SMALL.receptive_field() == 17);
}

/// Both architectures have the parameter count their shape promises (the figure `train`
/// prints and the memory budget counts), and a ResNet's header is written as the first weights
/// files were, with no `arch`, so the shipped files and older builds read each other.
#[test]
fn each_architecture_has_the_parameters_its_shape_counts() {
    let device = Device::flex();
    let mut checked = 0;
    for arch in [Arch::ResNet, Arch::UNet] {
        for (c, f, b) in [(1, 8, 0), (1, 8, 2), (3, 16, 1), (1, 32, 6)] {
            let shape = CnnShape { image_channels: c, channels: f, blocks: b, arch };
            assert_eq!(EpsNet::new(shape, &device).num_params(), shape.parameters(), "{shape:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
    assert_eq!(CnnShape::SMALL.parameters(), 62_433, "the shipped MNIST network");
    let resnet = serde_json::to_string(&TINY).unwrap();
    assert!(!resnet.contains("arch"), "{resnet}");
    let unet = serde_json::to_string(&CnnShape { arch: Arch::UNet, ..TINY }).unwrap();
    assert!(unet.contains(r#""arch":"unet""#), "{unet}");
    assert_eq!((Arch::parse("resnet"), Arch::parse(" UNet ")), (Ok(Arch::ResNet), Ok(Arch::UNet)));
    assert!(Arch::parse("vit").unwrap_err().contains("'vit' is not a network"));
    let old: CnnShape = serde_json::from_str(r#"{"image_channels":1,"channels":32,"blocks":6}"#).unwrap();
    assert_eq!(old, CnnShape::SMALL);
    // The deepest path of a one-block UNet spans 40 pixels: a whole 28×28 digit.
    assert_eq!(CnnShape { arch: Arch::UNet, blocks: 1, ..TINY }.receptive_field(), 40);
    assert_eq!(CnnShape { arch: Arch::UNet, blocks: 0, ..TINY }.receptive_field(), 20);
}

/// The UNet takes a canvas of any size (padded to a multiple of 4 and cut back), gives the
/// same function through its weights file, and is translation-equivariant for shifts by its
/// total stride, 4 pixels, away from the border.
#[test]
fn the_unet_takes_any_canvas_and_is_equivariant_by_its_stride() {
    let device = Device::flex();
    device.seed(11);
    let shape = CnnShape { arch: Arch::UNet, blocks: 1, ..TINY };
    let net = EpsNet::new(shape, &device);
    let run = |net: &EpsNet, v: Vec<f32>, h: usize, w: usize, t: f64| {
        let x = Tensor::<4>::from_data(TensorData::new(v, [1, 1, h, w]), &device);
        let out = net.forward(x, &[t]);
        assert_eq!(out.dims(), [1, 1, h, w]);
        out.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    };
    for (h, w) in [(8, 8), (9, 7), (28, 28), (13, 30)] {
        let out = run(&net, random_set(1, ImageShape { c: 1, h, w }, 4), h, w, 0.3);
        assert!(out.iter().all(|v| v.is_finite()), "{h}×{w}");
    }
    let x = random_set(1, ImageShape { c: 1, h: 8, w: 8 }, 3);
    let a = run(&net, x.clone(), 8, 8, 0.4);
    assert_ne!(a, run(&net, x.clone(), 8, 8, 0.8), "the time embedding reaches the output");
    let header = CnnHeader { shape, ..header() };
    let back = Cnn::from_bytes(&Cnn::to_bytes(&header, net).unwrap(), &device).unwrap();
    assert_eq!(back.header, header);
    assert_eq!(a, run(&back.net, x, 8, 8, 0.4), "the same function through its file");
    // A blob on a 64×64 field, then moved 4 pixels right: the response moves with it where no
    // border is within the 40-pixel receptive field (rows and columns 20 to 43).
    let blob = |at: usize| {
        let mut v = vec![-1f32; 64 * 64];
        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            v[(30 + dy) * 64 + at + dx] = 1.0;
        }
        run(&back.net, v, 64, 64, 0.5)
    };
    let (r0, r4) = (blob(28), blob(32));
    let (mut compared, mut moved) = (0, 0f32);
    for y in 20..44 {
        for x in 20..40 {
            let (p, q) = (y * 64 + x, y * 64 + x + 4);
            assert!((r0[p] - r4[q]).abs() < 1e-5, "({y}, {x}): {} vs {}", r0[p], r4[q]);
            moved = moved.max((r0[p] - r0[q]).abs());
            compared += 1;
        }
    }
    assert_eq!(compared, 24 * 20);
    assert!(moved > 1e-3, "the blob's response is not flat ({moved}), so the check could fail");
    // The receptive field is what the shape says: one input pixel of a 64×64 field, moved,
    // moves outputs over a span no wider than it (and most of it: the figure is not loose).
    let field = random_set(1, ImageShape { c: 1, h: 64, w: 64 }, 9);
    let base = run(&back.net, field.clone(), 64, 64, 0.5);
    let mut spans = Vec::new();
    for at in [(32, 32), (33, 31)] {
        let mut poked = field.clone();
        poked[at.0 * 64 + at.1] += 5.0;
        let out = run(&back.net, poked, 64, 64, 0.5);
        let changed: Vec<usize> = (0..64 * 64).filter(|&i| out[i] != base[i]).collect();
        let rows = changed.iter().map(|i| i / 64);
        let span = rows.clone().max().unwrap() - rows.min().unwrap() + 1;
        spans.push(span);
    }
    let rf = shape.receptive_field();
    eprintln!("UNet receptive field: spans {spans:?}, stated {rf}");
    assert!(spans.iter().all(|&s| s <= rf && s + 8 >= rf), "spans {spans:?} against the stated {rf}");
}

#[test]
fn a_short_training_run_lowers_the_loss() {
    let shape = ImageShape { c: 1, h: 8, w: 8 };
    let (s, images) = npy("machines_blobs9x6_train.npy");
    assert_eq!(s[0], 80);
    // Blobs cut to 8×8 by tiling the 9×6 images: smooth structure a network can learn.
    let imgs: Vec<f32> =
        (0..80).flat_map(|k| (0..64).map(move |i| (k, i))).map(|(k, i)| images[k * 54 + i % 54]).collect();
    let cfg = TrainConfig {
        shape: TINY,
        steps: 150,
        batch: 16,
        lr: 5e-3,
        seed: 1,
        schedule: NoiseSchedule::cosine(),
        clip: None,
    };
    let (_, losses) = train(&imgs, 80, shape, &cfg, &mut |_, _| true);
    assert_eq!(losses.len(), 150);
    let first: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = losses[130..].iter().sum::<f32>() / 20.0;
    assert!(last < 0.8 * first, "loss {first:.3} → {last:.3}");
    // The UNet learns too.
    let unet = TrainConfig { shape: CnnShape { arch: Arch::UNet, blocks: 1, ..TINY }, ..cfg.clone() };
    let (_, losses) = train(&imgs, 80, shape, &unet, &mut |_, _| true);
    let (first, last) = (losses[..20].iter().sum::<f32>() / 20.0, losses[130..].iter().sum::<f32>() / 20.0);
    assert!(losses.len() == 150 && last < 0.8 * first, "UNet loss {first:.3} → {last:.3}");
    // Clipping reaches the optimiser: gradients clipped to nothing leave the loss where it
    // started (Adam rescales gradients, so only a clip below its ε stops it).
    let (_, frozen) = train(&imgs, 80, shape, &TrainConfig { clip: Some(1e-12), ..cfg.clone() }, &mut |_, _| true);
    let (f0, f1) = (frozen[..20].iter().sum::<f32>() / 20.0, frozen[130..].iter().sum::<f32>() / 20.0);
    assert!(f1 > 0.9 * f0, "clipped to 1e-12 the loss still went {f0:.3} → {f1:.3}");
    // And it stops when asked.
    let (_, stopped) = train(&imgs, 80, shape, &TrainConfig { steps: 100, ..cfg }, &mut |step, _| step < 9);
    assert_eq!(stopped.len(), 10);
}

#[test]
fn bad_weights_are_refused_by_name_and_the_other_machines_keep_working() {
    assert!(Cnn::from_bytes(b"PNG....", &Device::flex()).err().unwrap().contains("not a morphogen CNN weights file"));
    let good = Cnn::to_bytes(&header(), EpsNet::new(TINY, &Device::flex())).unwrap();
    let cut = &good[..good.len() - 100];
    let err = Cnn::from_bytes(cut, &Device::flex()).err().unwrap();
    assert!(err.contains("weights"), "{err}");
    let mut wrong = header();
    wrong.shape.channels = 16;
    let mut lie = b"morphogen-cnn 1\n".to_vec();
    lie.extend(serde_json::to_vec(&wrong).unwrap());
    lie.push(b'\n');
    lie.extend_from_slice(&good[good.iter().skip(16).position(|&b| b == b'\n').unwrap() + 17..]);
    let err = Cnn::from_bytes(&lie, &Device::flex()).err().unwrap();
    assert!(err.contains("do not fit"), "{err}");
    // Weights for 8×8 images on a 28×28 set: the CNN machine says why; Ideal still runs.
    let (mut den, shape, _) = training("mnist12_train.npy");
    den.load_cnn(&good, "tiny.mgcnn");
    let call = Call::new(MachineKind::Cnn, Boundary::Zeros, 3, 0.5);
    let err = den.check_call(&call).unwrap_err();
    assert!(err.contains("tiny.mgcnn") && err.contains("1×8×8") && err.contains("1×28×28"), "{err}");
    let x = random_set(1, shape, 2);
    den.denoise(&x, &Call::new(MachineKind::Ideal, Boundary::Zeros, 3, 0.5), &mut Control::none()).unwrap();
}

#[test]
fn the_cnn_machine_turns_its_noise_estimate_into_x0() {
    let device = Device::flex();
    device.seed(3);
    let net = EpsNet::new(TINY, &device);
    let x = random_set(1, ImageShape { c: 1, h: 8, w: 8 }, 5);
    let ab = 0.6;
    let eps = forward(&net, &x, &[cosine_time(ab)]);
    let bytes = Cnn::to_bytes(&header(), net).unwrap();
    let shape = ImageShape { c: 1, h: 8, w: 8 };
    let mut den = Denoiser::new(&random_set(10, shape, 1), 10, shape, &device);
    den.load_cnn(&bytes, "tiny");
    let got = den.denoise(&x, &Call::new(MachineKind::Cnn, Boundary::Zeros, 3, ab), &mut Control::none()).unwrap().x0;
    for i in 0..64 {
        let want = ((x[i] as f64 - (1.0 - ab).sqrt() * eps[i] as f64) / ab.sqrt()).clamp(-1.0, 1.0);
        assert!((got[i] as f64 - want).abs() < 1e-5, "{i}: {} vs {want}", got[i]);
    }
    // The network is told the noise level on the cosine schedule it was trained with.
    let s = NoiseSchedule::cosine();
    for t in [0.05, 0.5, 0.95] {
        assert!((cosine_time(s.alpha_bar(t)) - t).abs() < 1e-9);
    }
}

/// Calibration recovers a known P: with ELS at P = 5 standing in for the network, every step
/// fits P = 5 (its own score matches itself exactly).
#[test]
fn calibration_recovers_a_known_patch_size() {
    let (mut den, _, _) = training("mnist12_train.npy");
    let reference = SamplerConfig {
        machine: MachineKind::Els,
        patch: PatchSchedule::Constant { p: 5 },
        steps: 6,
        t_start: 0.7,
        ..SamplerConfig::default()
    };
    let fits = morphogen::engine::analysis::calibrate::calibrate(
        &mut den,
        &reference,
        &[0, 1],
        &[1, 3, 5, 7, 9, 11],
        Boundary::Zeros,
        &mut Control::none(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(fits.len(), 6);
    for f in &fits {
        assert_eq!(f.best, vec![5, 5], "t = {}: cosines {:?}", f.t, f.cosine);
        assert_eq!(f.median, 5);
        assert!((f.cosine[0][2] - 1.0).abs() < 1e-9);
        assert!(f.cosine[0][0] < 0.9999, "a wrong P does not fit as well: {:?}", f.cosine[0]);
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_morphogen");

fn morphogen(args: &[&str]) -> std::process::Output {
    morphogen_at(BIN, args)
}

/// `sample` with the CNN machine on digits8 (4 steps on the CPU) from the weights `cnn`.
fn sample_cnn(cnn: &str, out_dir: &std::path::Path) -> std::process::Output {
    let out = out_dir.to_str().unwrap();
    let args = ["sample", "--dataset", "digits8", "--machine", "cnn", "--cnn", cnn, "--steps", "4"];
    morphogen(&[&args[..], &["--device", "cpu", "--out-dir", out]].concat())
}

/// train → sample with `--machine cnn` → compare → calibrate, end to end on a small set.
#[test]
fn train_sample_compare_and_calibrate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("digits.mgcnn");
    let w = weights.to_str().unwrap();
    let out = morphogen(&[
        "train",
        "--dataset",
        "digits8",
        "--out",
        w,
        "--steps",
        "30",
        "--batch",
        "8",
        "--channels",
        "8",
        "--blocks",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("digits.loss.png").exists() && dir.path().join("digits.loss.csv").exists());
    common::assert_chart(
        &std::fs::read(dir.path().join("digits.loss.png")).unwrap(),
        (720, 400),
        &[[40, 90, 200], [170, 190, 230]],
        "digits.loss.png",
    );
    let csv = std::fs::read_to_string(dir.path().join("digits.loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 31, "a header and one line per step");
    // Not over an existing file without --force.
    let again = morphogen(&["train", "--dataset", "digits8", "--out", w, "--steps", "1"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // Nor over its loss curve: a new name whose curve is already there is refused before
    // training, and the curve is left as it was.
    let other = dir.path().join("other.mgcnn");
    std::fs::write(dir.path().join("other.loss.csv"), "mine").unwrap();
    let again = morphogen(&["train", "--dataset", "digits8", "--out", other.to_str().unwrap(), "--steps", "1"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("other.loss.csv") && err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("other.loss.csv")).unwrap(), "mine");
    assert!(!other.exists(), "nothing trained");

    // The UNet through the same commands: its header says so, and the CNN machine runs it.
    let unet = dir.path().join("unet.mgcnn");
    let u = unet.to_str().unwrap();
    let args = ["train", "--dataset", "digits8", "--out", u, "--steps", "5", "--batch", "4", "--channels", "8"];
    let out = morphogen(&[&args[..], &["--blocks", "1", "--arch", "unet"]].concat());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("a UNet (1 block a stage, 8 channels)"), "{said}");
    assert!(said.contains("receptive field 40 px"), "{said}");
    let bytes = std::fs::read(&unet).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..200]).contains(r#""arch":"unet""#));
    let unet_run = dir.path().join("unet-run");
    let out = sample_cnn(u, &unet_run);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // compare names the network, and prints no paper column (the paper's ResNet row is not
    // this network's); it would use a calibration beside the weights, and there is none.
    let out = morphogen(&["compare", "--dataset", "digits8", "--cnn", u, "--seeds", "1", "--steps", "3"]);
    let (table, said) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && table.contains("with the CNN's (UNet)"), "{table}{said}");
    assert!(table.contains("its UNet rows are not carried here") && !table.contains("paper ("), "{table}");
    assert!(said.contains("unet.calibration.json beside the weights"), "{said}");
    // A run that diverges stops, says so and writes nothing; a clip norm must be one.
    let wild = dir.path().join("wild.mgcnn");
    let w2 = wild.to_str().unwrap();
    let out =
        morphogen(&["train", "--dataset", "digits8", "--out", w2, "--steps", "300", "--batch", "8", "--lr", "0.9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("training diverged at step") && err.contains("--grad-clip"), "{err}");
    assert!(!wild.exists() && !dir.path().join("wild.loss.csv").exists(), "nothing written");
    let out = morphogen(&["train", "--dataset", "digits8", "--out", w2, "--steps", "3", "--grad-clip", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grad-clip must be a positive norm"));
    let wrong = morphogen(&[&args[..], &["--arch", "transformer", "--force"]].concat());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && err.contains("transformer") && err.contains("unet"), "{err}");

    let run = dir.path().join("run");
    let out = sample_cnn(w, &run);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without weights for a folder-less, non-MNIST set, the CNN machine says how to get some.
    let out = morphogen(&[
        "sample",
        "--dataset",
        "digits8",
        "--machine",
        "cnn",
        "--steps",
        "4",
        "--out-dir",
        dir.path().join("none").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("morphogen train"), "{err}");

    let out = morphogen(&[
        "compare",
        "--dataset",
        "digits8",
        "--cnn",
        w,
        "--seeds",
        "3",
        "--steps",
        "4",
        "--patch-schedule",
        "3,3,3,3",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["seeds"], 3);
    // The medians are the values, not merely numbers in [−1, 1]: the same three seeds run
    // here in process, with Pearson's r written out independently in f64, give the same
    // medians (a NaN is `null` in JSON and fails the unwrap).
    let ours = independent_medians(&weights, 3, 4);
    for (k, want) in ["els", "local", "ideal"].into_iter().zip(ours) {
        let r = v[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {}", v[k]));
        assert!((r - want).abs() < 1e-9, "{k}: compare says {r}, recomputed {want}");
    }

    let cal = dir.path().join("cal");
    let out = morphogen(&[
        "calibrate",
        "--dataset",
        "digits8",
        "--cnn",
        w,
        "--seeds",
        "2",
        "--steps",
        "3",
        "--max-p",
        "7",
        "--device",
        "cpu",
        "--out",
        cal.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fit: Value = serde_json::from_str(&std::fs::read_to_string(cal.join("calibration.json")).unwrap()).unwrap();
    let fitted = fit["fitted"].as_array().unwrap();
    assert_eq!(fitted.len(), 3);
    assert!(fitted.iter().all(|p| [1, 3, 5, 7].contains(&p.as_u64().unwrap())), "{fitted:?}");
    let recipe = std::fs::read_to_string(cal.join("recipe.json")).unwrap();
    assert!(recipe.contains("\"list\"") && recipe.contains("\"els\""), "{recipe}");
    assert!(cal.join("calibration.png").exists());
}

/// Median over `seeds` of r(CNN, machine) for ELS, Local and Ideal on digits8 at P = 3,
/// computed without `experiment::run` or `stats::pearson`.
fn independent_medians(weights: &std::path::Path, seeds: u64, steps: usize) -> [f64; 3] {
    use morphogen::data::{Dataset, DatasetSource, LoadOptions};
    let data = Dataset::load(&DatasetSource::parse("digits8"), &LoadOptions::default()).unwrap();
    let mut den = Denoiser::new(&data.images, data.len(), data.shape, &Device::flex());
    morphogen::engine::machines::cnn::attach(&mut den, Some("digits8"), Some(weights));
    let config = |machine, seed| SamplerConfig {
        machine,
        seed,
        steps,
        patch: PatchSchedule::parse("3,3,3,3").unwrap(),
        ..SamplerConfig::default()
    };
    let pearson = |x: &[f32], y: &[f32]| {
        let n = x.len() as f64;
        let (mx, my) = (x.iter().map(|&v| v as f64).sum::<f64>() / n, y.iter().map(|&v| v as f64).sum::<f64>() / n);
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (&a, &b) in x.iter().zip(y) {
            let (a, b) = (a as f64 - mx, b as f64 - my);
            sxy += a * b;
            sxx += a * a;
            syy += b * b;
        }
        sxy / (sxx * syy).sqrt()
    };
    let machines = [MachineKind::Els, MachineKind::Local, MachineKind::Ideal];
    let mut rs = vec![Vec::new(); 3];
    for seed in 0..seeds {
        let cnn = morphogen::experiment::final_image(&mut den, config(MachineKind::Cnn, seed)).unwrap();
        for (i, &m) in machines.iter().enumerate() {
            let img = morphogen::experiment::final_image(&mut den, config(m, seed)).unwrap();
            rs[i].push(pearson(&cnn, &img));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    [median(rs[0].clone()), median(rs[1].clone()), median(rs[2].clone())]
}

/// The shipped loss curves are the training runs' own CSVs drawn as every figure is (titled
/// axes, a legend): `plot-loss` redraws one, and refuses a CSV that is not a loss curve.
#[test]
fn the_shipped_loss_curves_are_readable_figures_of_their_csvs() {
    let root = common::repo_root();
    let shipped = [
        ("mnist", "mnist"),
        ("fashion", "fashion"),
        ("emoji", "emoji"),
        ("mnist-unet", "mnist"),
        ("fashion-unet", "fashion"),
        ("emoji-unet", "emoji"),
    ];
    for (name, set) in shipped {
        let png = std::fs::read(root.join(format!("assets/models/{name}.loss.png"))).unwrap();
        common::assert_chart(&png, (720, 400), &[[40, 90, 200], [170, 190, 230]], &format!("{name}.loss.png"));
        let losses = morphogen::train::read_loss_csv(&root.join(format!("assets/models/{name}.loss.csv"))).unwrap();
        assert_eq!(png, morphogen::train::loss_plot(&losses, set).unwrap(), "{name}.loss.png is not its CSV's drawing");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "step,loss\n1,0.5\n2,NaN\n").unwrap();
    let out = dir.path().join("bad.png");
    let r = morphogen(&["plot-loss", bad.to_str().unwrap(), out.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && e.contains("bad.csv") && e.contains("line 3") && e.lines().count() == 1, "{e}");
    assert!(!out.exists());
}
