//! The worker and the engine under interruption: every long stage stops promptly when asked,
//! and a pixel is never ranked against a training set its run did not use.

mod common;

use common::wait_for;

use std::time::{Duration, Instant};

use morphogen::data::{Dataset, DatasetSource, LoadOptions, write_npy_f32};
use morphogen::engine::{Boundary, Call, CancelToken, Control, Denoiser, DeviceChoice, ImageShape, MachineKind};
use morphogen::recipe::Recipe;
use morphogen::worker::{Command, Event, WorkerHandle};

/// Every test in this file takes its turn. The latency tests allocate up to a gigabyte each,
/// and the worker tests keep both cores busy: side by side on two cores, a latency test
/// measured its neighbour's threads and page faults rather than the cancel (a bank build that
/// stopped in ~20 ms alone once read 104 ms in CI beside another test of this file).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This test's turn, held to its end (a failed test's poisoned lock is still a turn).
fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `call` on `den` (the caller holds its [`turn`] for its whole test, set-up
/// included), cancels it after `after`, and returns how long it took to stop and
/// how many key chunks the kernel had finished by then.
fn cancel_latency(den: &mut Denoiser, x: &[f32], call: &Call, after: Duration) -> (Duration, usize) {
    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            token.cancel();
            Instant::now()
        })
    };
    let started = Instant::now();
    let mut chunks = 0;
    let mut progress = |done: usize, _total: usize| chunks = done;
    let result = den.denoise(x, call, &mut Control::new(&token, Some(&mut progress)));
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(result.is_err(), "the call should have been cancelled, not finished in {:?}", started.elapsed());
    (returned.duration_since(cancelled_at), chunks)
}

/// A denoiser over the bundled MNIST five times over (N = 10000), and its first digit.
fn mnist_five_times() -> (Denoiser, Vec<f32>) {
    let mnist = Dataset::load(&DatasetSource::Bundled("mnist".into()), &LoadOptions::default()).unwrap();
    let images = mnist.images.repeat(5);
    (Denoiser::new(&images, 5 * mnist.len(), mnist.shape, &burn::tensor::Device::flex()), mnist.image(0).to_vec())
}

#[test]
fn a_key_bank_build_stops_within_100_ms_of_a_cancel() {
    let _turn = turn();
    // MNIST five times over (N = 10000) with circular windows of 15: one group whose bank of
    // 1.8 GB takes seconds to cut; the budget is raised so that it is built, not streamed.
    let (mut den, x) = mnist_five_times();
    den.cache_budget_bytes = 4 << 30;
    // This geometry's one group is summed from row strips with no bank at all; the dense
    // sweep is what cuts one (and still does for P ≤ 11 on MNIST).
    den.strip_sums = false;
    let call = Call::new(MachineKind::Els, Boundary::Circular, 15, 0.5);
    let (latency, chunks) = cancel_latency(&mut den, &x, &call, Duration::from_millis(300));
    eprintln!("bank build stopped {latency:?} after the cancel");
    assert_eq!(chunks, 0, "the cancel landed in the bank build, before any kernel chunk");
    assert!(latency < Duration::from_millis(100), "stopped {latency:?} after the cancel");
    assert!(den.cache_bytes() < 1 << 30, "a cancelled bank is not kept");
}

#[test]
fn a_strip_sweep_stops_within_100_ms_of_a_cancel() {
    let _turn = turn();
    // The same call as above with the strips on: no bank, the 10000 images read in place a
    // chunk at a time (a few seconds in all).
    let (mut den, x) = mnist_five_times();
    let call = Call::new(MachineKind::Els, Boundary::Circular, 15, 0.5);
    let (latency, chunks) = cancel_latency(&mut den, &x, &call, Duration::from_millis(300));
    eprintln!("strip sweep stopped {latency:?} after the cancel, {chunks} chunks in");
    assert!(chunks > 0, "the cancel landed in the strip sweep, after some of its chunks");
    assert!(latency < Duration::from_millis(100), "stopped {latency:?} after the cancel");
    assert_eq!(den.strip_work.take(), (0, 0), "the cancelled group was not counted as summed");
}

#[test]
fn building_the_pixel_groups_of_a_large_image_stops_within_100_ms_of_a_cancel() {
    let _turn = turn();
    // 256×256 with circular windows of 31: 63 million patch indices, about 1 GB of tables.
    let shape = morphogen::engine::ImageShape { c: 1, h: 256, w: 256 };
    let images = common::random_set(2, shape, 3);
    let mut den = Denoiser::new(&images, 2, shape, &burn::tensor::Device::flex());
    let call = Call::new(MachineKind::Els, Boundary::Circular, 31, 0.5);
    den.check_call(&call).expect("within the memory limit");
    let (latency, _) = cancel_latency(&mut den, &images[..shape.len()], &call, Duration::from_millis(50));
    eprintln!("pixel-group build stopped {latency:?} after the cancel");
    assert!(latency < Duration::from_millis(100), "stopped {latency:?} after the cancel");
    assert_eq!(den.cache_bytes(), 0, "nothing half-built is kept");
}

