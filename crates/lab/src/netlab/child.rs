//! A process the lab started ([`Lab::spawn`](super::Lab::spawn)), stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{self, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use super::{run_in_ns, send_signal, KILL_GRACE};

/// A process started by [`Lab::spawn`]. Dropping it sends SIGTERM and, after 3 s, SIGKILL.
#[derive(Debug)]
pub struct Child {
    pub(super) inner: process::Child,
    pub(super) name: String,
    pub(super) log: PathBuf,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// The program, as started.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.inner.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` until `probe`, run inside `ns`, succeeds while this server process
    /// still runs. An answer after which the process exited came from another server holding the
    /// address (ours failed to bind), so it does not count. The error names why, with the log.
    pub fn wait_serving(
        &mut self,
        ns: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> bool + Send,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        let ready = run_in_ns(ns, || loop {
            if !self.is_running() {
                return false;
            }
            if probe() {
                return self.is_running();
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        if ready {
            return Ok(());
        }
        let why = if self.is_running() {
            format!("no answer within {timeout:?}")
        } else {
            "it exited".to_string()
        };
        bail!(
            "{} in {ns}: {why}; output: {:?}",
            self.name,
            self.log_text().trim()
        )
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far (lossy UTF-8), for error messages.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends `signal` (`"TERM"`, `"INT"`, `"HUP"`, ...) if the process still runs. The pid cannot
    /// have been reused: it stays ours until we reap it.
    pub fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        if !self.is_running() {
            bail!("{} (pid {}) is not running", self.name, self.pid());
        }
        send_signal(&[self.pid()], signal)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.inner.try_wait().context("waiting for child")? {
                return Ok(Some(status));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits up to 10 s for the exit status.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.stop_within(Duration::from_secs(10))
    }

    /// SIGTERM, then waits up to `grace`; a process that ignores it is killed and reported as an error.
    pub fn stop_within(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.inner.try_wait().context("waiting for child")? {
            return Ok(status);
        }
        // The process may exit on its own between try_wait and kill; then waiting below still works.
        let _ = send_signal(&[self.pid()], "TERM");
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        let _ = self.inner.kill();
        let _ = self.inner.wait();
        Err(anyhow!(
            "{} (pid {}) ignored SIGTERM for {grace:?} and was killed",
            self.name,
            self.pid()
        ))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = send_signal(&[self.pid()], "TERM");
            if !matches!(self.wait_timeout(KILL_GRACE), Ok(Some(_))) {
                let _ = self.inner.kill();
            }
        }
        let _ = self.inner.wait();
    }
}
