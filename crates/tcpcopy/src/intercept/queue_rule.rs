//! Queue mode's iptables rule: an OUTPUT rule that diverts the service's responses to NFQUEUE,
//! installed at start and removed on drop (also a stale one a killed intercept left behind).

use std::process::Command;

use anyhow::Context;
use tracing::{info, warn};

/// An OUTPUT rule sending the service's responses to NFQUEUE, for IPv4 (iptables) and, where
/// ip6tables works, IPv6; removed on drop.
pub struct QueueRule {
    spec: Vec<String>,
    v6: bool,
}

impl QueueRule {
    pub fn install(ports: &[u16], queue_num: u16) -> anyhow::Result<QueueRule> {
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut spec: Vec<String> = vec!["-p".into(), "tcp".into()];
        if ports.len() == 1 {
            spec.extend(["--sport".into(), list]);
        } else {
            spec.extend(["-m".into(), "multiport".into(), "--sports".into(), list]);
        }
        spec.extend([
            "-j".into(),
            "NFQUEUE".into(),
            "--queue-num".into(),
            queue_num.to_string(),
        ]);
        // A rule left behind by a killed intercept would be duplicated: remove it first.
        while iptables("iptables", "-D", &spec).is_ok() {}
        iptables("iptables", "-I", &spec).context("cannot install the iptables NFQUEUE rule")?;
        info!("installed: iptables -I OUTPUT {}", spec.join(" "));
        while iptables("ip6tables", "-D", &spec).is_ok() {}
        let v6 = match iptables("ip6tables", "-I", &spec) {
            Ok(()) => {
                info!("installed: ip6tables -I OUTPUT {}", spec.join(" "));
                true
            }
            Err(e) => {
                warn!("no IPv6 rule, IPv6 responses are not caught: {e:#}");
                false
            }
        };
        Ok(QueueRule { spec, v6 })
    }
}

impl Drop for QueueRule {
    fn drop(&mut self) {
        match iptables("iptables", "-D", &self.spec) {
            Ok(()) => info!("removed: iptables -D OUTPUT {}", self.spec.join(" ")),
            Err(e) => warn!("could not remove the iptables rule: {e:#}"),
        }
        if self.v6 {
            match iptables("ip6tables", "-D", &self.spec) {
                Ok(()) => info!("removed: ip6tables -D OUTPUT {}", self.spec.join(" ")),
                Err(e) => warn!("could not remove the ip6tables rule: {e:#}"),
            }
        }
    }
}

fn iptables(program: &str, op: &str, spec: &[String]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(["-w", op, "OUTPUT"])
        .args(spec)
        .output()
        .with_context(|| format!("cannot run {program} (is iptables installed?)"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {op}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
