//! Native file dialogs, modal to the studio window, answered off the UI thread.
//!
//! UI code asks for a path and gets a channel; at the end of the frame the app opens the
//! dialog with the main window as its parent (only `eframe::Frame` can name that window),
//! and a thread waits for the answer, so the UI keeps drawing while the dialog is open.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

/// What to ask the user for.
#[derive(Clone, Debug, PartialEq)]
pub enum Ask {
    /// An existing file, optionally of one extension.
    OpenFile { title: String, extension: Option<&'static str> },
    /// An existing folder.
    OpenFolder { title: String },
    /// A file to write, with a suggested name.
    SaveFile { title: String, name: String, extension: Option<&'static str> },
}

type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Option<rfd::FileHandle>> + Send>>;

/// A dialog answered "no path" faster than this never showed: nobody cancels a file dialog in
/// a third of a second, but one that cannot open (no desktop portal) answers at once.
const TOO_FAST_TO_BE_A_PERSON: Duration = Duration::from_millis(350);

/// Dialogs asked for this frame, opened by [`Dialogs::open_pending`].
#[derive(Default)]
pub struct Dialogs {
    pending: Vec<(Ask, Sender<Option<PathBuf>>)>,
    /// Set when a dialog could not open; the studio then offers path fields instead.
    failed: Arc<AtomicBool>,
}

impl Dialogs {
    /// Queues a dialog; the answer (None when cancelled) arrives on the returned channel.
    pub fn ask(&mut self, ask: Ask) -> Receiver<Option<PathBuf>> {
        let (tx, rx) = bounded(1);
        self.pending.push((ask, tx));
        rx
    }

    /// Whether a dialog failed to open since the last call (and forgets it).
    pub fn take_failure(&self) -> bool {
        self.failed.swap(false, Ordering::Relaxed)
    }

    /// Marks a dialog as failed (what a dialog that cannot open does; tests call it).
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Opens the queued dialogs as children of `parent` (the main window).
    pub fn open_pending<W>(&mut self, parent: &W)
    where
        W: raw_window_handle::HasWindowHandle + raw_window_handle::HasDisplayHandle,
    {
        for (ask, reply) in self.pending.drain(..) {
            let dialog = rfd::AsyncFileDialog::new().set_parent(parent);
            let with_filter = |d: rfd::AsyncFileDialog, ext: Option<&'static str>| match ext {
                Some(ext) => d.add_filter(ext, &[ext]),
                None => d,
            };
            let answer: Answer = match ask {
                Ask::OpenFile { title, extension } => {
                    Box::pin(with_filter(dialog.set_title(title), extension).pick_file())
                }
                Ask::OpenFolder { title } => Box::pin(dialog.set_title(title).pick_folder()),
                Ask::SaveFile { title, name, extension } => {
                    Box::pin(with_filter(dialog.set_title(title).set_file_name(name), extension).save_file())
                }
            };
            let failed = self.failed.clone();
            std::thread::spawn(move || {
                let opened = Instant::now();
                let path = pollster::block_on(answer).map(|handle| handle.path().to_path_buf());
                if path.is_none() && opened.elapsed() < TOO_FAST_TO_BE_A_PERSON {
                    failed.store(true, Ordering::Relaxed);
                }
                let _ = reply.send(path);
            });
        }
    }
}
