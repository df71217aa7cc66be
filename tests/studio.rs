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
    harness_with(settings, |_| {})
}

/// [`harness`] with a hook on the app before its first frame (which the builder runs).
fn harness_with(
    settings: Settings,
    setup: impl FnOnce(&mut StudioApp),
) -> (Harness<'static, StudioApp>, Receiver<Command>, Sender<Event>) {
    let (handle, commands, events) = WorkerHandle::detached();
    let mut app = StudioApp::new(settings, handle);
    setup(&mut app);
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
        images: Some(std::sync::Arc::new(vec![0.25; 10 * 64])),
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
            nearest: Some((0, 0.5)),
            maps: None,
            nearest_shifted: None,
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

/// A fall back to the CPU stops nothing: the run keeps computing, the message says what
/// happened, and the status bar keeps saying it after the message is dismissed.
#[test]
fn a_gpu_fallback_is_said_and_the_run_goes_on() {
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 1);
    let computing = h.state().computing;
    let line = "the GPU failed (out of memory); ELS, LS and Local run on the CPU from here";
    tx.send(Event::Notice { message: line.into() }).unwrap();
    h.run_steps(2);
    assert_eq!(h.state().computing, computing, "a notice stops nothing");
    assert!(h.query_all_by_label_contains("run on the CPU from here").count() >= 2, "message and status bar");
    h.get_by_label("Dismiss").click();
    h.run_steps(2);
    assert_eq!(h.query_all_by_label_contains("run on the CPU from here").count(), 1, "the status bar keeps it");
}

#[test]
fn real_worker_survives_a_panic_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("tiny.npy");
    let data = morphogen::engine::sampling::noise::gaussian(3, 0, 12 * 64)
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
    // A panic inside the worker comes back as an error, and the worker goes on.
    {
        h.state().worker.send(Command::Crash);
        wait(&mut h, &|a| !a.errors.is_empty());
        assert!(h.state().errors[0].contains("crash requested"));
        h.state_mut().errors.clear();
    }
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

/// Presses on the "locality scale" slider, drags it `frames` frames to the right (one frame
/// each), and returns where the pointer is, still held.
fn drag_locality(h: &mut Harness<'static, StudioApp>, frames: usize) -> egui::Pos2 {
    let rect = h.get_by_role_and_label(egui::accesskit::Role::Slider, "locality scale").rect();
    let mut pos = rect.left_center() + egui::vec2(rect.width() * 0.3, 0.0);
    h.hover_at(pos);
    h.step();
    h.drag_at(pos);
    h.step();
    for _ in 0..frames {
        pos.x += 2.0;
        h.hover_at(pos);
        h.step();
    }
    pos
}

#[test]
fn dragging_a_slider_for_30_frames_makes_exactly_one_new_run() {
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 3);
    let runs_before = h.state().history.runs.len();
    let scale_before = h.state().settings.locality_scale;
    let pos = drag_locality(&mut h, 30);
    assert_ne!(h.state().settings.locality_scale, scale_before, "the drag moves the slider");
    assert!(drain(&rx).is_empty(), "nothing restarts while the pointer is held and moving");
    assert_eq!(h.state().history.runs.len(), runs_before);
    h.drop_at(pos);
    h.run_steps(2);
    let starts: Vec<_> = drain(&rx).into_iter().filter(|c| matches!(c, Command::Start { .. })).collect();
    assert_eq!(starts.len(), 1, "one restart when the drag ends");
    let Command::Start { recipe, .. } = &starts[0] else { unreachable!() };
    assert_eq!(recipe.sampler.locality_scale, h.state().settings.locality_scale);
    assert_eq!(h.state().history.runs.len(), runs_before + 1);
    // restarting again before the new run computed anything replaces it instead of piling up
    h.state_mut().settings.seed = 41;
    h.run_steps(2);
    h.state_mut().settings.seed = 42;
    h.run_steps(2);
    assert_eq!(drain(&rx).len(), 2);
    assert_eq!(h.state().history.runs.len(), runs_before + 1);
}

#[test]
fn a_branching_drag_recomputes_from_the_same_step_for_the_whole_drag() {
    let (mut h, rx, tx) = harness(Settings { branch: true, ..Settings::default() });
    started_with_steps(&mut h, &rx, &tx, 6);
    h.state_mut().time.cursor = 2;
    h.state_mut().time.follow = false;
    let runs_before = h.state().history.runs.len();
    let pos = drag_locality(&mut h, 10);
    assert!(drain(&rx).is_empty());
    // hold still past the settle time: the change applies mid-drag, as a branch from step 2
    std::thread::sleep(morphogen::ui::live::SETTLE + std::time::Duration::from_millis(20));
    h.step();
    let cmds = drain(&rx);
    let [Command::Branch { from_step, .. }] = cmds.as_slice() else { panic!("{cmds:?}") };
    assert_eq!(*from_step, 2);
    // the branch follows its new steps, and the drag goes on
    assert!(h.state().time.follow);
    let mut pos = pos;
    for _ in 0..10 {
        pos.x += 2.0;
        h.hover_at(pos);
        h.step();
    }
    h.drop_at(pos);
    h.run_steps(2);
    let cmds = drain(&rx);
    let [Command::Branch { from_step, x_t, recipe, .. }] = cmds.as_slice() else { panic!("{cmds:?}") };
    assert_eq!(*from_step, 2, "still from the step the drag started on");
    assert_eq!(x_t, &vec![2.0 / 20.0; 64], "with the state at that step");
    assert_eq!(recipe.branched_from.as_ref().unwrap().recipe.sampler.locality_scale, 1.0);
    let cur = h.state().history.current().unwrap();
    assert_eq!(cur.steps.len(), 2, "steps 0 and 1 kept");
    assert_eq!(h.state().history.runs.len(), runs_before + 1, "the unstarted branch was replaced");
}

#[test]
fn a_restart_keeps_the_old_images_dimmed_until_the_new_step() {
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 4);
    h.get_by_label("Local").click();
    h.run_steps(2);
    let Some(Command::Start { run, .. }) = drain(&rx).pop() else { panic!("no restart") };
    let stale = h.state().stale.as_ref().expect("the last images are kept");
    assert_eq!(stale.step.record.step, 3);
    assert!(stale.label.contains("ELS"), "{}", stale.label);
    h.get_by_label_contains("still showing the previous run");
    tx.send(step(run, 0)).unwrap();
    h.run_steps(2);
    assert!(h.state().stale.is_none());
    assert!(h.query_by_label_contains("still showing the previous run").is_none());
}

