//! The fused ELS op (`engine::kernels::op`) against an exact f64 softmax, and the engine's op path
//! against the burn-ops path. Every check runs on the CPU backend (the op's flex body) in CI;
//! the `gpu_` variants run the same checks through the cubecl kernel on any wgpu adapter
//! (`cargo test --release --test els_op -- --ignored`; Mesa's lavapipe will do).

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use morphogen::engine::kernels::op::{self as els_op, Block, OpParams};
use morphogen::engine::{Boundary, Call, Control, Denoiser, ElsPath, ImageShape, MachineKind};

/// A hand-built op input: `n` images of `len` values (+ zero slot), `q` queries of width d,
/// key rows of random flat indices (some pointing at the zero slot).
#[derive(Clone)]
struct Case {
    n: usize,
    len: usize,
    c: usize,
    p: usize,
    images: Vec<f32>,
    queries: Vec<f32>,
    key_idx: Vec<i64>,
    blocks: Vec<Block>,
}

impl Case {
    fn d(&self) -> usize {
        self.c * self.p * self.p
    }
    fn q(&self) -> usize {
        self.queries.len() / self.d()
    }

    /// Random case: `q` queries over blocks of at most 64 sharing `kn` key positions, or
    /// (`singles`) one key row per query.
    fn random(n: usize, c: usize, p: usize, q: usize, kn: usize, singles: bool, seed: u64) -> Self {
        let len = c * 40;
        let d = c * p * p;
        let g = morphogen::engine::sampling::noise::gaussian(seed, 3, n * (len + 1) + q * d + 1);
        let mut images: Vec<f32> = g[..n * (len + 1)].iter().map(|v| v * 0.5).collect();
        for k in 0..n {
            images[k * (len + 1) + len] = 0.0; // the zero slot
        }
        let queries: Vec<f32> = g[n * (len + 1)..n * (len + 1) + q * d].iter().map(|v| v * 0.5).collect();
        let rows = if singles { q } else { kn };
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let key_idx: Vec<i64> = (0..rows * d).map(|_| (next() % (len + 1)) as i64).collect();
        let mut blocks = Vec::new();
        for q0 in (0..q).step_by(64) {
            let qn = 64.min(q - q0);
            blocks.push(if singles {
                Block { q0, qn, k0: q0, kn: 1, kstride: 1 }
            } else {
                Block { q0, qn, k0: 0, kn, kstride: 0 }
            });
        }
        Self { n, len, c, p, images, queries, key_idx, blocks }
    }

    /// (x̂₀ − m [Q, C], entropy [Q]) through the op on `device`.
    fn run(&self, device: &Device, a: f64, s2: f64, splits: usize) -> (Vec<f32>, Vec<f32>) {
        let (d, q) = (self.d(), self.q());
        let images = Tensor::<2>::from_data(TensorData::new(self.images.clone(), [self.n, self.len + 1]), device);
        let queries = Tensor::<2>::from_data(TensorData::new(self.queries.clone(), [q, d]), device);
        let kpos = self.key_idx.len() / d;
        let key_idx = Tensor::<2, Int>::from_data(TensorData::new(self.key_idx.clone(), [kpos, d]), device);
        let rows: Vec<i64> = self.blocks.iter().flat_map(Block::row).collect();
        let blocks = Tensor::<2, Int>::from_data(TensorData::new(rows, [self.blocks.len(), 5]), device);
        // No fewer splits than lavapipe's loop limit needs (see `els_op::MAX_UNIT_TERMS`).
        let max_keys = self.blocks.iter().map(|b| self.n * b.kn).max().unwrap_or(0);
        let splits = splits.max(els_op::min_splits(max_keys, d));
        let params = OpParams {
            a: a as f32,
            inv_two_s2: (0.5 / s2) as f32,
            splits,
            channels: self.c,
            patch: self.p,
            counted: false,
            align: 1,
            skip_margin: None,
        };
        let (out, ent) = els_op::merge(els_op::els_partials(images, queries, key_idx, blocks, None, params), false);
        (out.try_into_vec_as::<f32>().unwrap(), ent.try_into_vec_as::<f32>().unwrap())
    }

    /// The same in f64, straight from the definition.
    fn exact(&self, a: f64, s2: f64) -> (Vec<f64>, Vec<f64>) {
        let (d, c, p) = (self.d(), self.c, self.p);
        let r = p / 2;
        let mut out = vec![0f64; self.q() * c];
        let mut ent = vec![0f64; self.q()];
        for b in &self.blocks {
            for u in 0..b.qn {
                let qi = b.q0 + u;
                let q = &self.queries[qi * d..(qi + 1) * d];
                let mut logits = Vec::new();
                let mut values = Vec::new();
                for img in 0..self.n {
                    let row = &self.images[img * (self.len + 1)..(img + 1) * (self.len + 1)];
                    for j in 0..b.kn {
                        let krow = &self.key_idx[(b.k0 + u * b.kstride + j) * d..][..d];
                        let dist: f64 =
                            krow.iter().zip(q).map(|(&i, &qv)| (qv as f64 - a * row[i as usize] as f64).powi(2)).sum();
                        logits.push(-dist / (2.0 * s2));
                        values.push(
                            (0..c).map(|ch| row[krow[ch * p * p + r * p + r] as usize] as f64).collect::<Vec<_>>(),
                        );
                    }
                }
                if logits.is_empty() {
                    continue;
                }
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for ch in 0..c {
                    out[qi * c + ch] = w.iter().zip(&values).map(|(w, v)| w * v[ch]).sum::<f64>() / z;
                }
                ent[qi] = -w.iter().map(|w| w / z).filter(|&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>();
            }
        }
        (out, ent)
    }
}

fn assert_close(got: &[f32], want: &[f64], rel: f64, what: &str) {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g}");
        assert!((g as f64 - w).abs() <= rel * scale, "{what}[{i}]: {g} vs {w} (scale {scale})");
    }
}

