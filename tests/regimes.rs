//! Speciation and collapse (Biroli et al. 2024): the prediction and the Ideal posterior
//! against the float64 reference (`scripts/make_regime_fixtures.py`), the `regimes` command,
//! and the studio worker's marks.

mod common;

use common::*;
use morphogen::engine::analysis::regimes::{Trace, predict_for, trace};
use morphogen::engine::{Control, NoiseSchedule, SamplerConfig};
use morphogen::worker::{Command, Event, WorkerHandle};
use serde_json::Value;

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("manifest_regimes.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["cases"].as_array().unwrap().clone()
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-300)
}

#[test]
fn the_prediction_and_the_ideal_posterior_match_the_reference() {
    let cases = manifest();
    assert_eq!(cases.len(), 2);
    let mut steps_compared = 0;
    let mut classes_compared = 0;
    for c in &cases {
        let name = c["train"].as_str().unwrap();
        let (mut den, _, n) = training(name);
        let p = predict_for(&mut den, &Control::none()).unwrap().unwrap();
        assert_eq!(p.images, n);
        for (got, key) in [
            (p.top_eigenvalue, "top_eigenvalue"),
            (p.speciation_alpha_bar, "speciation_alpha_bar"),
            (p.collapse_alpha_bar, "collapse_alpha_bar"),
        ] {
            let want = c[key].as_f64().unwrap();
            assert!(close(got, want, 1e-9), "{name} {key}: {got} vs reference {want}");
        }

        let classes = c["classes"].as_u64().unwrap() as usize;
        let labels: Vec<usize> = (0..n).map(|k| k % classes).collect();
        let (_, init) = npy(c["init"].as_str().unwrap());
        let cfg = SamplerConfig {
            steps: c["steps"].as_u64().unwrap() as usize,
            schedule: NoiseSchedule::by_name(c["schedule"].as_str().unwrap()).unwrap(),
            t_start: c["t_start"].as_f64().unwrap(),
            ..SamplerConfig::default()
        };
        let got = trace(&mut den, &cfg, Some(&labels), Some(init), &mut Control::none()).unwrap();
        let want = c["run"].as_array().unwrap();
        assert_eq!(got.steps.len(), want.len(), "{name}: steps");
        for (k, (g, w)) in got.steps.iter().zip(want).enumerate() {
            assert!(close(g.alpha_bar, w["alpha_bar"].as_f64().unwrap(), 1e-12), "{name} step {k}: ᾱ");
            let top = w["top_weight"].as_f64().unwrap();
            // The engine's x_t is float32: 2e-3 of weight near the steep middle of the run.
            assert!((g.top_weight - top).abs() <= 2e-3, "{name} step {k}: top weight {} vs {top}", g.top_weight);
            let (class, mass) = g.class.expect("labels were given");
            let (want_class, want_mass) =
                (w["class"].as_u64().unwrap() as usize, w["class_posterior"].as_f64().unwrap());
            assert!((mass - want_mass).abs() <= 2e-3, "{name} step {k}: class posterior {mass} vs {want_mass}");
            // A near tie may fall either way in float32.
            if want_mass - w["runner_up"].as_f64().unwrap() > 0.01 {
                assert_eq!(class, want_class, "{name} step {k}: class");
                classes_compared += 1;
            }
            steps_compared += 1;
        }
        // The measured transitions of the reference's run, by the same rules.
        let reference = Trace {
            seed: 0,
            steps: want
                .iter()
                .map(|w| morphogen::engine::analysis::regimes::StepPosterior {
                    alpha_bar: w["alpha_bar"].as_f64().unwrap(),
                    top_weight: w["top_weight"].as_f64().unwrap(),
                    class: Some((w["class"].as_u64().unwrap() as usize, w["class_posterior"].as_f64().unwrap())),
                })
                .collect(),
        };
        assert!(reference.collapse_step().is_some() && reference.speciation_step().is_some());
        assert_eq!(got.collapse_step(), reference.collapse_step(), "{name}: collapse step");
        assert_eq!(got.speciation_step(), reference.speciation_step(), "{name}: speciation step");
    }
    assert_eq!(steps_compared, 40);
    assert!(classes_compared >= 36, "only {classes_compared} of 40 steps had a clear class");
}