#[test]
fn the_recipe_records_the_device_and_data_the_worker_used() {
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 1);
    assert_eq!(h.state().history.current().unwrap().recipe.device, morphogen::engine::DeviceChoice::Auto);
    tx.send(Event::Started { run: id, device: morphogen::engine::DeviceChoice::Cpu, dataset_hash: "ab".repeat(32) })
        .unwrap();
    h.run_steps(2);
    let recipe = &h.state().history.current().unwrap().recipe;
    assert_eq!(recipe.device, morphogen::engine::DeviceChoice::Cpu);
    assert_eq!(recipe.dataset_hash.as_deref(), Some("ab".repeat(32).as_str()));
}

#[test]
fn an_export_that_crashes_becomes_a_message_and_frees_the_panel() {
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 2);
    let out = tempfile::tempdir().unwrap();
    let run = h.state().history.current().unwrap();
    let snapshot = morphogen::ui::export_panel::Snapshot {
        traj: morphogen::trajectory::Trajectory { recipe: run.recipe.clone(), shape: run.shape, steps: Vec::new() },
        cursor: 5, // no such step: rendering it panics inside the export thread
        options: morphogen::export::ExportOptions { scale: 1, fps: 10.0, ..Default::default() },
        curves: Default::default(),
    };
    h.state_mut().start_export(ExportKind::Frame, snapshot, out.path().join("f.png"), false);
    let msg = h.state_mut().wait_for_export().unwrap();
    assert!(msg.contains("crashed"), "{msg}");
    assert!(!h.state().export.is_running());
    assert!(!out.path().join("f.png").exists());
}

#[test]
fn an_export_writes_what_was_on_screen_when_its_button_was_clicked() {
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 3);
    let out = tempfile::tempdir().unwrap();
    h.state_mut().export.paths = PathSource::Fixed(out.path().into());
    // the trajectory folder exists already, so the export waits on "Overwrite?"
    let name = "mnist_els_seed0_trajectory";
    std::fs::create_dir(out.path().join(name)).unwrap();
    h.state_mut().ask_path(ExportKind::Trajectory);
    assert!(h.state().export.confirm.is_some());
    // meanwhile the run moves on
    tx.send(step(id, 3)).unwrap();
    tx.send(step(id, 4)).unwrap();
    h.run_steps(2);
    assert_eq!(h.state().history.current().unwrap().steps.len(), 5);
    h.get_by_label("Overwrite").click();
    h.run_steps(2);
    // The export may already have finished and been collected by a frame's poll (on a loaded
    // machine two frames outlast writing three steps): then its message is on the panel.
    let msg = match h.state_mut().wait_for_export() {
        Some(msg) => msg,
        None => h.state().export.message.clone().expect("the export ran and said how it went"),
    };
    assert!(msg.starts_with("wrote"), "{msg}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(name).join("steps.json")).unwrap()).unwrap();
    assert_eq!(meta.as_array().unwrap().len(), 3, "the three steps shown at the click");
}

#[test]
fn opening_a_recipe_runs_it_exactly_or_says_why_not() {
    use morphogen::engine::PatchSchedule;
    use morphogen::recipe::{Branch, Recipe};
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 2);
    let dir = tempfile::tempdir().unwrap();
    h.state_mut().export.paths = PathSource::Fixed(dir.path().into());
    let mut parent = Recipe::default();
    parent.sampler.steps = 6;
    let mut recipe = parent.clone();
    recipe.sampler.patch = PatchSchedule::List { per_step: vec![15, 13, 9, 7, 5, 3] };
    recipe.sampler.locality_scale = 1.5;
    recipe.branched_from = Some(Box::new(Branch { from_step: 2, recipe: parent }));
    std::fs::write(dir.path().join("recipe.json"), recipe.to_json()).unwrap();
    h.get_by_label("Open recipe…").click();
    h.run_steps(2);
    let cmds = drain(&rx);
    let Some(Command::Start { recipe: sent, .. }) = cmds.last() else { panic!("{cmds:?}") };
    assert_eq!(sent, &recipe, "the whole recipe runs: list, branch and all");
    let s = &h.state().settings;
    assert_eq!(s.patch_mode, morphogen::ui::settings::PatchMode::List);
    assert_eq!(s.patch_list, vec![15, 13, 9, 7, 5, 3]);
    assert_eq!(s.locality_scale, 1.5);
    let segments = &h.state().history.current().unwrap().segments;
    assert_eq!(segments.iter().map(|s| s.from_step).collect::<Vec<_>>(), vec![0, 2]);
    // nothing restarts on the next frame: the settings match the recipe
    h.run_steps(2);
    assert!(drain(&rx).is_empty());

    // out of the studio's range: refused with a message, not clamped into another run
    let mut long = Recipe::default();
    long.sampler.steps = 5000;
    std::fs::write(dir.path().join("recipe.json"), long.to_json()).unwrap();
    h.get_by_label("Open recipe…").click();
    h.run_steps(2);
    assert!(drain(&rx).is_empty());
    h.get_by_label_contains("sampler.steps = 5000 is outside the studio's range");
    assert_eq!(h.state().settings.steps, 6);
}

/// A step with provenance maps shows the selected map beside x̂₀ with its legend, and hovering
/// a pixel of the map names the training image and the place its winning patch came from.
#[test]
fn the_mosaic_panel_names_the_hovered_pixels_source() {
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 0);
    tx.send(Event::Started { run: id, device: morphogen::engine::DeviceChoice::Cpu, dataset_hash: "abc".into() })
        .unwrap();
    let mut ev = step(id, 0);
    if let Event::Step { record, .. } = &mut ev {
        // Pixel p's winner is image p % 3, taken from the pixel one row up (row 0 in place).
        record.maps = Some(morphogen::engine::PixelMaps {
            winner: (0..64).map(|p| p % 3).collect(),
            source: (0..64).map(|p| if p >= 8 { p - 8 } else { p }).collect(),
            entropy: vec![0.5; 64],
            windows: None,
        });
    }
    tx.send(ev).unwrap();
    h.run_steps(3);
    h.get_by_label_contains("this step draws on 3 of the 10 images");
    let (y, x) = hover_a_map_pixel(&mut h);
    let p = y * 8 + x;
    h.get_by_label_contains(&format!("largest weight from training image #{}", p % 3));
    if y > 0 {
        h.get_by_label_contains("moved 1.0 px");
    }
}

/// Hovers the map panel: its image is centred in the area under its title, so walk down and
/// across from the title until the pointer is over a pixel of it; returns that pixel.
fn hover_a_map_pixel(h: &mut Harness<'static, StudioApp>) -> (usize, usize) {
    let title = h.get_by_label("mosaic").rect();
    'search: for dy in (20..600).step_by(20) {
        for dx in (0..300).step_by(20) {
            h.hover_at(egui::pos2(title.left() + dx as f32, title.bottom() + dy as f32));
            h.run_steps(1);
            if h.state().maps_view.hovered.is_some() {
                break 'search;
            }
        }
    }
    h.run_steps(2);
    h.state().maps_view.hovered.expect("a pixel under the pointer")
}

