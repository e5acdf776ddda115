//! How a scenario starts and stops its programs: tcpcopy's base options for a mode, intercept
//! started until it listens, waiting on a program's log, stopping one that must exit cleanly.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Mode, ScenarioSpec, BASELINE_IP};
use crate::{Child, Lab, ScratchDir};

/// tcpcopy's options in `spec`'s scenario, before the spec's own: the target, the intercepts
/// (also the baseline's, at `baseline_intercept`, with `--baseline`), the fake clients.
pub(super) fn base_tcpcopy_args(
    spec: &ScenarioSpec,
    baseline_intercept: Option<Ipv4Addr>,
) -> Vec<String> {
    let port = spec.servers.port();
    let intercept_ip = match spec.mode {
        Mode::Assistant => Lab::ASSISTANT_IP,
        Mode::Queue | Mode::Stream => Lab::TARGET_IP,
    };
    let target = if spec.ipv6 {
        SocketAddr::new(Lab::ip6_of(Lab::TARGET_IP).into(), port)
    } else {
        SocketAddr::new(Lab::TARGET_IP.into(), port)
    };
    let intercepts = match baseline_intercept {
        Some(ip) => format!("{intercept_ip},{ip}"),
        None => intercept_ip.to_string(),
    };
    let mut args: Vec<String> = vec![
        "-x".into(),
        format!("{port}-{target}"),
        "--stats-interval".into(),
        "2".into(),
    ];
    if spec.mode == Mode::Stream {
        args.extend(["--mode".into(), "stream".into()]);
    } else {
        args.extend(["-s".into(), intercepts]);
    }
    if baseline_intercept.is_some() {
        args.extend(["--baseline".into(), format!("{BASELINE_IP}:{port}")]);
    }
    if spec.mode == Mode::Assistant {
        // 254 fake clients either way (the lab routes all of the IPv6 /64 to the assistant).
        let fakes = if spec.ipv6 {
            "2001:2:0:1::/120"
        } else {
            Lab::FAKE_CLIENT_NET
        };
        args.extend(["-c".into(), fakes.into()]);
    }
    args
}

/// Starts intercept in `ns` (the assistant host in assistant mode, the target in queue mode)
/// with `extra` options, and waits until it listens, so that tcpcopy's next attempt succeeds.
pub(super) fn spawn_intercept(
    lab: &Lab,
    scratch: &ScratchDir,
    bin_dir: &Path,
    ns: &str,
    mode: Mode,
    port: u16,
    extra: &[String],
) -> anyhow::Result<Child> {
    let mut args: Vec<String> = match mode {
        Mode::Assistant => vec!["-i".into(), Lab::IFACE.into()],
        Mode::Queue | Mode::Stream => vec!["--queue".into()],
    };
    args.extend(["--port".into(), port.to_string()]);
    args.extend(extra.iter().cloned());
    let n = std::fs::read_dir(scratch.path())?.count();
    let log = scratch.path().join(format!("intercept-{n}.log"));
    let child = lab.spawn(ns, &bin_dir.join("intercept"), &args, &log)?;
    wait_log(
        Some(&child),
        "listening for tcpcopy",
        1,
        Duration::from_secs(10),
    )?;
    Ok(child)
}

/// Waits until `child`'s log holds `needle` at least `count` times.
pub(super) fn wait_log(
    child: Option<&Child>,
    needle: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let child = child.context("program not running")?;
    let deadline = Instant::now() + timeout;
    loop {
        let text = child.log_text();
        if text.matches(needle).count() >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} never logged {needle:?} {count}x:\n{text}",
            child.name()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a program with SIGTERM; it must exit successfully. Returns its log.
pub(super) fn stop_child(slot: &mut Option<Child>, name: &str) -> anyhow::Result<String> {
    let mut c = slot.take().with_context(|| format!("{name} not running"))?;
    let status = c.stop()?;
    let log = c.log_text();
    anyhow::ensure!(status.success(), "{name} exited with {status}:\n{log}");
    Ok(log)
}
