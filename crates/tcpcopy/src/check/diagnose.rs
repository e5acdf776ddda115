//! What `tcpcopy check`'s observations mean: each problem named with its fix, or "ready". No
//! I/O: the probes ([`super::probe`]) fill in [`Observations`], [`diagnose`] judges them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use protocol::check::{CheckTell, FakeRoute, InterceptMode, OwnProbe};

/// How the connection to an intercept went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Welcomed.
    Welcomed,
    /// No connection (refused, timed out, no route).
    Unreachable(String),
    /// Something answered that is not an intercept of this protocol.
    NotIntercept(String),
    /// An intercept that refused us (allow list, secret).
    Refused(String),
    /// An intercept of another protocol version.
    Version(u16),
}

/// Whether the target's service port takes a connection from this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Open,
    Closed(String),
    /// Not tried (another address family, ...).
    Unknown,
}

/// What one probe of the path saw: the target and intercept it concerns and their answers.
#[derive(Clone, Debug)]
pub struct Observations {
    pub intercept: SocketAddr,
    pub target: SocketAddr,
    /// The probe's source: the first fake client address (`-c`), or a documentation address.
    pub fake: IpAddr,
    /// The fake client range (`-c`) as a prefix covering it; `None` without `-c`.
    pub fake_range: Option<String>,
    pub reach: Reach,
    /// intercept's facts (`None`: welcomed, but no tell came: an older intercept).
    pub tell: Option<CheckTell>,
    pub target_port: TargetPort,
    /// Whether intercept reported the target's answer to our probe (`None`: no probe sent,
    /// with why).
    pub ours_answered: Result<bool, String>,
    /// Whether intercept reported the answer to its own probe (`None`: it sent none).
    pub theirs_answered: Option<bool>,
    /// The interface this host sends to the target by, and its MTU.
    pub local_mtu: Option<(String, u32)>,
    /// `--mtu`.
    pub mtu_option: u16,
    /// The capture interface and whether GRO is on.
    pub gro: Option<(String, bool)>,
}

/// A problem (the setup cannot work as it is) or a note (it works; worth knowing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub what: String,
    pub fix: String,
}

/// What a finding is about; every kind but the notes makes the setup not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    InterceptUnreachable,
    NotIntercept,
    InterceptRefused,
    InterceptVersion,
    TargetClosed,
    /// Stream mode: the TLS handshake with the target failed.
    TargetTls,
    IpForward,
    RpFilter,
    NoFakeRoute,
    ForgedDropped,
    NoAnswer,
    Mtu,
    /// Notes: informational only.
    OldIntercept,
    Offload,
    NoProbe,
}

impl Kind {
    pub fn is_problem(self) -> bool {
        !matches!(self, Kind::OldIntercept | Kind::Offload | Kind::NoProbe)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = if self.kind.is_problem() {
            "problem"
        } else {
            "note"
        };
        write!(f, "{label}: {}\n  fix: {}", self.what, self.fix)
    }
}

pub(super) fn finding(kind: Kind, what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        kind,
        what: what.into(),
        fix: fix.into(),
    }
}

const STREAM_FIX: &str = "replicate with `--mode stream` instead (each session over a kernel TCP connection from this host: no fake clients, no intercept, no route), or have the network let this host send other addresses (on a cloud: the instance's source/destination check off, and no anti-spoofing between the hosts)";

/// Every problem (and note) the observations show; none with [`Kind::is_problem`] means ready.
pub fn diagnose(o: &Observations) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(f) = reach_problem(o) {
        out.push(f);
    }
    if let TargetPort::Closed(why) = &o.target_port {
        out.push(finding(
            Kind::TargetClosed,
            format!("the target {} does not take connections from this host: {why}", o.target),
            format!("start the service on {} or correct -x; a firewall on the way must let this host's packets to port {} through", o.target.ip(), o.target.port()),
        ));
    }
    out.extend(mtu_problems(o));
    if o.reach == Reach::Welcomed {
        match &o.tell {
            Some(tell) => out.extend(host_problems(o, tell)),
            None => out.push(finding(
                Kind::OldIntercept,
                format!("the intercept at {} does not answer check requests (an older version): its host's settings are not checked", o.intercept),
                "run the same version of intercept as of tcpcopy",
            )),
        }
        out.extend(path_problem(o, &out));
    }
    if let Some((dev, true)) = &o.gro {
        out.push(finding(
            Kind::Offload,
            format!("GRO is on for {dev}: the capture sees merged segments of up to 64 KB (tcpcopy cuts them to -D/--mss; the report counts them as super-segments)"),
            format!("nothing needed; for captures that match the wire: ethtool -K {dev} gro off"),
        ));
    }
    out
}

