//! Cancellation and progress for long denoiser calls.
//!
//! A single ELS call on a large dataset can take seconds on a CPU, so the machines check a
//! [`CancelToken`] between key chunks and report chunk progress; a slider move in the studio
//! is then felt within milliseconds instead of at the end of the step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared flag that asks a running computation to stop at its next chunk boundary.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Returned when a computation stopped because its token was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled")
    }
}
impl std::error::Error for Cancelled {}

/// The message a caught panic carried ("unknown panic" when it carried none).
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// What a machine sees of its caller: a cancel token and a progress sink.
pub struct Control<'a> {
    cancel: Option<&'a CancelToken>,
    progress: Option<&'a mut dyn FnMut(usize, usize)>,
    total: usize,
    done: usize,
}

impl<'a> Control<'a> {
    /// A control that never cancels and reports nowhere (tests, one-off CLI calls).
    pub fn none() -> Self {
        Self { cancel: None, progress: None, total: 0, done: 0 }
    }

    pub fn new(cancel: &'a CancelToken, progress: Option<&'a mut dyn FnMut(usize, usize)>) -> Self {
        Self { cancel: Some(cancel), progress, total: 0, done: 0 }
    }

    /// Announces how many chunks the coming call will process.
    pub(crate) fn begin(&mut self, total_chunks: usize) -> Result<(), Cancelled> {
        self.total = total_chunks;
        self.done = 0;
        self.check()
    }

    /// Marks one chunk done; returns `Err(Cancelled)` when the caller asked to stop.
    pub(crate) fn chunk_done(&mut self) -> Result<(), Cancelled> {
        self.done += 1;
        if let Some(progress) = self.progress.as_mut() {
            progress(self.done, self.total.max(self.done));
        }
        self.check()
    }

    /// The token itself, for work split over threads (a `Control` holds the progress sink
    /// and so cannot be shared).
    pub fn token(&self) -> Option<CancelToken> {
        self.cancel.cloned()
    }

    pub fn check(&self) -> Result<(), Cancelled> {
        match self.cancel {
            Some(token) if token.is_cancelled() => Err(Cancelled),
            _ => Ok(()),
        }
    }
}
