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
/// the counters (`kind` is `stats`, or `final` at the end). With a `protocol` (`--protocol`),
/// how sessions' logins went too: a line of their own (`mysql logins ok ...`, `final mysql
/// logins ok ...`), or in JSON the fields `protocol` and `logins_*` (absent without one).
pub fn log_stats(kind: &str, s: &session::Stats, protocol: Option<&str>) {
    if !JSON.get().copied().unwrap_or(false) {
        let prefix = if kind == "final" { "final: " } else { "" };
        tracing::info!("{prefix}{s}");
        if let Some(p) = protocol {
            let prefix = if kind == "final" { "final " } else { "" };
            tracing::info!("{prefix}{p} {}", s.logins);
        }
        return;
    }
    stats_event(kind, s, protocol);
}

/// The statistics as one event whose fields are the counters (`--log-format json`).
fn stats_event(kind: &str, s: &session::Stats, protocol: Option<&str>) {
    let logins = protocol.map(|_| &s.logins);
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
        protocol,
        logins_ok = logins.map(|l| l.logged_in + l.joined_logged_in),
        logins_joined = logins.map(|l| l.joined_logged_in),
        logins_not_logged_in = logins.map(|l| l.failed()),
        logins_refused = logins.map(|l| l.refused),
        logins_tls = logins.map(|l| l.tls),
        logins_no_login_known = logins.map(|l| l.no_credentials),
        logins_unsupported = logins.map(|l| l.unsupported),
        logins_malformed = logins.map(|l| l.malformed),
        "statistics"
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// The JSON lines of the events `f` logs.
    fn json_lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_json_statistics_carry_the_logins_only_with_a_protocol() {
        let stats = session::Stats {
            sessions_created: 12,
            logins: session::Logins {
                logged_in: 8,
                joined_logged_in: 1,
                refused: 2,
                tls: 1,
                ..session::Logins::default()
            },
            ..session::Stats::default()
        };
        let lines = json_lines(|| {
            super::stats_event("final", &stats, Some("mysql"));
            super::stats_event("stats", &stats, None);
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (with, without) = (&lines[0], &lines[1]);
        assert_eq!(with["message"], "statistics");
        assert_eq!(with["kind"], "final");
        assert_eq!(with["sessions_created"], 12);
        assert_eq!(with["protocol"], "mysql");
        assert_eq!(with["logins_ok"], 9);
        assert_eq!(with["logins_joined"], 1);
        assert_eq!(with["logins_not_logged_in"], 3);
        assert_eq!(with["logins_refused"], 2);
        assert_eq!(with["logins_tls"], 1);
        assert_eq!(with["logins_malformed"], 0);
        assert_eq!(without["sessions_created"], 12);
        assert!(without.get("protocol").is_none(), "{without}");
        assert!(without.get("logins_ok").is_none(), "{without}");
    }
}