fn reach_problem(o: &Observations) -> Option<Finding> {
    let at = o.intercept;
    let (port, ip) = (at.port(), at.ip());
    Some(match &o.reach {
        Reach::Welcomed => return None,
        Reach::Unreachable(why) => finding(
            Kind::InterceptUnreachable,
            format!("intercept at {at} is unreachable: {why}"),
            format!("start intercept on {ip} (on an assistant host: `intercept -i IFACE`; on the target: `intercept --queue --port {}`), listening on port {port} (-p), and let TCP port {port} through from this host; or correct -s", o.target.port()),
        ),
        Reach::NotIntercept(why) => finding(
            Kind::NotIntercept,
            format!("what listens on {at} is not an intercept ({why})"),
            format!("point -s at intercept's listen port (intercept -p, default {}), or move the other service off port {port}", protocol::DEFAULT_PORT),
        ),
        Reach::Refused(reason) => finding(
            Kind::InterceptRefused,
            format!("intercept at {at} refused this host: {reason}"),
            "add this host to intercept's --allow list, and give both programs the same --secret-file (or neither)",
        ),
        Reach::Version(theirs) => finding(
            Kind::InterceptVersion,
            format!("intercept at {at} speaks protocol version {theirs}, this tcpcopy {}", protocol::VERSION),
            "run the same release of tcpcopy and intercept",
        ),
    })
}

fn mtu_problems(o: &Observations) -> Vec<Finding> {
    let want = u32::from(o.mtu_option);
    let mut out = Vec::new();
    if let Some((dev, mtu)) = &o.local_mtu {
        if *mtu < want {
            out.push(finding(
                Kind::Mtu,
                format!("the route to {} leaves by {dev}, whose MTU is {mtu}, below --mtu {want}: full-size packets to the target are refused or dropped", o.target.ip()),
                format!("start tcpcopy with --mtu {mtu} (or raise {dev}'s MTU)"),
            ));
        }
    }
    if let Some(CheckTell {
        mode: InterceptMode::Queue,
        mtu: Some(mtu),
        ..
    }) = o.tell
    {
        if mtu < want {
            out.push(finding(
                Kind::Mtu,
                format!("the target's interface towards this host has an MTU of {mtu}, below --mtu {want}: full-size packets are dropped on the way"),
                format!("start tcpcopy with --mtu {mtu} (or raise the target's MTU)"),
            ));
        }
    }
    out
}

/// ip_forward, rp_filter and the route back, from intercept's host.
fn host_problems(o: &Observations, tell: &CheckTell) -> Vec<Finding> {
    let mut out = Vec::new();
    let fake = o.fake;
    match tell.mode {
        InterceptMode::Assistant if tell.ip_forward == Some(true) => out.push(finding(
            Kind::IpForward,
            format!("ip_forward is on at intercept's host {}: the target's answers to the clients tcpcopy plays are forwarded on, and reach real clients (without -c, or when the fake range is routed somewhere)", o.intercept.ip()),
            "on the assistant: sysctl -w net.ipv4.ip_forward=0 (and in /etc/sysctl.d/, so that it stays off)",
        )),
        InterceptMode::Queue => {
            if tell.fake_route == FakeRoute::None {
                out.push(finding(
                    Kind::NoFakeRoute,
                    format!("the target has no route for {fake}: it cannot answer the clients tcpcopy plays (the answers need a route before intercept can catch them)"),
                    format!("on the target: ip route add {} via GATEWAY (any gateway; intercept drops the answers before they leave)", fake_net(o)),
                ));
            }
            // Strict drops what its route does not send back the way it came; loose, what
            // has no route at all.
            let drops = matches!(
                (tell.rp_filter, tell.fake_route),
                (Some(1), FakeRoute::None | FakeRoute::OtherInterface) | (Some(2), FakeRoute::None)
            );
            if drops {
                out.push(finding(
                    Kind::RpFilter,
                    format!("the target's rp_filter ({}) drops packets from {fake}: its route back to them does not leave by the interface they arrive on", tell.rp_filter.unwrap_or(0)),
                    "on the target: sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.IFACE.rp_filter=0 (or 2, loose, with a route for the fake range)",
                ));
            }
        }
        _ => {}
    }
    out
}

