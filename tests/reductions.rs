//! The identities SCIENCE.md pins, on the CPU backend.

mod common;

use common::*;
use morphogen::engine::{Boundary, Call, Control, Denoiser, ElsPath, ImageShape, MachineKind, NoiseSchedule};

fn set(n: usize, shape: ImageShape, seed: u64) -> Denoiser {
    Denoiser::new(&random_set(n, shape, seed), n, shape, &burn::tensor::Device::flex())
}

fn run(den: &mut Denoiser, x: &[f32], machine: MachineKind, boundary: Boundary, p: usize, ab: f64) -> Vec<f32> {
    den.denoise(x, &Call::new(machine, boundary, p, ab), &mut Control::none()).unwrap().x0
}

const SHAPES: [ImageShape; 2] = [ImageShape { c: 1, h: 8, w: 8 }, ImageShape { c: 3, h: 8, w: 9 }];

#[test]
fn els_without_equivariance_is_ls() {
    for shape in SHAPES {
        let mut den = set(20, shape, 1);
        let x = random_set(1, shape, 2);
        for p in [3, 5] {
            let els = den
                .els(&x, &Call::new(MachineKind::Els, Boundary::Zeros, p, 0.4), false, &mut Control::none())
                .unwrap()
                .x0;
            let ls = run(&mut den, &x, MachineKind::Local, Boundary::Zeros, p, 0.4);
            let d = max_abs_diff(&els, &ls);
            assert!(d < 1e-4, "{shape:?} P={p}: {d}");
        }
    }
}

#[test]
fn els_zeros_with_p_beyond_the_image_is_ls() {
    let shape = ImageShape { c: 1, h: 8, w: 8 };
    let mut den = set(20, shape, 3);
    let x = random_set(1, shape, 4);
    let els = run(&mut den, &x, MachineKind::Els, Boundary::Zeros, 9, 0.4);
    let ls = run(&mut den, &x, MachineKind::Local, Boundary::Zeros, 9, 0.4);
    assert!(max_abs_diff(&els, &ls) < 1e-4);
}

#[test]
fn ls_with_p_at_least_2h_minus_1_is_is() {
    for shape in SHAPES {
        let mut den = set(20, shape, 5);
        let x = random_set(1, shape, 6);
        let ls = run(&mut den, &x, MachineKind::Local, Boundary::Zeros, 2 * shape.h.max(shape.w) - 1, 0.4);
        let is = run(&mut den, &x, MachineKind::Ideal, Boundary::Zeros, 0, 0.4);
        let d = max_abs_diff(&ls, &is);
        assert!(d < 1e-4, "{shape:?}: {d}");
        // and it is not trivially so: a small window gives something else
        let ls3 = run(&mut den, &x, MachineKind::Local, Boundary::Zeros, 3, 0.4);
        assert!(max_abs_diff(&ls3, &is) > 1e-2);
    }
}

#[test]
fn circular_els_commutes_with_circular_shifts() {
    for shape in SHAPES {
        let mut den = set(15, shape, 7);
        let x = random_set(1, shape, 8);
        let roll = |img: &[f32]| -> Vec<f32> {
            let mut out = vec![0f32; img.len()];
            for c in 0..shape.c {
                for y in 0..shape.h {
                    for x in 0..shape.w {
                        let (ny, nx) = ((y + 2) % shape.h, (x + 3) % shape.w);
                        out[c * shape.pixels() + ny * shape.w + nx] = img[c * shape.pixels() + y * shape.w + x];
                    }
                }
            }
            out
        };
        let a = run(&mut den, &roll(&x), MachineKind::Els, Boundary::Circular, 3, 0.4);
        let b = roll(&run(&mut den, &x, MachineKind::Els, Boundary::Circular, 3, 0.4));
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-4, "{shape:?}: {d}");
        // zeros ELS is not shift-equivariant (the border breaks it)
        let za = run(&mut den, &roll(&x), MachineKind::Els, Boundary::Zeros, 3, 0.4);
        let zb = roll(&run(&mut den, &x, MachineKind::Els, Boundary::Zeros, 3, 0.4));
        assert!(max_abs_diff(&za, &zb) > 1e-3);
    }
}

