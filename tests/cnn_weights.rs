//! `studio --cnn FILE` and "Load weights…": every worker of the studio runs the CNN from the
//! file the studio names, re-attaching when the name changes, and a file that cannot be read
//! is a message naming it. Its own test binary: the weights path is process-wide.

mod common;

use common::{repo_root, wait_for};

use morphogen::data::DatasetSource;
use morphogen::engine::{DeviceChoice, MachineKind, PatchSchedule};
use morphogen::recipe::Recipe;
use morphogen::worker::{Command, Event, WorkerHandle, set_studio_cnn};

#[test]
fn the_studio_names_the_cnn_weights_every_worker_runs() {
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
    set_studio_cnn(Some(weights));
    worker.send(Command::Start { run: 3, recipe });
    let record = match wait_for(&worker.events, |e| matches!(e, Event::Step { run: 3, .. } | Event::Error { .. })) {
        Event::Step { record, .. } => record,
        other => panic!("the CNN runs once its weights are named: {other:?}"),
    };
    assert_eq!(record.x0_hat.len(), 784);
    assert!(record.x0_hat.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
    wait_for(&worker.events, |e| matches!(e, Event::Finished { run: 3 }));
}