#[test]
fn the_gaussian_fit_stops_within_100_ms_of_a_cancel() {
    let _turn = turn();
    // 1500 random 64×64 images: the fit's N×D×N Gram product alone is 9 GFLOP of float64,
    // and its eigendecomposition seconds more; a cancel lands in the product's row blocks.
    let shape = ImageShape { c: 1, h: 64, w: 64 };
    let n = 1500;
    let mut den = Denoiser::new(&common::random_set(n, shape, 41), n, shape, &burn::tensor::Device::flex());
    let x = common::random_set(1, shape, 42);
    let call = Call::new(MachineKind::Gaussian, Boundary::Zeros, 1, 0.5);
    let (latency, _) = cancel_latency(&mut den, &x, &call, Duration::from_millis(300));
    eprintln!("Gaussian fit stopped {latency:?} after the cancel");
    assert!(latency < Duration::from_millis(100), "stopped {latency:?} after the cancel");
    assert_eq!(den.cache_bytes(), 0, "a cancelled fit is not kept");
}

#[test]
fn the_pca_locality_masks_stop_within_100_ms_of_a_cancel() {
    let _turn = turn();
    // The fit first (300 images: quick); then a new noise level, whose masks need the D×r×D
    // Wiener filter (4096 × 300 × 4096, 5 GFLOP): the cancel lands in that product.
    let shape = ImageShape { c: 1, h: 64, w: 64 };
    let n = 300;
    let mut den = Denoiser::new(&common::random_set(n, shape, 43), n, shape, &burn::tensor::Device::flex());
    let x = common::random_set(1, shape, 44);
    den.denoise(&x, &Call::new(MachineKind::Gaussian, Boundary::Zeros, 1, 0.5), &mut Control::none()).unwrap();
    let fitted = den.cache_bytes();
    assert!(fitted > 0, "the fit is kept");
    let call = Call::new(MachineKind::PcaLocality, Boundary::Zeros, 1, 0.3);
    let (latency, _) = cancel_latency(&mut den, &x, &call, Duration::from_millis(150));
    eprintln!("PCA-locality masks stopped {latency:?} after the cancel");
    assert!(latency < Duration::from_millis(100), "stopped {latency:?} after the cancel");
    assert_eq!(den.cache_bytes(), fitted, "no half-built masks are kept");
}

#[test]
fn loading_a_folder_stops_when_cancelled() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    for k in 0..40 {
        image::GrayImage::from_pixel(16, 16, image::Luma([k as u8]))
            .save(dir.path().join(format!("a_{k}.png")))
            .unwrap();
    }
    let source = DatasetSource::Folder(dir.path().into());
    let calls = std::cell::Cell::new(0);
    let cancelled = || {
        calls.set(calls.get() + 1);
        calls.get() > 3
    };
    let e = Dataset::load_cancellable(&source, &LoadOptions::default(), &cancelled).unwrap_err();
    assert!(e.problem.contains("cancelled"), "{e}");
    assert!(calls.get() <= 5, "asked {} times: it kept decoding after the cancel", calls.get());
    assert_eq!(Dataset::load(&source, &LoadOptions::default()).unwrap().len(), 40);
}

fn tiny(dir: &std::path::Path, name: &str, n: usize, seed: u64) -> DatasetSource {
    let p = dir.join(name);
    let data: Vec<f32> = morphogen::engine::sampling::noise::gaussian(seed, 0, n * 64)
        .into_iter()
        .map(|v| (v * 0.5).clamp(-1.0, 1.0))
        .collect();
    write_npy_f32(&p, &[n, 8, 8], &data).unwrap();
    DatasetSource::Npy(p)
}

fn recipe(dataset: DatasetSource, steps: usize) -> Recipe {
    let mut r = Recipe { dataset, device: DeviceChoice::Cpu, ..Recipe::default() };
    r.sampler.steps = steps;
    r
}

