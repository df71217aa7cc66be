//! Property-based fuzzing of everything that reads user files: the .npy reader, the recipe
//! parser and the image-folder loader. Each must return an error, never panic, on any bytes.
//!
//! `cargo test --release` runs a few hundred cases of each (seconds). For a longer hunt set
//! `MORPHOGEN_FUZZ_SECS=60` to keep each target going for that many seconds:
//! `MORPHOGEN_FUZZ_SECS=60 cargo test --release --test fuzz -- --nocapture`.
//! Inputs that once crashed a reader are kept at the bottom as plain regression tests.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use morphogen::data::{Dataset, DatasetSource, LoadOptions, read_npy_f32, write_npy_f32};
use morphogen::recipe::Recipe;

/// Runs `check` on inputs from `strategy`: a fixed number of cases, or for the budget the
/// environment asks for. A panic fails the test with the (shrunk) input.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let budget = std::env::var("MORPHOGEN_FUZZ_SECS").ok().and_then(|s| s.parse::<u64>().ok());
    let deadline = budget.map(|s| Instant::now() + Duration::from_secs(s));
    let mut runs = 0u64;
    loop {
        let mut runner = TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
        if let Err(e) = runner.run(&strategy, &check) {
            panic!("{name}: {e}");
        }
        runs += 256;
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    eprintln!("{name}: {runs} cases without a panic");
}

/// Bytes that start from a valid file and get a few bytes overwritten, cut or extended:
/// far more likely to reach deep into a parser than uniformly random bytes.
fn mutations(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (
        proptest::collection::vec((0..len.max(1), any::<u8>()), 0..8),
        0..=len + 16,
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(move |(edits, cut, tail)| {
            let mut v = valid.clone();
            for (i, b) in edits {
                if i < v.len() {
                    v[i] = b;
                }
            }
            v.truncate(cut);
            v.extend(tail);
            v
        })
}

fn valid_npy() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.npy");
    write_npy_f32(&p, &[2, 3, 4], &(0..24).map(|i| i as f32 / 24.0).collect::<Vec<_>>()).unwrap();
    std::fs::read(p).unwrap()
}

fn valid_png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(6, 5, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn check_npy(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    std::fs::write(&p, bytes).unwrap();
    if let Ok((shape, values)) = read_npy_f32(&p) {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        assert!(values.iter().all(|v| v.is_finite()));
    }
    let _ = Dataset::load(&DatasetSource::Npy(p), &LoadOptions::default());
}

fn check_image_folder(bytes: &[u8], ext: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("a_0.{ext}")), bytes).unwrap();
    if let Ok(d) = Dataset::load(&DatasetSource::Folder(dir.path().into()), &LoadOptions::default()) {
        assert!(d.images.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

#[test]
fn fuzz_npy_reader() {
    fuzz("npy mutations", mutations(valid_npy()), |bytes| {
        check_npy(&bytes);
        Ok(())
    });
    fuzz("npy random bytes", proptest::collection::vec(any::<u8>(), 0..256), |bytes| {
        check_npy(&bytes);
        Ok(())
    });
}

#[test]
fn fuzz_recipe_parser() {
    let valid = Recipe::default().to_json();
    fuzz("recipe mutations", mutations(valid.into_bytes()), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok((r, _)) = Recipe::parse(&text, Path::new("fuzz.json")) {
            assert!(r.validate().is_ok());
        }
        Ok(())
    });
    // JSON-shaped text built from the recipe's own vocabulary reaches the validators
    let atoms = prop_oneof![
        Just("\"sampler\"".to_string()),
        Just("\"steps\"".to_string()),
        Just("\"patch\"".to_string()),
        Just("\"kind\"".to_string()),
        Just("\"list\"".to_string()),
        Just("\"per_step\"".to_string()),
        Just("\"branched_from\"".to_string()),
        Just("\"from_step\"".to_string()),
        Just("\"recipe\"".to_string()),
        Just("\"dataset_hash\"".to_string()),
        Just("\"load\"".to_string()),
        Just("\"size\"".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        Just(":".to_string()),
        Just(",".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("null".to_string()),
    ];
    fuzz("recipe token soup", proptest::collection::vec(atoms, 0..40), |tokens| {
        let _ = Recipe::parse(&tokens.join(""), Path::new("fuzz.json"));
        Ok(())
    });
}

#[test]
fn fuzz_image_folder_loader() {
    fuzz("png mutations", mutations(valid_png()), |bytes| {
        check_image_folder(&bytes, "png");
        Ok(())
    });
    fuzz("random bytes as images", (proptest::collection::vec(any::<u8>(), 0..128), 0..4usize), |(bytes, k)| {
        check_image_folder(&bytes, ["png", "bmp", "gif", "tiff"][k]);
        Ok(())
    });
}

// Regression inputs: each once crashed a reader.

/// An .npy header whose element count overflows u64: npyz's header parser multiplied the
/// shape unchecked and panicked (debug) or wrapped (release). Refused from the header now.
#[test]
fn regression_npy_header_with_an_overflowing_shape() {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let pad = 64 - (10 + header.len() + 1) % 64;
    let full = format!("{header}{}\n", " ".repeat(pad));
    bytes.extend((full.len() as u16).to_le_bytes());
    bytes.extend(full.as_bytes());
    bytes.extend([0u8; 64]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.npy");
    std::fs::write(&p, bytes).unwrap();
    let e = read_npy_f32(&p).unwrap_err();
    assert!(e.problem.contains("more values than the file holds"), "{e}");
}
