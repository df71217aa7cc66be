//! What the adapter allows, read from the device itself: the launcher sizes its splits and
//! its launches from these, never from the software rasteriser the tests run on.

use burn::backend::DispatchDevice;
use burn::tensor::Device;

/// The adapter's limits that bound one call of the fused op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterLimits {
    /// The largest buffer one binding may address, in bytes (wgpu's
    /// `max_storage_buffer_binding_size`, capped by `max_buffer_size`).
    pub max_binding_bytes: u64,
    /// The device's memory, where the runtime states it.
    pub memory_bytes: Option<u64>,
    /// No physical card behind the device (Mesa's lavapipe): its loop limit applies (see
    /// [`super::super::op::MAX_UNIT_TERMS`]).
    pub software: bool,
}

impl AdapterLimits {
    /// The limits of a cubecl device (wgpu, any adapter); `None` on the CPU backend.
    pub fn of(device: &Device) -> Option<Self> {
        match device.as_dispatch() {
            DispatchDevice::Cube(cube) => {
                let client = cube.client();
                let props = client.properties();
                Some(Self {
                    max_binding_bytes: props.memory.max_page_size,
                    memory_bytes: props.memory.max_memory(),
                    software: props.identity.physical.is_none(),
                })
            }
            _ => None,
        }
    }

    /// WebGPU's guaranteed minimum (128 MiB bindings) on a hardware adapter: what the op's
    /// planner assumes where no device is at hand (the CPU body, the tests of the planner).
    pub const WEBGPU_DEFAULT: Self = Self { max_binding_bytes: 128 << 20, memory_bytes: None, software: false };
}