#[test]
fn inspecting_a_run_of_another_dataset_says_so() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (tiny(dir.path(), "a.npy", 12, 1), tiny(dir.path(), "b.npy", 9, 2));
    let worker = WorkerHandle::spawn(|| {});
    worker.send(Command::Start { run: 1, recipe: recipe(a, 2) });
    let Event::Started { dataset_hash: hash_a, device, .. } =
        wait_for(&worker.events, |e| matches!(e, Event::Started { .. }))
    else {
        unreachable!()
    };
    assert_eq!(device, DeviceChoice::Cpu);
    let Event::Step { record, .. } = wait_for(&worker.events, |e| matches!(e, Event::Step { run: 1, .. })) else {
        unreachable!()
    };
    wait_for(&worker.events, |e| matches!(e, Event::Finished { run: 1 }));
    let call = Call::new(MachineKind::Els, Boundary::Zeros, 3, record.alpha_bar);
    let inspect = |hash: &str| Command::Inspect {
        run: 1,
        dataset_hash: Some(hash.to_string()),
        step: 0,
        x_t: record.x_t.clone(),
        call,
        y: 4,
        x: 4,
        top: 24,
    };
    worker.send(inspect(&hash_a));
    let Event::Inspected { result, sensitivity, .. } =
        wait_for(&worker.events, |e| matches!(e, Event::Inspected { .. }))
    else {
        unreachable!()
    };
    assert!((result.weight_sum - 1.0).abs() < 1e-9);
    // ELS has a Jacobian: the sensitivity map comes with the votes, one value per pixel,
    // zero outside the 3×3 window around (4, 4), and the same as the engine's own.
    let map = sensitivity.expect("ELS has a sensitivity map");
    let shape = morphogen::engine::ImageShape { c: 1, h: 8, w: 8 };
    assert_eq!(map.len(), shape.pixels());
    for (p, &v) in map.iter().enumerate() {
        let (y, x) = (p / shape.w, p % shape.w);
        if y.abs_diff(4) > 1 || x.abs_diff(4) > 1 {
            assert_eq!(v, 0.0, "({y}, {x}) is outside the window");
        }
    }

    // switch datasets, then inspect the old run: an error, not a ranking of the wrong set
    worker.send(Command::Start { run: 2, recipe: recipe(b, 2) });
    wait_for(&worker.events, |e| matches!(e, Event::Finished { run: 2 }));
    worker.send(inspect(&hash_a));
    let e = wait_for(&worker.events, |e| matches!(e, Event::Error { .. } | Event::Inspected { .. }));
    let Event::Error { message, .. } = e else { panic!("ranked against the wrong training set: {e:?}") };
    assert!(message.contains("no longer loaded"), "{message}");

    // a pixel outside the image is an error too, not a panic
    let mut bad = inspect(&hash_a);
    if let Command::Inspect { dataset_hash, y, .. } = &mut bad {
        *dataset_hash = None;
        *y = 99;
    }
    worker.send(bad);
    let e = wait_for(&worker.events, |e| matches!(e, Event::Error { .. } | Event::Inspected { .. }));
    assert!(matches!(&e, Event::Error { message, .. } if message.contains("outside")), "{e:?}");
}

#[test]
fn a_recipe_with_the_wrong_dataset_hash_is_refused() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let worker = WorkerHandle::spawn(|| {});
    let mut r = recipe(tiny(dir.path(), "a.npy", 12, 1), 2);
    r.dataset_hash = Some("0".repeat(64));
    worker.send(Command::Start { run: 1, recipe: r });
    let e = wait_for(&worker.events, |e| matches!(e, Event::Error { .. } | Event::Step { .. }));
    assert!(matches!(&e, Event::Error { message, .. } if message.contains("no longer matches")), "{e:?}");
}

#[test]
fn a_branched_recipe_is_replayed_whole_by_the_worker() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny(dir.path(), "a.npy", 12, 1);
    let worker = WorkerHandle::spawn(|| {});
    let parent = recipe(data.clone(), 5);
    let mut child = parent.clone();
    child.sampler.machine = MachineKind::Local;
    child.branched_from = Some(Box::new(morphogen::recipe::Branch { from_step: 3, recipe: parent.clone() }));
    let collect = |run: u64, r: Recipe| {
        worker.send(Command::Start { run, recipe: r });
        let mut steps = Vec::new();
        loop {
            match wait_for(&worker.events, |e| {
                matches!(e, Event::Step { .. } | Event::Finished { .. } | Event::Error { .. })
            }) {
                Event::Step { record, .. } => steps.push(*record),
                Event::Finished { .. } => return steps,
                e => panic!("{e:?}"),
            }
        }
    };
    let plain = collect(1, parent);
    let branched = collect(2, child);
    assert_eq!(branched.len(), 5);
    assert_eq!(branched[..3], plain[..3], "steps before the branch follow the parent exactly");
    assert_eq!(branched[3].x_t, plain[3].x_t, "the branch resumes from the parent's state");
    assert_ne!(branched[3].x0_hat, plain[3].x0_hat, "and computes with its own machine");
}

