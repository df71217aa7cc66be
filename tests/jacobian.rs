//! Sensitivity (Jacobian) maps: each machine's ∂x̂₀[pixel]/∂x_t against central finite
//! differences of the float64 reference (tests/fixtures/manifest_jacobian.json, written by
//! scripts/make_jacobian_fixtures.py), and `inspect --jacobian` on the command line.

mod common;

use common::*;
use morphogen::engine::{Boundary, Call, Control, MachineKind, NoiseSchedule};

const BIN: &str = env!("CARGO_BIN_EXE_morphogen");

#[test]
fn jacobians_match_finite_differences_of_the_reference() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest_jacobian.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    let mut checked = 0;
    let mut informative = 0;
    for case in cases {
        let (den_name, x_name) = (case["train"].as_str().unwrap(), case["input"].as_str().unwrap());
        let (mut den, shape, _) = training(den_name);
        let (_, x) = npy(x_name);
        let machine = MachineKind::parse(case["machine"].as_str().unwrap()).unwrap();
        let boundary = Boundary::parse(case["boundary"].as_str().unwrap()).unwrap();
        let p = case["patch"].as_u64().unwrap() as usize;
        let ab = NoiseSchedule::cosine().alpha_bar(case["t"].as_f64().unwrap());
        let (row, col) = (case["pixel"][0].as_u64().unwrap() as usize, case["pixel"][1].as_u64().unwrap() as usize);
        let call = Call::new(machine, boundary, p.max(1), ab);
        let j = den.jacobian(&x, &call, row, col, &Control::none()).unwrap().expect("this machine has a Jacobian");
        let (dims, want) = npy(case["expected"].as_str().unwrap());
        assert_eq!(dims, vec![shape.c, shape.c, shape.h, shape.w]);
        assert_eq!(j.values.len(), want.len());
        let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        let what = format!("{machine:?} {boundary:?} P={p} pixel ({row}, {col}) of {den_name}");
        let mut worst = 0f64;
        for (i, (&got, &w)) in j.values.iter().zip(&want).enumerate() {
            let err = (got - w as f64).abs();
            assert!(!got.is_nan(), "{what}: NaN at {i}");
            // Float32 fixtures of a float64 difference quotient (h = 1e-5): the f32 rounding
            // of the expected value is 6e-8 of the largest, the quotient's own error up to
            // ~6e-7 of it where the weights are sharp (measured worst: 5.5e-8 at |J| = 0.09).
            assert!(err <= 1e-8 + 2e-6 * scale, "{what}: entry {i} is {got}, the reference says {w}");
            worst = worst.max(err);
            if w == 0.0 && (machine == MachineKind::Els || machine == MachineKind::Local) {
                // Outside the window the engine writes nothing, not merely something small.
                assert!(got.abs() <= 1e-8 + 2e-6 * scale, "{what}: {got} outside the window at {i}");
            }
        }
        eprintln!("{what}: largest |J| {scale:.3e}, worst error {worst:.1e}");
        checked += 1;
        informative += (scale > 1e-3) as usize;
    }
    assert_eq!(checked, cases.len());
    assert!(checked >= 21 && informative >= 16, "{checked} cases, {informative} with a visible Jacobian");
}

/// Outside its window a patch machine's pixel reads nothing: J there is exactly zero, and the
/// window's entries carry the whole response.
#[test]
fn a_patch_machines_jacobian_lives_in_its_window() {
    let (mut den, shape, _) = training("mnist12_train.npy");
    let (_, x) = npy("mnist12_t0.5_P7_noise_x.npy");
    let ab = NoiseSchedule::cosine().alpha_bar(0.5);
    for (machine, p) in [(MachineKind::Els, 7usize), (MachineKind::Local, 5)] {
        let call = Call::new(machine, Boundary::Zeros, p, ab);
        let (row, col) = (12, 15);
        let j = den.jacobian(&x, &call, row, col, &Control::none()).unwrap().unwrap();
        let r = (p / 2) as isize;
        let mut inside = 0f64;
        for h in 0..shape.h {
            for w in 0..shape.w {
                let v = j.at(0, 0, h, w);
                if (h as isize - row as isize).abs() > r || (w as isize - col as isize).abs() > r {
                    assert_eq!(v, 0.0, "{machine:?}: ({h}, {w}) is outside the window");
                } else {
                    inside += v.abs();
                }
            }
        }
        assert!(inside > 1e-3, "{machine:?}: the window carries {inside}");
        assert_eq!(j.map(0).len(), shape.pixels());
    }
}

#[test]
fn inspect_writes_the_jacobian_and_says_which_machines_have_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("J.npy");
    let o = out.to_str().unwrap();
    let x = fixtures().join("mnist12_t0.5_P7_noise_x.npy");
    let train = fixtures().join("mnist12_train.npy");
    let args = |machine: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "inspect",
            "--dataset",
            train.to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--t",
            "0.5",
            "--machine",
            machine,
            "--patch",
            "5",
            "--pixel",
            "14,13",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>| morphogen_at(BIN, &v.iter().map(String::as_str).collect::<Vec<_>>());
    let done = run(args("els", &["--jacobian", o]));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let (dims, values) = morphogen::data::read_npy_f32(&out).unwrap();
    assert_eq!(dims, vec![1, 1, 28, 28]);
    let (want_dims, want) = npy("jacobian_mnist12_els_zeros_P5_14_13.npy");
    assert_eq!(dims, want_dims);
    let scale = want.iter().fold(0f32, |m, &v| m.max(v.abs()));
    for (g, w) in values.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * scale + 1e-6, "{g} vs {w}");
    }
    // Not over an existing file without --force.
    let again = run(args("els", &["--jacobian", o]));
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && e.contains("J.npy") && e.contains("exists"), "{e}");
    assert!(run(args("els", &["--jacobian", o, "--force"])).status.success());
    // A machine without a closed form here yet says so in one line and writes nothing.
    let other = dir.path().join("G.npy");
    let none = run(args("pspc", &["--jacobian", other.to_str().unwrap()]));
    let e = String::from_utf8_lossy(&none.stderr);
    assert!(!none.status.success() && e.contains("no Jacobian") && e.lines().count() == 1, "{e}");
    assert!(!other.exists());
}