fn matches_exact_softmax(device: &Device) {
    // 100 queries (64 + 36), 61 images × 17 positions = 1037 keys: no size a multiple of a tile.
    for (c, p, seed) in [(1, 3, 1), (3, 3, 2), (1, 5, 3)] {
        let case = Case::random(61, c, p, 100, 17, false, seed);
        for (a, s2) in [(0.8, 0.36), (0.3, 0.91)] {
            let (out, ent) = case.run(device, a, s2, 5);
            let (want, went) = case.exact(a, s2);
            assert_close(&out, &want, 1e-5, &format!("x0 C={c} P={p} a={a}"));
            assert_close(&ent, &went, 1e-4, &format!("entropy C={c} P={p} a={a}"));
        }
    }
    // Keys too wide for a shared-memory tile (C·P² = 3267 > 3072 floats): read from global.
    // Tolerance 5e-4: a distance summed over 3267 squares in f32 carries ~4e-3 of rounding
    // (and the flex body's ‖k‖² expansion a little more).
    let case = Case::random(20, 3, 33, 70, 3, false, 8);
    assert_eq!(morphogen::engine::kernels::gpu::tile_keys(case.d()), 0);
    let (out, _) = case.run(device, 0.6, 0.64, 2);
    assert_close(&out, &case.exact(0.6, 0.64).0, 5e-4, "wide keys");
    // 600 keys × 147 in one split would pass lavapipe's 65535-iteration loop limit: the
    // split count is raised so no unit sums more than MAX_UNIT_TERMS terms.
    let case = Case::random(200, 3, 7, 20, 3, false, 10);
    let (out, _) = case.run(device, 0.6, 0.64, 1);
    assert_close(&out, &case.exact(0.6, 0.64).0, 1e-5, "long key ranges");
    // An index table over 8192 entries (60 × 147): wgpu pads the rows of such 2-D uploads,
    // which reading it as flat rows of D got wrong.
    let case = Case::random(9, 3, 7, 80, 60, false, 9);
    let (out, _) = case.run(device, 0.6, 0.64, 3);
    assert_close(&out, &case.exact(0.6, 0.64).0, 1e-5, "padded rows");
    // Singleton rows: each query its own key position (the Local machine's layout).
    let case = Case::random(50, 3, 3, 70, 1, true, 4);
    let (out, _) = case.run(device, 0.7, 0.5, 3);
    assert_close(&out, &case.exact(0.7, 0.5).0, 1e-5, "singletons");
}

fn tiny_and_huge_sigma(device: &Device) {
    let case = Case::random(40, 1, 3, 30, 5, false, 5);
    // σ² = 1e−9: the nearest key's centre, exactly, and no NaN.
    let (out, ent) = case.run(device, 0.9, 1e-9, 4);
    let (want, _) = case.exact(0.9, 1e-9);
    for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
        assert_eq!(g, w as f32, "query {i}: nearest neighbour's centre");
    }
    assert!(ent.iter().all(|e| e.is_finite() && *e < 1e-3), "{ent:?}");
    // σ² = 1e9: the plain mean of the centres.
    let (out, ent) = case.run(device, 0.9, 1e9, 4);
    let kn = 5;
    for (qi, &g) in out.iter().enumerate() {
        let mut sum = 0f64;
        for img in 0..case.n {
            for j in 0..kn {
                let krow = &case.key_idx[j * 9..][..9];
                sum += case.images[img * (case.len + 1) + krow[4] as usize] as f64;
            }
        }
        let mean = sum / (case.n * kn) as f64;
        assert!((g as f64 - mean).abs() < 1e-5, "query {qi}: {g} vs mean {mean}");
    }
    let ln_k = ((case.n * kn) as f64).ln();
    assert!(ent.iter().all(|&e| (e as f64 - ln_k).abs() < 1e-3), "entropy should be ln K = {ln_k}: {ent:?}");
}

fn splits_and_key_order_do_not_matter(device: &Device) {
    let case = Case::random(37, 3, 3, 90, 11, false, 6);
    let (base, base_e) = case.run(device, 0.6, 0.64, 1);
    for splits in [2, 3, 7, 64, 500] {
        let (out, ent) = case.run(device, 0.6, 0.64, splits);
        assert_close(&out, &base.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5, &format!("splits {splits}"));
        assert_close(&ent, &base_e.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5, "entropy");
    }
    // Reverse the images: the same keys in another order.
    let mut reversed = case.clone();
    reversed.images = case.images.chunks(case.len + 1).rev().flatten().copied().collect();
    let (out, _) = reversed.run(device, 0.6, 0.64, 4);
    assert_close(&out, &base.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5, "reversed key order");
}

fn one_key_and_empty_groups(device: &Device) {
    // Block 0: 3 queries over one key position in one image; block 1: 2 queries, no keys.
    let mut case = Case::random(1, 1, 3, 5, 1, false, 7);
    case.blocks =
        vec![Block { q0: 0, qn: 3, k0: 0, kn: 1, kstride: 0 }, Block { q0: 3, qn: 2, k0: 0, kn: 0, kstride: 0 }];
    let (out, ent) = case.run(device, 0.5, 0.75, 3);
    let centre = case.images[case.key_idx[4] as usize];
    assert_eq!(&out[..3], &[centre; 3], "one key: its centre");
    assert_eq!(&out[3..], &[0.0, 0.0], "no key: x̂₀ = the mean (0 once centred)");
    assert!(ent.iter().all(|&e| e == 0.0), "{ent:?}");
}

