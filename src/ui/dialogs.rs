//! Native file dialogs, modal to the studio window, answered off the UI thread.
//!
//! UI code asks for a path and gets a channel; at the end of the frame the app opens the
//! dialog with the main window as its parent (only `eframe::Frame` can name that window),
//! and a thread waits for the answer, so the UI keeps drawing while the dialog is open.

use std::path::PathBuf;

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

/// Dialogs asked for this frame, opened by [`Dialogs::open_pending`].
#[derive(Default)]
pub struct Dialogs {
    pending: Vec<(Ask, Sender<Option<PathBuf>>)>,
}

impl Dialogs {
    /// Queues a dialog; the answer (None when cancelled) arrives on the returned channel.
    pub fn ask(&mut self, ask: Ask) -> Receiver<Option<PathBuf>> {
        let (tx, rx) = bounded(1);
        self.pending.push((ask, tx));
        rx
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
            std::thread::spawn(move || {
                let path = pollster::block_on(answer).map(|handle| handle.path().to_path_buf());
                let _ = reply.send(path);
            });
        }
    }
}
