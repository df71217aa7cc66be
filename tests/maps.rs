//! The provenance maps (`Call::maps`): each pixel's winning training patch and weight entropy,
//! from every path that computes a machine, against the float64 inspector and each other.

mod common;

use burn::tensor::Device;
use common::*;
use morphogen::engine::{
    Boundary, Call, CancelToken, Control, Denoiser, ElsPath, ImageShape, MachineKind, PixelMaps, Sampler, SamplerConfig,
};

fn maps_of(den: &mut Denoiser, x: &[f32], call: &Call) -> (PixelMaps, f32) {
    let out = den.denoise(x, call, &mut Control::none()).unwrap();
    (out.maps.expect("maps were asked for"), out.entropy)
}

/// Every pixel's map entry is the inspector's top vote (image and patch centre), and the
/// entropy map is the inspector's entropy; on every path that computes the machine.
#[test]
fn maps_name_the_inspectors_top_vote_on_every_path() {
    check_paths(&Device::flex(), &[ElsPath::HostKernel, ElsPath::Op, ElsPath::BurnOps]);
}

/// The same through the cubecl kernel (and burn's argmax on wgpu for Ideal and
/// Equivariant): `cargo test --release --test maps -- --ignored` on any adapter.
#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_maps_name_the_inspectors_top_vote() {
    check_paths(&gpu(), &[ElsPath::Op]);
}

fn check_paths(device: &Device, paths: &[ElsPath]) {
    // Pixels whose winner was compared with the inspector's, and near-ties left out.
    let (mut checked, mut ties) = (0usize, 0usize);
    for shape in [ImageShape { c: 1, h: 9, w: 10 }, ImageShape { c: 3, h: 8, w: 8 }] {
        let n = 13;
        let train = random_set(n, shape, 31);
        let x = random_set(1, shape, 32);
        for &path in paths {
            let mut den = Denoiser::new(&train, n, shape, device);
            den.els_path = path;
            for (machine, boundary, p) in [
                (MachineKind::Els, Boundary::Zeros, 3),
                (MachineKind::Els, Boundary::Zeros, 7),
                (MachineKind::Els, Boundary::Zeros, 15),
                (MachineKind::Els, Boundary::Circular, 5),
                (MachineKind::Local, Boundary::Zeros, 5),
                (MachineKind::Ideal, Boundary::Zeros, 3),
                (MachineKind::Equivariant, Boundary::Zeros, 3),
            ] {
                let call = Call { entropy: true, maps: true, ..Call::new(machine, boundary, p, 0.6) };
                let (maps, mean_entropy) = maps_of(&mut den, &x, &call);
                let what = format!("{path:?} {machine:?} {boundary:?} P={p} {shape:?}");
                let hw = shape.pixels();
                let avg = maps.entropy.iter().map(|&e| e as f64).sum::<f64>() / hw as f64;
                assert!((avg - mean_entropy as f64).abs() < 1e-4, "{what}: map mean {avg} vs {mean_entropy}");
                for px in 0..hw {
                    let ins = den.inspect(&x, &call, px / shape.w, px % shape.w, 2, &Control::none()).unwrap();
                    let top = &ins.votes[0];
                    // A near-tie may go either way in f32; only a clear winner must match.
                    if ins.votes.len() > 1 && ins.votes[1].weight > 0.98 * top.weight {
                        ties += 1;
                        continue;
                    }
                    checked += 1;
                    let src = (top.y * shape.w + top.x) as u32;
                    assert_eq!(
                        (maps.winner[px], maps.source[px]),
                        (top.image as u32, src),
                        "{what}: pixel {px} (weight {})",
                        top.weight
                    );
                    assert!((maps.entropy[px] as f64 - ins.entropy).abs() < 1e-3, "{what}: pixel {px} entropy");
                }
            }
        }
    }
    // Every pixel of every case is either compared or a near-tie, and the ties are few.
    let total = paths.len() * 7 * (90 + 64);
    eprintln!("{checked} of {total} pixels compared with the inspector, {ties} near-ties left out");
    assert_eq!(checked + ties, total);
    assert!(checked * 100 >= total * 95, "only {checked} of {total} pixels compared ({ties} near-ties)");
}

/// At small t the ideal machine returns its nearest training image, so its mosaic is that one
/// image everywhere, each pixel taken in place.
#[test]
fn the_ideal_mosaic_at_small_t_is_one_image() {
    let (mut den, shape, _) = training("mnist12_train.npy");
    let (_, x) = npy("mnist12_t0.2_P3_near_x.npy");
    let call = Call { maps: true, ..Call::new(MachineKind::Ideal, Boundary::Zeros, 3, 0.99) };
    let (maps, _) = maps_of(&mut den, &x, &call);
    let (nearest, _) = den.nearest_training(&x);
    assert!(maps.winner.iter().all(|&w| w == nearest as u32), "{:?}", &maps.winner[..8]);
    assert!(maps.offset(shape.w).iter().all(|&o| o == 0.0));
}

