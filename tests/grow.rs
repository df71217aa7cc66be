//! Growing and painting against `tests/fixtures/manifest_grow.json`
//! (scripts/make_grow_fixtures.py, from the float64 reference): canvases larger and smaller
//! than the training images, per-pixel patch maps, and whole runs with a locality map, edits
//! and other canvases, through the engine and through the real binary; recipe round trips;
//! and the refusals of every new input.

mod common;

use common::*;
use morphogen::engine::{
    Boundary, Call, Control, Edit, LocalityMap, MachineKind, NoiseSchedule, PatchSchedule, Sampler, SamplerConfig,
};
use serde_json::Value;

fn cases(kind: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("manifest_grow.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().iter().filter(|c| c["kind"] == kind).cloned().collect()
}

fn boundary(c: &Value) -> Boundary {
    Boundary::parse(c["boundary"].as_str().unwrap()).unwrap()
}

/// The canvas (H, W) of an input array: its last two dimensions.
fn canvas_of(dims: &[usize]) -> (usize, usize) {
    (dims[dims.len() - 2], dims[dims.len() - 1])
}

#[test]
fn calls_on_larger_and_smaller_canvases_match_the_reference() {
    let mut checked = 0;
    let mut worst = 0f64;
    let mut sizes = std::collections::BTreeSet::new();
    for c in cases("call") {
        let (mut den, shape, _) = training(c["train"].as_str().unwrap());
        let (dims, x) = npy(c["input"].as_str().unwrap());
        let (_, expected) = npy(c["expected"].as_str().unwrap());
        let (h, w) = canvas_of(&dims);
        assert_ne!((h, w), (shape.h, shape.w), "a canvas case is on another size");
        sizes.insert((h * w).cmp(&shape.pixels()));
        let call = Call::new(
            MachineKind::Els,
            boundary(&c),
            c["patch"].as_u64().unwrap() as usize,
            c["alpha_bar"].as_f64().unwrap(),
        )
        .on_canvas(shape, h, w);
        den.check_call(&call).unwrap();
        let got = den.denoise(&x, &call, &mut Control::none()).unwrap().x0;
        let err = max_abs_diff(&got, &expected);
        assert!(err <= c["tolerance"].as_f64().unwrap(), "{}: max error {err:.2e}", c["expected"]);
        worst = worst.max(err);
        checked += 1;
    }
    assert_eq!(checked, 12, "12 canvas calls in the manifest");
    assert_eq!(sizes.len(), 2, "canvases both larger and smaller than the training images");
    eprintln!("{checked} canvas calls pass, worst error {worst:.2e}");
}

#[test]
fn patch_maps_equal_the_uniform_call_pixel_by_pixel() {
    let mut checked = Vec::new();
    for c in cases("patch_map") {
        let (mut den, shape, _) = training(c["train"].as_str().unwrap());
        let (dims, x) = npy(c["input"].as_str().unwrap());
        let (_, map) = npy(c["patch_map"].as_str().unwrap());
        let (_, expected) = npy(c["expected"].as_str().unwrap());
        let (h, w) = canvas_of(&dims);
        let patches: Vec<u32> = map.iter().map(|&p| p as u32).collect();
        let distinct: std::collections::BTreeSet<u32> = patches.iter().copied().collect();
        assert_eq!(distinct.len(), 4, "each map holds four patch sizes");
        let machine = MachineKind::parse(c["machine"].as_str().unwrap()).unwrap();
        let call = Call { entropy: true, ..Call::new(machine, boundary(&c), 3, c["alpha_bar"].as_f64().unwrap()) }
            .on_canvas(shape, h, w);
        den.check_patch_map(&call, &patches).unwrap();
        let out = den.denoise_patch_map(&x, &call, &patches, &mut Control::none()).unwrap();
        let err = max_abs_diff(&out.x0, &expected);
        assert!(err <= c["tolerance"].as_f64().unwrap(), "{}: max error {err:.2e}", c["expected"]);
        assert!(out.entropy.is_finite() && out.entropy > 0.0, "{}: entropy {}", c["expected"], out.entropy);
        checked.push((machine.name(), c["boundary"].as_str().unwrap().to_string(), h));
    }
    assert_eq!(checked.len(), 4, "{checked:?}");
    assert!(checked.iter().any(|c| c.0 == "local") && checked.iter().any(|c| c.1 == "circular"));
    assert!(checked.iter().any(|c| c.2 != 28), "one map on another canvas");
}

/// The settings of a run case.
fn run_config(c: &Value) -> SamplerConfig {
    let per_step: Vec<u32> =
        c["patch_per_step"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let [h, w] = [c["canvas"][0].as_u64().unwrap() as usize, c["canvas"][1].as_u64().unwrap() as usize];
    let edits: Vec<Edit> = serde_json::from_value(c["edits"].clone()).unwrap();
    let locality_map = c.get("locality_map").map(|m| LocalityMap { h, w, values: npy(m.as_str().unwrap()).1 });
    SamplerConfig {
        machine: MachineKind::Els,
        boundary: boundary(c),
        schedule: NoiseSchedule::cosine(),
        patch: PatchSchedule::List { per_step },
        steps: c["steps"].as_u64().unwrap() as usize,
        t_start: 1.0,
        canvas: ((h, w) != (28, 28)).then_some([h, w]),
        locality_map,
        edits,
        ..SamplerConfig::default()
    }
}

/// Every step's x_t (after its edits) and x̂₀ against the reference run.
fn check_run(c: &Value, xt: &[Vec<f32>], x0: &[Vec<f32>]) {
    let (_, ext) = npy(c["expected_xt"].as_str().unwrap());
    let (_, ex0) = npy(c["expected_x0"].as_str().unwrap());
    let steps = c["steps"].as_u64().unwrap() as usize;
    assert_eq!(x0.len(), steps);
    let len = ex0.len() / steps;
    let min_r = c["min_correlation"].as_f64().unwrap();
    for k in 0..steps {
        let (e0, et) = (&ex0[k * len..(k + 1) * len], &ext[k * len..(k + 1) * len]);
        let (r0, rt) = (corr(&x0[k], e0), corr(&xt[k], et));
        assert!(r0 >= min_r && rt >= min_r, "{} step {k}: r(x̂₀) {r0}, r(x_t) {rt}", c["expected_x0"]);
    }
    let err = max_abs_diff(&x0[0], &ex0[..len]);
    assert!(err <= c["first_step_tolerance"].as_f64().unwrap(), "{} first step: {err:.2e}", c["expected_x0"]);
}

#[test]
fn runs_with_locality_maps_edits_and_canvases_follow_the_reference() {
    let mut kinds = Vec::new();
    for c in cases("run") {
        let (mut den, shape, _) = training(c["train"].as_str().unwrap());
        let (_, init) = npy(c["input"].as_str().unwrap());
        let cfg = run_config(&c);
        den.check_run(&cfg).unwrap();
        let mut sampler = Sampler::new(cfg, shape, Some(init));
        let (mut xt, mut x0) = (Vec::new(), Vec::new());
        while let Some(step) = sampler.step(&mut den, &mut Control::none()) {
            let step = step.unwrap();
            assert_eq!(step.nearest.is_some(), c["canvas"] == serde_json::json!([28, 28]));
            xt.push(step.x_t);
            x0.push(step.x0_hat);
        }
        check_run(&c, &xt, &x0);
        kinds.push(c["expected_x0"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    for kind in ["locality", "edits", "canvas_36x40_zeros", "canvas_36x40_circular"] {
        assert!(kinds.iter().any(|k| k.contains(kind)), "no {kind} run in {kinds:?}");
    }
}

/// Writes a run case's edits as the CLI reads them: a JSON file and one mask PNG per edit.
fn write_edits(dir: &std::path::Path, c: &Value) -> std::path::PathBuf {
    let mut list = Vec::new();
    for (i, e) in c["edits"].as_array().unwrap().iter().enumerate() {
        let rows: Vec<String> = serde_json::from_value(e["mask"].clone()).unwrap();
        let (h, w) = (rows.len() as u32, rows[0].len() as u32);
        let img = image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if rows[y as usize].as_bytes()[x as usize] == b'#' { 255 } else { 0 }])
        });
        let name = format!("mask{i}.png");
        img.save(dir.join(&name)).unwrap();
        let mut e = e.clone();
        e["mask"] = Value::String(name);
        list.push(e);
    }
    let path = dir.join("edits.json");
    std::fs::write(&path, serde_json::json!({ "edits": list }).to_string()).unwrap();
    path
}

/// The per-step arrays of a `sample` output folder.
fn read_run(dir: &std::path::Path) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let split = |name: &str| {
        let (shape, v) = morphogen::data::read_npy_f32(&dir.join(name)).unwrap();
        let len = v.len() / shape[0];
        v.chunks(len).map(|c| c.to_vec()).collect::<Vec<_>>()
    };
    (split("trajectory_xt.npy"), split("trajectory_x0.npy"))
}

