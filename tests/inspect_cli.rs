//! `morphogen inspect` against the float64 reference's weights
//! (`tests/fixtures/manifest_inspect.json`, made by `scripts/make_inspect_fixtures.py`):
//! interior, edge and corner pixels, gray and RGB, ELS with both boundaries, LS and Ideal.

mod common;

use common::fixtures;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_morphogen");

fn run(case: &Value) -> Value {
    let f = |k: &str| fixtures().join(case[k].as_str().unwrap()).display().to_string();
    let px = case["pixel"].as_array().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["inspect", "--dataset", &f("train"), "--input", &f("input")])
        .args(["--t", &case["t"].to_string(), "--machine", case["machine"].as_str().unwrap()])
        .args(["--boundary", case["boundary"].as_str().unwrap(), "--patch", &case["patch"].to_string()])
        .args(["--pixel", &format!("{},{}", px[0], px[1]), "--top", &case["top"].to_string()])
        .args(["--schedule", case["schedule"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (image, row, col) of a weight entry; row and col are null for Ideal.
fn place(w: &Value) -> (u64, Option<u64>, Option<u64>) {
    (w["image"].as_u64().unwrap(), w["row"].as_u64(), w["col"].as_u64())
}

#[test]
fn top_weights_match_the_reference() {
    let text = std::fs::read_to_string(fixtures().join("manifest_inspect.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 35);
    for case in cases {
        let what = format!("{} {} P={} pixel {}", case["machine"], case["boundary"], case["patch"], case["pixel"]);
        let got = run(case);
        let want = case["weights"].as_array().unwrap();
        let have = got["weights"].as_array().unwrap();
        assert_eq!(have.len(), want.len(), "{what}");
        assert_eq!(got["candidates"], case["candidates"], "{what}: candidate count");
        // Same places in the same order, weights within 1e-3. Equal weights (identical
        // training windows) may come in either order, so each run of ties is compared as a
        // set, and a tie run cut by the top-K boundary only up to the cut.
        let last = want.last().unwrap()["weight"].as_f64().unwrap();
        let mut i = 0;
        while i < want.len() {
            let wi = want[i]["weight"].as_f64().unwrap();
            let mut j = i + 1;
            while j < want.len() && (want[j]["weight"].as_f64().unwrap() - wi).abs() <= 1e-9 * wi.max(1e-300) {
                j += 1;
            }
            for k in i..j {
                let (w, h) = (want[k]["weight"].as_f64().unwrap(), have[k]["weight"].as_f64().unwrap());
                assert!((w - h).abs() <= 1e-3, "{what}: weight #{k} {h} vs {w}");
            }
            if (wi - last).abs() > 1e-9 * wi.max(1e-300) {
                let mut a: Vec<_> = want[i..j].iter().map(place).collect();
                let mut b: Vec<_> = have[i..j].iter().map(place).collect();
                a.sort();
                b.sort();
                assert_eq!(a, b, "{what}: entries {i}..{j}");
            }
            i = j;
        }
        for (g, w) in got["x0"].as_array().unwrap().iter().zip(case["x0"].as_array().unwrap()) {
            assert!((g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-4, "{what}: x0 {g} vs {w}");
        }
        let (ge, we) = (got["entropy"].as_f64().unwrap(), case["entropy"].as_f64().unwrap());
        assert!((ge - we).abs() < 1e-4 + 1e-4 * we, "{what}: entropy {ge} vs {we}");
        if case["machine"] == "ideal" {
            assert!(have.iter().all(|w| w["row"].is_null() && w["col"].is_null()), "{what}: Ideal has no place");
        }
    }
}

#[test]
fn bad_pixels_and_tops_are_refused_by_name() {
    let f = |n: &str| fixtures().join(n).display().to_string();
    let base = ["inspect", "--dataset", &f("mnist12_train.npy"), "--input", &f("mnist12_t0.5_P7_noise_x.npy")];
    for (extra, needle) in [
        (vec!["--t", "0.5", "--machine", "els", "--pixel", "28,3"], "outside the 28×28 image"),
        (vec!["--t", "0.5", "--machine", "els", "--pixel", "3"], "ROW,COL"),
        (vec!["--t", "0.5", "--machine", "els", "--pixel", "1,1", "--top", "0"], "--top"),
        (vec!["--t", "1.5", "--machine", "els", "--pixel", "1,1"], "--t must be"),
    ] {
        let out = std::process::Command::new(BIN).args(base).args(&extra).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(if needle == "ROW,COL" { 2 } else { 1 }), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
