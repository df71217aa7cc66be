//! Sweeps beyond one machine: `compare` in shards that run as separate processes, merged by
//! `compare --from`, gives the single process's table bit for bit; reruns skip finished seeds;
//! files that do not belong are refused by name.

mod common;

use common::morphogen_at;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_morphogen");

fn morphogen(args: &[&str]) -> std::process::Output {
    morphogen_at(BIN, args)
}

fn ok(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn err(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a refusal: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// A small CNN for digits8, trained here in a second: compare and calibrate need weights.
fn train_tiny(dir: &std::path::Path) -> std::path::PathBuf {
    let weights = dir.join("digits.mgcnn");
    let w = weights.to_str().unwrap();
    let trained = morphogen(&[
        "train",
        "--dataset",
        "digits8",
        "--out",
        w,
        "--steps",
        "8",
        "--batch",
        "8",
        "--channels",
        "8",
        "--blocks",
        "2",
    ]);
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    weights
}

/// The binary started with `args`, its output piped, not waited for: shards run at once.
fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Child {
    std::process::Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

const SEEDS: u64 = 7;

/// compare's arguments on the small digits8 set with a CNN trained here.
fn compare_args<'a>(weights: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "compare",
        "--dataset",
        "digits8",
        "--cnn",
        weights,
        "--seeds",
        "7",
        "--steps",
        "4",
        "--patch-schedule",
        "3,3,5,5",
        "--device",
        "cpu",
        "--json",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn three_shards_in_three_processes_merge_to_the_single_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let weights = train_tiny(dir.path());
    let w = weights.to_str().unwrap();

    let single = ok(&morphogen(&compare_args(w, &[])));
    assert_eq!(single["seeds"], SEEDS);

    // Three shards as three processes at once, into two folders (shards 0 and 1 share one).
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let shards: Vec<std::process::Child> = [("0/3", a_s), ("1/3", a_s), ("2/3", b_s)]
        .into_iter()
        .map(|(shard, out)| spawn(&compare_args(w, &["--shard", shard, "--out-dir", out])))
        .collect();
    let mut per_shard = Vec::new();
    for child in shards {
        per_shard.push(ok(&child.wait_with_output().unwrap())["seeds"].as_u64().unwrap());
    }
    // Seeds 0..7 in thirds: 0,3,6 / 1,4 / 2,5.
    assert_eq!(per_shard, vec![3, 2, 2]);
    let files = |d: &std::path::Path| std::fs::read_dir(d).unwrap().count();
    assert_eq!((files(&a), files(&b)), (5, 2), "one file per seed");

    let fig = dir.path().join("r.png");
    let merged =
        ok(&morphogen(&["compare", "--from", a_s, "--from", b_s, "--json", "--figure", fig.to_str().unwrap()]));
    // The sweep's figure: each machine's sorted r, in its colour, with axes and a title.
    common::assert_chart(
        &std::fs::read(&fig).unwrap(),
        (720, 420),
        &[[220, 50, 40], [40, 90, 200], [60, 160, 90]],
        "r.png",
    );
    // The table as text: digits8 has no row in the paper's Table 1, so no paper column (it
    // used to print MNIST's beside any set).
    let text = morphogen(&["compare", "--from", a_s, "--from", b_s]);
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success() && table.contains("the paper has no row for this set"), "{table}");
    assert!(!table.contains("MNIST ResNet") && table.contains("ELS"), "{table}");
    let again = morphogen(&["compare", "--from", a_s, "--figure", fig.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("r.png"), "overwrote r.png");
    assert_eq!(merged["seeds"], SEEDS);
    for k in ["els", "local", "ideal"] {
        let (m, s) = (merged[k].as_f64(), single[k].as_f64());
        assert!(m.is_some() && s.is_some(), "{k}: {m:?} vs {s:?}");
        assert_eq!(m.unwrap().to_bits(), s.unwrap().to_bits(), "{k}: merged {m:?}, single {s:?}");
    }

    // A rerun of a shard runs nothing and leaves the files as they were.
    let before: Vec<(std::path::PathBuf, String)> = std::fs::read_dir(&b)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    let again = morphogen(&compare_args(w, &["--shard", "2/3", "--out-dir", b_s]));
    assert_eq!(ok(&again)["seeds"], 2);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.matches("done before").count(), 2, "{stderr}");
    for (p, text) in &before {
        assert_eq!(&std::fs::read_to_string(p).unwrap(), text, "{} rewritten", p.display());
    }

    // A shard's file that is not a result is refused by name, not overwritten.
    let victim = before[0].0.clone();
    std::fs::write(&victim, "not json").unwrap();
    let e = err(&morphogen(&compare_args(w, &["--shard", "2/3", "--out-dir", b_s])));
    assert!(e.contains(&victim.display().to_string()) && e.contains("not a compare result"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not json");
    let e = err(&morphogen(&["compare", "--from", b_s]));
    assert!(e.contains(&victim.display().to_string()), "{e}");
    std::fs::write(&victim, &before[0].1).unwrap();

    // Another experiment's results (other steps) do not merge with these.
    let c = dir.path().join("c");
    let other = ok(&morphogen(&[
        "compare",
        "--dataset",
        "digits8",
        "--cnn",
        w,
        "--seeds",
        "1",
        "--steps",
        "2",
        "--patch-schedule",
        "3,3",
        "--device",
        "cpu",
        "--json",
        "--out-dir",
        c.to_str().unwrap(),
    ]));
    assert_eq!(other["seeds"], 1);
    let e = err(&morphogen(&["compare", "--from", a_s, "--from", c.to_str().unwrap()]));
    assert!(e.contains("a different experiment") && e.contains("patch_schedule"), "{e}");
}

#[test]
fn shard_arguments_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, says) in [
        (vec!["compare", "--shard", "3/3", "--out-dir", d], "'3/3' is not a shard"),
        (vec!["compare", "--shard", "x", "--out-dir", d], "'x' is not a shard"),
        (vec!["compare", "--shard", "0/2"], "--shard needs --out-dir"),
        (vec!["compare", "--from", d, "--shard", "0/2"], "--from merges finished results"),
        (vec!["compare", "--from", d], "no results"),
        (vec!["compare", "--from", "/no/such/folder"], "/no/such/folder"),
    ] {
        let e = err(&morphogen(&args));
        assert!(e.contains(says), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
}

/// calibrate in shards: three processes' seed files merged by `calibrate --from` write the
/// same calibration.json as one process, to the bit, and the shard arguments are checked.
#[test]
fn calibration_shards_merge_to_the_single_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let weights = train_tiny(dir.path());
    let w = weights.to_str().unwrap();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "calibrate",
            "--dataset",
            "digits8",
            "--cnn",
            w,
            "--seeds",
            "5",
            "--steps",
            "4",
            "--max-p",
            "5",
            "--device",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>| morphogen(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let single = dir.path().join("single");
    let out = run([args(&[]), vec!["--out".into(), single.display().to_string()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let shards = dir.path().join("shards");
    let s = shards.display().to_string();
    let children: Vec<std::process::Child> = ["0/3", "1/3", "2/3"]
        .into_iter()
        .map(|shard| spawn(&[args(&[]), vec!["--shard".into(), shard.into(), "--out-dir".into(), s.clone()]].concat()))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(std::fs::read_dir(&shards).unwrap().count(), 5, "one file per seed");
    let merged = dir.path().join("merged");
    let out = run(vec!["calibrate".into(), "--from".into(), s.clone(), "--out".into(), merged.display().to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |d: &std::path::Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("calibration.json")).unwrap()).unwrap()
    };
    let (a, b) = (read(&single), read(&merged));
    // The fit against the paper's presets, drawn with axes, ticks and a legend.
    common::assert_chart(
        &std::fs::read(merged.join("calibration.png")).unwrap(),
        (760, 440),
        &[[220, 50, 40], [150, 110, 200]],
        "calibration.png",
    );
    assert_eq!(a["seeds"], 5);
    for k in ["fitted", "per_seed", "cosine", "t", "candidates", "dataset", "boundary", "seeds"] {
        assert!(!a[k].is_null(), "{k} missing");
        assert_eq!(a[k], b[k], "{k}: single and merged differ");
    }
    assert_eq!(
        std::fs::read_to_string(single.join("recipe.json")).unwrap(),
        std::fs::read_to_string(merged.join("recipe.json")).unwrap()
    );
    // A rerun of a shard runs nothing.
    let again = run([args(&[]), vec!["--shard".into(), "0/3".into(), "--out-dir".into(), s.clone()]].concat());
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stderr).matches("done before").count(), 2);
    // And the arguments that do not go together are refused in one line.
    for (extra, says) in [
        (vec!["--shard", "0/3"], "--shard needs --out-dir"),
        (vec!["--shard", "0/3", "--out-dir", "x", "--out", "y"], "--shard writes its seeds to --out-dir"),
        (vec![], "--out is needed"),
    ] {
        let out = run([args(&[]), extra.iter().map(|s| s.to_string()).collect()].concat());
        let e = err(&out);
        assert!(e.contains(says), "{extra:?}: {e}");
    }
    let e = err(&run(vec!["calibrate".into(), "--from".into(), s.clone()]));
    assert!(e.contains("--from needs --out"), "{e}");
    // compare's results are not calibration seeds.
    let c = dir.path().join("c");
    let out = morphogen(&compare_args(w, &["--out-dir", c.to_str().unwrap()]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e = err(&run(vec![
        "calibrate".into(),
        "--from".into(),
        c.display().to_string(),
        "--out".into(),
        dir.path().join("z").display().to_string(),
    ]));
    assert!(e.contains("not a calibration seed"), "{e}");
}

/// A 4-step ELS run on digits8 from `seed`, written by `sample` into `dir/name`.
fn digits_sample(dir: &std::path::Path, name: &str, seed: u64) -> std::path::PathBuf {
    let run = dir.join(name);
    let seed = seed.to_string();
    let args = ["sample", "--dataset", "digits8", "--steps", "4", "--patch-schedule", "3,3,5,5", "--seed", &seed];
    let out = morphogen(&[&args[..], &["--device", "cpu", "--out-dir", run.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run
}

/// A recipe for the grid: the 4-step run of seed 10.
fn grid_recipe(dir: &std::path::Path) -> std::path::PathBuf {
    digits_sample(dir, "run", 10).join("recipe.json")
}

/// The seed grid in shards: three processes' records, drawn by `grid --from`, give the single
/// process's sheet byte for byte; each tile is that seed's own `sample` image.
#[test]
fn grid_shards_draw_the_single_runs_sheet_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = grid_recipe(dir.path());
    let r = recipe.to_str().unwrap();
    let single = dir.path().join("single.png");
    let base = ["grid", "--recipe", r, "--seeds", "7", "--json"];
    let summary = ok(&morphogen(&[&base[..], &["--out", single.to_str().unwrap()]].concat()));
    assert_eq!(summary["seeds"], 7);
    assert_eq!(summary["first_seed"], 10, "seeds count up from the recipe's");
    assert_eq!(summary["machines"], serde_json::json!(["els"]));
    assert_eq!(summary["shape"], serde_json::json!([1, 8, 8]));

    let shards = dir.path().join("shards");
    let s = shards.to_str().unwrap();
    let children: Vec<std::process::Child> = ["0/3", "1/3", "2/3"]
        .into_iter()
        .map(|shard| spawn(&[&base[..], &["--shard", shard, "--out-dir", s]].concat()))
        .collect();
    let mut per_shard = Vec::new();
    for child in children {
        per_shard.push(ok(&child.wait_with_output().unwrap())["seeds"].as_u64().unwrap());
    }
    // Seeds 10..17 by s mod 3: 12, 15 / 10, 13, 16 / 11, 14.
    assert_eq!(per_shard, vec![2, 3, 2]);
    assert_eq!(std::fs::read_dir(&shards).unwrap().count(), 7, "one record per seed");
    let merged = dir.path().join("merged.png");
    let m = ok(&morphogen(&["grid", "--from", s, "--out", merged.to_str().unwrap(), "--json"]));
    assert_eq!(m["seeds"], 7);
    let (a, b) = (std::fs::read(&single).unwrap(), std::fs::read(&merged).unwrap());
    assert_eq!(a, b, "the merged sheet differs from the single run's");
    // 7 tiles of 8×8 at the default 28× (224 pixels) in 3 columns, 3 rows.
    let sheet = image::load_from_memory(&a).unwrap().to_rgba8();
    let (w, h) = (sheet.width(), sheet.height());
    assert_eq!(summary["sheet_size"], serde_json::json!([w, h]));
    assert!((3 * 224..3 * 224 + 60).contains(&w) && (3 * 224..3 * 224 + 150).contains(&h), "{w}×{h}");

    // Seed 13's tile is seed 13's own run: its record equals `sample --seed 13`'s final x̂₀.
    let sample13 = digits_sample(dir.path(), "s13", 13);
    let record: Value = std::fs::read_dir(&shards)
        .unwrap()
        .map(|e| serde_json::from_str::<Value>(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap())
        .find(|v| v["seed"] == 13)
        .expect("seed 13's record");
    let ours: Vec<f32> = record["images"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let (_, x0) = morphogen::data::read_npy_f32(&sample13.join("trajectory_x0.npy")).unwrap();
    let last = &x0[x0.len() - 64..];
    assert_eq!(ours.len(), 64);
    for (i, (g, s)) in ours.iter().zip(last).enumerate() {
        assert!(g.is_finite() && g.to_bits() == s.to_bits(), "pixel {i}: grid {g}, sample {s}");
    }

    // A rerun of a shard runs nothing; an existing sheet is not overwritten.
    let again = ok(&morphogen(&[&base[..], &["--shard", "1/3", "--out-dir", s]].concat()));
    assert_eq!(again["seeds"], 3);
    let e = err(&morphogen(&["grid", "--from", s, "--out", merged.to_str().unwrap()]));
    assert!(e.contains("merged.png"), "{e}");
    // Shards with a seed missing say which.
    std::fs::remove_file(
        std::fs::read_dir(&shards)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| std::fs::read_to_string(p).unwrap().contains("\"seed\": 13"))
            .unwrap(),
    )
    .unwrap();
    let gap = morphogen(&["grid", "--from", s, "--out", dir.path().join("gap.png").to_str().unwrap()]);
    assert!(gap.status.success());
    assert!(
        String::from_utf8_lossy(&gap.stderr)
            .contains("1 seed(s) missing between the first and last (a shard not run yet?): 13")
    );
}

/// The zoo as a batch: every closed-form machine per seed, labelled rows; and the grid's
/// arguments refused in one line each.
#[test]
fn grid_zoo_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = grid_recipe(dir.path());
    let r = recipe.to_str().unwrap();
    let zoo = dir.path().join("zoo.png");
    let z = ok(&morphogen(&["grid", "--recipe", r, "--seeds", "2", "--zoo", "--json", "--out", zoo.to_str().unwrap()]));
    let machines: Vec<&str> = z["machines"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(machines.len(), 7, "{machines:?}");
    assert!(machines.contains(&"els") && machines.contains(&"ideal") && !machines.contains(&"cnn"), "{machines:?}");
    let sheet = image::open(&zoo).unwrap().to_rgba8();
    // Seven columns of 224-pixel tiles, two rows.
    assert!(sheet.width() >= 7 * 224 && sheet.width() < 7 * 224 + 100, "{}", sheet.width());
    assert!(sheet.height() >= 2 * 224 && sheet.height() < 2 * 224 + 100, "{}", sheet.height());

    let d = dir.path().to_str().unwrap();
    let init = dir.path().join("init.json");
    let mut with_init: Value = serde_json::from_str(&std::fs::read_to_string(&recipe).unwrap()).unwrap();
    with_init["init"] = Value::String("x.npy".into());
    std::fs::write(&init, with_init.to_string()).unwrap();
    for (args, says) in [
        (vec!["grid", "--recipe", r], "grid needs --out"),
        (vec!["grid", "--recipe", r, "--shard", "0/2", "--out", "a.png"], "--shard needs --out-dir"),
        (vec!["grid", "--recipe", r, "--shard", "0/2", "--out-dir", d, "--out", "a.png"], "--shard writes its seeds"),
        (vec!["grid", "--recipe", r, "--seeds", "0", "--out", "a.png"], "--seeds must be between 1 and 100000"),
        (vec!["grid", "--from", d], "--from needs --out"),
        (vec!["grid", "--from", d, "--recipe", r, "--out", "a.png"], "--from draws finished seeds"),
        (vec!["grid", "--out", "a.png"], "grid needs --recipe"),
        (vec!["grid", "--recipe", "/no/such.json", "--out", "a.png"], "/no/such.json"),
        (vec!["grid", "--recipe", init.to_str().unwrap(), "--out", "a.png"], "every seed would give the same image"),
        (vec!["grid", "--recipe", r, "--out", zoo.to_str().unwrap()], "zoo.png"),
    ] {
        let e = err(&morphogen(&args));
        assert!(e.contains(says), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
    }
    // A compare result is not a grid seed.
    let c = dir.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("x.json"), r#"{"seed": 1}"#).unwrap();
    let e =
        err(&morphogen(&["grid", "--from", c.to_str().unwrap(), "--out", dir.path().join("q.png").to_str().unwrap()]));
    assert!(e.contains("x.json") && e.contains("not a grid seed"), "{e}");
}