/// The engine through the op against the burn-ops path: ELS (both boundaries, P small to
/// beyond the image), LS and the Local machine.
fn engine_op_path_matches_burn_ops(device: &Device) {
    for shape in [ImageShape { c: 1, h: 9, w: 11 }, ImageShape { c: 3, h: 8, w: 8 }] {
        let n = 23;
        let train = random_set(n, shape, 21);
        let x = random_set(1, shape, 22);
        let mut op = Denoiser::new(&train, n, shape, device);
        op.els_path = ElsPath::Op;
        let mut ops = Denoiser::new(&train, n, shape, &Device::flex());
        ops.els_path = ElsPath::BurnOps;
        for (machine, boundary, p) in [
            (MachineKind::Els, Boundary::Zeros, 3),
            (MachineKind::Els, Boundary::Zeros, 7),
            (MachineKind::Els, Boundary::Zeros, 15),
            (MachineKind::Els, Boundary::Circular, 5),
            (MachineKind::Els, Boundary::Circular, 9),
            (MachineKind::Local, Boundary::Zeros, 5),
        ] {
            for ab in [0.05, 0.5, 0.95] {
                let mut call = Call::new(machine, boundary, p, ab);
                call.entropy = true;
                let a = op.denoise(&x, &call, &mut Control::none()).unwrap();
                let b = ops.denoise(&x, &call, &mut Control::none()).unwrap();
                let what = format!("{machine:?} {boundary:?} P={p} ᾱ={ab} {shape:?}");
                let err = max_abs_diff(&a.x0, &b.x0);
                // Both sides here expand ‖q − a·k‖² (flex body and burn matmul alike), which
                // costs some f32 digits at small σ; the op-level tests hold 1e-5 against f64.
                assert!(err < 1e-4, "{what}: x0 differs by {err}");
                assert!(
                    (a.entropy - b.entropy).abs() < 1e-3 * b.entropy.max(1.0),
                    "{what}: {} vs {}",
                    a.entropy,
                    b.entropy
                );
            }
        }
    }
}

/// A call cut into many launches equals the one-launch call and the CPU kernel, a cancel
/// lands between launches, and a geometry the adapter cannot bind or hold in its memory, or
/// a device error, falls back to the CPU kernel with one notice.
fn launches_cancel_and_fall_back(device: &Device) {
    use morphogen::engine::CancelToken;
    use morphogen::engine::kernels::gpu::AdapterLimits;
    let shape = ImageShape { c: 1, h: 20, w: 20 };
    let n = 40;
    let train = random_set(n, shape, 31);
    let x = random_set(1, shape, 32);
    let mut call = Call::new(MachineKind::Els, Boundary::Zeros, 5, 0.5);
    call.entropy = true;
    call.maps = true;
    let mut cpu = Denoiser::new(&train, n, shape, &Device::flex());
    cpu.els_path = ElsPath::HostKernel;
    let want = cpu.denoise(&x, &call, &mut Control::none()).unwrap();
    let fresh = |limits: Option<AdapterLimits>| {
        let mut den = Denoiser::new(&train, n, shape, device);
        den.els_path = ElsPath::Op;
        den.adapter_limits = limits;
        den
    };
    let agree = |got: &morphogen::engine::Denoised, what: &str| {
        let err = max_abs_diff(&got.x0, &want.x0);
        assert!(err < 1e-5, "{what}: x0 differs by {err}");
        assert!((got.entropy - want.entropy).abs() < 1e-4, "{what}: entropy {} vs {}", got.entropy, want.entropy);
        let (g, w) = (got.maps.as_ref().unwrap(), want.maps.as_ref().unwrap());
        let same = g.winner.iter().zip(&w.winner).filter(|(a, b)| a == b).count();
        assert!(same * 100 >= 95 * w.winner.len(), "{what}: {same} of {} winners agree", w.winner.len());
    };
    // One launch, then launches cut by a 300 kB binding limit (a 64-query block needs ~200 kB).
    let mut one = fresh(None);
    let mut totals = Vec::new();
    let token = CancelToken::new();
    let mut seen = |_: usize, total: usize| totals.push(total);
    let got = one.denoise(&x, &call, &mut Control::new(&token, Some(&mut seen))).unwrap();
    agree(&got, "one launch");
    assert_eq!(totals.last(), Some(&1), "without a limit the call is one launch");
    let small = AdapterLimits { max_binding_bytes: 300_000, memory_bytes: None, software: false };
    let mut many = fresh(Some(small));
    let mut totals = Vec::new();
    let mut seen = |_: usize, total: usize| totals.push(total);
    let got = many.denoise(&x, &call, &mut Control::new(&token, Some(&mut seen))).unwrap();
    let notices = many.take_notices();
    assert!(notices.is_empty(), "the device ran it: {notices:?}");
    // The last `launches` reports are the launches (the first ones build the pixel groups).
    let launches = *totals.last().unwrap();
    let reports = totals.iter().rev().take_while(|&&t| t == launches).count();
    assert!(launches >= 3 && reports == launches, "{launches} launches, progress {totals:?}");
    agree(&got, "many launches");
    // A cancel after the first launch: the call stops there.
    let token = CancelToken::new();
    let mut done = 0;
    let mut cancel_after_one = |d: usize, _: usize| {
        done = d;
        token.cancel();
    };
    let out = many.denoise(&x, &call, &mut Control::new(&token, Some(&mut cancel_after_one)));
    assert!(out.is_err(), "cancelled between launches");
    assert_eq!(done, 1, "no launch after the cancel");
    // A block past the binding limit: refused for that geometry, computed on the CPU, said once.
    let tiny = AdapterLimits { max_binding_bytes: 100, memory_bytes: None, software: false };
    let mut refused = fresh(Some(tiny));
    agree(&refused.denoise(&x, &call, &mut Control::none()).unwrap(), "refused geometry");
    let notices = refused.take_notices();
    assert!(notices.len() == 1 && notices[0].contains("P = 5") && notices[0].contains("CPU"), "{notices:?}");
    agree(&refused.denoise(&x, &call, &mut Control::none()).unwrap(), "refused again");
    assert!(refused.take_notices().is_empty(), "said once");
    assert_eq!(refused.els_path, ElsPath::Op, "other geometries still try the device");
    // A geometry whose tables outgrow the GPU's memory (the 40 training images alone are
    // 64 kB): refused before anything is uploaded, computed on the CPU, said once.
    let small_card = AdapterLimits { max_binding_bytes: 1 << 30, memory_bytes: Some(100_000), software: false };
    let mut no_room = fresh(Some(small_card));
    agree(&no_room.denoise(&x, &call, &mut Control::none()).unwrap(), "out of GPU memory");
    let notices = no_room.take_notices();
    assert!(
        notices.len() == 1 && notices[0].contains("of the GPU's 0.1 MB") && notices[0].contains("CPU"),
        "{notices:?}"
    );
    let roomy = AdapterLimits { memory_bytes: Some(1 << 30), ..small_card };
    let mut fits = fresh(Some(roomy));
    agree(&fits.denoise(&x, &call, &mut Control::none()).unwrap(), "room on the GPU");
    assert!(fits.take_notices().is_empty(), "a 1 GiB card holds this geometry");
    // A device error mid-call: this call and every later one on the CPU, said once.
    let mut failing = fresh(None);
    failing.fail_next_launch = true;
    agree(&failing.denoise(&x, &call, &mut Control::none()).unwrap(), "device error");
    let notices = failing.take_notices();
    assert!(notices.len() == 1 && notices[0].contains("injected device error"), "{notices:?}");
    assert_eq!(failing.els_path, ElsPath::HostKernel);
}

