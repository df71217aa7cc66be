//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use morphogen::data::read_npy_numbers;
use morphogen::engine::{Denoiser, ImageShape};

/// The fixtures folder. Read from the environment `cargo test` sets at run time, not the
/// compile-time path: a test binary reused from a shared target dir may have been built in
/// another checkout that no longer exists.
pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// The checkout the tests run in (same reasoning as [`fixtures`]).
pub fn repo_root() -> PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    root.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
}

/// One wgpu device for every GPU test (the `--ignored` ones): a second initialisation in
/// the same process is refused.
pub fn gpu() -> burn::tensor::Device {
    static GPU: std::sync::OnceLock<burn::tensor::Device> = std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        morphogen::engine::device::resolve(morphogen::engine::DeviceChoice::Gpu).expect("a GPU adapter").device
    })
    .clone()
}

pub fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    read_npy_numbers(&fixtures().join(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// A training set from an (N,C,H,W) fixture on the CPU backend.
pub fn training(name: &str) -> (Denoiser, ImageShape, usize) {
    training_on(name, &burn::tensor::Device::flex())
}

/// A training set from an (N,C,H,W) fixture on `device`.
pub fn training_on(name: &str, device: &burn::tensor::Device) -> (Denoiser, ImageShape, usize) {
    let (shape, values) = npy(name);
    let (n, c, h, w) = match shape[..] {
        [n, c, h, w] => (n, c, h, w),
        [n, h, w] => (n, 1, h, w),
        _ => panic!("bad training shape {shape:?}"),
    };
    let s = ImageShape { c, h, w };
    (Denoiser::new(&values, n, s, device), s, n)
}

/// The largest |a − b|; NaN when any difference is NaN (`f64::max` would drop it, and a NaN
/// pixel would then pass every tolerance), infinity when any is infinite.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, |m: f64, d: f64| if m.is_nan() || d.is_nan() { f64::NAN } else { m.max(d) })
}

pub fn corr(a: &[f32], b: &[f32]) -> f64 {
    morphogen::engine::analysis::stats::pearson(a, b)
}

/// A small seeded training set in [−1, 1].
pub fn random_set(n: usize, shape: ImageShape, seed: u64) -> Vec<f32> {
    morphogen::engine::sampling::noise::gaussian(seed, 9, n * shape.len())
        .into_iter()
        .map(|v| (v * 0.6).clamp(-1.0, 1.0))
        .collect()
}

/// Runs the real `morphogen` binary of this build (the tests that use it pass its path).
pub fn morphogen_at(bin: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

/// The first event from a worker that `what` accepts (others are skipped); panics after 60 s.
pub fn wait_for(
    events: &crossbeam_channel::Receiver<morphogen::worker::Event>,
    what: impl Fn(&morphogen::worker::Event) -> bool,
) -> morphogen::worker::Event {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let e = events.recv_deadline(deadline).expect("timed out waiting for the worker");
        if what(&e) {
            return e;
        }
    }
}

/// Checks an exported chart (`export::chart`): a PNG of `size`, each of `colours` drawn (a
/// series' line), and dark text in the left and bottom margins (tick labels and axis titles)
/// and across the top (the title). Panics naming `what`.
pub fn assert_chart(png: &[u8], size: (u32, u32), colours: &[[u8; 3]], what: &str) {
    let img = image::load_from_memory(png).unwrap_or_else(|e| panic!("{what}: not a PNG: {e}")).to_rgb8();
    assert_eq!(img.dimensions(), size, "{what}: size");
    for c in colours {
        let n = img.pixels().filter(|p| p.0 == *c).count();
        assert!(n > 50, "{what}: the series in {c:?} has {n} pixels");
    }
    let (w, h) = size;
    let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
        (x0..x1).flat_map(|x| (y0..y1).map(move |y| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100).count()
    };
    assert!(dark(0, 70, 40, h - 50) > 100, "{what}: no y-axis labels");
    assert!(dark(70, w, h - 50, h) > 100, "{what}: no x-axis labels");
    assert!(dark(w / 4, 3 * w / 4, 0, 34) > 30, "{what}: no title");
}
