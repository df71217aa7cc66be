//! The studio driven through egui_kittest: the real app state, a fake worker on the other end
//! of the channels (or the real worker on a tiny dataset), and assertions on what it sends
//! and shows.

use crossbeam_channel::{Receiver, Sender};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use morphogen::data::{DatasetSource, LoadOptions};
use morphogen::engine::{ImageShape, MachineKind, StepRecord};
use morphogen::ui::export_panel::{ExportKind, PathSource};
use morphogen::ui::{Settings, StudioApp};
use morphogen::worker::{Command, DatasetInfo, Event, WorkerHandle};

const SHAPE: ImageShape = ImageShape { c: 1, h: 8, w: 8 };

fn harness(settings: Settings) -> (Harness<'static, StudioApp>, Receiver<Command>, Sender<Event>) {
    let (handle, commands, events) = WorkerHandle::detached();
    let app = StudioApp::new(settings, handle);
    let h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .with_accessibility_check(false)
        .build_ui_state(|ui, app: &mut StudioApp| app.ui_contents(ui), app);
    (h, commands, events)
}

fn drain(rx: &Receiver<Command>) -> Vec<Command> {
    rx.try_iter().collect()
}

fn run_id(cmd: &Command) -> u64 {
    match cmd {
        Command::Start { run, .. } | Command::Branch { run, .. } => *run,
        other => panic!("not a run command: {other:?}"),
    }
}

fn dataset_event() -> Event {
    Event::Dataset(Box::new(DatasetInfo {
        source: DatasetSource::Bundled("mnist".into()),
        options: LoadOptions::default(),
        shape: SHAPE,
        len: 10,
        classes: vec!["0".into(), "1".into()],
        summary: "10 images read".into(),
        skipped: vec![],
        hash: "abc".into(),
        thumbnails: vec![vec![0.0; 64]; 3],
    }))
}

fn step(run: u64, k: usize) -> Event {
    Event::Step {
        run,
        record: Box::new(StepRecord {
            step: k,
            t: 1.0 - k as f64 / 20.0,
            alpha_bar: 0.1 * k as f64,
            patch: 7,
            x_t: vec![k as f32 / 20.0; 64],
            x0_hat: vec![-(k as f32) / 20.0; 64],
            entropy: 1.0,
            nearest: (0, 0.5),
        }),
        seconds: 0.01,
    }
}

/// Starts the app, answers its first Start with a dataset and `n` steps; returns the run id.
fn started_with_steps(
    h: &mut Harness<'static, StudioApp>,
    rx: &Receiver<Command>,
    tx: &Sender<Event>,
    n: usize,
) -> u64 {
    h.run_steps(2);
    let cmds = drain(rx);
    let start = cmds.iter().find(|c| matches!(c, Command::Start { .. })).expect("the first frame starts a run");
    let id = run_id(start);
    tx.send(dataset_event()).unwrap();
    for k in 0..n {
        tx.send(step(id, k)).unwrap();
    }
    h.run_steps(2);
    id
}

#[test]
fn first_frame_starts_the_default_run() {
    let (mut h, rx, _tx) = harness(Settings::default());
    h.run_steps(1);
    let cmds = drain(&rx);
    let Command::Start { recipe, .. } = &cmds[0] else { panic!("{cmds:?}") };
    assert_eq!(recipe.dataset, DatasetSource::Bundled("mnist".into()));
    assert_eq!(recipe.sampler.machine, MachineKind::Els);
    assert_eq!(recipe.sampler.steps, 20);
    assert_eq!(recipe.sampler.patch.label(), "MNIST ResNet");
    assert_eq!(recipe.sampler.schedule.name(), "cosine");
}

#[test]
fn steps_stream_in_and_the_view_follows() {
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 4);
    assert_eq!(h.state().history.current().unwrap().steps.len(), 4);
    assert_eq!(h.state().time.cursor, 3);
    h.get_by_label_contains("step 3 / 19");
    tx.send(step(id, 4)).unwrap();
    h.run_steps(2);
    assert_eq!(h.state().time.cursor, 4);
    // events of an older run are ignored
    tx.send(step(id + 100, 5)).unwrap();
    h.run_steps(2);
    assert_eq!(h.state().history.current().unwrap().steps.len(), 5);
}

#[test]
fn play_pause_toggles_with_button_and_space() {
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 5);
    assert!(!h.state().time.playing);
    h.get_by_label("Play").click();
    h.run_steps(2);
    assert!(h.state().time.playing);
    h.key_press(egui::Key::Space);
    h.run_steps(2);
    assert!(!h.state().time.playing);
}

#[test]
fn scrubbing_selects_the_shown_step() {
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 6);
    h.key_press(egui::Key::ArrowLeft);
    h.run_steps(2);
    assert_eq!(h.state().time.cursor, 4);
    h.get_by_label_contains("step 4 / 19");
    h.key_press(egui::Key::Home);
    h.run_steps(2);
    assert_eq!(h.state().time.cursor, 0);
    // the user scrubbed away, so a new step does not move the view
    tx.send(step(id, 6)).unwrap();
    h.run_steps(2);
    assert_eq!(h.state().time.cursor, 0);
    h.key_press(egui::Key::End);
    h.run_steps(2);
    assert_eq!(h.state().time.cursor, 6);
}

