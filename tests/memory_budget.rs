//! One memory budget for every worker: the main run and the secondary views (compare column,
//! seed grid, zoo, calibration) each keep their caches to their share of it, report what they
//! hold, and a lowered budget shrinks them within seconds, busy or idle.

mod common;

use common::wait_for;

use std::time::{Duration, Instant};

use morphogen::data::DatasetSource;
use morphogen::engine::{DeviceChoice, MachineKind, PatchSchedule};
use morphogen::memory::Pool;
use morphogen::recipe::Recipe;
use morphogen::worker::{Command, Event, WorkerHandle};

const MIB: usize = 1 << 20;

/// Runs two steps of ELS at constant `p` on MNIST and waits for the end.
fn run(worker: &WorkerHandle, id: u64, p: u32) {
    let mut recipe =
        Recipe { dataset: DatasetSource::Bundled("mnist".into()), device: DeviceChoice::Cpu, ..Recipe::default() };
    recipe.sampler.machine = MachineKind::Els;
    recipe.sampler.steps = 2;
    recipe.sampler.patch = PatchSchedule::Constant { p };
    worker.send(Command::Start { run: id, recipe });
    match wait_for(&worker.events, |e| {
        matches!(e, Event::Finished { run } if *run == id) || matches!(e, Event::Error { .. })
    }) {
        Event::Finished { .. } => {}
        other => panic!("run {id} at P = {p} failed: {other:?}"),
    }
}

/// Polls `f` until it holds (true) or `secs` pass (false).
fn within(secs: f64, f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn every_worker_keeps_its_caches_to_its_share_of_one_budget() {
    let pool = Pool::new(1024 * MIB);
    let main = WorkerHandle::spawn_in(&pool, false, || {});
    let side = WorkerHandle::spawn_in(&pool, true, || {});
    // Shares: the secondary an eighth (128 MiB), the main run the rest (896 MiB).
    let (main_share, side_share) = (1024 * MIB - 128 * MIB, 128 * MIB);
    let mut held = Vec::new();
    for (k, p) in [3, 5, 7, 9].into_iter().enumerate() {
        run(&main, k as u64, p);
        // The worker reports after the step it finished.
        assert!(within(2.0, || main.memory().1 > 0), "the main run reports its caches");
        let (data, caches) = main.memory();
        assert!(caches <= main_share, "P = {p}: {} MiB held over a {} MiB share", caches / MIB, main_share / MIB);
        assert_eq!(data, 4 * (2000 * (784 + 1) + 2 * 2000 * 784), "MNIST's three copies");
        held.push(caches);
    }
    eprintln!("main run's caches after P = 3, 5, 7, 9: {:?} MiB", held.iter().map(|b| b / MIB).collect::<Vec<_>>());
    assert!(held.iter().any(|&b| b > 300 * MIB), "the test must fill more than the budget it lowers to: {held:?}");
    run(&side, 10, 9);
    assert!(within(2.0, || side.memory().1 > 0), "the secondary reports its caches");
    assert!(side.memory().1 <= side_share, "secondary holds {} MiB", side.memory().1 / MIB);
    let totals = pool.totals();
    assert_eq!((totals.workers, totals.secondary), (2, 1));
    assert!(totals.caches <= pool.budget(), "{} MiB over the budget", totals.caches / MIB);

    // Lowered: both workers are idle, and both shrink to their new shares unasked.
    pool.set_budget(256 * MIB);
    let (main_share, side_share) = (256 * MIB - 32 * MIB, 32 * MIB);
    assert!(
        within(3.0, || main.memory().1 <= main_share && side.memory().1 <= side_share),
        "after lowering the budget: main {} MiB (share {}), secondary {} MiB (share {})",
        main.memory().1 / MIB,
        main_share / MIB,
        side.memory().1 / MIB,
        side_share / MIB
    );
    // And they go on working inside it.
    run(&main, 20, 7);
    assert!(within(2.0, || main.memory().1 > 0));
    assert!(main.memory().1 <= main_share, "{} MiB after a run under the lowered budget", main.memory().1 / MIB);

    // A closed view leaves the pool and its share returns to the main run.
    drop(side);
    assert!(within(3.0, || pool.totals().workers == 1), "the dropped worker leaves the pool");
}
