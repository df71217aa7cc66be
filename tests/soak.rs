//! The real worker under a storm of commands, alone in its own test binary so that the
//! resident-memory figures are its own.

use std::time::{Duration, Instant};

use morphogen::data::{DatasetSource, write_npy_f32};
use morphogen::engine::{
    Boundary, Call, Control, Denoiser, DeviceChoice, ImageShape, MachineKind, PatchSchedule, Sampler,
};
use morphogen::recipe::Recipe;
use morphogen::worker::{Command, Event, WorkerHandle};

const SHAPE: ImageShape = ImageShape { c: 1, h: 8, w: 8 };

fn dataset(dir: &std::path::Path, name: &str, n: usize, seed: u64) -> (DatasetSource, Vec<f32>) {
    let p = dir.join(name);
    let data: Vec<f32> = morphogen::engine::sampling::noise::gaussian(seed, 0, n * 64)
        .into_iter()
        .map(|v| (v * 0.5).clamp(-1.0, 1.0))
        .collect();
    write_npy_f32(&p, &[n, 8, 8], &data).unwrap();
    (DatasetSource::Npy(p), data)
}

/// Resident set size of this process in bytes (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0) * 4096
}

/// Runs one command to completion and returns its steps' x̂₀.
fn finish(worker: &WorkerHandle, run: u64) -> Vec<Vec<f32>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut x0 = Vec::new();
    loop {
        match worker.events.recv_deadline(deadline).expect("the worker stopped answering") {
            Event::Step { run: r, record, .. } if r == run => x0.push(record.x0_hat),
            Event::Finished { run: r } if r == run => return x0,
            Event::Error { run: Some(r), message } if r == run => panic!("run {run} failed: {message}"),
            Event::Error { message, .. } => assert!(!message.contains("crashed"), "{message}"),
            _ => {}
        }
    }
}

#[test]
fn a_thousand_random_commands_leave_the_worker_correct_and_lean() {
    let dir = tempfile::tempdir().unwrap();
    let (a, data_a) = dataset(dir.path(), "a.npy", 16, 1);
    let (b, _) = dataset(dir.path(), "b.npy", 11, 2);
    let worker = WorkerHandle::spawn(|| {});
    let base = |source: DatasetSource| Recipe { dataset: source, device: DeviceChoice::Cpu, ..Recipe::default() };

    // the run every check compares against
    let mut last = base(a.clone());
    last.sampler.steps = 6;
    last.sampler.seed = 77;
    last.sampler.patch = PatchSchedule::Constant { p: 5 };
    worker.send(Command::Start { run: 1, recipe: last.clone() });
    let first = finish(&worker, 1);
    // The first run of each machine on each dataset warms caches, thread pools and allocator
    // arenas once; what the soak may not do is keep growing after that.
    let machines = [MachineKind::Ideal, MachineKind::Equivariant, MachineKind::Local, MachineKind::Els];
    for (k, (machine, source)) in machines.iter().flat_map(|m| [(m, &a), (m, &b)]).enumerate() {
        let mut r = base(source.clone());
        r.sampler.machine = *machine;
        r.sampler.steps = 3;
        worker.send(Command::Start { run: 2 + k as u64, recipe: r });
        finish(&worker, 2 + k as u64);
    }
    let rss_first = rss();

    let mut state = 0x5EED_u64;
    let mut rand = |n: u64| morphogen::engine::sampling::noise::splitmix(&mut state) % n;
    let mut errors = 0usize;
    for k in 0..1000u64 {
        let run = 10 + k;
        let mut r = base(if rand(4) == 0 { b.clone() } else { a.clone() });
        r.sampler.machine = machines[rand(4) as usize];
        r.sampler.boundary = if rand(2) == 0 { Boundary::Zeros } else { Boundary::Circular };
        r.sampler.steps = 2 + rand(6) as usize;
        r.sampler.patch = PatchSchedule::Constant { p: 1 + 2 * rand(4) as u32 };
        r.sampler.seed = rand(1000);
        let command = match rand(5) {
            0 => Command::Start { run, recipe: r },
            1 => Command::Cancel,
            2 => {
                // a branch with a state of the right or the wrong size
                let len = if rand(3) == 0 { 10 } else { 64 };
                let from_step = rand(8) as usize;
                Command::Branch { run, recipe: r, from_step, x_t: vec![0.1; len] }
            }
            3 => Command::Inspect {
                run,
                dataset_hash: if rand(2) == 0 { None } else { Some("f".repeat(64)) },
                step: 0,
                x_t: vec![0.2; if rand(4) == 0 { 3 } else { 64 }],
                call: Call::new(r.sampler.machine, r.sampler.boundary, 1 + 2 * rand(5) as usize, 0.5),
                y: rand(10) as usize,
                x: rand(10) as usize,
                top: rand(30) as usize,
            },
            _ => Command::Start { run, recipe: base(b.clone()) },
        };
        worker.send(command);
        if k % 100 == 99 {
            // let a run get into its steps now and then, so cancels land mid-step too
            std::thread::sleep(Duration::from_millis(20));
        }
        // drain without waiting: the worker must keep up with whatever arrives
        while let Ok(e) = worker.events.try_recv() {
            if let Event::Error { message, .. } = e {
                assert!(!message.contains("crashed"), "the worker panicked: {message}");
                errors += 1;
            }
        }
    }
    eprintln!("1000 commands sent; {errors} refused with a message so far");

    // the last run completes, with the same bytes as the very first run of that recipe
    worker.send(Command::Start { run: 5000, recipe: last.clone() });
    let again = finish(&worker, 5000);
    assert_eq!(again, first, "the same recipe gives the same bytes after the storm");

    // ... and the same bytes as a fresh denoiser running the recipe directly
    let mut den = Denoiser::new(&data_a, 16, SHAPE, &burn::tensor::Device::flex());
    let mut sampler = Sampler::new(last.sampler.clone(), SHAPE, None);
    let mut fresh = Vec::new();
    while let Some(step) = sampler.step(&mut den, &mut Control::none()) {
        fresh.push(step.unwrap().x0_hat);
    }
    assert_eq!(again, fresh);

    let rss_after = rss();
    eprintln!(
        "resident memory: {:.1} MB after a first run of each machine, {:.1} MB after the soak",
        rss_first as f64 / 1e6,
        rss_after as f64 / 1e6
    );
    assert!(rss_after as f64 <= rss_first as f64 * 1.2, "resident memory grew from {rss_first} to {rss_after} bytes");
}