/// The loop-limit guarantee at its edge. Mesa's llvmpipe stops any shader loop whose
/// iterations in one invocation pass 65535 (an inner loop's count runs on across the outer
/// loop's iterations) and returns what it has. The split count keeps every unit's distance
/// terms (keys × D, the largest loop) at most `MAX_UNIT_TERMS`, and every other loop runs
/// fewer times: the key loop K ≤ K·D, the staging loop K·D/64. Two cases sit exactly at the
/// bound: D = 1 with 60000 keys in one split (the key loop itself at 60000), and D = 147
/// with 408 keys per split (59976 terms). Both must give the exact softmax.
fn loop_limit_edge(device: &Device) {
    let mut case = Case::random(600, 1, 1, 64, 100, false, 12);
    assert_eq!(els_op::min_splits(600 * 100, case.d()), 1, "60000 one-value keys fit one split");
    // Query 0's exact match is the very last key (image 599, position 99): a loop cut short
    // misses it. At σ² = 1e−12 it outweighs every other key by e^100, so on the GPU (whose
    // logits are exact differences) the answer is its value to f32 rounding.
    let a = 0.9f32;
    case.key_idx[99] = 0;
    let last = 599 * (case.len + 1);
    case.images[last] = case.queries[0] / a;
    if *device != Device::flex() {
        let (out, _) = case.run(device, a as f64, 1e-12, 1);
        let want = case.images[last];
        assert!((out[0] - want).abs() < 1e-6, "query 0: {} vs its exact match {want}", out[0]);
    }
    // At a moderate σ the sums run over all 60000 keys in f32 (1e-4: their rounding).
    let (out, _) = case.run(device, 0.7, 0.4, 1);
    assert_close(&out, &case.exact(0.7, 0.4).0, 1e-4, "D = 1, 60000 keys in one split");
    let case = Case::random(8, 3, 7, 64, 102, false, 13);
    let keys = 8 * 102;
    assert_eq!(els_op::min_splits(keys, 147), 2, "816 keys × 147 need two splits of 408");
    assert!(keys / 2 * 147 <= els_op::MAX_UNIT_TERMS && (keys / 2 + 1) * 147 > els_op::MAX_UNIT_TERMS);
    // 2e-5: each distance sums 147 squares in f32.
    let (out, _) = case.run(device, 0.7, 0.4, 1);
    assert_close(&out, &case.exact(0.7, 0.4).0, 2e-5, "D = 147, 408 keys per split");
}

#[test]
fn op_loop_limit_edge() {
    loop_limit_edge(&Device::flex());
}

#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_op_loop_limit_edge() {
    loop_limit_edge(&gpu());
}

/// MNIST's repeated patches (the blank background above all) merged into one key with a
/// multiplicity: the same x̂₀, entropy and winners as the full bank, in a smaller bank.
/// Exact skipping on real patches: ELS on training digits noised late in a sample (where
/// most keys cannot count) gives what the dense sweep gives, maps included, while folding a
/// fraction of the keys; early, where nothing can be skipped, the banks stay dense.
/// 300 bundled MNIST digits, a seeded subset: banks large enough to sort and to merge.
fn digits300(subset_seed: u64) -> (Vec<f32>, ImageShape, usize) {
    use morphogen::data::{Dataset, DatasetSource, LoadOptions};
    let opts = LoadOptions { subset: Some(300), subset_seed, ..Default::default() };
    let set = Dataset::load(&DatasetSource::Bundled("mnist".into()), &opts).unwrap();
    let n = set.len();
    (set.images, set.shape, n)
}