/// The inspector lists the top K votes (K from the settings, sent with the request), each with
/// its patch and its training image, and says how many votes carry 90% of the weight.
#[test]
fn the_inspector_lists_the_top_k_with_the_ninety_percent_count() {
    use morphogen::engine::{Inspection, Vote};
    let (mut h, rx, tx) = harness(Settings { inspect_top: 5, ..Settings::default() });
    let id = started_with_steps(&mut h, &rx, &tx, 2);
    h.state_mut().request_inspect(3, 4);
    let cmds = drain(&rx);
    let Some(Command::Inspect { top, y, x, .. }) = cmds.iter().find(|c| matches!(c, Command::Inspect { .. })) else {
        panic!("{cmds:?}")
    };
    assert_eq!((*top, *y, *x), (5, 3, 4));
    let votes: Vec<Vote> =
        (0..8).map(|k| Vote { image: 100 + k, y: 3, x: 4, weight: 0.5f64.powi(k as i32 + 1) }).collect();
    let result = Inspection {
        votes,
        candidates: 80,
        weight_sum: 1.0,
        entropy: 1.2,
        x0: vec![0.1],
        count_90: 4,
        filter: None,
        window: None,
    };
    let patch = (ImageShape { c: 1, h: 3, w: 3 }, vec![0.0; 9]);
    tx.send(Event::Inspected {
        reach: None,
        run: id,
        step: 1,
        y: 3,
        x: 4,
        result: Box::new(result),
        crops: vec![patch.clone(); 8],
        images: vec![vec![0.0; 64]; 8],
        query: patch,
        sensitivity: Some((0..64).map(|i| (i as f64 - 30.0) / 64.0).collect()),
    })
    .unwrap();
    h.run_steps(2);
    let summary = h.get_by_label_contains("4 carry 90% of the weight").rect();
    // The sensitivity map sits in the inspector beside its caption, which wraps too.
    let caption = h.get_by_label_contains("Sensitivity of pixel (4, 3)").rect();
    assert!(caption.right() <= summary.right() + 1.0 && caption.height() > 20.0, "{caption:?}");
    // The summary wraps inside the inspector instead of widening it (it once grew the panel
    // from 280 to 870 px and squeezed the images to 65 px).
    assert!(summary.width() <= 420.0 && summary.height() > 20.0, "{summary:?}");
    let x_t = h.get_by_label("x_t (noisy state)").rect();
    assert!(x_t.right() < summary.left(), "the canvas keeps its room: {x_t:?} vs {summary:?}");
    // The timeline's row wraps beside the wider inspector instead of running under it (its
    // readout and last cells were hidden, and its separator ran into the inspector).
    let readout = h.get_by_label_contains("ᾱ = ").rect();
    assert!(readout.right() <= summary.left(), "the timeline readout {readout:?} runs under the inspector {summary:?}");
    h.get_by_label("#104");
    assert!(h.query_by_label("#105").is_none(), "only the top 5 are listed");
}

/// Compare mode: a fresh start also starts the second column on its own worker with the
/// same seed and grid but the other machine; its x̂₀ shows beside the main one at the same
/// step, with the Pearson r of the two, per step in a plot of its own.
#[test]
fn compare_mode_runs_a_second_column_and_plots_r() {
    use morphogen::ui::compare::CompareSettings;
    let settings = Settings {
        compare_on: true,
        compare: CompareSettings { machine: MachineKind::Ideal, preset: None, dataset: None, unedited: false },
        ..Settings::default()
    };
    let (cmp_handle, cmp_rx, cmp_tx) = WorkerHandle::detached();
    let (mut h, rx, tx) = harness_with(settings, |app| app.compare.worker = Some(cmp_handle));
    let id = started_with_steps(&mut h, &rx, &tx, 3);
    let cmds: Vec<Command> = cmp_rx.try_iter().collect();
    let Some(Command::Start { run: cmp_id, recipe }) = cmds.iter().find(|c| matches!(c, Command::Start { .. })) else {
        panic!("the second column did not start: {cmds:?}")
    };
    let main = h.state().history.current().unwrap().recipe.clone();
    assert_eq!(recipe.sampler.machine, MachineKind::Ideal);
    assert_eq!((recipe.sampler.seed, recipe.sampler.steps), (main.sampler.seed, main.sampler.steps));
    assert_eq!(recipe.sampler.schedule, main.sampler.schedule);
    let _ = id;
    cmp_tx.send(dataset_event()).unwrap();
    for k in 0..3 {
        // The second column's x̂₀ is an affine copy of the main one's: r = 1.
        let Event::Step { mut record, .. } = step(*cmp_id, k) else { unreachable!() };
        record.x0_hat = record.x0_hat.iter().enumerate().map(|(i, v)| 2.0 * (v + i as f32 * 0.01) + 0.5).collect();
        cmp_tx.send(Event::Step { run: *cmp_id, record, seconds: 0.01 }).unwrap();
    }
    h.run_steps(3);
    h.get_by_label("x̂₀, Ideal");
    h.get_by_label("r of the two columns' x̂₀ (Pearson)");
    h.get_by_label_contains("compare: r(x̂₀, Ideal) =");
    assert_eq!(h.state().compare.steps.len(), 3);
    let app = h.state();
    let main: Vec<&StepRecord> = app.history.current().unwrap().steps.iter().map(|s| &s.record).collect();
    let r = app.compare.correlations(app.history.current().unwrap().id, &main);
    assert_eq!(r.iter().map(|p| p[0]).collect::<Vec<_>>(), vec![0.0, 1.0, 2.0], "one r per step both columns have");
}

/// A studio in compare mode against `machine`, its main run started with three steps; returns
/// the harness, both ends of the main worker, the second column's ends and the run ids.
#[allow(clippy::type_complexity)]
fn comparing(
    machine: MachineKind,
) -> (Harness<'static, StudioApp>, Receiver<Command>, Sender<Event>, Receiver<Command>, Sender<Event>, u64, u64) {
    use morphogen::ui::compare::CompareSettings;
    let settings = Settings {
        compare_on: true,
        compare: CompareSettings { machine, preset: None, dataset: None, unedited: false },
        ..Settings::default()
    };
    let (cmp_handle, cmp_rx, cmp_tx) = WorkerHandle::detached();
    let (mut h, rx, tx) = harness_with(settings, |app| app.compare.worker = Some(cmp_handle));
    let id = started_with_steps(&mut h, &rx, &tx, 3);
    let cmp_id = cmp_rx.try_iter().find_map(|c| matches!(c, Command::Start { .. }).then(|| run_id(&c))).unwrap();
    cmp_tx.send(dataset_event()).unwrap();
    (h, rx, tx, cmp_rx, cmp_tx, id, cmp_id)
}