#[test]
fn the_cli_grows_paints_and_replays_its_recipes_byte_for_byte() {
    let bin = env!("CARGO_BIN_EXE_morphogen");
    let dir = tempfile::tempdir().unwrap();
    let f = |n: &str| fixtures().join(n).display().to_string();
    let mut ran = 0;
    for c in cases("run") {
        let out = dir.path().join(format!("run{ran}"));
        let per_step: Vec<String> =
            c["patch_per_step"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap().to_string()).collect();
        let steps = c["steps"].to_string();
        let canvas = format!("{}x{}", c["canvas"][0], c["canvas"][1]);
        let mut args: Vec<String> = [
            "sample",
            "--dataset",
            &f("mnist12_train.npy"),
            "--init",
            &f(c["input"].as_str().unwrap()),
            "--machine",
            "els",
            "--boundary",
            c["boundary"].as_str().unwrap(),
            "--steps",
            &steps,
            "--patch-schedule",
            &per_step.join(","),
            "--canvas",
            &canvas,
            "--device",
            "cpu",
            "--out-dir",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(m) = c.get("locality_map") {
            args.extend(["--locality-map".into(), f(m.as_str().unwrap())]);
        }
        if !c["edits"].as_array().unwrap().is_empty() {
            args.extend(["--edit".into(), write_edits(dir.path(), &c).display().to_string()]);
        }
        let o = morphogen_at(bin, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (xt, x0) = read_run(&out);
        check_run(&c, &xt, &x0);
        // The recipe alone (canvas, map and edits inline) replays the run byte for byte.
        let replay = dir.path().join(format!("replay{ran}"));
        let recipe = out.join("recipe.json").display().to_string();
        let o = morphogen_at(bin, &["sample", "--recipe", &recipe, "--out-dir", replay.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for name in ["trajectory_x0.npy", "trajectory_xt.npy"] {
            assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(replay.join(name)).unwrap(), "{name}");
        }
        ran += 1;
    }
    assert_eq!(ran, 4);
}

#[test]
fn the_cli_denoises_canvases_and_patch_maps() {
    let bin = env!("CARGO_BIN_EXE_morphogen");
    let dir = tempfile::tempdir().unwrap();
    let f = |n: &str| fixtures().join(n).display().to_string();
    let t_of = |ab: f64| (ab.sqrt().acos() * 2.0 * 1.008 / std::f64::consts::PI).to_string();
    let mut ran = 0;
    for c in cases("call").iter().take(3).chain(cases("patch_map").iter()) {
        let out = dir.path().join(format!("y{ran}.npy"));
        let mut args = vec![
            "denoise".to_string(),
            "--dataset".into(),
            f(c["train"].as_str().unwrap()),
            "--input".into(),
            f(c["input"].as_str().unwrap()),
            "--t".into(),
            t_of(c["alpha_bar"].as_f64().unwrap()),
            "--machine".into(),
            c["machine"].as_str().unwrap().into(),
            "--boundary".into(),
            c["boundary"].as_str().unwrap().into(),
            "--device".into(),
            "cpu".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        match c.get("patch_map") {
            Some(m) => args.extend(["--patch-map".into(), f(m.as_str().unwrap())]),
            None => args.extend(["--patch".into(), c["patch"].to_string()]),
        }
        let o = morphogen_at(bin, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (_, got) = morphogen::data::read_npy_f32(&out).unwrap();
        let (_, expected) = npy(c["expected"].as_str().unwrap());
        // t goes through a decimal here, so ᾱ differs from the fixture's in the last digits.
        let err = max_abs_diff(&got, &expected);
        assert!(err <= 1e-3, "{}: {err:.2e}", c["expected"]);
        ran += 1;
    }
    assert_eq!(ran, 7);
}

/// Every new input, wrong in each way, gets one line naming the problem, before anything
/// large is allocated.
#[test]
fn painted_inputs_are_refused_with_one_line() {
    let bin = env!("CARGO_BIN_EXE_morphogen");
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let f = |n: &str| fixtures().join(n).display().to_string();
    let train = f("mnist12_train.npy");
    let x = f("grow_mnist12_40x36_t0.3_P3_zeros_x.npy");
    let write = |name: &str, dims: &[usize], values: &[f32]| {
        morphogen::data::write_npy_f32(&dir.path().join(name), dims, values).unwrap();
        p(name)
    };
    let even = write("even.npy", &[40, 36], &[4.0; 40 * 36]);
    let small = write("small.npy", &[5, 5], &[3.0; 25]);
    let neg = write("neg.npy", &[28, 28], &[-1.0; 784]);
    let missing = p("missing.npy");
    let base = ["--dataset", &train, "--t", "0.5", "--device", "cpu"];
    let denoise = |extra: &[&str]| {
        let out = p("y.npy");
        let mut args = vec!["denoise", "--out", &out, "--force"];
        args.extend(base);
        args.extend(extra);
        morphogen_at(bin, &args)
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--input", &x, "--machine", "ideal"], "needs the training images' own size (28×28), not a 40×36 canvas"),
        (vec!["--input", &x, "--machine", "local"], "Local machine needs the training images' own size"),
        (vec!["--input", &x, "--machine", "els", "--patch-map", &even], "must be an odd whole number"),
        (vec!["--input", &x, "--machine", "els", "--patch-map", &small], "shape [5, 5], but the canvas is (40, 36)"),
        (vec!["--input", &x, "--machine", "pspc", "--patch-map", &missing], "missing.npy"),
    ];
    for (extra, want) in &cases {
        let o = denoise(extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
    }
    let o = denoise(&["--input", &f("mnist12_t0.5_P7_noise_x.npy"), "--machine", "pspc", "--patch-map", &neg]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is -1"), "{}", String::from_utf8_lossy(&o.stderr));

    // sample: a canvas too large (refused while parsing, nothing allocated), a map of the
    // wrong size or with NaN, a mask of another size, a step past the run, a machine that
    // takes no map.
    let nan = write("nan.npy", &[28, 28], &[f32::NAN; 784]);
    let map56 = write("map56.npy", &[56, 56], &[1.0; 56 * 56]);
    image::GrayImage::new(10, 10).save(dir.path().join("m10.png")).unwrap();
    image::GrayImage::new(28, 28).save(dir.path().join("m28.png")).unwrap();
    let edits = |name: &str, body: &str| {
        std::fs::write(dir.path().join(name), body).unwrap();
        p(name)
    };
    let wrong_mask = edits("e1.json", r#"{"edits": [{"step": 1, "op": "set", "value": 1, "mask": "m10.png"}]}"#);
    let late = edits("e2.json", r#"{"edits": [{"step": 20, "op": "noise", "mask": "m28.png"}]}"#);
    let bad_op = edits("e3.json", r#"{"edits": [{"step": 1, "op": "smear", "mask": "m28.png"}]}"#);
    let far = edits("e4.json", r#"{"edits": [{"step": 1, "op": "stamp", "image": 99, "mask": "m28.png"}]}"#);
    let sample = |extra: &[&str]| {
        let out = p("run");
        let mut args = vec!["sample", "--dataset", &train, "--device", "cpu", "--out-dir", &out, "--force"];
        args.extend(extra);
        morphogen_at(bin, &args)
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--canvas", "100000x100000"], "each side must be 1 to 1024"),
        (vec!["--canvas", "56"], "--canvas takes HxW"),
        (vec!["--locality-map", &nan], "must be finite"),
        (vec!["--locality-map", &map56], "shape [56, 56], but the canvas is (28, 28)"),
        (vec!["--edit", &wrong_mask], "the mask is 10×10, but the canvas is 28×28"),
        (vec!["--edit", &late], "past the run's last step (19)"),
        (vec!["--edit", &bad_op], "unknown variant `smear`"),
        (vec!["--edit", &far], "training image 99"),
        (vec!["--locality-map", &neg, "--machine", "ideal"], "(0, 8]"),
        (vec!["--canvas", "56x56", "--machine", "gaussian"], "needs the training images' own size"),
    ];
    for (extra, want) in &cases {
        let o = sample(extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{extra:?}: {err}");
        // One line (clap adds its "For more information, try '--help'." to a bad flag).
        let lines = err.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"));
        assert_eq!(lines.count(), 1, "{extra:?}: {err}");
    }
    assert!(!dir.path().join("run").exists(), "no run folder is made for a refused run");
}

/// A recipe is another way in: the same canvas, map and edit fields arrive through its JSON,
/// and each is refused in one line naming the recipe and the problem, before any run folder
/// or buffer is made.
#[test]
fn recipes_that_carry_canvases_maps_and_edits_are_refused_by_name() {
    let bin = env!("CARGO_BIN_EXE_morphogen");
    let dir = tempfile::tempdir().unwrap();
    let train = fixtures().join("mnist12_train.npy").display().to_string();
    let base = morphogen::recipe::Recipe {
        dataset: morphogen::data::DatasetSource::parse(&train),
        device: morphogen::engine::DeviceChoice::Cpu,
        ..Default::default()
    };
    let base: Value = serde_json::from_str(&base.to_json()).unwrap();
    let row = |c: char| Value::String(std::iter::repeat_n(c, 28).collect());
    let mask = Value::Array((0..28).map(|_| row('#')).collect());
    let cases: Vec<(&str, Value, &str)> = vec![
        ("canvas", serde_json::json!([100000, 100000]), "each side must be 1 to 1024"),
        ("canvas", serde_json::json!([0, 28]), "out of range"),
        ("canvas", serde_json::json!([28]), "canvas"),
        ("locality_map", serde_json::json!({"h": 28, "w": 28, "values": [1.0]}), "1 values), but the canvas is 28×28"),
        (
            "locality_map",
            serde_json::json!({"h": 4294967296u64, "w": 4294967296u64, "values": []}),
            "but the canvas is 28×28",
        ),
        ("locality_map", serde_json::json!({"h": 28, "w": 28, "values": vec![-2.0; 784]}), "is -2"),
        ("locality_map", serde_json::json!({"h": 28, "w": 28, "values": [null]}), "locality_map"),
        ("edits", serde_json::json!([{"step": 99, "op": "set", "value": 1, "mask": mask}]), "past the run's last step"),
        ("edits", serde_json::json!([{"step": 0, "op": "set", "value": 1e30, "mask": mask}]), "between -1000 and 1000"),
        ("edits", serde_json::json!([{"step": 0, "op": "noise", "mask": ["##"]}]), "the mask is 1×2"),
        (
            "edits",
            serde_json::json!([{"step": 0, "op": "stamp", "image": 1, "row": i64::MIN, "col": 0, "mask": mask}]),
            "within ±4096",
        ),
        ("steps", serde_json::json!(0), "steps must be between 1"),
        ("patch", serde_json::json!({"Constant": {"p": 4}}), "patch"),
    ];
    for (i, (field, value, want)) in cases.iter().enumerate() {
        let mut recipe = base.clone();
        recipe["sampler"][*field] = value.clone();
        let path = dir.path().join(format!("r{i}.json"));
        std::fs::write(&path, recipe.to_string()).unwrap();
        let out = dir.path().join(format!("run{i}"));
        let o = morphogen_at(bin, &["sample", "--recipe", path.to_str().unwrap(), "--out-dir", out.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{field} = {value}: accepted");
        assert!(err.contains(want) && err.contains(&format!("r{i}.json")), "{field} = {value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{field} = {value}: {err}");
        assert!(!out.exists(), "{field}: no run folder");
    }
}

/// The engine refuses what the CLI refuses, by name, without running.
#[test]
fn the_engine_checks_maps_and_canvases_before_it_runs() {
    let (den, shape, n) = training("mnist12_train.npy");
    assert_eq!((shape.h, n), (28, 12));
    let call = Call::new(MachineKind::Els, Boundary::Zeros, 3, 0.5);
    let ok: Vec<u32> = vec![3; 784];
    den.check_patch_map(&call, &ok).unwrap();
    let err = den.check_patch_map(&call, &ok[..783]).unwrap_err();
    assert!(err.contains("783 values"), "{err}");
    let mut even = ok.clone();
    even[30] = 4;
    assert!(den.check_patch_map(&call, &even).unwrap_err().contains("row 1, column 2 is 4"));
    let pspc = Call { machine: MachineKind::parse("pspc").unwrap(), ..call };
    assert!(den.check_patch_map(&pspc, &ok).unwrap_err().contains("takes no per-pixel patch map"));
    assert!(den.check_call(&call.on_canvas(shape, 0, 5)).unwrap_err().contains("out of range"));
    assert!(den.check_call(&call.on_canvas(shape, 2000, 5)).unwrap_err().contains("out of range"));
    assert_eq!(call.on_canvas(shape, 28, 28).canvas, None, "the training size is no canvas");
    let cfg = SamplerConfig { locality_map: Some(LocalityMap::uniform(28, 28)), ..SamplerConfig::default() };
    den.check_run(&cfg).unwrap();
    let gauss = SamplerConfig { machine: MachineKind::parse("gaussian").unwrap(), ..cfg };
    assert!(den.check_run(&gauss).unwrap_err().contains("takes no locality map"));
}

/// The CNN is fully convolutional with zero padding and no normalisation, so on a 56×56 canvas
/// whose top-left quarter is a 28×28 x, every output pixel whose receptive field stays inside
/// that quarter equals the 28×28 call's: the network really runs on the larger canvas.
#[test]
fn the_cnn_runs_on_a_canvas_twice_the_training_size() {
    let (mut den, shape, _) = training("mnist12_train.npy");
    morphogen::engine::machines::cnn::attach(&mut den, Some("mnist"), None);
    let rf = morphogen::engine::training::network::CnnShape::SMALL.receptive_field();
    let x = morphogen::engine::sampling::noise::gaussian(4, 0, shape.len());
    let mut big = morphogen::engine::sampling::noise::gaussian(5, 0, 56 * 56);
    for i in 0..28 {
        big[i * 56..i * 56 + 28].copy_from_slice(&x[i * 28..(i + 1) * 28]);
    }
    let call = Call::new(MachineKind::Cnn, Boundary::Zeros, 3, 0.4);
    let small = den.denoise(&x, &call, &mut Control::none()).unwrap().x0;
    let on_canvas = call.on_canvas(shape, 56, 56);
    den.check_call(&on_canvas).unwrap();
    let large = den.denoise(&big, &on_canvas, &mut Control::none()).unwrap().x0;
    assert_eq!(large.len(), 56 * 56);
    let inside = 28 - rf / 2;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..inside {
        for j in 0..inside {
            a.push(small[i * 28 + j]);
            b.push(large[i * 56 + j]);
        }
    }
    assert_eq!(a.len(), 400, "20×20 pixels see only the shared quarter");
    let err = max_abs_diff(&a, &b);
    assert!(err <= 1e-4, "{err:.2e}");
    // The rest of the canvas is an answer of its own: finite, and not flat.
    assert!(large.iter().all(|v| v.is_finite()));
    let corner: Vec<f32> = (28..56).flat_map(|i| large[i * 56 + 28..i * 56 + 56].to_vec()).collect();
    let mean = corner.iter().sum::<f32>() / corner.len() as f32;
    let spread = (corner.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / corner.len() as f32).sqrt();
    assert!(spread > 0.05, "the far corner is flat: {spread}");
}
