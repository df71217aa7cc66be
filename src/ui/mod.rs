//! The studio: an egui app that streams every denoising step from the worker, with a
//! timeline to scrub, live controls, plots, a pixel inspector and exports.
//!
//! The UI never computes: it turns worker events into textures once and sends commands.

pub mod app;
mod app_export;
pub mod brush;
pub mod brush_settings;
pub mod calibration;
pub mod canvas;
pub mod compare;
mod controls;
pub mod dialogs;
pub mod export_panel;
pub mod grow_panel;
pub mod history;
pub mod inspector;
pub mod live;
pub mod maps_view;
pub mod pacing;
pub mod plots;
pub mod seed_grid;
pub mod sensitivity_pair;
pub mod settings;
pub mod stats_log;
pub mod texture;
pub mod timeline;

pub use app::StudioApp;
pub use settings::Settings;

use crate::worker::WorkerHandle;

/// How the studio starts (the command line's `studio` flags).
#[derive(Clone, Debug, Default)]
pub struct StudioOptions {
    /// Start on this dataset (a bundled name, folder or .npy) instead of the saved one.
    pub dataset: Option<String>,
    /// Ignore saved settings and start from the defaults.
    pub fresh: bool,
    /// The CNN's weights file.
    pub cnn: Option<std::path::PathBuf>,
    /// Write per-second frame times and memory to this CSV ([`stats_log`]).
    pub stats: Option<std::path::PathBuf>,
}

/// Opens the studio window; returns when it is closed.
pub fn run(args: StudioOptions) -> Result<(), String> {
    // Refused before the window opens: the log is what a soak reads afterwards.
    let stats = args.stats.as_deref().map(stats_log::StatsLog::create).transpose()?;
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Morphogen")
            .with_inner_size([1440.0, 900.0])
            .with_min_inner_size([900.0, 600.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "Morphogen",
        options,
        Box::new(|cc| {
            let saved = if args.fresh {
                None
            } else {
                cc.storage.and_then(|s| eframe::get_value::<Settings>(s, eframe::APP_KEY))
            };
            let mut settings = saved.unwrap_or_default();
            if let Some(d) = &args.dataset {
                settings.dataset = crate::data::DatasetSource::parse(d);
                settings.class = None;
                if let Some(b) = crate::data::bundled_source(d) {
                    settings.preset = b.preset.into();
                }
            }
            if args.cnn.is_some() {
                settings.cnn_weights = args.cnn.clone();
            }
            let renderer = cc.wgpu_render_state.as_ref().map(|r| r.adapter.get_info().device_type);
            let pacing = pacing::Pacing::for_device(renderer);
            pacing.store(&cc.egui_ctx);
            let worker = WorkerHandle::spawn(pacing.waker(&cc.egui_ctx));
            let mut app = StudioApp::new(settings, worker);
            app.stats_log = stats;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| format!("cannot open the window: {e}"))
}