/// Compare mode: clicking a pixel asks both columns' workers for its sensitivity at every
/// computed step; the two maps show side by side at the scrubbed step with their cosine, and
/// the cosine of every step both columns have is plotted.
#[test]
fn compare_mode_sets_both_sensitivity_maps_side_by_side_with_their_cosine() {
    let (mut h, rx, tx, cmp_rx, cmp_tx, id, cmp_id) = comparing(MachineKind::Cnn);
    for k in 0..3 {
        cmp_tx.send(step(cmp_id, k)).unwrap();
    }
    h.run_steps(3);
    h.state_mut().time.apply(morphogen::ui::timeline::TimeCommand::Seek(1), 3);
    h.state_mut().request_inspect(3, 4);
    let asked = |cmds: Vec<Command>| {
        cmds.into_iter()
            .find_map(|c| match c {
                Command::Sensitivity { run, y, x, steps, .. } => {
                    Some((run, y, x, steps.iter().map(|s| (s.0, s.2.machine)).collect::<Vec<_>>()))
                }
                _ => None,
            })
            .expect("no sensitivity asked for")
    };
    let every = |m| (0..3).map(|k| (k, m)).collect::<Vec<_>>();
    assert_eq!(asked(drain(&rx)), (id, 3, 4, every(MachineKind::Els)), "the main column's every step");
    assert_eq!(asked(cmp_rx.try_iter().collect()), (cmp_id, 3, 4, every(MachineKind::Cnn)), "the second's");
    // Step 1's maps: cos 0.6; step 0's: opposite (cos −1); step 2 only from one column.
    let map = |v: [f64; 2]| {
        let mut m = vec![0.0; 64];
        (m[27], m[28]) = (v[0], v[1]);
        Some(m)
    };
    let send =
        |tx: &Sender<Event>, run, step, v| tx.send(Event::Sensitivity { run, step, y: 3, x: 4, map: map(v) }).unwrap();
    send(&tx, id, 1, [1.0, 0.0]);
    send(&cmp_tx, cmp_id, 1, [0.6, 0.8]);
    send(&tx, id, 0, [1.0, 1.0]);
    send(&cmp_tx, cmp_id, 0, [-2.0, -2.0]);
    send(&tx, id, 2, [1.0, 0.0]);
    h.run_steps(3);
    h.get_by_label("Both columns' sensitivity of pixel (4, 3)");
    h.get_by_label("cosine of the two maps at step 1: 0.600");
    let pair = h.state().sensitivity_pair.as_ref().unwrap();
    let cos: Vec<(usize, f64)> = pair.cosine.iter().map(|(&k, &c)| (k, (c * 1e9).round() / 1e9)).collect();
    assert_eq!(cos, vec![(0, -1.0), (1, 0.6)]);
    // A map for another pixel (an older click) is not mixed in.
    tx.send(Event::Sensitivity { run: id, step: 2, y: 0, x: 0, map: map([0.0, 1.0]) }).unwrap();
    send(&cmp_tx, cmp_id, 2, [0.0, 1.0]);
    h.run_steps(2);
    let c2 = h.state().sensitivity_pair.as_ref().unwrap().cosine[&2];
    assert!(c2.abs() < 1e-12, "step 2 compares the (3, 4) maps: {c2}");
}

/// "Plots…" writes the run's curves as the timeline plots them, with compare mode's r of the
/// two columns among them, into a folder of its own.
#[test]
fn plots_export_the_runs_curves_with_the_comparison() {
    let (mut h, _rx, _tx, _cmp_rx, cmp_tx, _id, cmp_id) = comparing(MachineKind::Ideal);
    for k in 0..3 {
        let Event::Step { mut record, .. } = step(cmp_id, k) else { unreachable!() };
        record.x0_hat = record.x0_hat.iter().enumerate().map(|(i, v)| v + (i % 7) as f32 * 0.01 * k as f32).collect();
        cmp_tx.send(Event::Step { run: cmp_id, record, seconds: 0.01 }).unwrap();
    }
    h.run_steps(3);
    let out = tempfile::tempdir().unwrap();
    h.state_mut().export.paths = PathSource::Fixed(out.path().into());
    h.get_by_label("Plots…").click();
    h.run_steps(2);
    let msg = match h.state_mut().wait_for_export() {
        Some(msg) => msg,
        None => h.state().export.message.clone().expect("the export ran and said how it went"),
    };
    assert!(msg.starts_with("wrote 4"), "{msg}");
    let dir = out.path().join("mnist_els_seed0_plots");
    for name in ["entropy.png", "nearest.png", "compare-r.png", "recipe.json"] {
        assert!(dir.join(name).exists(), "{name} is missing");
    }
    let png = image::load_from_memory(&std::fs::read(dir.join("compare-r.png")).unwrap()).unwrap().to_rgb8();
    let green = png.pixels().filter(|p| p.0 == [60, 160, 90]).count();
    assert!(green > 50, "the r line has {green} pixels");
}

/// Novelty at a glance: x̂₀'s nearest training image beside it with its distance, and on the
/// last step the nearest under circular shifts.
#[test]
fn the_nearest_training_image_shows_beside_x0() {
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 0);
    tx.send(Event::Started { run: id, device: morphogen::engine::DeviceChoice::Cpu, dataset_hash: "abc".into() })
        .unwrap();
    let Event::Step { mut record, .. } = step(id, 0) else { unreachable!() };
    record.nearest = Some((4, 0.25));
    record.nearest_shifted = Some((6, 0.125, (2, 1)));
    tx.send(Event::Step { run: id, record, seconds: 0.01 }).unwrap();
    h.run_steps(3);
    h.get_by_label("nearest training image #4");
    h.get_by_label_contains(
        "nearest training image #4: RMS 0.250; under circular shifts: #6 moved by (1, 2) px, RMS 0.125",
    );
}

