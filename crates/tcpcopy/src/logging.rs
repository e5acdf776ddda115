//! Log setup shared by both binaries: stderr by default, `-l FILE` appends to a file, `-d` debug.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

pub fn init(debug: bool, file: Option<&Path>) -> anyhow::Result<()> {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("TCPCOPY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(path) => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        // Around tcpcopy's status line, when one is shown.
        None => builder.with_writer(crate::status::log_writer).init(),
    }
    Ok(())
}

/// Writes our pid to `-P FILE`.
pub fn write_pid(path: Option<&Path>) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", p.display()))?;
    }
    Ok(())
}