/// 300 bundled digits and two denoisers over them, the second with one path turned off by
/// `off`: the twins whose results must agree while their work differs.
fn twins_over_digits300(off: impl FnOnce(&mut Denoiser)) -> (Vec<f32>, ImageShape, usize, Denoiser, Denoiser) {
    let (images, shape, n) = digits300(5);
    let device = Device::flex();
    let on = Denoiser::new(&images, n, shape, &device);
    let mut other = Denoiser::new(&images, n, shape, &device);
    off(&mut other);
    (images, shape, n, on, other)
}

/// Digit `k` of `images` noised to ᾱ with the noise of `noise_seed`.
fn noised(images: &[f32], shape: ImageShape, k: usize, ab: f64, noise_seed: u64) -> Vec<f32> {
    let x0 = &images[k * shape.len()..][..shape.len()];
    let noise = morphogen::engine::sampling::noise::gaussian(noise_seed, 0, shape.len());
    let (a, s) = (f64::sqrt(ab) as f32, f64::sqrt(1.0 - ab) as f32);
    x0.iter().zip(&noise).map(|(&v, &e)| a * v + s * e).collect()
}

/// One ELS call, with entropy and maps, through two denoisers.
fn els_twice(
    one: &mut Denoiser,
    two: &mut Denoiser,
    x: &[f32],
    p: usize,
    boundary: Boundary,
    ab: f64,
) -> (morphogen::engine::Denoised, morphogen::engine::Denoised) {
    let mut call = Call::new(MachineKind::Els, boundary, p, ab);
    call.entropy = true;
    call.maps = true;
    (one.denoise(x, &call, &mut Control::none()).unwrap(), two.denoise(x, &call, &mut Control::none()).unwrap())
}

/// Two results of one call agree: x̂₀ finite and within `x_tol`, the mean entropy within
/// `ent_rel` (relative, at least 1 nat's worth), the same winner and source at every pixel.
fn assert_same_result(
    got: &morphogen::engine::Denoised,
    want: &morphogen::engine::Denoised,
    what: &str,
    x_tol: f64,
    ent_rel: f32,
) {
    assert!(got.x0.iter().all(|v| v.is_finite()), "{what}: NaN in x0");
    let err = max_abs_diff(&got.x0, &want.x0);
    assert!(err < x_tol, "{what}: x0 differs by {err}");
    assert!(
        (got.entropy - want.entropy).abs() < ent_rel * want.entropy.max(1.0),
        "{what}: entropy {} vs {}",
        got.entropy,
        want.entropy
    );
    let (mg, mw) = (got.maps.as_ref().unwrap(), want.maps.as_ref().unwrap());
    assert_eq!(mg.winner, mw.winner, "{what}: winners");
    assert_eq!(mg.source, mw.source, "{what}: sources");
}

