//! Log setup shared by both binaries: stderr by default, `-l FILE` appends to a file, `-d` debug,
//! `RUST_LOG` (tracing's filter syntax) over both; colours only on a terminal. The pid file.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(debug: bool, file: Option<&Path>, format: LogFormat) -> anyhow::Result<()> {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if format == LogFormat::Json {
        let _ = JSON.set(true);
        let builder = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_target(false);
        match file {
            Some(path) => builder.with_writer(LogFile::open(path)?).init(),
            None => builder.with_writer(crate::status::log_writer).init(),
        }
        return Ok(());
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(path) => {
            builder
                .with_ansi(false)
                .with_writer(LogFile::open(path)?)
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

/// Whether log lines are JSON (`--log-format json`).
static JSON: OnceLock<bool> = OnceLock::new();

fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))
}

/// `-l FILE`, opened again after a SIGHUP (logrotate moves the file away, then signals): the
/// next line goes to a new file at the path. A file that cannot be opened again keeps the old.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    reopen: Arc<AtomicBool>,
}

impl LogFile {
    fn open(path: &Path) -> anyhow::Result<LogFile> {
        let reopen = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen.clone())
            .context("cannot install the SIGHUP handler")?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_log(path)?),
            reopen,
        })
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogFileLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if self.reopen.swap(false, Ordering::Relaxed) {
            if let Ok(new) = open_log(&self.path) {
                *file = new;
            }
        }
        LogFileLine(file)
    }
}

/// One log line's hold on the log file.
pub struct LogFileLine<'a>(MutexGuard<'a, std::fs::File>);

impl std::io::Write for LogFileLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Logs the statistics: the usual line, or with `--log-format json` an event whose fields are
/// the counters (`kind` is `stats`, or `final` at the end).
pub fn log_stats(kind: &str, s: &session::Stats) {
    if !JSON.get().copied().unwrap_or(false) {
        if kind == "final" {
            tracing::info!("final: {s}");
        } else {
            tracing::info!("{s}");
        }
        return;
    }
    let l = &s.lost;
    tracing::info!(
        kind,
        sessions_created = s.sessions_created,
        sessions_active = s.sessions_active,
        sessions_joined = s.sessions_joined,
        sessions_completed = s.sessions_completed,
        sessions_timed_out = s.sessions_timed_out,
        sessions_reset_by_client = s.sessions_reset_by_client,
        sessions_reset_by_target = s.sessions_reset_by_target,
        sessions_failed = s.sessions_failed,
        sessions_overflowed = s.sessions_overflowed,
        sessions_half_open = s.sessions_half_open,
        sessions_half_open_shed = s.sessions_half_open_shed,
        sessions_half_open_expired = s.sessions_half_open_expired,
        requests_online = s.requests_online,
        requests_target = s.requests_target,
        requests_sampled_out = s.requests_sampled_out,
        lost_never_captured = l.never_captured,
        lost_overflow = l.overflow,
        lost_failed_at_target = l.failed_at_target,
        lost_reset_by_target = l.reset_by_target,
        lost_reset_by_client = l.reset_by_client,
        lost_not_answered = l.not_answered,
        client_bytes = s.client_bytes,
        target_bytes = s.target_bytes,
        packets_sent = s.packets_sent,
        retransmits = s.retransmits,
        fast_retransmits = s.fast_retransmits,
        responses = s.responses,
        captured_packets = s.captured_packets,
        capture_drops = s.capture_drops,
        holes_skipped = s.holes_skipped,
        sessions_hurt = s.sessions_hurt,
        "statistics"
    );
}

/// Logs how sessions' logins went (`--protocol`), after [`log_stats`]: the usual line
/// (`mysql logins ok ...`, `final mysql logins ok ...` at the end), or with `--log-format json`
/// an event whose fields are the counts (`kind` as in [`log_stats`]; the statistics event holds
/// as many fields as tracing allows, so these go in one of their own).
pub fn log_logins(kind: &str, protocol: &str, l: &session::Logins) {
    if !JSON.get().copied().unwrap_or(false) {
        if kind == "final" {
            tracing::info!("final {protocol} {l}");
        } else {
            tracing::info!("{protocol} {l}");
        }
        return;
    }
    tracing::info!(
        kind,
        protocol,
        logins_ok = l.logged_in + l.joined_logged_in,
        logins_joined = l.joined_logged_in,
        logins_not_logged_in = l.failed(),
        logins_refused = l.refused,
        logins_tls = l.tls,
        logins_no_login_known = l.no_credentials,
        logins_unsupported = l.unsupported,
        logins_malformed = l.malformed,
        "logins"
    );
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