#[test]
fn regimes_prints_the_prediction_beside_what_ideal_runs_measure() {
    let bin = env!("CARGO_BIN_EXE_morphogen");
    let dir = tempfile::tempdir().unwrap();
    let fig = dir.path().join("regimes.png");
    let fig_arg = fig.display().to_string();
    let args = ["regimes", "--dataset", "digits8", "--seeds", "6", "--device", "cpu", "--json", "--figure", &fig_arg];
    let out = morphogen_at(bin, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["images"].as_u64(), r["seeds"].as_u64(), r["steps"].as_u64()), (Some(1797), Some(6), Some(20)));
    let lambda = r["top_eigenvalue"].as_f64().unwrap();
    assert!(lambda > 1.0 && lambda < 10.0, "Λ {lambda}");
    let s = &r["speciation"];
    assert!(close(s["predicted_alpha_bar"].as_f64().unwrap(), 1.0 / (1.0 + lambda), 1e-12));
    for (name, t) in [("speciation", s), ("collapse", &r["collapse"])] {
        let at = t["predicted_step"].as_f64().unwrap();
        assert_eq!(t["first_step_past"].as_u64(), Some(at.ceil() as u64), "{name}");
        let measured: Vec<u64> = t["measured_steps"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(measured.len(), 6, "{name}: every seed shows it");
        let med = t["measured_median_step"].as_f64().unwrap();
        let mut sorted = measured.clone();
        sorted.sort();
        assert_eq!(med, (sorted[2] + sorted[3]) as f64 / 2.0, "{name}: the median of {measured:?}");
        // On digits8 the prediction lands within two steps of the measurement (README).
        assert!((med - at.ceil()).abs() <= 2.0, "{name}: predicted {at}, measured {med}");
    }
    // Speciation comes first, as the theory says, in both the prediction and the runs.
    assert!(s["predicted_alpha_bar"].as_f64() < r["collapse"]["predicted_alpha_bar"].as_f64());
    assert!(s["measured_median_step"].as_f64() <= r["collapse"]["measured_median_step"].as_f64());
    assert!(r["speciation_unmeasured"].is_null());
    let png = std::fs::read(&fig).unwrap();
    assert_chart(&png, (760, 440), &[[40, 90, 200], [60, 160, 90], [200, 120, 30], [220, 50, 40]], "regimes figure");

    // The figure is never written over, and bad arguments get one line.
    let again = morphogen_at(bin, &args);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("regimes.png"), "{err}");
    let zero = morphogen_at(bin, &["regimes", "--dataset", "digits8", "--seeds", "0"]);
    let err = String::from_utf8_lossy(&zero.stderr);
    assert!(!zero.status.success() && err.contains("--seeds") && err.lines().count() == 1, "{err}");
}

#[test]
fn the_studio_worker_sends_the_loaded_sets_transitions_once_it_is_idle() {
    let worker = WorkerHandle::spawn(|| {});
    let mut recipe = morphogen::recipe::Recipe {
        dataset: morphogen::data::DatasetSource::parse("digits8"),
        device: morphogen::engine::DeviceChoice::Cpu,
        ..Default::default()
    };
    recipe.sampler.steps = 3;
    worker.send(Command::Start { run: 1, recipe });
    let Event::Started { dataset_hash, .. } = wait_for(&worker.events, |e| matches!(e, Event::Started { .. })) else {
        unreachable!()
    };
    let Event::Regimes { dataset_hash: hash, prediction } =
        wait_for(&worker.events, |e| matches!(e, Event::Regimes { .. }))
    else {
        unreachable!()
    };
    assert_eq!(hash, dataset_hash);
    // The same numbers as the engine's own, on the same set.
    let set = morphogen::data::Dataset::load(
        &morphogen::data::DatasetSource::parse("digits8"),
        &morphogen::data::LoadOptions::default(),
    )
    .unwrap();
    let mut den = morphogen::engine::Denoiser::new(&set.images, set.len(), set.shape, &burn::tensor::Device::flex());
    let want = predict_for(&mut den, &Control::none()).unwrap().unwrap();
    assert_eq!(prediction.unwrap(), want);
}

/// README's "When does structure appear?" table, MNIST row: over 50 seeds the median measured
/// step of both transitions is the first step at or past the prediction.
#[test]
fn on_mnist_both_transitions_land_on_the_predicted_step() {
    let bin = env!("CARGO_BIN_EXE_morphogen");
    let out = morphogen_at(bin, &["regimes", "--dataset", "mnist", "--seeds", "50", "--device", "cpu", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["seeds"].as_u64(), Some(50));
    for (name, past, ab) in [("speciation", 3, 0.0456), ("collapse", 4, 0.0823)] {
        let t = &r[name];
        assert_eq!(t["first_step_past"].as_u64(), Some(past), "{name}");
        assert!((t["predicted_alpha_bar"].as_f64().unwrap() - ab).abs() < 5e-4, "{name}: {}", t["predicted_alpha_bar"]);
        assert_eq!(t["measured_median_step"].as_f64(), Some(past as f64), "{name}");
        let seen = t["measured_steps"].as_array().unwrap().iter().filter(|v| v.is_u64()).count();
        assert_eq!(seen, 50, "{name}: every seed shows it");
    }
}