/// What the probes' answers say about the path, unless an earlier problem explains them.
fn path_problem(o: &Observations, found: &[Finding]) -> Option<Finding> {
    let answered = match &o.ours_answered {
        Ok(a) => *a,
        Err(why) => {
            return Some(finding(
                Kind::NoProbe,
                format!("no probe sent from {}: {why}", o.fake),
                "run the check as root or with CAP_NET_RAW to test the path",
            ))
        }
    };
    let explained = found.iter().any(|f| {
        matches!(
            f.kind,
            Kind::TargetClosed | Kind::NoFakeRoute | Kind::RpFilter
        )
    });
    if answered || explained {
        return None;
    }
    let assistant = o
        .tell
        .as_ref()
        .is_some_and(|t| t.mode == InterceptMode::Assistant);
    let net = fake_net(o);
    let target = o.target.ip();
    Some(match (o.theirs_answered, o.tell.map(|t| t.own_probe)) {
        // intercept's own probe from the assistant was answered: the target answers fake
        // clients, but ours never reached it.
        (Some(true), _) => finding(
            Kind::ForgedDropped,
            format!("packets from {} (a fake client) sent by this host never reach the target {target}, though the same probe sent from intercept's host is answered: the network drops forged source addresses on the way", o.fake),
            STREAM_FIX,
        ),
        (Some(false), Some(OwnProbe::Sent)) if assistant => finding(
            Kind::NoFakeRoute,
            format!("the target {target} does not send its answers to fake clients ({net}) to intercept's host {}: not to this host's probe, not to intercept's own", o.intercept.ip()),
            format!("on the target: ip route add {net} via {}; if that route is there, its rp_filter drops them: sysctl -w net.ipv4.conf.all.rp_filter=0", o.intercept.ip()),
        ),
        _ if !assistant && o.tell.is_some() => finding(
            Kind::ForgedDropped,
            format!("the target {target} never answered a probe from {} (a fake client), though its route and rp_filter let it: the network drops forged source addresses on the way", o.fake),
            STREAM_FIX,
        ),
        _ => finding(
            Kind::NoAnswer,
            format!("intercept never reported the target's answer to a probe from {}", o.fake),
            format!("either the target has no route for {net} via intercept's host (ip route add {net} via {} on the target) or the network drops forged source addresses on the way; then {STREAM_FIX}", o.intercept.ip()),
        ),
    })
}

/// The fake range `-c` gave, or the probe's address.
fn fake_net(o: &Observations) -> String {
    o.fake_range.clone().unwrap_or_else(|| o.fake.to_string())
}

/// The smallest IPv4 prefix holding every address of `addrs` (`None` for IPv6 or none).
pub fn covering_prefix(addrs: &[IpAddr]) -> Option<String> {
    let v4: Vec<u32> = addrs
        .iter()
        .map(|a| match a {
            IpAddr::V4(a) => Some(u32::from(*a)),
            IpAddr::V6(_) => None,
        })
        .collect::<Option<_>>()?;
    let (lo, hi) = (*v4.iter().min()?, *v4.iter().max()?);
    let len = (lo ^ hi).leading_zeros();
    let net = if len == 0 {
        0
    } else {
        lo & (u32::MAX << (32 - len))
    };
    Some(format!("{}/{len}", std::net::Ipv4Addr::from(net)))
}

/// The check's verdict: the findings, then `ready` or how many problems.
pub fn verdict(findings: &[Finding]) -> (bool, String) {
    let problems = findings.iter().filter(|f| f.kind.is_problem()).count();
    let mut text = String::new();
    for f in findings {
        text.push_str(&format!("{f}\n"));
    }
    if problems == 0 {
        text.push_str("ready\n");
    } else {
        let s = if problems == 1 { "" } else { "s" };
        text.push_str(&format!("not ready: {problems} problem{s}\n"));
    }
    (problems == 0, text)
}

#[cfg(test)]
mod tests;