#[test]
fn a_control_change_cancels_and_restarts() {
    let (mut h, rx, tx) = harness(Settings::default());
    let first = started_with_steps(&mut h, &rx, &tx, 3);
    h.get_by_label("Local").click();
    h.run_steps(2);
    let cmds = drain(&rx);
    let Command::Start { run, recipe } = cmds.last().expect("a restart") else { panic!("{cmds:?}") };
    assert!(*run > first);
    assert_eq!(recipe.sampler.machine, MachineKind::Local);
    assert!(h.state().history.current().unwrap().steps.is_empty());
    // display-only settings do not restart
    h.state_mut().settings.show_grid = false;
    h.run_steps(2);
    assert!(drain(&rx).is_empty());
}

#[test]
fn branch_keeps_the_steps_before_the_cursor() {
    let (mut h, rx, tx) = harness(Settings { branch: true, ..Settings::default() });
    let first = started_with_steps(&mut h, &rx, &tx, 6);
    h.state_mut().time.cursor = 3;
    h.state_mut().time.follow = false;
    h.get_by_label("circular").click();
    h.run_steps(2);
    let cmds = drain(&rx);
    let Command::Branch { run, recipe, from_step, x_t } = cmds.last().expect("a branch") else { panic!("{cmds:?}") };
    assert!(*run > first);
    assert_eq!(*from_step, 3);
    assert_eq!(recipe.sampler.boundary, morphogen::engine::Boundary::Circular);
    // the recipe remembers the run it branched from, so an export replays all of it
    let parent = recipe.branched_from.as_ref().expect("a branched recipe");
    assert_eq!(parent.from_step, 3);
    assert_eq!(parent.recipe.sampler.boundary, morphogen::engine::Boundary::Zeros);
    assert_eq!(x_t, &vec![3.0 / 20.0; 64]);
    let cur = h.state().history.current().unwrap();
    assert_eq!(cur.steps.len(), 3);
    assert_eq!(cur.segments.len(), 2);
    assert_eq!(cur.segments[1].from_step, 3);
    // a change to the time grid cannot branch: it restarts
    h.state_mut().settings.steps = 10;
    h.run_steps(2);
    assert!(matches!(drain(&rx).last(), Some(Command::Start { .. })));
}

#[test]
fn an_error_event_shows_a_message() {
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 1);
    tx.send(Event::Error { run: Some(id), message: "the sampler crashed: boom".into() }).unwrap();
    h.run_steps(2);
    h.get_by_label_contains("the sampler crashed: boom");
    assert!(!h.state().computing);
    h.get_by_label("Dismiss").click();
    h.run_steps(2);
    assert!(h.query_by_label_contains("the sampler crashed").is_none());
}

#[test]
fn real_worker_survives_a_panic_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("tiny.npy");
    let data = morphogen::engine::noise::gaussian(3, 0, 12 * 64)
        .into_iter()
        .map(|v| (v * 0.5).clamp(-1.0, 1.0))
        .collect::<Vec<_>>();
    morphogen::data::write_npy_f32(&npy, &[12, 8, 8], &data).unwrap();
    let settings = Settings {
        dataset: DatasetSource::Npy(npy),
        steps: 4,
        device: morphogen::engine::DeviceChoice::Cpu,
        ..Settings::default()
    };
    let handle = WorkerHandle::spawn(|| {});
    let app = StudioApp::new(settings, handle);
    let mut h = Harness::builder()
        .with_accessibility_check(false)
        .build_ui_state(|ui, app: &mut StudioApp| app.ui_contents(ui), app);
    let wait = |h: &mut Harness<'static, StudioApp>, what: &dyn Fn(&StudioApp) -> bool| {
        let t = std::time::Instant::now();
        while !what(h.state()) {
            assert!(t.elapsed().as_secs() < 60, "timed out");
            h.step();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    wait(&mut h, &|a| a.history.current().is_some_and(|r| r.finished));
    assert_eq!(h.state().history.current().unwrap().steps.len(), 4);
    h.state().worker.send(Command::Crash);
    wait(&mut h, &|a| !a.errors.is_empty());
    assert!(h.state().errors[0].contains("crash requested"));
    h.state_mut().errors.clear();
    h.state_mut().restart();
    wait(&mut h, &|a| a.history.current().is_some_and(|r| r.finished));
    assert_eq!(h.state().history.current().unwrap().steps.len(), 4);

    // export a GIF from the app into a fixed folder (no dialog), then refuse to overwrite it
    let out = tempfile::tempdir().unwrap();
    h.state_mut().export.paths = PathSource::Fixed(out.path().into());
    h.state_mut().ask_path(ExportKind::Gif);
    let msg = h.state_mut().wait_for_export().unwrap();
    assert!(msg.starts_with("wrote 2 file"), "{msg}");
    let gif: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gif"))
        .collect();
    assert_eq!(gif.len(), 1);
    let before = std::fs::read(&gif[0]).unwrap();
    h.state_mut().ask_path(ExportKind::Gif);
    assert!(h.state().export.confirm.is_some(), "an existing file asks before overwriting");
    h.run_steps(2);
    h.get_by_label("Cancel").click();
    h.run_steps(2);
    assert!(h.state().export.confirm.is_none());
    assert_eq!(std::fs::read(&gif[0]).unwrap(), before);
}
