//! The `morphogen` binary: with no command (or `studio`) it opens the studio, otherwise it runs
//! one command of the CLI ([`morphogen::cli`]). Errors end the process with one line and exit 1.

use clap::Parser;
use morphogen::cli::{Cli, Command, run};
use morphogen::ui::{self, StudioOptions};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        None => ui::run(StudioOptions::default()),
        Some(Command::Studio(args)) => ui::run(StudioOptions { dataset: args.dataset, fresh: args.fresh }),
        Some(command) => run(command),
    };
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}
