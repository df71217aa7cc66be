//! Exports decode back to the steps they came from; recipes replay bit for bit; nothing is
//! overwritten without --force.

mod common;

use std::path::Path;
use std::process::Command;

use morphogen::engine::ImageShape;
use morphogen::export::{self, ExportOptions, View};
use morphogen::trajectory::Trajectory;

const BIN: &str = env!("CARGO_BIN_EXE_morphogen");

/// A quick real run: 60 digits8 images, 6 steps, constant P = 3, seed 4, on the CPU.
fn sample(out: &Path, extra: &[&str]) -> std::process::Output {
    sample_seed(out, "4", extra)
}

fn sample_seed(out: &Path, seed: &str, extra: &[&str]) -> std::process::Output {
    let o = Command::new(BIN)
        .args(["sample", "--dataset", "digits8", "--subset", "60", "--steps", "6", "--patch", "3", "--device", "cpu"])
        .args(["--seed", seed, "--out-dir", out.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn traj(dir: &Path) -> Trajectory {
    Trajectory::read_dir(dir).unwrap()
}

#[test]
fn same_recipe_twice_gives_identical_bytes_and_replay_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    sample(&a, &[]);
    sample(&b, &[]);
    for f in ["trajectory_x0.npy", "trajectory_xt.npy", "final.png", "recipe.json"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs"
        );
    }
    // replaying the recipe (with other flags ignored) reproduces the run byte for byte
    let o = Command::new(BIN)
        .args([
            "sample",
            "--recipe",
            a.join("recipe.json").to_str().unwrap(),
            "--seed",
            "999",
            "--out-dir",
            c.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["trajectory_x0.npy", "trajectory_xt.npy", "final.png"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(c.join(f)).unwrap(), "{f} differs on replay");
    }
    let recipe: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("recipe.json")).unwrap()).unwrap();
    for key in ["version", "dataset", "dataset_hash", "load", "sampler", "device"] {
        assert!(recipe.get(key).is_some(), "recipe lacks {key}");
    }
    assert_eq!(recipe["sampler"]["seed"], 4);
    // a different seed gives a different image
    let d = dir.path().join("d");
    sample_seed(&d, "5", &[]);
    assert_ne!(
        std::fs::read(a.join("trajectory_x0.npy")).unwrap(),
        std::fs::read(d.join("trajectory_x0.npy")).unwrap()
    );
}

#[test]
fn gif_and_apng_frames_equal_their_steps() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    sample(&run, &[]);
    let t = traj(&run);
    let (gif, apng) = (dir.path().join("a.gif"), dir.path().join("a.apng"));
    let o = Command::new(BIN)
        .args(["export", "--run", run.to_str().unwrap(), "--view", "both", "--scale", "3", "--fps", "5", "--hold", "1"])
        .args(["--gif", gif.to_str().unwrap(), "--apng", apng.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let expected: Vec<image::RgbaImage> =
        t.steps.iter().map(|s| export::step_frame(s, t.shape, View::Both, 3)).collect();
    let (w, h) = (expected[0].width(), expected[0].height());
    assert_eq!((w, h), (8 * 3 * 2 + 3, 8 * 3));

    // GIF: one frame per step, same size, pixels equal (gray palette is exact)
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(std::fs::File::open(&gif).unwrap()).unwrap();
    let mut frames = 0;
    while let Some(frame) = dec.read_next_frame().unwrap() {
        assert_eq!((frame.width as u32, frame.height as u32), (w, h));
        let want = expected[frames].as_raw();
        let max = frame.buffer.iter().zip(want).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap();
        assert!(max <= 2, "gif frame {frames} differs by {max}");
        let delay_cs = if frames + 1 == t.steps.len() { 20 + 100 } else { 20 };
        assert_eq!(frame.delay, delay_cs, "frame {frames} delay");
        frames += 1;
    }
    assert_eq!(frames, t.steps.len());

    // APNG: lossless, one frame per step
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&apng).unwrap()));
    let mut reader = dec.read_info().unwrap();
    assert_eq!(reader.info().animation_control().unwrap().num_frames as usize, t.steps.len());
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    for (k, want) in expected.iter().enumerate() {
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (w, h));
        assert_eq!(&buf[..info.buffer_size()], want.as_raw().as_slice(), "apng frame {k}");
    }
    assert!(export::recipe_path_for(&gif).exists() && export::recipe_path_for(&apng).exists());
}

