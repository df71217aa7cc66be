//! Bad input never panics: every failure names the file or folder and the problem.

mod common;

use std::io::Write;
use std::path::Path;

use morphogen::data::{Dataset, DatasetSource, LoadOptions};

fn png(path: &Path, w: u32, h: u32, v: u8) {
    image::GrayImage::from_pixel(w, h, image::Luma([v])).save(path).unwrap();
}

fn load(source: DatasetSource) -> Result<Dataset, morphogen::data::DataError> {
    Dataset::load(&source, &LoadOptions::default())
}

#[test]
fn corrupt_and_odd_sized_files_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    for k in 0..3 {
        png(&dir.path().join(format!("a_{k}.png")), 8, 8, 40 * k as u8);
    }
    png(&dir.path().join("b_0.png"), 12, 10, 200);
    std::fs::write(dir.path().join("b_1.png"), b"definitely not a png").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let d = load(DatasetSource::Folder(dir.path().into())).unwrap();
    assert_eq!(d.len(), 4);
    assert_eq!((d.shape.h, d.shape.w, d.shape.c), (8, 8, 1));
    assert_eq!(d.report.resized, 1);
    assert_eq!(d.report.skipped.len(), 1);
    assert!(d.report.skipped[0].0.ends_with("b_1.png"));
    assert!(d.report.summary().contains("1 skipped"));
    assert_eq!(d.classes(), vec!["a", "b"]);
    // pixel values land in [−1, 1]
    assert_eq!(d.image(0)[0], -1.0);
    assert!((d.image(1)[0] - (40.0 / 127.5 - 1.0)).abs() < 1e-6);
}

#[test]
fn empty_and_unreadable_folders_name_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(DatasetSource::Folder(dir.path().into())).unwrap_err();
    assert_eq!(e.path, dir.path());
    assert!(e.problem.contains("empty"), "{e}");

    std::fs::write(dir.path().join("x_1.png"), b"junk").unwrap();
    std::fs::write(dir.path().join("x_2.jpg"), b"junk").unwrap();
    let e = load(DatasetSource::Folder(dir.path().into())).unwrap_err();
    assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
    assert!(e.problem.contains("no readable image"), "{e}");

    let e = load(DatasetSource::Folder(dir.path().join("missing"))).unwrap_err();
    assert!(e.to_string().contains("missing") && e.problem.contains("no such"), "{e}");
}

#[test]
fn large_photos_are_downscaled_while_loading_and_oversized_targets_refused() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("big_0.png"), 1000, 800, 1);
    png(&dir.path().join("big_1.png"), 1000, 800, 9);
    let d = load(DatasetSource::Folder(dir.path().into())).unwrap();
    // fit into 64×64 with the aspect ratio kept
    assert_eq!((d.shape.w, d.shape.h), (64, 51));
    assert_eq!(d.report.downscaled, 2);
    assert!(d.report.summary().contains("2 large images downscaled"), "{}", d.report.summary());
    // an explicit size goes straight to that size
    let sized = Dataset::load(
        &DatasetSource::Folder(dir.path().into()),
        &LoadOptions { size: Some((16, 16)), ..Default::default() },
    )
    .unwrap();
    assert_eq!((sized.shape.w, sized.shape.h), (16, 16));
    // a size above the engine's limit is refused, naming a file
    let e = Dataset::load(
        &DatasetSource::Folder(dir.path().into()),
        &LoadOptions { size: Some((300, 300)), ..Default::default() },
    )
    .unwrap_err();
    assert!(e.path.to_string_lossy().contains("big_"), "{e}");
    assert!(e.problem.contains("too large"), "{e}");
}

