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