#[test]
fn exact_skipping_changes_nothing_but_the_work() {
    // 300 bundled digits: a bank large enough to sort (12 fixture digits merge to too few keys).
    let (images, shape, n, mut skipping, mut dense) = twins_over_digits300(|d| d.skip_keys = false);
    let images = &images;
    let mut cases = 0;
    let mut skipped_cases = 0;
    for (p, boundary) in [(3, Boundary::Zeros), (5, Boundary::Zeros), (3, Boundary::Circular), (7, Boundary::Zeros)] {
        for (seed, ab) in [(1u64, 0.995), (2, 0.97), (3, 0.9), (4, 0.3)] {
            // A digit of the set, noised to ᾱ (a late sample's windows sit as near their keys).
            let x = noised(images, shape, seed as usize % n, ab, 90 + seed);
            let (got, want) = els_twice(&mut skipping, &mut dense, &x, p, boundary, ab);
            let what = format!("P={p} {boundary:?} ᾱ={ab}");
            assert_same_result(&got, &want, &what, 2e-5, 1e-4);
            let (mg, mw) = (got.maps.unwrap(), want.maps.unwrap());
            // Per pixel: at ᾱ = 0.995 the float32 logits are ~2500 ± 2e-4 (‖q‖²/2σ² is kept
            // in them), and two summation orders of the same dot products (the gemm's and the
            // skip path's row sweep) move a pixel's entropy by up to ~1e-3 nats.
            for (px, (&g, &w)) in mg.entropy.iter().zip(&mw.entropy).enumerate() {
                let tol = 2e-3 * w.abs().max(1.0);
                assert!((g - w).abs() <= tol, "{what}: pixel {px} entropy {g} vs {w}");
            }
            let (folded, held) = skipping.skip_work.take();
            assert_eq!(dense.skip_work.take(), (0, 0), "{what}: the dense twin skipped");
            if held > 0 {
                skipped_cases += 1;
                assert!(folded < held, "{what}: folded {folded} of {held}");
            }
            if ab >= 0.995 {
                // Measured: P = 3 keeps 7.5%, P = 7 15% of the (query, key) pairs.
                assert!(
                    held > 0 && folded * 5 < held,
                    "{what}: skipping should keep under a fifth, kept {folded} of {held}"
                );
            }
            if ab <= 0.3 {
                assert_eq!(held, 0, "{what}: nothing to skip at high noise, yet the skip path ran");
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 16);
    assert!(skipped_cases >= 4, "only {skipped_cases} cases took the skip path");
}

/// Distances summed from row strips (`cpu::strips`: the interior group at P = 13 and 15
/// under the zeros boundary, every pixel under the circular one) against the dense sweep over
/// the same keys, on 300 bundled digits from ᾱ = 0.99 to 0.05; and a patch map whose P = 15
/// pixels are a part of the interior group.
///
/// The two are float32 sums of 169 to 225 products in different orders, and at ᾱ = 0.99 the
/// logits reach ~5000, where they part by up to 3e-3 in x̂₀. Where they part by more than
/// 2e-5, the pixel is computed in float64 and the strips must be no further from it than the
/// dense sweep (plus 2e-5), and their winner within float32 rounding of the best key.
/// (Measured at P = 15, circular, ᾱ = 0.99: the strips 3e-4 from float64 at worst, the dense
/// sweep 2.8e-3.)
#[test]
fn strip_sums_change_nothing_but_the_work() {
    let (images, shape, n, mut strips, mut dense) = twins_over_digits300(|d| d.strip_sums = false);
    let images = &images;
    let (mut cases, mut refereed) = (0, 0);
    for (p, boundary) in
        [(13, Boundary::Zeros), (15, Boundary::Zeros), (13, Boundary::Circular), (15, Boundary::Circular)]
    {
        for (seed, ab) in [(1u64, 0.99), (2, 0.9), (3, 0.5), (4, 0.05)] {
            let x = noised(images, shape, seed as usize % n, ab, 90 + seed);
            let (got, want) = els_twice(&mut strips, &mut dense, &x, p, boundary, ab);
            let what = format!("P={p} {boundary:?} ᾱ={ab}");
            assert!(got.x0.iter().all(|v| v.is_finite()), "{what}: NaN in x0");
            assert!((got.entropy - want.entropy).abs() < 1e-3 * want.entropy.max(1.0), "{what}: entropy");
            let (mg, mw) = (got.maps.as_ref().unwrap(), want.maps.as_ref().unwrap());
            for px in 0..shape.pixels() {
                let (g, w) = (got.x0[px] as f64, want.x0[px] as f64);
                let same_winner = (mg.winner[px], mg.source[px]) == (mw.winner[px], mw.source[px]);
                if (g - w).abs() <= 2e-5 && same_winner {
                    continue;
                }
                refereed += 1;
                let exact = exact_pixel(images, n, shape, &x, p, ab, px);
                assert!(
                    (g - exact.x0).abs() <= (w - exact.x0).abs() + 2e-5,
                    "{what}: pixel {px}: strips {g}, dense {w}, float64 {}",
                    exact.x0
                );
                let mine = exact.logit(mg.winner[px] as usize, mg.source[px] as usize);
                assert!(
                    mine >= exact.best - 1e-5 * exact.best.abs(),
                    "{what}: pixel {px}: winner {mine} vs {}",
                    exact.best
                );
            }
            for (px, (&g, &w)) in mg.entropy.iter().zip(&mw.entropy).enumerate() {
                assert!((g - w).abs() <= 2e-3 * w.abs().max(1.0), "{what}: pixel {px} entropy {g} vs {w}");
            }
            // Which pairs took the strips: the whole interior group (its (29 − P)² pixels),
            // or every pixel under the circular boundary, against the (29 − P)² interior keys.
            let keys = (29 - p) * (29 - p);
            let queries = if boundary == Boundary::Zeros { keys } else { shape.pixels() };
            let (summed, _) = strips.strip_work.take();
            assert_eq!(summed, (queries * keys * n) as u64, "{what}: pairs summed from strips");
            assert_eq!(dense.strip_work.take(), (0, 0), "{what}: the dense twin summed strips");
            cases += 1;
        }
    }
    assert_eq!(cases, 16);
    eprintln!("{refereed} pixels refereed in float64");
    assert!(refereed < 2000, "{refereed} pixels needed float64: the paths part too often");
    // A patch map: P = 15 on the left half, 3 on the right. Its P = 15 call computes only
    // the interior pixels the map gives that size, which the strips fold alone.
    let x = noised(images, shape, 7, 0.6, 97);
    let patches: Vec<u32> = (0..shape.pixels()).map(|px| if px % shape.w < 14 { 15 } else { 3 }).collect();
    let call = Call { entropy: true, ..Call::new(MachineKind::Els, Boundary::Zeros, 3, 0.6) };
    let got = strips.denoise_patch_map(&x, &call, &patches, &mut Control::none()).unwrap();
    let want = dense.denoise_patch_map(&x, &call, &patches, &mut Control::none()).unwrap();
    assert!(got.x0.iter().all(|v| v.is_finite()), "patch map: NaN in x0");
    let err = max_abs_diff(&got.x0, &want.x0);
    assert!(err < 2e-5, "patch map: x0 differs by {err}");
    assert!((got.entropy - want.entropy).abs() < 1e-4 * want.entropy.max(1.0), "patch map: entropy");
    // Interior pixels (rows and columns 7..21) of the left half (columns 7..14): 14 × 7.
    let (summed, _) = strips.strip_work.take();
    assert_eq!(summed, (14 * 7 * 14 * 14 * n) as u64, "patch map: pairs summed from strips");
}

/// One pixel's ELS softmax over the interior keys, in float64 from the images: x̂₀ and every
/// key's logit −‖q − √ᾱ·k‖²/(2σ²) (the window wrapped, as the circular boundary does; an
/// interior pixel's never wraps, so this is also the zeros boundary's interior group).
struct ExactPixel {
    x0: f64,
    best: f64,
    logits: Vec<f64>,
    side: usize,
}

impl ExactPixel {
    fn logit(&self, image: usize, source: usize) -> f64 {
        let (si, sj) = (source / 28 - (28 - self.side) / 2, source % 28 - (28 - self.side) / 2);
        self.logits[(image * self.side + si) * self.side + sj]
    }
}

fn exact_pixel(images: &[f32], n: usize, shape: ImageShape, x: &[f32], p: usize, ab: f64, px: usize) -> ExactPixel {
    let (h, w, r) = (shape.h, shape.w, p / 2);
    let (i, j) = (px / w, px % w);
    let (a, s2) = (ab.sqrt(), 1.0 - ab);
    let side = h - 2 * r;
    let q: Vec<f64> = (0..p * p).map(|t| x[((i + h + t / p - r) % h) * w + (j + w + t % p - r) % w] as f64).collect();
    let (mut logits, mut vals) = (Vec::new(), Vec::new());
    for img in 0..n {
        let y = &images[img * shape.len()..][..shape.len()];
        for si in r..h - r {
            for sj in r..w - r {
                let mut d = 0f64;
                for t in 0..p * p {
                    let k = y[(si + t / p - r) * w + sj + t % p - r] as f64;
                    d += (q[t] - a * k) * (q[t] - a * k);
                }
                logits.push(-d / (2.0 * s2));
                vals.push(y[si * w + sj] as f64);
            }
        }
    }
    let best = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (mut s, mut acc) = (0f64, 0f64);
    for (l, v) in logits.iter().zip(&vals) {
        let e = (l - best).exp();
        s += e;
        acc += e * v;
    }
    ExactPixel { x0: acc / s, best, logits, side }
}

/// The fused op over a merged bank sorted into tiles with bounds (`op_skip`), against the
/// same op over the unsorted bank: x̂₀, entropy, winners and sources, on 300 bundled digits
/// noised from ᾱ = 0.995 to 0.3. On the GPU the kernel skips tiles, and at ᾱ = 0.995 most of
/// them; the CPU body folds every key (so on flex this holds the sort, the padding and the
/// split alignment to the same result).
fn sorted_bank_through_the_op(device: &Device, skips: bool) {
    let (images, shape, n) = digits300(5);
    let images = &images;
    let mut sorted = Denoiser::new(images, n, shape, device);
    let mut plain = Denoiser::new(images, n, shape, device);
    sorted.els_path = ElsPath::Op;
    plain.els_path = ElsPath::Op;
    plain.skip_keys = false;
    let (mut cases, mut sorted_cases) = (0, 0);
    for (p, boundary) in [(3, Boundary::Zeros), (5, Boundary::Zeros), (3, Boundary::Circular)] {
        for (seed, ab) in [(1u64, 0.995), (2, 0.97), (3, 0.9), (4, 0.3)] {
            let x = noised(images, shape, seed as usize % n, ab, 90 + seed);
            let (got, want) = els_twice(&mut sorted, &mut plain, &x, p, boundary, ab);
            let what = format!("P={p} {boundary:?} ᾱ={ab}");
            assert_same_result(&got, &want, &what, 5e-5, 1e-3);
            let (mg, mw) = (got.maps.unwrap(), want.maps.unwrap());
            for (px, (&g, &w)) in mg.entropy.iter().zip(&mw.entropy).enumerate() {
                assert!((g - w).abs() <= 2e-3 * w.abs().max(1.0), "{what}: pixel {px} entropy {g} vs {w}");
            }
            let (folded, held) = sorted.skip_work.take();
            assert_eq!(plain.skip_work.take(), (0, 0), "{what}: the unsorted twin skipped");
            if ab <= 0.3 {
                assert_eq!(held, 0, "{what}: σ² = 0.7 is above SKIP_BELOW_S2, yet the skip ran");
            } else {
                assert!(held > 0, "{what}: the sorted bank's skip did not run");
                sorted_cases += 1;
                if !skips {
                    assert_eq!(folded, held, "{what}: the CPU body folds every key");
                } else if ab >= 0.995 {
                    // Measured on lavapipe: P = 3 folds 5.4% (circular 5.6%), P = 5 3.6% of its pairs.
                    assert!(folded * 5 < held, "{what}: the kernel kept {folded} of {held} pairs");
                } else {
                    assert!(folded <= held, "{what}: folded {folded} of {held}");
                }
            }
            eprintln!("{what}: folded {folded} of {held} (query, key) pairs");
            cases += 1;
        }
    }
    assert_eq!((cases, sorted_cases), (12, 9));
}

#[test]
fn op_over_a_sorted_bank_changes_nothing() {
    sorted_bank_through_the_op(&Device::flex(), false);
}

#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_op_skips_tiles_and_changes_nothing_but_the_work() {
    sorted_bank_through_the_op(&gpu(), true);
}

#[test]
fn merged_duplicate_keys_change_nothing_but_the_bank() {
    let (mut merged, shape, _) = training("mnist12_train.npy");
    let (mut full, _, _) = training("mnist12_train.npy");
    full.merge_keys = false;
    assert_eq!(merged.els_path, ElsPath::HostKernel, "the CPU default path");
    let mut cases = 0;
    for (p, boundary) in [(3, Boundary::Zeros), (5, Boundary::Zeros), (3, Boundary::Circular), (7, Boundary::Zeros)] {
        for (seed, ab) in [(1, 0.05), (2, 0.5), (3, 0.97)] {
            let x = random_set(1, shape, 40 + seed);
            let mut call = Call::new(MachineKind::Els, boundary, p, ab);
            call.entropy = true;
            call.maps = true;
            let a = merged.denoise(&x, &call, &mut Control::none()).unwrap();
            let b = full.denoise(&x, &call, &mut Control::none()).unwrap();
            let what = format!("P={p} {boundary:?} ᾱ={ab}");
            let err = max_abs_diff(&a.x0, &b.x0);
            assert!(err < 2e-5, "{what}: x0 differs by {err}");
            assert!(
                (a.entropy - b.entropy).abs() < 1e-4 * b.entropy.max(1.0),
                "{what}: {} vs {}",
                a.entropy,
                b.entropy
            );
            let (ma, mb) = (a.maps.unwrap(), b.maps.unwrap());
            assert_eq!(ma.winner, mb.winner, "{what}: winners");
            assert_eq!(ma.source, mb.source, "{what}: sources");
            cases += 1;
        }
        // Measured after the geometry's bank is kept: merging must have shrunk it.
        let (mb, fb) = (merged.cache_bytes(), full.cache_bytes());
        if p == 3 {
            assert!(mb * 3 < fb * 2, "P = 3 bank merged: {mb} vs {fb} bytes");
        }
    }
    assert_eq!(cases, 12);
}

#[test]
fn op_launches_cancel_and_fall_back() {
    launches_cancel_and_fall_back(&Device::flex());
}

#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_op_launches_cancel_and_fall_back() {
    use morphogen::engine::kernels::gpu::AdapterLimits;
    // The adapter's own limits are read: at least WebGPU's 128 MiB per binding, and Mesa's
    // software rasteriser is known for one (its loop limit then sizes the splits).
    let limits = AdapterLimits::of(&gpu()).expect("a cubecl device states its limits");
    assert!(limits.max_binding_bytes >= 128 << 20, "{limits:?}");
    let name = gpu().identity().map(|i| i.name).unwrap_or_default();
    eprintln!("adapter {name}: {limits:?}");
    if name.contains("llvmpipe") {
        assert!(limits.software, "lavapipe is a software adapter: {limits:?}");
    }
    assert!(AdapterLimits::of(&Device::flex()).is_none(), "the CPU backend has no adapter");
    launches_cancel_and_fall_back(&gpu());
}