/// The seed grid runs the current settings once per seed on its own worker, fills in as each
/// sample finishes, opens a clicked sample's seed in the main view, and exports one sheet.
#[test]
fn the_seed_grid_fills_in_opens_a_sample_and_exports_a_sheet() {
    let dir = tempfile::tempdir().unwrap();
    let (grid_handle, grid_rx, grid_tx) = WorkerHandle::detached();
    let (mut h, rx, tx) = harness_with(Settings { seed: 5, ..Settings::default() }, |app| {
        app.seed_grid.worker = Some(grid_handle);
        app.seed_grid.open = true;
        (app.seed_grid.rows, app.seed_grid.cols) = (1, 2);
        app.export.paths = PathSource::Fixed(dir.path().to_path_buf());
    });
    started_with_steps(&mut h, &rx, &tx, 1);
    h.get_by_label("Run grid").click();
    h.run_steps(2);
    grid_tx.send(dataset_event()).unwrap();
    for seed in [5u64, 6] {
        let cmds: Vec<Command> = grid_rx.try_iter().collect();
        let Some(Command::Start { run, recipe }) = cmds.iter().find(|c| matches!(c, Command::Start { .. })) else {
            panic!("no start for seed {seed}: {cmds:?}")
        };
        assert_eq!(recipe.sampler.seed, seed);
        let Event::Step { mut record, .. } = step(*run, 19) else { unreachable!() };
        record.x0_hat = vec![seed as f32 / 10.0; 64];
        grid_tx.send(Event::Step { run: *run, record, seconds: 0.1 }).unwrap();
        grid_tx.send(Event::Finished { run: *run }).unwrap();
        h.run_steps(2);
    }
    h.get_by_label("2 / 2 done");
    drain(&rx);
    h.get_by_label("seed 6").click();
    h.run_steps(2);
    let cmds = drain(&rx);
    let Some(Command::Start { recipe, .. }) = cmds.iter().find(|c| matches!(c, Command::Start { .. })) else {
        panic!("opening a sample starts it in the main view: {cmds:?}")
    };
    assert_eq!(recipe.sampler.seed, 6);
    h.get_by_label("Export sheet…").click();
    h.run_steps(2);
    let sheet = image::open(dir.path().join("seed-grid.png")).expect("the sheet was written");
    assert!(sheet.width() > 2 * 32 && sheet.height() > 32, "{}×{}", sheet.width(), sheet.height());
}

/// The machine zoo: all seven machines from one seed, one column each, labelled; a machine
/// that refuses these images marks its cell and the zoo goes on; the sheet exports.
#[test]
fn the_machine_zoo_runs_every_machine_from_one_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (grid_handle, grid_rx, grid_tx) = WorkerHandle::detached();
    let (mut h, rx, tx) = harness_with(Settings { seed: 9, ..Settings::default() }, |app| {
        app.seed_grid.worker = Some(grid_handle);
        app.export.paths = PathSource::Fixed(dir.path().to_path_buf());
    });
    started_with_steps(&mut h, &rx, &tx, 1);
    // The button sits at the foot of the settings panel: scroll to it as a person would.
    h.get_by_label("Machine zoo…").scroll_to_me();
    h.run_steps(3);
    h.get_by_label("Machine zoo…").click();
    h.run_steps(3);
    h.get_by_label("seed × 7 machines");
    h.get_by_label("Run grid").click();
    h.run_steps(2);
    grid_tx.send(dataset_event()).unwrap();
    let mut machines = Vec::new();
    for (i, want) in MachineKind::closed_form().into_iter().enumerate() {
        let cmds: Vec<Command> = grid_rx.try_iter().collect();
        let Some(Command::Start { run, recipe }) = cmds.iter().find(|c| matches!(c, Command::Start { .. })) else {
            panic!("no start for {want:?}: {cmds:?}")
        };
        assert_eq!(recipe.sampler.seed, 9, "every machine starts from the same seed");
        assert_eq!(recipe.sampler.machine, want);
        machines.push(recipe.sampler.machine);
        if want == MachineKind::Gaussian {
            grid_tx.send(Event::Error { run: Some(*run), message: "Gaussian is limited to D ≤ 4096".into() }).unwrap();
        } else {
            let Event::Step { mut record, .. } = step(*run, 19) else { unreachable!() };
            record.x0_hat = vec![i as f32 / 10.0; 64];
            grid_tx.send(Event::Step { run: *run, record, seconds: 0.1 }).unwrap();
            grid_tx.send(Event::Finished { run: *run }).unwrap();
        }
        h.run_steps(2);
    }
    assert_eq!(machines.len(), 7);
    h.get_by_label("7 / 7 done");
    h.get_by_label("refused");
    h.get_by_label("PSPC-Square · seed 9");
    drain(&rx);
    h.get_by_label("PCA-locality · seed 9").click();
    h.run_steps(2);
    let cmds = drain(&rx);
    let Some(Command::Start { recipe, .. }) = cmds.iter().find(|c| matches!(c, Command::Start { .. })) else {
        panic!("opening a zoo cell starts it in the main view: {cmds:?}")
    };
    assert_eq!((recipe.sampler.seed, recipe.sampler.machine), (9, MachineKind::PcaLocality));
    h.get_by_label("Export sheet…").click();
    h.run_steps(2);
    let sheet = image::open(dir.path().join("machine-zoo.png")).expect("the sheet was written");
    // Six finished tiles in one row of seven columns.
    assert!(sheet.width() > 5 * 32, "{}×{}", sheet.width(), sheet.height());
}

/// PCA-locality: hovering a pixel shades its learned window and says how large it is.
#[test]
fn hovering_a_pca_locality_pixel_shows_its_learned_window() {
    use morphogen::engine::geometry::PixelWindows;
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 0);
    tx.send(Event::Started { run: id, device: morphogen::engine::DeviceChoice::Cpu, dataset_hash: "abc".into() })
        .unwrap();
    // Pixel p's window: p and the pixel after it, and for odd p also the first pixel.
    let mut windows = PixelWindows::new(64);
    for p in 0..64 {
        windows.set(p, p);
        windows.set(p, (p + 1) % 64);
        if p % 2 == 1 {
            windows.set(p, 0);
        }
    }
    let mut ev = step(id, 0);
    if let Event::Step { record, .. } = &mut ev {
        let mut maps = morphogen::engine::PixelMaps {
            winner: vec![1; 64],
            source: (0..64).collect(),
            entropy: vec![0.5; 64],
            windows: None,
        };
        maps.windows = Some(std::sync::Arc::new(windows));
        record.maps = Some(maps);
    }
    tx.send(ev).unwrap();
    h.run_steps(3);
    let (y, x) = hover_a_map_pixel(&mut h);
    let p = y * 8 + x;
    let size = if p % 2 == 1 && p != 63 { 3 } else { 2 };
    h.get_by_label_contains(&format!("compares over a learned window of {size} pixels"));
}