#[test]
fn contact_sheet_and_png_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (sheet, frames) = (dir.path().join("sheet.png"), dir.path().join("frames"));
    // the same flags work directly on `sample`
    sample(
        &run,
        &[
            "--sheet",
            sheet.to_str().unwrap(),
            "--sheet-count",
            "4",
            "--frames",
            frames.to_str().unwrap(),
            "--scale",
            "4",
            "--range",
            "1..4",
        ],
    );
    let names: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&frames)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names, ["frame_0001.png", "frame_0002.png", "frame_0003.png", "frame_0004.png", "recipe.json"]);
    let t = traj(&run);
    let f2 = image::open(frames.join("frame_0002.png")).unwrap().to_rgba8();
    assert_eq!(f2, export::step_frame(&t.steps[2], t.shape, View::X0, 4));
    let img = image::open(&sheet).unwrap();
    // 4 tiles of 32×32 in one row, each with padding and a label strip above
    let (pad, label_h) = (4, 9);
    assert_eq!((img.width(), img.height()), (4 * (32 + pad) + pad, 32 + label_h + 2 * pad));
}

#[test]
fn nothing_is_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    sample(&run, &[]);
    let gif = dir.path().join("keep.gif");
    std::fs::write(&gif, b"precious").unwrap();
    let o = Command::new(BIN)
        .args(["export", "--run", run.to_str().unwrap(), "--gif", gif.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&gif).unwrap(), b"precious");
    let o = Command::new(BIN)
        .args(["export", "--run", run.to_str().unwrap(), "--gif", gif.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_ne!(std::fs::read(&gif).unwrap(), b"precious");
    // an unwritable place is a clear error, not a panic
    let o = Command::new(BIN)
        .args(["export", "--run", run.to_str().unwrap(), "--gif", "/nonexistent/dir/x.gif"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/dir"));
}

#[test]
fn library_export_reports_progress_and_cancels() {
    let shape = ImageShape { c: 1, h: 4, w: 4 };
    let steps = (0..5)
        .map(|k| morphogen::engine::StepRecord {
            step: k,
            t: 1.0 - k as f64 / 5.0,
            alpha_bar: 0.5,
            patch: 3,
            x_t: vec![k as f32 / 5.0; 16],
            x0_hat: vec![-(k as f32) / 5.0; 16],
            entropy: 0.0,
            nearest: Some((0, 0.0)),
            maps: None,
            nearest_shifted: None,
        })
        .collect();
    let t = Trajectory { recipe: Default::default(), shape, steps };
    let dir = tempfile::tempdir().unwrap();
    let opts = ExportOptions { scale: 2, fps: 10.0, frames: Some(dir.path().join("f")), ..Default::default() };
    let mut calls = 0;
    let err = export::export_all(&t, &opts, &mut |_, _| {
        calls += 1;
        calls < 3
    })
    .unwrap_err();
    assert!(err.contains("cancelled"));
    let mut last = (0, 0);
    export::export_all(&t, &opts, &mut |d, n| {
        last = (d, n);
        true
    })
    .unwrap();
    assert_eq!(last.0, last.1);
}

#[test]
fn a_branched_recipe_replays_the_steps_before_and_after_the_branch() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    sample(&a, &[]);
    // the studio's branch: same run up to step 3, then P = 5 from there on
    let parent: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("recipe.json")).unwrap()).unwrap();
    let mut child = parent.clone();
    child["sampler"]["patch"] = serde_json::json!({ "kind": "constant", "p": 5 });
    child["branched_from"] = serde_json::json!({ "from_step": 3, "recipe": parent });
    let recipe = dir.path().join("branch.json");
    std::fs::write(&recipe, serde_json::to_vec_pretty(&child).unwrap()).unwrap();
    let o = Command::new(BIN)
        .args(["sample", "--recipe", recipe.to_str().unwrap(), "--out-dir", b.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ta, tb) = (traj(&a), traj(&b));
    assert_eq!(tb.steps.len(), 6);
    for k in 0..3 {
        assert_eq!(ta.steps[k].x0_hat, tb.steps[k].x0_hat, "step {k} before the branch");
        assert_eq!(tb.steps[k].patch, 3);
    }
    assert_eq!(ta.steps[3].x_t, tb.steps[3].x_t, "the branch resumes from the same state");
    assert_eq!(tb.steps[3].patch, 5);
    assert_ne!(ta.steps[3].x0_hat, tb.steps[3].x0_hat);
    // a branch point outside the run is a clear error naming the recipe
    child["branched_from"]["from_step"] = serde_json::json!(9);
    std::fs::write(&recipe, serde_json::to_vec_pretty(&child).unwrap()).unwrap();
    let o = Command::new(BIN)
        .args(["sample", "--recipe", recipe.to_str().unwrap(), "--out-dir", b.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("branch.json"));
}

#[test]
fn colour_gifs_share_one_palette_so_colours_do_not_flicker() {
    // Three frames: a fixed orange square on a background whose colours change every frame.
    let frames: Vec<image::RgbaImage> = (0..3u8)
        .map(|k| {
            image::RgbaImage::from_fn(24, 24, |x, y| {
                if x < 8 && y < 8 {
                    image::Rgba([230, 120, 20, 255])
                } else {
                    image::Rgba([
                        (x as u8 * 10).wrapping_add(k * 70),
                        (y as u8 * 9).wrapping_mul(k + 1),
                        90 + k * 40,
                        255,
                    ])
                }
            })
        })
        .collect();
    let mut bytes = Vec::new();
    export::animation::encode_gif(&frames, &[100, 100, 100], &mut bytes).unwrap();
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut dec = opts.read_info(&bytes[..]).unwrap();
    assert_eq!(dec.global_palette().map(|p| p.len()), Some(256 * 3), "one full global palette");
    let mut square = Vec::new();
    let mut count = 0;
    while let Some(frame) = dec.read_next_frame().unwrap() {
        assert!(frame.palette.is_none(), "no frame has a palette of its own");
        square.push(frame.buffer[0]);
        count += 1;
    }
    assert_eq!(count, 3);
    assert!(square.iter().all(|&i| i == square[0]), "the square keeps one palette index: {square:?}");
    let palette = dec.global_palette().unwrap();
    let c = &palette[square[0] as usize * 3..square[0] as usize * 3 + 3];
    let err: i32 = c.iter().zip([230, 120, 20]).map(|(&a, b)| (a as i32 - b).abs()).max().unwrap();
    assert!(err <= 12, "the square's colour {c:?} is close to orange");
}

/// `--plots`: the run's per-step curves as figures (titled axes, legend, every series drawn),
/// from `sample` and again from `export --run`, never over an existing figure without
/// --force; and the library draws the comparison curves when they are given.
#[test]
fn the_per_step_curves_export_as_readable_figures() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let plots = dir.path().join("plots");
    sample(&run, &["--plots", plots.to_str().unwrap()]);
    let read = |name: &str| std::fs::read(plots.join(name)).unwrap();
    common::assert_chart(&read("entropy.png"), (720, 400), &[[40, 90, 200]], "entropy.png");
    common::assert_chart(&read("nearest.png"), (720, 400), &[[220, 50, 40]], "nearest.png");
    let again = Command::new(BIN)
        .args(["export", "--run", run.to_str().unwrap(), "--plots", plots.to_str().unwrap()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && e.contains("already exists") && e.lines().count() == 1, "{e}");
    let forced = Command::new(BIN)
        .args(["export", "--run", run.to_str().unwrap(), "--plots", plots.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));

    let t = traj(&run);
    let per_step = |f: &dyn Fn(usize) -> f64| (0..t.steps.len()).map(|k| [k as f64, f(k)]).collect::<Vec<_>>();
    let curves = export::curves::Curves {
        compare_r: Some(("Ideal".into(), per_step(&|k| 1.0 - 0.05 * k as f64))),
        healing: Some([per_step(&|k| 0.5 / (1.0 + k as f64)), per_step(&|k| 0.1 / (1.0 + k as f64))]),
        sensitivity_cosine: Some(((3, 4), per_step(&|k| (k as f64 * 0.7).cos()))),
    };
    let more = dir.path().join("more");
    let written = export::curves::write_plots(&t, &curves, &more, false).unwrap();
    let names: Vec<String> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["entropy.png", "nearest.png", "compare-r.png", "healing.png", "sensitivity-cosine.png"]);
    let fig = |n: &str| std::fs::read(more.join(n)).unwrap();
    common::assert_chart(&fig("compare-r.png"), (720, 400), &[[60, 160, 90]], "compare-r.png");
    common::assert_chart(&fig("healing.png"), (720, 400), &[[220, 50, 40], [40, 90, 200]], "healing.png");
    common::assert_chart(&fig("sensitivity-cosine.png"), (720, 400), &[[200, 120, 30]], "sensitivity-cosine.png");
}