#[test]
fn equivariant_is_ideal_over_every_shift() {
    let shape = ImageShape { c: 1, h: 5, w: 6 };
    let n = 4;
    let train = random_set(n, shape, 9);
    let mut rolled = Vec::new();
    for k in 0..n {
        let img = &train[k * shape.len()..(k + 1) * shape.len()];
        for sy in 0..shape.h {
            for sx in 0..shape.w {
                for y in 0..shape.h {
                    for x in 0..shape.w {
                        rolled.push(img[((y + shape.h - sy) % shape.h) * shape.w + (x + shape.w - sx) % shape.w]);
                    }
                }
            }
        }
    }
    let dev = burn::tensor::Device::flex();
    let mut es = Denoiser::new(&train, n, shape, &dev);
    let mut is = Denoiser::new(&rolled, n * shape.pixels(), shape, &dev);
    let x = random_set(1, shape, 10);
    let a = run(&mut es, &x, MachineKind::Equivariant, Boundary::Zeros, 0, 0.3);
    let b = run(&mut is, &x, MachineKind::Ideal, Boundary::Zeros, 0, 0.3);
    assert!(max_abs_diff(&a, &b) < 1e-4);
}

#[test]
fn weights_sum_to_one_and_match_the_device_path() {
    for shape in SHAPES {
        let n = 12;
        let train = random_set(n, shape, 11);
        let mut den = Denoiser::new(&train, n, shape, &burn::tensor::Device::flex());
        let x = random_set(1, shape, 12);
        for (machine, boundary, p) in [
            (MachineKind::Els, Boundary::Zeros, 5),
            (MachineKind::Els, Boundary::Circular, 3),
            (MachineKind::Local, Boundary::Zeros, 3),
            (MachineKind::Ideal, Boundary::Zeros, 1),
            (MachineKind::Equivariant, Boundary::Zeros, 1),
        ] {
            let call = Call::new(machine, boundary, p, 0.5);
            let device = den.denoise(&x, &call, &mut Control::none()).unwrap().x0;
            for (y, px) in [(0, 0), (3, 4), (shape.h - 1, shape.w - 2)] {
                let ins = den.inspect(&x, &call, y, px, usize::MAX, &Control::none()).unwrap();
                assert!((ins.weight_sum - 1.0).abs() < 1e-9, "{machine:?}: {}", ins.weight_sum);
                // Σ w·(voted pixel) on the host equals the device's x̂₀ at that pixel
                let hw = shape.pixels();
                for c in 0..shape.c {
                    let host: f64 = ins
                        .votes
                        .iter()
                        .map(|v| {
                            let img = &train[v.image * shape.len()..];
                            // for every machine, (y, x) is the training pixel that lands here
                            let src = v.y * shape.w + v.x;
                            v.weight * img[c * hw + src] as f64
                        })
                        .sum();
                    let dev = device[c * hw + y * shape.w + px] as f64;
                    assert!(
                        (host - dev).abs() < 1e-4,
                        "{machine:?} {boundary:?} pixel ({y},{px}) c{c}: host {host} device {dev}"
                    );
                }
            }
        }
    }
}

#[test]
fn ideal_at_tiny_noise_returns_the_nearest_training_image() {
    let shape = ImageShape { c: 1, h: 10, w: 10 };
    let n = 30;
    let train = random_set(n, shape, 13);
    let mut den = Denoiser::new(&train, n, shape, &burn::tensor::Device::flex());
    let ab = NoiseSchedule::cosine().alpha_bar(0.02);
    let noise = morphogen::engine::sampling::noise::gaussian(14, 0, shape.len());
    let k = 17;
    let x: Vec<f32> = (0..shape.len())
        .map(|i| (ab.sqrt() * train[k * 100 + i] as f64 + (1.0 - ab).sqrt() * noise[i] as f64) as f32)
        .collect();
    let out = run(&mut den, &x, MachineKind::Ideal, Boundary::Zeros, 0, ab);
    assert!(max_abs_diff(&out, &train[k * 100..(k + 1) * 100]) < 1e-4);
    assert_eq!(den.nearest_training(&out).0, k);
}