/// The Gaussian machine has no votes: the inspector shows the pixel's Wiener-filter row.
#[test]
fn the_inspector_shows_the_gaussian_filter_row() {
    use morphogen::engine::Inspection;
    let (mut h, rx, tx) = harness(Settings::default());
    let id = started_with_steps(&mut h, &rx, &tx, 2);
    h.state_mut().request_inspect(2, 2);
    drain(&rx);
    let mut filter = vec![0.0; 64];
    (filter[18], filter[19], filter[26]) = (0.6, -0.2, 0.1);
    let result = Inspection {
        votes: Vec::new(),
        candidates: 64,
        weight_sum: 0.5,
        entropy: 0.0,
        x0: vec![0.25],
        count_90: 3,
        filter: Some(filter),
        window: None,
    };
    let whole = (ImageShape { c: 1, h: 8, w: 8 }, vec![0.0; 64]);
    tx.send(Event::Inspected {
        reach: None,
        run: id,
        step: 1,
        y: 2,
        x: 2,
        result: Box::new(result),
        crops: Vec::new(),
        images: Vec::new(),
        query: whole,
        sensitivity: None,
    })
    .unwrap();
    h.run_steps(2);
    h.get_by_label_contains("this is the pixel's row of W (its Wiener filter). It reads 3 pixels");
    h.get_by_label_contains("its own weight is 0.600; the row sums to 0.500");
}

/// The calibration window asks its own worker to fit P(t) to the CNN with the current
/// dataset and grid, shows progress, plots the fit, and makes it the patch schedule on request.
#[test]
fn calibration_fits_p_to_the_cnn_and_can_become_the_schedule() {
    use morphogen::engine::analysis::calibrate::StepFit;
    let (cal_handle, cal_rx, cal_tx) = WorkerHandle::detached();
    let (mut h, rx, tx) = harness_with(Settings { steps: 4, ..Settings::default() }, |app| {
        app.calibration.worker = Some(cal_handle);
        app.calibration.open = true;
    });
    started_with_steps(&mut h, &rx, &tx, 1);
    h.get_by_label("Run calibration").click();
    h.run_steps(2);
    let cmds: Vec<Command> = cal_rx.try_iter().collect();
    let Some(Command::Calibrate { run, recipe, seeds, max_p }) =
        cmds.iter().find(|c| matches!(c, Command::Calibrate { .. }))
    else {
        panic!("no calibration asked for: {cmds:?}")
    };
    assert_eq!((*seeds, *max_p, recipe.sampler.machine, recipe.sampler.steps), (3, 27, MachineKind::Cnn, 4));
    cal_tx.send(Event::Progress { run: *run, step: 0, done: 5, total: 10 }).unwrap();
    h.run_steps(2);
    h.get_by_label("5 / 10 calls");
    let fits: Vec<StepFit> = [(1.0, 13), (0.75, 9), (0.5, 7), (0.25, 3)]
        .iter()
        .map(|&(t, p)| StepFit { t, best: vec![p; 3], cosine: vec![vec![0.9]; 3], median: p })
        .collect();
    cal_tx.send(Event::Calibrated { run: *run, fits }).unwrap();
    h.run_steps(2);
    h.get_by_label("fitted P(t), noisiest step first: 13, 9, 7, 3");
    drain(&rx);
    h.get_by_label("Use as patch schedule").click();
    h.run_steps(3);
    let cmds = drain(&rx);
    let Some(Command::Start { recipe, .. }) = cmds.iter().find(|c| matches!(c, Command::Start { .. })) else {
        panic!("using the fit restarts the run: {cmds:?}")
    };
    assert_eq!(recipe.sampler.patch, morphogen::engine::PatchSchedule::List { per_step: vec![13, 9, 7, 3] });
}

/// A point over the x_t image (the image is centred in its panel, below the title).
fn over_x_t(h: &mut Harness<'static, StudioApp>) -> egui::Pos2 {
    let title = h.get_by_label("x_t (noisy state)").rect();
    for dy in (10..800).step_by(10) {
        for dx in (0..600).step_by(20) {
            let pos = title.left_bottom() + egui::vec2(dx as f32, dy as f32);
            h.hover_at(pos);
            h.run_steps(1);
            if h.state().maps_view.hovered.is_some() {
                // Well inside the image, not on its edge.
                return pos + egui::vec2(30.0, 30.0);
            }
        }
    }
    panic!("no image under the x_t title");
}

/// Paints a stroke across the x_t panel with `button`: press, move a few pixels, release.
fn paint_stroke(h: &mut Harness<'static, StudioApp>, button: egui::PointerButton) {
    let start = over_x_t(h);
    let press = |h: &mut Harness<'static, StudioApp>, pos, pressed| {
        h.event(egui::Event::PointerButton { pos, button, pressed, modifiers: egui::Modifiers::NONE });
        h.step();
    };
    h.hover_at(start);
    h.step();
    press(h, start, true);
    let mut pos = start;
    for _ in 0..8 {
        pos += egui::vec2(4.0, 3.0);
        h.hover_at(pos);
        h.step();
    }
    press(h, pos, false);
    h.run_steps(2);
}

/// A stroke on x_t at the scrubbed step is one edit: the run branches from that step (every
/// step before it kept), the unedited run starts beside it, and Ctrl+Z takes the wound back
/// (branching again from the same step), Ctrl+Shift+Z redoes it.
#[test]
fn a_stroke_on_x_t_wounds_the_run_and_undo_takes_it_back() {
    let mut settings = Settings::default();
    settings.brush.on = true;
    settings.brush.tool = morphogen::ui::brush::Tool::Noise;
    let (mut h, rx, tx) = harness(settings);
    let first = started_with_steps(&mut h, &rx, &tx, 8);
    h.state_mut().time.cursor = 5;
    h.state_mut().time.follow = false;
    h.run_steps(2);
    drain(&rx);
    paint_stroke(&mut h, egui::PointerButton::Primary);
    let cmds = drain(&rx);
    let Some(Command::Branch { run, recipe, from_step, .. }) =
        cmds.iter().find(|c| matches!(c, Command::Branch { .. }))
    else {
        panic!("a stroke branches the run: {cmds:?}")
    };
    assert!(*run > first);
    assert_eq!(*from_step, 5);
    let edits = &recipe.sampler.edits;
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].step, 5);
    let painted = edits[0].mask.bits(8, 8).unwrap().iter().filter(|&&b| b).count();
    assert!((3..64).contains(&painted), "the stroke covers part of the canvas: {painted} pixels");
    assert_eq!(h.state().history.current().unwrap().steps.len(), 5, "steps before the wound are kept");
    assert!(h.state().settings.compare_on && h.state().settings.compare.unedited, "the unedited run beside it");
    h.get_by_label_contains("1 wound(s), at steps 5");

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.run_steps(2);
    assert!(h.state().settings.edits.is_empty());
    let cmds = drain(&rx);
    let Some(Command::Branch { recipe, from_step, .. }) = cmds.iter().find(|c| matches!(c, Command::Branch { .. }))
    else {
        panic!("undo branches back: {cmds:?}")
    };
    assert_eq!((*from_step, recipe.sampler.edits.len()), (5, 0));
    h.key_press_modifiers(egui::Modifiers::COMMAND | egui::Modifiers::SHIFT, egui::Key::Z);
    h.run_steps(2);
    assert_eq!(h.state().settings.edits.len(), 1, "redo");
}

