//! The comparison side of a [`Scenario`]: the baseline host (a second target running
//! production's version, with its own intercept) and the run's report file.
//!
//! ```text
//!   {prefix}-bas  198.18.0.31   baseline (198.19.0.0/16 via 198.18.0.41 in assistant mode)
//!   {prefix}-as2  198.18.0.41   its assistant: ip_forward=0, intercept catches the answers there
//! ```
//!
//! In queue mode the baseline's intercept runs on the baseline host itself. tcpcopy reaches both
//! intercepts (`-s` lists both) and tells the baseline's answers from the target's by the fake
//! client endpoints it gave each.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;

use anyhow::Context;

use super::{
    spawn_intercept, start_server, stop_child, Mode, Scenario, ScenarioSpec, Server, Servers,
    SCRATCH,
};
use crate::{Child, Lab, ScratchDir};

/// The baseline host's address.
pub const BASELINE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 31);
/// The baseline's assistant host (assistant mode).
pub const ASSISTANT2_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 41);

/// The baseline host, its server and its intercept.
pub(super) struct Baseline {
    // Field order is drop order: the intercept before the server.
    pub(super) intercept: Option<Child>,
    pub(super) server: Server,
    intercept_ip: Ipv4Addr,
}

impl Baseline {
    /// Adds the baseline host (and its assistant) to `lab`, starts its server and intercept.
    pub(super) fn start(
        lab: &mut Lab,
        scratch: &ScratchDir,
        spec: &ScenarioSpec,
        servers: Servers,
    ) -> anyhow::Result<Baseline> {
        let host = lab.add_host("bas", BASELINE_IP)?;
        let (intercept_ns, intercept_ip) = match spec.mode {
            Mode::Assistant => {
                let ns = lab.add_host("as2", ASSISTANT2_IP)?;
                let via = ASSISTANT2_IP.to_string();
                lab.sh(&host, &["ip", "route", "add", Lab::FAKE_ROUTE, "via", &via])
                    .context("baseline: route to its assistant")?;
                lab.set_sysctl(&ns, "net.ipv4.ip_forward", "0")?;
                (ns, ASSISTANT2_IP)
            }
            Mode::Queue | Mode::Stream => (host.clone(), BASELINE_IP),
        };
        let plan = &spec.plans.baseline;
        let server = start_server(lab, scratch, servers, &host, BASELINE_IP, "baseline", plan)?;
        let intercept = spawn_intercept(
            lab,
            scratch,
            &spec.bin_dir,
            &intercept_ns,
            spec.mode,
            servers.port(),
            &spec.extra_intercept_args,
        )
        .context("baseline intercept")?;
        Ok(Baseline {
            intercept: Some(intercept),
            server,
            intercept_ip,
        })
    }

    pub(super) fn intercept_ip(&self) -> Ipv4Addr {
        self.intercept_ip
    }
}

impl Scenario {
    /// `args` with [`SCRATCH`] replaced by the scratch directory.
    pub(super) fn with_scratch(&self, args: &[String]) -> Vec<String> {
        let dir = self.scratch.path().display().to_string();
        args.iter().map(|a| a.replace(SCRATCH, &dir)).collect()
    }

    /// `name` in the scratch directory (where `{scratch}/name` in tcpcopy's arguments points).
    pub fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// The JSON report tcpcopy wrote to `{scratch}/name`.
    pub fn read_report(&self, name: &str) -> anyhow::Result<compare::Report> {
        read_report(&self.scratch_file(name))
    }

    /// Stops tcpcopy with SIGTERM; returns its exit status, whatever it is, and its log.
    pub fn stop_tcpcopy_status(&mut self) -> anyhow::Result<(ExitStatus, String)> {
        let mut c = self.tcpcopy.take().context("tcpcopy not running")?;
        let status = c.stop()?;
        Ok((status, c.log_text()))
    }

    /// The URIs the baseline's embedded server or nginx received.
    pub fn baseline_uris(&self) -> anyhow::Result<Vec<String>> {
        self.baseline
            .as_ref()
            .context("no baseline host")?
            .server
            .uris()
    }

    /// The baseline intercept's log.
    pub fn baseline_intercept_log(&self) -> String {
        self.baseline
            .as_ref()
            .and_then(|b| b.intercept.as_ref())
            .map(|c| c.log_text())
            .unwrap_or_default()
    }

    pub fn stop_baseline_intercept(&mut self) -> anyhow::Result<String> {
        let b = self.baseline.as_mut().context("no baseline host")?;
        stop_child(&mut b.intercept, "baseline intercept")
    }
}

/// A JSON report as tcpcopy writes it (`--report`, `tcpcopy report merge -o`).
pub fn read_report(path: &std::path::Path) -> anyhow::Result<compare::Report> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the report {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing the report {}", path.display()))
}
