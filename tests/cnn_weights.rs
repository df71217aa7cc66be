//! `studio --cnn FILE` and "Load weights…": every worker of the studio runs the CNN from the
//! file the studio names, re-attaching when the name changes, and a file that cannot be read
//! is a message naming it. Its own test binary: the weights path is process-wide.

mod common;

use common::{repo_root, wait_for};

use morphogen::data::DatasetSource;
use morphogen::engine::{DeviceChoice, MachineKind, PatchSchedule};
use morphogen::recipe::Recipe;
use morphogen::worker::{Command, Event, WorkerHandle, set_studio_cnn, studio_cnn};

/// The weights path is process-wide: the two tests take turns with it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_studio_names_the_cnn_weights_every_worker_runs() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // A 28×28 gray set that is no bundled dataset: no shipped weights.
    let data = DatasetSource::Npy(common::fixtures().join("mnist12_train.npy"));
    let mut recipe = Recipe { dataset: data, device: DeviceChoice::Cpu, ..Recipe::default() };
    recipe.sampler.machine = MachineKind::Cnn;
    recipe.sampler.steps = 2;
    recipe.sampler.patch = PatchSchedule::Constant { p: 3 };
    let worker = WorkerHandle::spawn(|| {});
    let error = |run| match wait_for(&worker.events, |e| matches!(e, Event::Error { .. } | Event::Finished { .. })) {
        Event::Error { run: r, message } => {
            assert_eq!(r, Some(run));
            message
        }
        other => panic!("run {run} should fail: {other:?}"),
    };
    worker.send(Command::Start { run: 1, recipe: recipe.clone() });
    assert!(error(1).contains("train one"), "no weights, and the message says how to get some");
    let missing = dir.path().join("missing.mgcnn");
    set_studio_cnn(Some(missing.clone()));
    worker.send(Command::Start { run: 2, recipe: recipe.clone() });
    let message = error(2);
    assert!(message.contains("missing.mgcnn") && message.contains("cannot read"), "{message}");
    // The shipped MNIST weights as a file: the same data now runs the CNN, step by step.
    let weights = repo_root().join("assets/models/mnist.mgcnn");
    set_studio_cnn(Some(weights.clone()));
    worker.send(Command::Start { run: 3, recipe: recipe.clone() });
    let record = match wait_for(&worker.events, |e| matches!(e, Event::Step { run: 3, .. } | Event::Error { .. })) {
        Event::Step { record, .. } => record,
        other => panic!("the CNN runs once its weights are named: {other:?}"),
    };
    assert_eq!(record.x0_hat.len(), 784);
    assert!(record.x0_hat.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
    wait_for(&worker.events, |e| matches!(e, Event::Finished { run: 3 }));
    // The shipped UNet, then the ResNet again: each run and each inspection of it uses the
    // network named when it ran (the inspector outlines that network's receptive field).
    let unet = repo_root().join("assets/models/mnist-unet.mgcnn");
    let mut finals = Vec::new();
    for (run, file, field) in [(4, &unet, 40), (5, &weights, 17)] {
        set_studio_cnn(Some(file.clone()));
        worker.send(Command::Start { run, recipe: recipe.clone() });
        let last = match wait_for(&worker.events, |e| {
            matches!(e, Event::Step { run: r, record, .. } if *r == run && record.step == 1)
                | matches!(e, Event::Error { .. })
        }) {
            Event::Step { record, .. } => record,
            other => panic!("run {run}: {other:?}"),
        };
        wait_for(&worker.events, |e| matches!(e, Event::Finished { run: r } if *r == run));
        let call =
            morphogen::engine::Call::new(MachineKind::Cnn, morphogen::engine::Boundary::Zeros, 3, last.alpha_bar);
        let (y, x) = (14, 13);
        worker.send(Command::Inspect { run, dataset_hash: None, step: 1, x_t: last.x_t.clone(), call, y, x, top: 4 });
        match wait_for(&worker.events, |e| matches!(e, Event::Inspected { .. } | Event::Error { .. })) {
            Event::Inspected { reach, result, .. } => {
                assert_eq!(reach, Some(field), "run {run}: the inspector names the field of {}", file.display());
                let own = last.x0_hat[y * 28 + x] as f64;
                assert!(
                    (result.x0[0] - own).abs() < 1e-5,
                    "run {run}: inspected x̂₀ {:?}, the run had {own}",
                    result.x0
                );
            }
            other => panic!("run {run}: {other:?}"),
        }
        finals.push(last.x0_hat);
    }
    assert_ne!(finals[0], finals[1], "the UNet and the ResNet give different images");
}

/// Picking other weights in the studio restarts the run with them: the name is handed to the
/// workers after the controls and before the restart they cause (handed over before them, a
/// run started by a pick ran the weights picked before it, and its inspector named that
/// network's receptive field).
#[test]
fn a_run_restarted_by_picking_weights_runs_those_weights() {
    use egui_kittest::kittest::Queryable;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut picked = 0;
    // Every set that ships a UNet beside its ResNet.
    for set in morphogen::engine::training::network::SHIPPED_UNETS {
        let settings = morphogen::ui::Settings {
            dataset: DatasetSource::Bundled(set.to_string()),
            machine: MachineKind::Cnn,
            ..Default::default()
        };
        let (handle, commands, _events) = WorkerHandle::detached();
        let app = morphogen::ui::StudioApp::new(settings, handle);
        let mut h = egui_kittest::Harness::builder()
            .with_size(egui::vec2(1400.0, 900.0))
            .with_accessibility_check(false)
            .build_ui_state(|ui, app: &mut morphogen::ui::StudioApp| app.ui_contents(ui), app);
        h.run_steps(3);
        let _ = commands.try_iter().count();
        let unet = morphogen::engine::training::network::shipped_unet(set).expect("a shipped UNet");
        for (button, want) in [("Shipped UNet", Some(unet)), ("Shipped ResNet", None)] {
            h.get_by_label(button).click();
            h.step();
            let starts = commands.try_iter().filter(|c| matches!(c, Command::Start { .. })).count();
            assert_eq!(starts, 1, "{set}, {button}: the pick restarts the run in the frame it is made");
            assert_eq!(studio_cnn(), want, "{set}, {button}: the restarted run is handed the picked weights");
            h.run_steps(3);
            let _ = commands.try_iter().count();
            picked += 1;
        }
    }
    assert_eq!(picked, 6, "two picks on each of emoji, fashion and mnist");
}