/// The locality brush paints the map (the run restarts with it), the right button erases it.
#[test]
fn the_locality_brush_paints_and_right_drag_erases() {
    let mut settings = Settings::default();
    settings.brush.on = true;
    settings.brush.tool = morphogen::ui::brush::Tool::Local;
    let (mut h, rx, tx) = harness(settings);
    started_with_steps(&mut h, &rx, &tx, 3);
    drain(&rx);
    paint_stroke(&mut h, egui::PointerButton::Primary);
    // A locality change settles like any other control change, then restarts.
    std::thread::sleep(std::time::Duration::from_millis(200));
    h.run_steps(3);
    let cmds = drain(&rx);
    let Some(Command::Start { run, recipe }) = cmds.iter().rev().find(|c| matches!(c, Command::Start { .. })) else {
        panic!("{cmds:?}")
    };
    let map = recipe.sampler.locality_map.as_ref().expect("the map goes with the run");
    let local = map.values.iter().filter(|&&m| m < 1.0).count();
    assert!((3..64).contains(&local), "{local} local pixels");
    // The new run's first step replaces the dimmed old images: painting needs a live view.
    tx.send(step(*run, 0)).unwrap();
    h.run_steps(2);
    paint_stroke(&mut h, egui::PointerButton::Secondary);
    assert!(h.state().settings.locality_map.is_none(), "erasing the whole stroke leaves no map");
}

/// ×2 runs on a canvas twice the training size; its steps show at that size; double-click
/// enlarges a panel and double-click returns.
#[test]
fn the_canvas_size_control_grows_the_canvas() {
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 2);
    drain(&rx);
    h.get_by_label("×2").click();
    h.run_steps(3);
    let cmds = drain(&rx);
    let Some(Command::Start { run, recipe }) = cmds.iter().rev().find(|c| matches!(c, Command::Start { .. })) else {
        panic!("{cmds:?}")
    };
    assert_eq!(recipe.sampler.canvas, Some([16, 16]));
    let shape = h.state().history.current().unwrap().shape;
    assert_eq!((shape.h, shape.w), (16, 16));
    let mut record = match step(*run, 0) {
        Event::Step { record, .. } => record,
        _ => unreachable!(),
    };
    record.x_t = vec![0.5; 256];
    record.x0_hat = vec![-0.5; 256];
    record.nearest = None;
    tx.send(Event::Step { run: *run, record, seconds: 0.1 }).unwrap();
    h.run_steps(3);
    assert_eq!(h.state().history.current().unwrap().steps.len(), 1);
    h.get_by_label_contains("Growing on 16×16");
    let at = over_x_t(&mut h);
    h.hover_at(at);
    h.step();
    let button = |pressed| egui::Event::PointerButton {
        pos: at,
        button: egui::PointerButton::Primary,
        pressed,
        modifiers: egui::Modifiers::NONE,
    };
    // Both clicks in one frame: a first click alone opens the inspector, which moves the panels.
    for pressed in [true, false, true, false] {
        h.event(button(pressed));
    }
    // The harness's clock stands still, which makes any two clicks a triple-click: give this
    // double-click a time of its own.
    h.input_mut().time = Some(100.0);
    h.step();
    h.run_steps(2);
    assert_eq!(h.state().canvas.enlarged.as_deref(), Some("x_t (noisy state)"), "double-click enlarges");
    h.key_press(egui::Key::Escape);
    h.run_steps(2);
    assert_eq!(h.state().canvas.enlarged, None, "Esc returns");
    let at = over_x_t(&mut h);
    h.hover_at(at);
    h.key_press(egui::Key::F);
    h.run_steps(2);
    assert_eq!(h.state().canvas.enlarged.as_deref(), Some("x_t (noisy state)"), "F enlarges the hovered panel");
    h.get_by_label("×1").click();
    h.run_steps(3);
    let cmds = drain(&rx);
    assert!(cmds.iter().any(|c| matches!(c, Command::Start { recipe, .. } if recipe.sampler.canvas.is_none())));
}

/// A calibration shows its cost before it starts, has a Stop, and stops by itself when the
/// time grid changes or its window closes (it once ran 45,000 calls on after both).
#[test]
fn a_calibration_stops_when_its_inputs_change_or_its_window_closes() {
    let (cal_handle, cal_rx, _cal_tx) = WorkerHandle::detached();
    let (mut h, rx, tx) = harness_with(Settings { steps: 4, ..Settings::default() }, |app| {
        app.calibration.worker = Some(cal_handle);
        app.calibration.open = true;
    });
    started_with_steps(&mut h, &rx, &tx, 4);
    // 3 seeds × 4 steps × (14 odd P up to 27 + the CNN) calls.
    h.get_by_label_contains("180 denoiser calls, about");
    h.get_by_label("Run calibration").click();
    h.run_steps(2);
    assert!(h.state().calibration.is_running());
    h.state_mut().settings.steps = 50;
    h.run_steps(2);
    assert!(!h.state().calibration.is_running(), "a new time grid stops it");
    let cmds: Vec<Command> = cal_rx.try_iter().collect();
    assert!(matches!(cmds.last(), Some(Command::Cancel)), "{cmds:?}");
    h.get_by_label("stopped: the dataset or the time grid changed");
    // Again, then close the window.
    h.get_by_label("Run calibration").click();
    h.run_steps(2);
    assert!(h.state().calibration.is_running());
    h.get_by_label("Stop calibration").click();
    h.run_steps(2);
    assert!(!h.state().calibration.is_running(), "Stop stops it");
    h.get_by_label("Run calibration").click();
    h.run_steps(2);
    h.state_mut().calibration.open = false;
    h.run_steps(2);
    assert!(!h.state().calibration.is_running(), "closing the window stops it");
    let cancels = cal_rx.try_iter().filter(|c| matches!(c, Command::Cancel)).count();
    assert_eq!(cancels, 2);
}