/// A PNG whose header claims 60000×60000 pixels, with no pixel data behind it.
fn huge_header_png(path: &Path) {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        // CRC-32 of type and data (the PNG polynomial)
        let mut crc = 0xFFFF_FFFFu32;
        for &b in &out[start..] {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        out.extend((!crc).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(60_000u32.to_be_bytes());
    ihdr.extend(60_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00]); // the start of a zlib stream, no more
    chunk(&mut out, b"IEND", &[]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_header_claiming_60000_squared_is_refused_without_decoding() {
    let dir = tempfile::tempdir().unwrap();
    huge_header_png(&dir.path().join("bomb_0.png"));
    png(&dir.path().join("ok_0.png"), 8, 8, 3);
    let d = load(DatasetSource::Folder(dir.path().into())).unwrap();
    assert_eq!(d.len(), 1);
    let (path, why) = &d.report.skipped[0];
    assert!(path.ends_with("bomb_0.png"));
    assert!(why.contains("60000×60000") && why.contains("16384"), "{why}");
}

#[test]
fn non_finite_npy_values_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.npy");
    morphogen::data::write_npy_f32(&p, &[2, 2, 2], &[0.0, 0.1, f32::NAN, 0.0, 0.0, 0.0, 0.0, f32::INFINITY]).unwrap();
    let e = load(DatasetSource::Npy(p.clone())).unwrap_err();
    assert_eq!(e.path, p);
    assert!(e.problem.contains("value #2") && e.problem.contains("finite"), "{e}");
}

#[test]
fn npy_of_wrong_shape_or_dtype_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad_shape = dir.path().join("five_d.npy");
    morphogen::data::write_npy_f32(&bad_shape, &[2, 1, 1, 3, 3], &[0.0; 18]).unwrap();
    let e = load(DatasetSource::Npy(bad_shape.clone())).unwrap_err();
    assert_eq!(e.path, bad_shape);
    assert!(e.problem.contains("shape"), "{e}");

    let ints = dir.path().join("ints.npy");
    {
        use npyz::WriterBuilder;
        let mut f = std::fs::File::create(&ints).unwrap();
        let mut w =
            npyz::WriteOptions::<i64>::new().default_dtype().shape(&[2, 3, 3]).writer(&mut f).begin_nd().unwrap();
        w.extend(0..18i64).unwrap();
        w.finish().unwrap();
    }
    let e = load(DatasetSource::Npy(ints.clone())).unwrap_err();
    assert_eq!(e.path, ints);
    assert!(e.problem.contains("dtype"), "{e}");

    let out_of_range = dir.path().join("range.npy");
    morphogen::data::write_npy_f32(&out_of_range, &[1, 2, 2], &[0.0, 3.0, 0.0, 0.0]).unwrap();
    let e = load(DatasetSource::Npy(out_of_range)).unwrap_err();
    assert!(e.problem.contains("[-1, 1]"), "{e}");

    let garbage = dir.path().join("garbage.npy");
    std::fs::File::create(&garbage).unwrap().write_all(b"\x93NUMPY garbage").unwrap();
    let e = load(DatasetSource::Npy(garbage.clone())).unwrap_err();
    assert_eq!(e.path, garbage);
}

#[test]
fn class_filter_and_subset() {
    let all = load(DatasetSource::Bundled("mnist".into())).unwrap();
    assert_eq!(all.len(), 2000);
    assert_eq!((all.shape.c, all.shape.h, all.shape.w), (1, 28, 28));
    let threes = Dataset::load(
        &DatasetSource::Bundled("mnist".into()),
        &LoadOptions { class: Some("3".into()), ..Default::default() },
    )
    .unwrap();
    assert_eq!(threes.len(), 200);
    assert!(threes.labels.iter().all(|l| l == "3"));
    let sub = |seed| {
        Dataset::load(
            &DatasetSource::Bundled("mnist".into()),
            &LoadOptions { subset: Some(50), subset_seed: seed, ..Default::default() },
        )
        .unwrap()
    };
    assert_eq!(sub(1).len(), 50);
    assert_eq!(sub(1).images, sub(1).images);
    assert_ne!(sub(1).images, sub(2).images);
    let e = Dataset::load(
        &DatasetSource::Bundled("mnist".into()),
        &LoadOptions { class: Some("cat".into()), ..Default::default() },
    )
    .unwrap_err();
    assert!(e.problem.contains("'cat'") && e.problem.contains("0, 1, 2"), "{e}");
}

#[test]
fn every_bundled_dataset_loads_with_its_documented_size() {
    for (name, n, c, side) in [
        ("mnist", 2000, 1, 28),
        ("fashion", 2000, 1, 28),
        ("digits8", 1797, 1, 8),
        ("textures", 768, 1, 32),
        ("emoji", 405, 3, 32),
        ("photos", 790, 3, 32),
    ] {
        let d = load(DatasetSource::Bundled(name.into())).unwrap();
        assert_eq!((d.len(), d.shape.c, d.shape.h, d.shape.w), (n, c, side, side), "{name}");
        assert!(d.images.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
    let e = load(DatasetSource::Bundled("cifar".into())).unwrap_err();
    assert!(e.problem.contains("mnist"), "{e}");
}

#[test]
fn a_bad_recipe_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("recipe.json");
    std::fs::write(&p, b"{ \"sampler\": { \"steps\": 0 } }").unwrap();
    let e = morphogen::recipe::Recipe::load(&p).unwrap_err();
    assert!(e.contains("recipe.json") && e.contains("steps"), "{e}");
    std::fs::write(&p, b"not json").unwrap();
    let e = morphogen::recipe::Recipe::load(&p).unwrap_err();
    assert!(e.contains("recipe.json") && e.contains("not a valid recipe"), "{e}");
}

#[test]
fn every_recipe_field_is_checked_and_named() {
    use morphogen::recipe::Recipe;
    let p = Path::new("r.json");
    let err = |text: &str| Recipe::parse(text, p).unwrap_err();
    // a run setting at the top level would be silently ignored: refused, saying where it goes
    let e = err(r#"{ "steps": -3 }"#);
    assert!(e.contains("r.json") && e.contains("'steps'") && e.contains("sampler"), "{e}");
    // wrong types name the field path
    let e = err(r#"{ "sampler": { "steps": -3 } }"#);
    assert!(e.contains("sampler.steps") && e.contains("-3"), "{e}");
    let e = err(r#"{ "sampler": { "eta": "lots" } }"#);
    assert!(e.contains("sampler.eta"), "{e}");
    let e = err(r#"{ "load": { "size": [0, 16] } }"#);
    assert!(e.contains("load.size"), "{e}");
    // ranges
    for (text, field) in [
        (r#"{ "sampler": { "steps": 0 } }"#, "steps"),
        (r#"{ "sampler": { "eta": 1.5 } }"#, "eta"),
        (r#"{ "sampler": { "t_start": 0.0 } }"#, "t_start"),
        (r#"{ "sampler": { "locality_scale": 40.0 } }"#, "locality_scale"),
        (r#"{ "sampler": { "patch": { "kind": "constant", "p": 4 } } }"#, "patch"),
        (r#"{ "sampler": { "patch": { "kind": "constant", "p": 99999 } } }"#, "patch"),
        (r#"{ "dataset_hash": "é✓ not a hash" }"#, "dataset_hash"),
        (r#"{ "dataset": { "kind": "bundled", "value": "cifar" } }"#, "dataset"),
        (r#"{ "load": { "subset": 0 } }"#, "load.subset"),
    ] {
        let e = err(text);
        assert!(e.contains(field) && e.contains("r.json"), "{text}: {e}");
    }
    // unknown fields elsewhere are warnings, and the recipe still loads
    let (r, warnings) = Recipe::parse(r#"{ "sampler": { "steps": 7, "colour": 3 }, "comment": "hi" }"#, p).unwrap();
    assert_eq!(r.sampler.steps, 7);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("sampler.colour")), "{warnings:?}");
}

/// `pack-dataset` writes its atlas atomically and never over an existing one without --force.
#[test]
fn packing_an_atlas_never_replaces_one_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("in");
    std::fs::create_dir(&folder).unwrap();
    for k in 0..4 {
        png(&folder.join(format!("d_{k}.png")), 6, 6, 60 * k as u8);
    }
    let out = dir.path().join("out");
    let pack = |extra: &[&str]| {
        let mut args = vec!["pack-dataset", folder.to_str().unwrap(), "tiny", "--out", out.to_str().unwrap()];
        args.extend(extra);
        common::morphogen_at(env!("CARGO_BIN_EXE_morphogen"), &args)
    };
    let first = pack(&[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let atlas = std::fs::read(out.join("tiny.png")).unwrap();
    assert_eq!(image::load_from_memory(&atlas).unwrap().to_luma8().dimensions(), (12, 12), "2×2 tiles of 6 px");
    let index = std::fs::read_to_string(out.join("tiny.json")).unwrap();
    assert!(index.contains("\"columns\":2"), "{index}");

    std::fs::write(out.join("tiny.json"), "mine").unwrap();
    let again = pack(&[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("tiny.") && err.contains("already exists"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(std::fs::read_to_string(out.join("tiny.json")).unwrap(), "mine", "left as it was");
    assert!(pack(&["--force"]).status.success());
    assert_eq!(std::fs::read_to_string(out.join("tiny.json")).unwrap(), index);
    let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
}