/// An ELS sample on the bundled MNIST is a mosaic: its last step draws on many training
/// images, from patches moved across the image.
#[test]
fn an_els_sample_draws_on_many_images() {
    let data = morphogen::data::Dataset::load(
        &morphogen::data::DatasetSource::Bundled("mnist".into()),
        &morphogen::data::LoadOptions { subset: Some(300), ..Default::default() },
    )
    .unwrap();
    let mut den = Denoiser::new(&data.images, data.len(), data.shape, &Device::flex());
    let cfg = SamplerConfig { steps: 10, seed: 3, ..SamplerConfig::default() };
    let mut sampler = Sampler::new(cfg, data.shape, None).with_maps(true);
    let cancel = CancelToken::new();
    let mut last = None;
    while let Some(step) = sampler.step(&mut den, &mut Control::new(&cancel, None)) {
        let step = step.unwrap();
        let maps = step.maps.as_ref().expect("maps every step");
        let avg = maps.entropy.iter().map(|&e| e as f64).sum::<f64>() / maps.entropy.len() as f64;
        assert!((avg - step.entropy as f64).abs() < 1e-4, "step {}: {avg} vs {}", step.step, step.entropy);
        last = Some(step);
    }
    let maps = last.unwrap().maps.unwrap();
    let mut images: Vec<u32> = maps.winner.clone();
    images.sort();
    images.dedup();
    assert!(images.len() >= 10, "the final x̂₀ draws on only {} training images", images.len());
    let moved = maps.offset(data.shape.w).iter().filter(|&&o| o > 0.0).count();
    assert!(moved > 50, "only {moved} pixels come from patches at another place");
}

/// `sample --maps` writes the three maps per step as (steps, H, W) arrays and PNGs, and the
/// entropy map of each step averages to the entropy in steps.json.
#[test]
fn sample_writes_the_maps() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let train = fixtures().join("mnist12_train.npy");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_morphogen"))
        .args(["sample", "--dataset", train.to_str().unwrap(), "--steps", "4", "--maps", "--device", "cpu"])
        .args(["--out-dir", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let (shape, winner) = morphogen::data::read_npy_f32(&out.join("maps_winner.npy")).unwrap();
    assert_eq!(shape, vec![4, 28, 28]);
    assert!(winner.iter().all(|&w| (0.0..12.0).contains(&w) && w.fract() == 0.0));
    let (_, offset) = morphogen::data::read_npy_f32(&out.join("maps_offset.npy")).unwrap();
    assert!(offset.iter().all(|&o| (0.0..=40.0).contains(&o)));
    let (_, entropy) = morphogen::data::read_npy_f32(&out.join("maps_entropy.npy")).unwrap();
    let steps: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("steps.json")).unwrap()).unwrap();
    for (k, step) in steps.as_array().unwrap().iter().enumerate() {
        let mean = entropy[k * 784..(k + 1) * 784].iter().map(|&e| e as f64).sum::<f64>() / 784.0;
        assert!((mean - step["entropy"].as_f64().unwrap()).abs() < 1e-4, "step {k}");
    }
    for kind in ["mosaic", "offset", "entropy"] {
        for k in 0..4 {
            let png = image::open(out.join(format!("maps/{kind}_{k:03}.png"))).unwrap();
            assert_eq!((png.width(), png.height()), (28, 28));
        }
    }
}

/// With every candidate equal (σ huge), 90% of the weight takes ⌈0.9·N⌉ of them; with one
/// clear winner (σ tiny), one.
#[test]
fn the_ninety_percent_count_spans_uniform_to_one_winner() {
    let shape = ImageShape { c: 1, h: 6, w: 6 };
    let n = 13;
    let train = random_set(n, shape, 41);
    let mut den = Denoiser::new(&train, n, shape, &Device::flex());
    let x = random_set(1, shape, 42);
    let wide = Call::new(MachineKind::Ideal, Boundary::Zeros, 3, 1e-9);
    assert_eq!(den.inspect(&x, &wide, 2, 2, 5, &Control::none()).unwrap().count_90, 12);
    let sharp = Call::new(MachineKind::Ideal, Boundary::Zeros, 3, 1.0 - 1e-9);
    assert_eq!(den.inspect(&x, &sharp, 2, 2, 5, &Control::none()).unwrap().count_90, 1);
}

/// The shift-invariant nearest image finds a training image that was only translated: the
/// rolled copy is at distance 0 under the right shift, though far from it in plain L2.
#[test]
fn a_rolled_training_image_is_found_with_its_shift() {
    let (den, shape, _) = training("mnist12_train.npy");
    let (dy, dx) = (2usize, 3usize);
    let k = 7;
    let img = den.training_image(k);
    let mut rolled = vec![0f32; img.len()];
    for y in 0..shape.h {
        for x in 0..shape.w {
            rolled[((y + dy) % shape.h) * shape.w + (x + dx) % shape.w] = img[y * shape.w + x];
        }
    }
    let (best, rms, shift) = den.nearest_training_shifted(&rolled).expect("small enough");
    assert_eq!((best, shift), (k, (dy, dx)));
    assert!(rms < 1e-3, "{rms}");
    let (_, plain) = den.nearest_training(&rolled);
    assert!(plain > 0.1, "a plain L2 nearest is far: {plain}");
}
