//! README: "`cargo install --path .` … it finds the bundled datasets and models inside the
//! binary". A copy of the binary in a folder of its own, run from another empty folder, samples
//! MNIST with the shipped CNN weights.

use morphogen::trajectory::Trajectory;

#[test]
fn a_copied_binary_runs_the_bundled_data_and_weights_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (bin_dir, cwd) = (dir.path().join("bin"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let bin = bin_dir.join("morphogen");
    std::fs::copy(env!("CARGO_BIN_EXE_morphogen"), &bin).unwrap();
    let out = std::process::Command::new(&bin)
        .current_dir(&cwd)
        .args(["sample", "--dataset", "mnist", "--subset", "40", "--machine", "cnn", "--steps", "3"])
        .args(["--device", "cpu", "--seed", "2", "--out-dir", "run"])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = Trajectory::read_dir(&cwd.join("run")).unwrap();
    assert_eq!(run.steps.len(), 3, "one record per step");
    assert_eq!((run.shape.c, run.shape.h, run.shape.w), (1, 28, 28), "MNIST's shape, from the bundled set");
    let last = run.final_image().expect("a final image");
    assert_eq!(last.len(), 28 * 28);
    assert!(last.iter().all(|v| v.is_finite()), "NaN or infinity in the CNN's sample");
    let spread =
        last.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) - last.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    assert!(spread > 0.5, "the CNN drew something (value range {spread})");
}