/// The CNN's Jacobian through burn's autodiff: central finite differences of its own x̂₀
/// (exact up to float32 rounding, the network being piecewise linear in x_t), and exactly zero
/// outside its receptive field. For both shipped MNIST networks: the ResNet, whose 17-pixel
/// field leaves most of the image at zero, and the UNet, whose field covers all of it (its
/// downsampling, concatenation and crop go through autodiff too).
#[test]
fn the_cnns_jacobian_matches_finite_differences_inside_its_receptive_field() {
    let unet = repo_root().join("assets/models/mnist-unet.mgcnn");
    let (mut compared, mut zero) = (Vec::new(), Vec::new());
    for weights in [None, Some(unet.as_path())] {
        let (mut den, shape, _) = training("mnist12_train.npy");
        morphogen::engine::machines::cnn::attach(&mut den, Some("mnist"), weights);
        let (_, x) = npy("mnist12_t0.5_P7_noise_x.npy");
        let call = Call::new(MachineKind::Cnn, Boundary::Zeros, 1, NoiseSchedule::cosine().alpha_bar(0.5));
        let (row, col) = (14, 13);
        let j = den.jacobian(&x, &call, row, col, &Control::none()).unwrap().expect("the CNN has a Jacobian");
        assert_eq!(j.values.len(), shape.len() * shape.c);
        let field = den.cnn().unwrap().header.shape.receptive_field();
        let r = field / 2;
        let mut x0 = |x: &[f32]| den.denoise(x, &call, &mut Control::none()).unwrap().x0[row * shape.w + col] as f64;
        let own = x0(&x);
        assert!(own.abs() < 1.0, "x̂₀ {own} is clamped: pick a pixel whose Jacobian is not zero");
        let h = 1e-3f32;
        let (mut inside, mut checked, mut outside, mut worst, mut kinks) = (0f64, 0, 0, 0f64, 0);
        let scale = j.values.iter().fold(0f64, |m, v| m.max(v.abs()));
        for y in 0..shape.h {
            for xx in 0..shape.w {
                let v = j.at(0, 0, y, xx);
                assert!(!v.is_nan(), "NaN at ({y}, {xx})");
                if y.abs_diff(row) > r || xx.abs_diff(col) > r {
                    assert_eq!(v, 0.0, "({y}, {xx}) is outside the {field}-pixel receptive field");
                    outside += 1;
                    continue;
                }
                inside += v.abs();
                let p = y * shape.w + xx;
                let (mut up, mut down) = (x.clone(), x.clone());
                up[p] += h;
                down[p] -= h;
                let fd = (x0(&up) - x0(&down)) / (2.0 * h as f64);
                assert!(fd.is_finite(), "({y}, {xx}): finite differences give {fd}");
                // float32 x̂₀ over a 2e-3 step: ~1e-4 of rounding (measured worst 3.8e-4).
                // A ReLU that turns within ±h mixes two linear pieces in the central
                // difference; autodiff's piece is then the one on the side without the turn.
                if (fd - v).abs() > 2e-3 + 1e-2 * v.abs() {
                    let mid = x0(&x);
                    let sides = [(x0(&up) - mid) / h as f64, (mid - x0(&down)) / h as f64];
                    assert!(sides.iter().all(|s| s.is_finite()), "({y}, {xx}): one-sided {sides:?}");
                    let side = sides.iter().map(|s| (s - v).abs()).fold(f64::INFINITY, f64::min);
                    assert!(
                        side <= 4e-3 + 1e-2 * v.abs(),
                        "({y}, {xx}): autodiff {v}, finite differences {fd}, one-sided {sides:?}"
                    );
                    kinks += 1;
                } else {
                    worst = worst.max((fd - v).abs());
                }
                checked += 1;
            }
        }
        let rows = (row.saturating_sub(r)..=(row + r).min(shape.h - 1)).count();
        let cols = (col.saturating_sub(r)..=(col + r).min(shape.w - 1)).count();
        assert!(inside > 0.05, "the receptive field carries {inside}");
        assert_eq!(checked, rows * cols, "every entry of the receptive field is compared");
        assert!(kinks * 100 <= checked, "{kinks} of {checked} entries only matched on one side");
        eprintln!(
            "CNN Jacobian ({field} px field): {checked} entries within tolerance, worst {worst:.1e} (central), \
             {kinks} at a ReLU's turn, largest |J| {scale:.3}"
        );
        compared.push(checked);
        zero.push(outside);
    }
    assert_eq!(compared, [17 * 17, 28 * 28], "the ResNet's window, the UNet's whole image");
    assert_eq!(zero, [28 * 28 - 17 * 17, 0]);
}