/// The seed grid stops and forgets its cells when its tab changes (the zoo once showed the
/// grid's old cells), and stops when the settings it was started for change.
#[test]
fn the_seed_grid_stops_on_a_tab_switch_or_a_settings_change() {
    let (grid_handle, grid_rx, _grid_tx) = WorkerHandle::detached();
    let (mut h, rx, tx) = harness_with(Settings::default(), |app| {
        app.seed_grid.worker = Some(grid_handle);
        app.seed_grid.open = true;
        (app.seed_grid.rows, app.seed_grid.cols) = (1, 2);
    });
    started_with_steps(&mut h, &rx, &tx, 1);
    h.get_by_label("Run grid").click();
    h.run_steps(2);
    assert!(h.state().seed_grid.is_running());
    assert_eq!(h.state().seed_grid.cells.len(), 2);
    h.get_by_label("machine zoo").click();
    h.run_steps(2);
    assert!(!h.state().seed_grid.is_running() && h.state().seed_grid.cells.is_empty());
    h.get_by_label("Run grid").click();
    h.run_steps(2);
    assert!(h.state().seed_grid.is_running());
    h.state_mut().settings.seed = 99;
    h.run_steps(2);
    assert!(!h.state().seed_grid.is_running(), "a new seed stops the zoo started for the old one");
    h.get_by_label("stopped: the settings changed");
    let cancels = grid_rx.try_iter().filter(|c| matches!(c, Command::Cancel)).count();
    assert_eq!(cancels, 2);
}

/// Without a desktop portal every export button did nothing and said nothing. When a dialog
/// cannot open, the studio says so and the Export panel takes typed paths: a folder (under the
/// home folder by default) and a recipe file.
#[test]
fn when_no_file_dialog_can_open_exports_go_to_a_typed_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 3);
    h.state().dialogs.mark_failed();
    h.run_steps(2);
    h.get_by_label_contains("No file dialog could open here");
    let fallback = h.state().export.fallback.clone().expect("path fields instead of dialogs");
    assert!(fallback.0.ends_with("morphogen/exports"), "{fallback:?}");
    h.get_by_label_contains("exports go to this folder");
    // Typed elsewhere (here: a temporary folder), a click writes there.
    h.state_mut().export.use_fallback(dir.path().join("out"));
    h.get_by_label("Frame PNG…").click();
    h.run_steps(3);
    if let Some(msg) = h.state_mut().wait_for_export() {
        assert!(msg.starts_with("wrote"), "{msg}");
    }
    let written: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(written.iter().any(|n| n.to_string_lossy().ends_with(".png")), "{written:?}");
}

/// A machine that cannot run (the CNN without weights) leaves a clear empty state saying why,
/// not the previous run's images under its caption with a spinner that never stops.
#[test]
fn a_run_that_cannot_start_shows_why_instead_of_old_images() {
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 3);
    h.state_mut().settings.machine = MachineKind::Cnn;
    h.run_steps(3);
    let cmds = drain(&rx);
    let Some(Command::Start { run, .. }) = cmds.iter().rev().find(|c| matches!(c, Command::Start { .. })) else {
        panic!("{cmds:?}")
    };
    h.get_by_label_contains("computing the new settings");
    let message = "the CNN machine cannot run: no trained CNN ships for this dataset".to_string();
    tx.send(Event::Error { run: Some(*run), message }).unwrap();
    h.run_steps(3);
    h.get_by_label_contains("This run could not start:");
    assert!(h.query_by_label_contains("computing the new settings").is_none());
    assert!(h.query_by_label("x_t (noisy state)").is_none(), "no old images under the new caption");
    // The weights control is there for the CNN.
    h.get_by_label("Load weights…");
}

/// Esc answers "Overwrite?" with Cancel: a question only a button could close held up the
/// whole window.
#[test]
fn escape_cancels_the_overwrite_question() {
    let (mut h, rx, tx) = harness(Settings::default());
    started_with_steps(&mut h, &rx, &tx, 3);
    let out = tempfile::tempdir().unwrap();
    h.state_mut().export.paths = PathSource::Fixed(out.path().into());
    std::fs::create_dir(out.path().join("mnist_els_seed0_trajectory")).unwrap();
    h.state_mut().ask_path(ExportKind::Trajectory);
    h.run_steps(2);
    assert!(h.state().export.confirm.is_some());
    h.key_press(egui::Key::Escape);
    h.run_steps(2);
    assert!(h.state().export.confirm.is_none(), "Esc closed the question");
    assert!(h.state_mut().wait_for_export().is_none(), "and wrote nothing");
}

/// A wounded run beside its unedited self: the unedited column runs the same recipe without
/// the edits, and the healing plot appears, with the RMS inside and outside the wound.
#[test]
fn a_wound_shows_the_unedited_run_and_the_healing_plot() {
    use morphogen::engine::{Edit, EditOp, Mask};
    use morphogen::ui::compare::CompareSettings;
    let mut bits = vec![false; 64];
    bits[..8].fill(true); // the top row of the 8×8 images
    let edit = Edit { step: 1, op: EditOp::Set { value: 1.0 }, mask: Mask::from_bits(8, 8, &bits) };
    let settings = Settings {
        compare_on: true,
        compare: CompareSettings { unedited: true, ..CompareSettings::default() },
        edits: vec![edit],
        ..Settings::default()
    };
    let (cmp_handle, cmp_rx, cmp_tx) = WorkerHandle::detached();
    let (mut h, rx, tx) = harness_with(settings, |app| app.compare.worker = Some(cmp_handle));
    started_with_steps(&mut h, &rx, &tx, 3);
    let cmds: Vec<Command> = cmp_rx.try_iter().collect();
    let Some(Command::Start { run, recipe }) = cmds.iter().find(|c| matches!(c, Command::Start { .. })) else {
        panic!("{cmds:?}")
    };
    assert!(recipe.sampler.edits.is_empty(), "the column is the run without its wounds");
    cmp_tx.send(dataset_event()).unwrap();
    for k in 0..3 {
        // Unedited x̂₀ differs from the main one by 0.5 in the top row only.
        let Event::Step { mut record, .. } = step(*run, k) else { unreachable!() };
        for v in &mut record.x0_hat[..8] {
            *v += 0.5;
        }
        cmp_tx.send(Event::Step { run: *run, record, seconds: 0.01 }).unwrap();
    }
    h.run_steps(3);
    h.get_by_label_contains("healing: RMS of x̂₀ wounded − unedited");
    h.get_by_label("x̂₀, unedited");
    // Inside the wound the columns differ by exactly 0.5, outside not at all.
    let wound = morphogen::ui::brush::wound(&h.state().settings.edits, 8, 8).unwrap();
    let app = h.state();
    let main = &app.history.current().unwrap().steps[2].record.x0_hat;
    let other = &app.compare.steps[2].record.x0_hat;
    assert!((morphogen::ui::brush::rms_split(main, other, &wound, true) - 0.5).abs() < 1e-6);
    assert_eq!(morphogen::ui::brush::rms_split(main, other, &wound, false), 0.0);
}
