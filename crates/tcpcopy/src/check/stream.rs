//! `tcpcopy check --mode stream`: stream mode needs no intercept, fake client, route or
//! forwarding rule, only connections from this host to each target. So the check connects to
//! every target (and the baseline) as a run would, completes the TLS handshake when
//! `--target-tls` asks for it, and names what failed; [`judge`] decides, the probes only look.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::diagnose::{finding, Finding, Kind, TargetPort};
use super::probe;
use crate::config::{LiveConfig, StreamSettings, TlsSettings};

/// How long a TLS handshake may take before it counts as failed.
const TLS_WAIT: Duration = Duration::from_secs(3);

/// Every target and the baseline, each checked once, their findings printed as they come.
pub fn check(cfg: &LiveConfig, settings: &StreamSettings) -> Vec<Finding> {
    let mut targets: Vec<SocketAddr> = cfg.core.rules.iter().map(|r| r.target).collect();
    targets.extend(cfg.core.baseline);
    targets.dedup();
    let mut all = Vec::new();
    for target in targets {
        let port = probe::target_port(target);
        let tls = match (&port, &settings.tls) {
            (TargetPort::Open, Some(tls)) => Some(handshake(target, tls)),
            _ => None,
        };
        let findings = judge(target, &port, tls.as_ref(), settings.proxy_protocol);
        for f in &findings {
            println!("{f}");
        }
        all.extend(findings);
    }
    all
}

/// What a target's probes mean: a connection refused or unanswered, a TLS handshake that failed;
/// with `--proxy-protocol`, a note that the target must expect the header (not probed: a target
/// that does not would take it as a broken request).
pub fn judge(
    target: SocketAddr,
    port: &TargetPort,
    tls: Option<&Result<(), String>>,
    proxy: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let TargetPort::Closed(why) = port {
        out.push(finding(
            Kind::TargetClosed,
            format!("the target {target} does not take connections from this host: {why}"),
            format!(
                "start the service on {} or correct -x; a firewall, security group or network policy on the way must let this host connect to port {}",
                target.ip(),
                target.port()
            ),
        ));
    }
    if let Some(Err(why)) = tls {
        out.push(finding(
            Kind::TargetTls,
            format!("the TLS handshake with the target {target} failed: {why}"),
            "give the CA that signed the target's certificate (--target-ca FILE), the name it was issued for (--target-sni NAME), or leave --target-tls out for a plain-text target",
        ));
    }
    if proxy && out.is_empty() {
        out.push(finding(
            Kind::NoProbe,
            format!("--proxy-protocol: each connection to {target} begins with a PROXY v2 header, which the check does not send"),
            "the target must expect it (nginx: `listen ... proxy_protocol`; HAProxy: `accept-proxy`), or it reads the header as a broken request",
        ));
    }
    out
}

/// Connects and completes a TLS handshake as stream mode would; the error in one line.
fn handshake(target: SocketAddr, tls: &TlsSettings) -> Result<(), String> {
    let name = tls
        .sni
        .clone()
        .unwrap_or_else(|| ServerName::IpAddress(target.ip().into()));
    let mut conn =
        rustls::ClientConnection::new(tls.config.clone(), name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect_timeout(&target, TLS_WAIT).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(TLS_WAIT))
        .and_then(|()| sock.set_write_timeout(Some(TLS_WAIT)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(format!("no handshake within {} s", TLS_WAIT.as_secs()))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    let _ = sock.flush();
    let _ = sock.read(&mut [0u8; 1]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SocketAddr {
        "198.18.0.30:443".parse().unwrap()
    }

    #[test]
    fn an_open_target_is_ready() {
        assert!(judge(target(), &TargetPort::Open, Some(&Ok(())), false).is_empty());
        assert!(judge(target(), &TargetPort::Open, None, false).is_empty());
    }

    #[test]
    fn a_closed_target_is_named_with_its_fix() {
        let f = judge(
            target(),
            &TargetPort::Closed("connection refused".into()),
            None,
            true,
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, Kind::TargetClosed);
        assert!(f[0].what.contains("198.18.0.30:443") && f[0].what.contains("refused"));
        assert!(f[0].kind.is_problem());
    }

    #[test]
    fn a_failed_handshake_names_the_tls_options() {
        let f = judge(
            target(),
            &TargetPort::Open,
            Some(&Err("invalid peer certificate: UnknownIssuer".into())),
            false,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, Kind::TargetTls);
        assert!(f[0].fix.contains("--target-ca") && f[0].kind.is_problem());
    }

    #[test]
    fn proxy_protocol_is_a_note_not_a_problem() {
        let f = judge(target(), &TargetPort::Open, None, true);
        assert_eq!(f.len(), 1);
        assert!(!f[0].kind.is_problem());
        assert!(f[0].fix.contains("proxy_protocol"));
    }
}
