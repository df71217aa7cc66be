//! How often the studio redraws while a worker streams events.
//!
//! On a GPU a frame of this window is nearly free, and every event is drawn at once. On a
//! software renderer (Mesa's lavapipe or llvmpipe: a desktop or VM without a GPU) each frame
//! is rasterised on the same cores the worker computes on. Measured on the 2-core development
//! machine under Xvfb, a 20-step MNIST run's frames cost about 0.14 CPU-seconds each, and
//! drawing at the rate events arrive took 18 CPU-seconds from a 17–19 s run.
//! There, a worker's events wake the window at most every [`SOFTWARE_GAP`]: each step still
//! appears, at most that late, and input (drags, clicks, keys) is drawn at once as always.

use std::time::Duration;

use eframe::egui::{Context, Id};
use eframe::wgpu::DeviceType;

/// The least time between frames woken by worker events on a software renderer.
pub const SOFTWARE_GAP: Duration = Duration::from_millis(300);

/// The studio's frame pacing, decided once from the renderer's adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// None: draw every event at once.
    pub gap: Option<Duration>,
}

impl Pacing {
    /// A CPU adapter is software rendering; every other kind (and no wgpu at all) is not.
    pub fn for_device(kind: Option<DeviceType>) -> Self {
        Self { gap: (kind == Some(DeviceType::Cpu)).then_some(SOFTWARE_GAP) }
    }

    /// Remembers the pacing in `ctx`, where every later worker's waker finds it.
    pub fn store(self, ctx: &Context) {
        ctx.data_mut(|d| d.insert_temp(Id::unique(KEY), self));
    }

    /// The pacing stored in `ctx` (none stored: draw at once).
    pub fn of(ctx: &Context) -> Self {
        ctx.data(|d| d.get_temp::<Self>(Id::unique(KEY))).unwrap_or(Self { gap: None })
    }

    /// What a worker calls after each event it sends.
    pub fn waker(self, ctx: &Context) -> impl Fn() + Send + 'static {
        let ctx = ctx.clone();
        move || match self.gap {
            None => ctx.request_repaint(),
            Some(gap) => ctx.request_repaint_after(gap),
        }
    }

    /// How soon to look again while work is in flight and no event comes (keeps the frame
    /// clock and the ETA moving): `busy`, or the software gap where that is longer.
    pub fn busy(self, busy: Duration) -> Duration {
        self.gap.map_or(busy, |g| g.max(busy))
    }
}

const KEY: &str = "morphogen-frame-pacing";

/// The waker for a worker spawned from `ctx` (the pacing stored there).
pub fn waker(ctx: &Context) -> impl Fn() + Send + 'static {
    Pacing::of(ctx).waker(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a CPU adapter is paced; a GPU of any kind, or no wgpu renderer, draws at once.
    #[test]
    fn only_software_renderers_are_paced() {
        assert_eq!(Pacing::for_device(Some(DeviceType::Cpu)).gap, Some(SOFTWARE_GAP));
        for kind in [DeviceType::DiscreteGpu, DeviceType::IntegratedGpu, DeviceType::VirtualGpu, DeviceType::Other] {
            assert_eq!(Pacing::for_device(Some(kind)).gap, None, "{kind:?}");
        }
        assert_eq!(Pacing::for_device(None).gap, None);
    }

    /// A waker asks for the next frame at once, or after the gap; the stored pacing is the one
    /// later wakers use, and the busy look-again never comes sooner than the gap.
    #[test]
    fn wakers_follow_the_stored_pacing() {
        let ctx = Context::default();
        assert_eq!(Pacing::of(&ctx), Pacing { gap: None }, "nothing stored: draw at once");
        let paced = Pacing::for_device(Some(DeviceType::Cpu));
        paced.store(&ctx);
        assert_eq!(Pacing::of(&ctx), paced);
        assert_eq!(paced.busy(Duration::from_millis(250)), SOFTWARE_GAP);
        assert_eq!(Pacing { gap: None }.busy(Duration::from_millis(250)), Duration::from_millis(250));

        // What the window is asked for: egui hands each request's delay to its callback.
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        ctx.set_request_repaint_callback(move |info| seen.lock().unwrap().push(info.delay));
        waker(&ctx)();
        Pacing { gap: None }.waker(&ctx)();
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked, vec![SOFTWARE_GAP, Duration::ZERO], "paced after the gap, unpaced at once");
    }
}