/// Calibration through the worker: on a set with no trained CNN it says how to train one; on
/// MNIST (whose weights ship) it reports progress and one fitted P per step.
#[test]
fn the_worker_calibrates_to_the_shipped_cnn_or_says_why_not() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let worker = WorkerHandle::spawn(|| {});
    let r = recipe(tiny(dir.path(), "a.npy", 12, 1), 2);
    worker.send(Command::Calibrate { run: 1, recipe: r, seeds: 1, max_p: 3 });
    let e = wait_for(&worker.events, |e| matches!(e, Event::Error { .. } | Event::Calibrated { .. }));
    assert!(matches!(&e, Event::Error { message, .. } if message.contains("morphogen train")), "{e:?}");

    let mut r = Recipe::default();
    r.sampler.steps = 2;
    r.load.subset = Some(50);
    worker.send(Command::Calibrate { run: 2, recipe: r, seeds: 1, max_p: 3 });
    let mut progress = 0;
    loop {
        match wait_for(&worker.events, |e| {
            matches!(e, Event::Error { .. } | Event::Calibrated { .. } | Event::Progress { .. })
        }) {
            Event::Progress { run: 2, done, total, .. } => {
                assert_eq!(total, 2 * (1 + 2), "two steps, each the CNN and P = 1, 3");
                progress = done;
            }
            Event::Calibrated { run: 2, fits } => {
                assert_eq!(progress, 6);
                assert_eq!(fits.len(), 2);
                assert!(fits.iter().all(|f| [1, 3].contains(&f.median) && f.cosine[0].len() == 2), "{fits:?}");
                break;
            }
            e => panic!("{e:?}"),
        }
    }
}

/// Compare mode's per-step maps: the worker answers a Sensitivity command with one map per
/// step, in order, each the engine's own Jacobian of that step's call summed over channels,
/// and refuses a pixel outside the image in one message.
#[test]
fn the_worker_streams_a_pixels_sensitivity_at_every_step_asked() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let source = tiny(dir.path(), "s.npy", 10, 5);
    let worker = WorkerHandle::spawn(|| {});
    worker.send(Command::Start { run: 1, recipe: recipe(source.clone(), 3) });
    let Event::Started { dataset_hash, .. } = wait_for(&worker.events, |e| matches!(e, Event::Started { .. })) else {
        unreachable!()
    };
    let mut records = Vec::new();
    while records.len() < 3 {
        if let Event::Step { record, .. } = wait_for(&worker.events, |e| matches!(e, Event::Step { run: 1, .. })) {
            records.push(*record);
        }
    }
    let calls: Vec<Call> =
        records.iter().map(|r| Call::new(MachineKind::Els, Boundary::Zeros, r.patch as usize, r.alpha_bar)).collect();
    let steps: Vec<(usize, Vec<f32>, Call)> =
        records.iter().zip(&calls).rev().map(|(r, c)| (r.step, r.x_t.clone(), *c)).collect();
    worker.send(Command::Sensitivity { run: 1, dataset_hash: Some(dataset_hash.clone()), y: 3, x: 5, steps });
    let set = Dataset::load(&source, &LoadOptions::default()).unwrap();
    let mut den = Denoiser::new(&set.images, set.len(), set.shape, &burn::tensor::Device::flex());
    for k in (0..3).rev() {
        let Event::Sensitivity { run, step, y, x, map } =
            wait_for(&worker.events, |e| matches!(e, Event::Sensitivity { .. }))
        else {
            unreachable!()
        };
        assert_eq!((run, step, y, x), (1, k, 3, 5), "in the order asked");
        let want = den.jacobian(&records[k].x_t, &calls[k], 3, 5, &Control::none()).unwrap().unwrap().map(0);
        let got = map.expect("ELS has a Jacobian");
        assert_eq!(got.len(), 64);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "step {k}: an empty map compares nothing");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-12 * scale.max(1.0), "step {k}: {g} vs {w}");
        }
    }
    let outside = vec![(0, records[0].x_t.clone(), calls[0])];
    worker.send(Command::Sensitivity { run: 1, dataset_hash: Some(dataset_hash), y: 9, x: 0, steps: outside });
    let e = wait_for(&worker.events, |e| matches!(e, Event::Error { .. } | Event::Sensitivity { .. }));
    assert!(matches!(&e, Event::Error { message, .. } if message.contains("outside")), "{e:?}");
}