#[test]
fn entropy_is_zero_for_one_candidate_and_log_n_for_equal_ones() {
    let shape = ImageShape { c: 1, h: 4, w: 4 };
    // every image identical: all N candidates tie, so the ideal machine's entropy is ln N
    let img = random_set(1, shape, 15);
    let n = 8;
    let train: Vec<f32> = img.iter().copied().cycle().take(n * shape.len()).collect();
    let mut den = Denoiser::new(&train, n, shape, &burn::tensor::Device::flex());
    let mut call = Call::new(MachineKind::Ideal, Boundary::Zeros, 1, 0.5);
    call.entropy = true;
    let e = den.denoise(&random_set(1, shape, 16), &call, &mut Control::none()).unwrap().entropy;
    assert!((e as f64 - (n as f64).ln()).abs() < 1e-3, "{e}");
}

/// ELS with zero padding straight from its definition, in f64: each distance is a sum of
/// squared differences over the window's in-image pixels, against the training positions whose
/// window overhangs their image as the pixel's does. The kernels and the burn-ops path both
/// expand ‖q − a·k‖² = ‖q‖² − 2a·q·k + a²‖k‖²; this path does not, so an error they share
/// cannot cancel out of the comparison.
fn els_zeros_direct(train: &[f32], n: usize, s: ImageShape, x: &[f32], p: usize, alpha_bar: f64) -> Vec<f64> {
    let (r, h, w, c, hw) = ((p / 2) as isize, s.h as isize, s.w as isize, s.c, s.pixels());
    let overhang =
        |y: isize, x: isize| ((r - y).max(0), (y + r - (h - 1)).max(0), (r - x).max(0), (x + r - (w - 1)).max(0));
    let at = |ch: usize, y: isize, x: isize| ch * hw + (y * w + x) as usize;
    let (a, two_s2) = (alpha_bar.sqrt(), 2.0 * (1.0 - alpha_bar));
    let mut out = vec![0f64; c * hw];
    for y in 0..h {
        for xx in 0..w {
            let (mut logits, mut centres) = (Vec::new(), Vec::new());
            for img in train.chunks_exact(s.len()).take(n) {
                for i in 0..h {
                    for j in 0..w {
                        if overhang(i, j) != overhang(y, xx) {
                            continue;
                        }
                        let mut d = 0f64;
                        for ch in 0..c {
                            for dy in -r..=r {
                                for dx in -r..=r {
                                    // Same overhang: the query's and the key's pixel are in the
                                    // image together or out of it together.
                                    let (qy, qx) = (y + dy, xx + dx);
                                    if qy < 0 || qy >= h || qx < 0 || qx >= w {
                                        continue;
                                    }
                                    let diff = x[at(ch, qy, qx)] as f64 - a * img[at(ch, i + dy, j + dx)] as f64;
                                    d += diff * diff;
                                }
                            }
                        }
                        logits.push(-d / two_s2);
                        centres.push((0..c).map(|ch| img[at(ch, i, j)] as f64).collect::<Vec<_>>());
                    }
                }
            }
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
            let z: f64 = weights.iter().sum();
            for ch in 0..c {
                out[at(ch, y, xx)] = weights.iter().zip(&centres).map(|(wt, v)| wt * v[ch]).sum::<f64>() / z;
            }
        }
    }
    out
}

