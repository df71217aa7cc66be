//! The studio's side of the export panel: builds the panel's [`ExportContext`] from the app
//! and carries out what the panel asks for.

use std::path::PathBuf;

use egui::Ui;

use super::app::{StudioApp, shown};
use super::export_panel::{ExportAction, ExportContext, ExportKind, ExportPanel, Snapshot};

impl StudioApp {
    /// The export panel's context: the run in view and the studio's dialogs.
    fn export_context(&mut self) -> (&mut ExportPanel, ExportContext<'_>) {
        let cx = ExportContext {
            run: shown(&self.history, self.viewing),
            cursor: self.time.cursor,
            fps: self.settings.fps,
            dialogs: &mut self.dialogs,
            wake: self.export_wake.clone(),
            curves: self.curves.clone(),
        };
        (&mut self.export, cx)
    }

    fn export_actions(&mut self, actions: impl IntoIterator<Item = ExportAction>) {
        for action in actions {
            match action {
                ExportAction::OpenRecipe(recipe, warnings) => self.open_recipe(*recipe, warnings),
                ExportAction::Error(e) => self.errors.push(e),
            }
        }
    }

    pub(crate) fn export_ui(&mut self, ui: &mut Ui) {
        let (panel, cx) = self.export_context();
        let actions = panel.ui(ui, cx);
        self.export_actions(actions);
    }

    /// Clicks an export button (tests use it).
    pub fn ask_path(&mut self, kind: ExportKind) {
        let (panel, mut cx) = self.export_context();
        let action = panel.ask_path(kind, &mut cx);
        self.export_actions(action);
    }

    /// Starts an export of `snapshot` (tests use it).
    pub fn start_export(&mut self, kind: ExportKind, snapshot: Snapshot, path: PathBuf, overwrite: bool) {
        let wake = self.export_wake.clone();
        self.export.start_export(kind, snapshot, path, overwrite, wake);
    }

    /// Waits for a running export (tests use it).
    pub fn wait_for_export(&mut self) -> Option<String> {
        self.export.wait_for_export()
    }
}
