//! Log setup shared by both binaries: stderr by default, `-l FILE` appends to a file, `-d` debug,
//! `RUST_LOG` (tracing's filter syntax) over both; colours only on a terminal. The pid file.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing_subscriber::EnvFilter;

pub fn init(debug: bool, file: Option<&Path>) -> anyhow::Result<()> {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
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
        // Around tcpcopy's status line, when one is shown; no colour codes into pipes.
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(crate::status::log_writer)
            .init(),
    }
    Ok(())
}

/// Writes our pid to `-P FILE`; the file goes again when the returned guard is dropped (keep it
/// for the whole run, and drop it before `std::process::exit`).
pub fn write_pid(path: Option<&Path>) -> anyhow::Result<Option<PidFile>> {
    let Some(p) = path else {
        return Ok(None);
    };
    std::fs::write(p, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write pid file {}", p.display()))?;
    Ok(Some(PidFile(p.to_path_buf())))
}

/// A pid file written by [`write_pid`], removed when dropped.
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Prints `text` and a newline on stdout; a reader that went away (`tcpcopy ... | head`) is no
/// error worth more than the output it missed.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
}