#[test]
fn fused_cpu_kernel_and_burn_ops_match_each_other_and_a_direct_difference_of_squares() {
    let mut direct_cases = 0;
    for shape in SHAPES {
        let n = 25;
        let train = random_set(n, shape, 17);
        let x = random_set(1, shape, 18);
        let mut fused = Denoiser::new(&train, n, shape, &burn::tensor::Device::flex());
        let mut ops = Denoiser::new(&train, n, shape, &burn::tensor::Device::flex());
        assert_eq!(fused.els_path, ElsPath::HostKernel, "the CPU backend uses the fused kernel by default");
        ops.els_path = ElsPath::BurnOps;
        // tiny chunks so both paths stream through several of them
        fused.cache_budget_bytes = 0;
        ops.chunk_logits = 512;
        for (boundary, p) in [(Boundary::Zeros, 3), (Boundary::Zeros, 7), (Boundary::Circular, 5)] {
            let mut call = Call::new(MachineKind::Els, boundary, p, 0.3);
            call.entropy = true;
            let a = fused.denoise(&x, &call, &mut Control::none()).unwrap();
            let b = ops.denoise(&x, &call, &mut Control::none()).unwrap();
            let d = max_abs_diff(&a.x0, &b.x0);
            assert!(d < 1e-4, "{shape:?} {boundary:?} P={p}: {d}");
            assert!((a.entropy - b.entropy).abs() < 1e-3, "entropy {} vs {}", a.entropy, b.entropy);
            assert!(a.entropy > 0.0);
            if boundary == Boundary::Zeros {
                let want: Vec<f32> = els_zeros_direct(&train, n, shape, &x, p, 0.3).iter().map(|&v| v as f32).collect();
                for (path, got) in [("fused", &a.x0), ("burn ops", &b.x0)] {
                    let d = max_abs_diff(got, &want);
                    assert!(d < 1e-4, "{path} vs the direct sum, {shape:?} P={p}: {d}");
                }
                direct_cases += 1;
            }
        }
    }
    assert_eq!(direct_cases, 2 * SHAPES.len(), "every zero-padded case met the direct path");
}

#[test]
fn a_cancelled_call_stops_at_a_chunk_boundary() {
    let shape = ImageShape { c: 1, h: 12, w: 12 };
    let n = 200;
    let mut den = Denoiser::new(&random_set(n, shape, 19), n, shape, &burn::tensor::Device::flex());
    let token = morphogen::engine::CancelToken::new();
    let mut chunks = 0;
    let mut progress = |done: usize, _total: usize| {
        chunks = done;
        if done == 2 {
            token.cancel();
        }
    };
    let call = Call::new(MachineKind::Els, Boundary::Zeros, 3, 0.5);
    let result = den.denoise(&random_set(1, shape, 20), &call, &mut Control::new(&token, Some(&mut progress)));
    assert_eq!(result, Err(morphogen::engine::Cancelled));
    assert_eq!(chunks, 2, "stopped right after the chunk that saw the cancel");
}

/// The tolerance helper every golden and reduction test uses must not let NaN or infinity
/// through: `max(0, NaN)` is 0 in `f64::max`.
#[test]
fn max_abs_diff_sees_nan_and_infinity() {
    assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
    assert!(max_abs_diff(&[1.0, f32::NAN, 3.0], &[1.0, 2.0, 3.0]).is_nan());
    assert!(max_abs_diff(&[f32::NAN, 1.0], &[0.0, 9.0]).is_nan(), "a NaN before a larger difference");
    assert!(max_abs_diff(&[1.0, 2.0], &[1.0, f32::NAN]).is_nan());
    assert_eq!(max_abs_diff(&[f32::INFINITY], &[0.0]), f64::INFINITY);
    // What the tests write, `err < tol`, is false for NaN: the assertion fails.
    let passes = |err: f64| err < 1e-3;
    assert!(!passes(max_abs_diff(&[f32::NAN], &[0.0])), "a NaN must fail `err < tol`");
    assert!(passes(max_abs_diff(&[0.5], &[0.5])));
}
