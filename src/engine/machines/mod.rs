//! The machines, one per file, and the one list of them that everything else reads.
//!
//! Kamb & Ganguli's four optimal denoisers, from least to most constrained by locality and
//! equivariance ([`ideal`], [`equivariant`], [`local`], [`els`]), three later training-free
//! ones that explain convolutional diffusion models in other ways ([`gaussian`], [`pspc`],
//! [`pca_locality`]), and the trained network they explain ([`cnn`]).
//!
//! Adding a machine: a file here with a unit struct that implements
//! [`crate::engine::machine::Machine`], its `mod` line below and its line in [`REGISTRY`].
//! The CLI's `--machine`, recipes, the studio's pickers, the zoo and `bench` read the
//! registry.

pub mod cnn;
pub mod els;
pub mod equivariant;
pub mod gaussian;
pub mod ideal;
pub mod local;
pub mod pca_locality;
pub mod pspc;

use serde::{Deserialize, Deserializer};

use super::machine::{Machine, MachineKind};

/// Every machine, in the order the studio lists them.
pub static REGISTRY: &[&dyn Machine] = &[
    &ideal::Ideal,
    &equivariant::Equivariant,
    &local::Local,
    &els::Els,
    &gaussian::Gaussian,
    &pspc::Pspc,
    &pca_locality::PcaLocality,
    &cnn::Cnn,
];

/// Handles for the machines code names directly (defaults, the paper's experiment, tests).
#[allow(non_upper_case_globals)]
impl MachineKind {
    pub const Ideal: MachineKind = MachineKind(&ideal::Ideal);
    pub const Equivariant: MachineKind = MachineKind(&equivariant::Equivariant);
    pub const Local: MachineKind = MachineKind(&local::Local);
    pub const Els: MachineKind = MachineKind(&els::Els);
    pub const Gaussian: MachineKind = MachineKind(&gaussian::Gaussian);
    pub const Pspc: MachineKind = MachineKind(&pspc::Pspc);
    pub const PcaLocality: MachineKind = MachineKind(&pca_locality::PcaLocality);
    pub const Cnn: MachineKind = MachineKind(&cnn::Cnn);
}

impl MachineKind {
    /// Every registered machine.
    pub fn all() -> Vec<MachineKind> {
        REGISTRY.iter().map(|&m| MachineKind(m)).collect()
    }

    /// The machines that need nothing but the training set (no trained weights): what the
    /// zoo and the seed grid's "every machine" rows show.
    pub fn closed_form() -> Vec<MachineKind> {
        Self::all().into_iter().filter(|m| !m.needs().weights).collect()
    }

    /// The machine called `name` (or one of its aliases), any case.
    pub fn parse(name: &str) -> Result<Self, String> {
        let lower = name.to_ascii_lowercase();
        REGISTRY
            .iter()
            .find(|m| m.name() == lower || m.aliases().contains(&lower.as_str()))
            .map(|&m| MachineKind(m))
            .ok_or_else(|| {
                let names: Vec<&str> = REGISTRY.iter().map(|m| m.name()).collect();
                let (last, rest) = names.split_last().expect("the registry is not empty");
                format!("unknown machine '{name}' (expected {} or {last})", rest.join(", "))
            })
    }
}

impl<'de> Deserialize<'de> for MachineKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        // Recipes store the exact name; anything else is refused like an unknown variant was.
        REGISTRY.iter().find(|m| m.name() == name).map(|&m| MachineKind(m)).ok_or_else(|| {
            // serde's own wording for an unknown enum variant, which recipes used to get.
            let names: Vec<String> = REGISTRY.iter().map(|m| format!("`{}`", m.name())).collect();
            serde::de::Error::custom(format!("unknown variant `{name}`, expected one of {}", names.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are what recipes store: unique, and each parses (and deserialises) back to its
    /// machine, as do the aliases; the eight names are the ones recipes were written with.
    #[test]
    fn every_registered_machine_round_trips_by_name() {
        let names: Vec<&str> = REGISTRY.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["ideal", "equivariant", "local", "els", "gaussian", "pspc", "pca-locality", "cnn"]);
        for (i, m) in MachineKind::all().into_iter().enumerate() {
            assert_eq!(MachineKind::parse(m.name()), Ok(m));
            assert_eq!(MachineKind::parse(&m.name().to_uppercase()), Ok(m), "any case");
            for alias in m.aliases() {
                assert_eq!(MachineKind::parse(alias), Ok(m), "alias {alias}");
            }
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", names[i]));
            assert_eq!(serde_json::from_str::<MachineKind>(&json).unwrap(), m);
        }
        let err = MachineKind::parse("wavelet").unwrap_err();
        assert_eq!(
            err,
            "unknown machine 'wavelet' (expected ideal, equivariant, local, els, gaussian, pspc, pca-locality or cnn)"
        );
        let err = serde_json::from_str::<MachineKind>("\"ELS\"").unwrap_err().to_string();
        assert!(err.starts_with("unknown variant `ELS`, expected one of `ideal`"), "{err}");
    }

    /// The zoo and the seed grid show the machines that need no weights: all but the CNN.
    #[test]
    fn closed_form_machines_are_all_but_the_cnn() {
        let closed = MachineKind::closed_form();
        assert_eq!(closed.len(), REGISTRY.len() - 1);
        assert!(!closed.contains(&MachineKind::Cnn));
        assert!(closed.iter().all(|m| !m.needs().weights));
    }
}
