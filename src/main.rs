//! The `morphogen` binary: with no command (or `studio`) it opens the studio, otherwise it runs
//! one command of the CLI ([`morphogen::cli`]). Errors end the process with one line and exit 1.

use clap::Parser;
use morphogen::cli::{Cli, Command, run};
use morphogen::ui::{self, StudioOptions};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        None => ui::run(StudioOptions::default()),
        Some(Command::Studio(args)) => {
            ui::run(StudioOptions { dataset: args.dataset, fresh: args.fresh, cnn: args.cnn, stats: args.stats })
        }
        Some(command) => {
            quiet_display_probe();
            run(command)
        }
    };
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// A headless command probes for a GPU, and the probe asks the windowing libraries for a
/// display: with XDG_RUNTIME_DIR unset, libwayland says "error: XDG_RUNTIME_DIR is invalid or
/// not set in the environment." once per probe (eight lines on a successful `sample`), which is
/// noise, not an error. The command needs no display, so it gets a private runtime folder of
/// its own, where the probe finds no Wayland socket and says nothing.
fn quiet_display_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join("morphogen-headless-runtime");
    if std::fs::create_dir_all(&dir).is_ok() {
        // SAFETY: called first thing in main, before any thread of this process exists, so no
        // other thread can be reading the environment.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}
