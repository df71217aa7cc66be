//! Choosing where the machines run: burn's CPU backend (flex) or a GPU through wgpu.

use burn::tensor::{Device, DeviceKind};
use serde::{Deserialize, Serialize};

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Gpu,
    /// A GPU when a hardware adapter exists, else the CPU.
    #[default]
    Auto,
}

impl DeviceChoice {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "gpu" | "wgpu" => Ok(Self::Gpu),
            "auto" => Ok(Self::Auto),
            other => Err(format!("unknown device '{other}' (expected cpu, gpu or auto)")),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::Auto => "auto",
        }
    }
}

/// The device a run actually got, and a one-line account of how.
#[derive(Clone, Debug)]
pub struct ResolvedDevice {
    pub device: Device,
    /// `cpu` or `gpu`: what a recipe records.
    pub kind: DeviceChoice,
    pub description: String,
    /// Set when `auto` (or `gpu`) had to fall back to the CPU.
    pub notice: Option<String>,
}

fn cpu(notice: Option<String>) -> ResolvedDevice {
    ResolvedDevice {
        device: Device::flex(),
        kind: DeviceChoice::Cpu,
        description: format!(
            "CPU (burn flex, {} threads)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        notice,
    }
}

/// Tries to bring up a wgpu device of `kind`; errors and panics inside wgpu become `Err`.
fn try_wgpu(kind: DeviceKind) -> Result<Device, String> {
    let attempt = std::panic::catch_unwind(|| Device::wgpu_options().device_kind(kind).init());
    match attempt {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the wgpu runtime panicked while starting".into()),
    }
}

/// The first of `kinds` that wgpu can bring up, or the last error.
fn first_gpu(kinds: &[DeviceKind]) -> Result<ResolvedDevice, String> {
    let mut last = String::from("no adapter");
    for kind in kinds {
        match try_wgpu(kind.clone()) {
            Ok(device) => {
                return Ok(ResolvedDevice {
                    device,
                    kind: DeviceChoice::Gpu,
                    description: format!("GPU (burn wgpu, {kind:?})"),
                    notice: None,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Resolves a choice to a device. `Gpu` takes whatever adapter wgpu offers (a software
/// Vulkan such as lavapipe included) and errors when there is none; `Auto` only takes a
/// hardware GPU and otherwise falls back to the CPU with a notice.
pub fn resolve(choice: DeviceChoice) -> Result<ResolvedDevice, String> {
    let hardware = [DeviceKind::DiscreteGpu(0), DeviceKind::IntegratedGpu(0)];
    match choice {
        DeviceChoice::Cpu => Ok(cpu(None)),
        DeviceChoice::Gpu => first_gpu(&[hardware[0].clone(), hardware[1].clone(), DeviceKind::DefaultDevice])
            .map_err(|e| format!("no GPU adapter found: {e}")),
        DeviceChoice::Auto => first_gpu(&hardware).or_else(|last| {
            // wgpu's error lists every adapter it saw; the first clause is the useful part.
            let reason: String =
                last.split([':', '{']).next().unwrap_or("no adapter").trim().chars().take(60).collect();
            Ok(cpu(Some(format!("no hardware GPU found ({reason}); running on the CPU"))))
        }),
    }
}