#[test]
fn op_matches_the_exact_softmax() {
    matches_exact_softmax(&Device::flex());
}
#[test]
fn op_tiny_and_huge_sigma() {
    tiny_and_huge_sigma(&Device::flex());
}
#[test]
fn op_result_does_not_depend_on_splits_or_key_order() {
    splits_and_key_order_do_not_matter(&Device::flex());
}
#[test]
fn op_one_key_and_empty_groups() {
    one_key_and_empty_groups(&Device::flex());
}
#[test]
fn engine_through_the_op_matches_burn_ops() {
    engine_op_path_matches_burn_ops(&Device::flex());
}

#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_op_matches_the_exact_softmax() {
    matches_exact_softmax(&gpu());
}
#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_op_tiny_and_huge_sigma() {
    tiny_and_huge_sigma(&gpu());
}
#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_op_result_does_not_depend_on_splits_or_key_order() {
    splits_and_key_order_do_not_matter(&gpu());
}
#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_op_one_key_and_empty_groups() {
    one_key_and_empty_groups(&gpu());
}
#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_engine_through_the_op_matches_burn_ops() {
    engine_op_path_matches_burn_ops(&gpu());
}

/// The op with repeated keys merged (its own launches over a bank of distinct keys, each with
/// ln n) against the op over every key: x̂₀, entropy, winners and sources, on 300 bundled
/// digits where merging pays at P = 3 and 5, and at P = 9 only in the corner groups.
fn merged_keys_through_the_op(device: &Device) {
    let (images, shape, n) = digits300(7);
    let images = &images;
    let mut merged = Denoiser::new(images, n, shape, device);
    let mut full = Denoiser::new(images, n, shape, device);
    merged.els_path = ElsPath::Op;
    full.els_path = ElsPath::Op;
    full.merge_keys = false;
    let mut cases = 0;
    for (p, boundary, pays) in [
        (3, Boundary::Zeros, true),
        (5, Boundary::Zeros, true),
        (3, Boundary::Circular, true),
        (9, Boundary::Zeros, false),
    ] {
        for (seed, ab) in [(1u64, 0.05), (2, 0.6), (3, 0.98)] {
            let x = noised(images, shape, seed as usize * 7 % n, ab, 70 + seed);
            let (got, want) = els_twice(&mut merged, &mut full, &x, p, boundary, ab);
            let what = format!("P={p} {boundary:?} ᾱ={ab}");
            assert_same_result(&got, &want, &what, 5e-5, 1e-3);
            let (swept, before) = merged.merge_work.take();
            let (f_swept, f_before) = full.merge_work.take();
            assert_eq!(f_swept, f_before, "{what}: the unmerged twin merged");
            assert_eq!(before, f_before, "{what}: both count the same pairs before merging");
            if pays {
                // Measured on these 300 digits: P = 3 sweeps under a third of its pairs.
                assert!(swept * 10 < before * 7, "{what}: swept {swept} of {before}");
            } else {
                // P = 9: the interior group's keys rarely repeat and stay whole; only the
                // mostly blank corner groups merge (measured: 98.5% of the pairs swept).
                assert!(swept * 20 > before * 19 && swept < before, "{what}: swept {swept} of {before}");
            }
            eprintln!("{what}: swept {swept} of {before} (query, key) pairs");
            cases += 1;
        }
    }
    assert_eq!(cases, 12);
}

#[test]
fn op_with_merged_keys_changes_nothing_but_the_work() {
    merged_keys_through_the_op(&Device::flex());
}

#[test]
#[ignore = "needs a GPU adapter; run with --ignored"]
fn gpu_op_with_merged_keys_changes_nothing_but_the_work() {
    merged_keys_through_the_op(&gpu());
}
