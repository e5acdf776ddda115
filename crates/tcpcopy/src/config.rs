//! Every option check of both programs, in one place: the value parsers clap calls while it
//! parses `argv`, and the rules across options that turn the parsed arguments ([`TcpcopyOpts`],
//! [`InterceptCli`]) into validated configurations ([`LiveConfig`], [`InterceptConfig`]). The
//! drivers take only those.
//!
//! Every rejected option gets one line naming the option and the expected form (the binaries
//! print it and exit with status 2). Nothing here opens a socket or a capture: apart from asking
//! whether a `-i` argument is an existing file, and reading the wall clock for the ISN base, it
//! is plain computation, unit-tested below.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use session::{Config, Rule};

use crate::cli::{InterceptCli, ReportOpts, SendLayer, TcpcopyOpts};
pub use crate::live::{MirrorSpec, Pace, Tunnel};

mod stream;
pub use stream::{StreamSettings, TlsSettings};

/// How long bytes wait behind a hole in a client's stream before it is skipped as one no one
/// will fill (see `session::Config::hole_wait`; a hole the online server acknowledged goes at
/// once). Above a client's retransmission timeout after a loss (200 ms to about a second), far
/// below a session's timeout.
pub const HOLE_WAIT: Duration = Duration::from_secs(2);

/// Where client packets come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Live capture on one interface, or all of them.
    Capture { interface: Option<String> },
    /// Offline replay of a pcap/pcapng file, at its pace (faster, pauses shortened).
    File { path: PathBuf, pace: Pace },
    /// Mirrored traffic sent to this host (`--input vxlan|geneve|erspan`).
    Mirror(MirrorSpec),
}

/// How packets reach the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendVia {
    /// The kernel routes every packet (raw sockets).
    Kernel,
    /// At the link layer where possible (only through `device` when one is named).
    LinkLayer { device: Option<String> },
}

/// Everything the `tcpcopy` driver needs, validated.
pub struct LiveConfig {
    pub core: Config,
    pub intercepts: Vec<SocketAddr>,
    pub connections: u16,
    /// Capture threads (live capture only), each a replicator of its own.
    pub threads: u16,
    pub input: Input,
    /// Write captured client packets to this pcapng file.
    pub record: Option<PathBuf>,
    pub stats_interval: Duration,
    pub duration: Option<Duration>,
    pub send: SendVia,
    /// How long the kernel keeps a partly filled capture block (`--capture-wait`): the longest a
    /// captured packet waits before it is replicated, and (under light load) the wake-up period
    /// of the replicating thread.
    pub capture_wait: Duration,
    /// Answers compared with production's (`--compare`).
    pub compare: Option<CompareSettings>,
    /// Reports and exit criteria.
    pub report: ReportSettings,
    /// Capture ring size in bytes (`-B`; `None`: the ring's default).
    pub capture_buffer: Option<usize>,
    /// Lines to log at start about options accepted for compatibility that change nothing.
    pub notes: Vec<String>,
    /// `-F`: a tcpdump expression the capture must match too, checked with libpcap.
    pub filter: Option<String>,
    /// `--secret-file`: the key the intercept connections are opened with (encrypted).
    pub secret: Option<protocol::secure::Psk>,
    /// `--protocol` and the logins it makes (`--login`, `--login-file`).
    pub protocol: Option<(dialect::Protocol, dialect::Credentials)>,
    /// `--mode stream`: each session over a connection of this host's (no intercept).
    pub stream: Option<StreamSettings>,
}

/// How answers are compared (`--compare` and its options).
#[derive(Clone, Debug)]
pub struct CompareSettings {
    /// First bytes of each answer forwarded by intercept and kept.
    pub head_bytes: u16,
    /// HTTP header names (lower case) left out.
    pub ignore_headers: Vec<String>,
}

/// What is written at exit, and when the exit status says failure.
#[derive(Clone, Debug, Default)]
pub struct ReportSettings {
    pub json: Option<PathBuf>,
    pub html: Option<PathBuf>,
    /// Percent of compared requests that may differ (exit 3 beyond).
    pub fail_on_diff: Option<f64>,
    /// Percent of online requests that may be lost (exit 3 beyond).
    pub fail_on_loss: Option<f64>,
    pub metrics: Option<SocketAddr>,
}

impl LiveConfig {
    /// Turns parsed options into a validated configuration; errors are one-line usage errors.
    pub fn from_opts(o: &TcpcopyOpts) -> Result<LiveConfig, String> {
        let rules = o
            .transfer
            .clone()
            .ok_or("the option -x/--transfer is required (e.g. -x 80-198.18.0.30:80)")?;
        // Without -s, intercept runs on each target (queue mode), as with the first C TCPCopy.
        let servers = o.intercept.clone().unwrap_or_else(|| {
            // The baseline's intercept too, on its host.
            let hosts = rules.iter().map(|r| r.target.ip());
            let mut on_targets: Vec<(IpAddr, Option<u16>)> = Vec::new();
            for ip in hosts.chain(o.report.baseline.map(|b| b.ip())) {
                if !on_targets.iter().any(|(seen, _)| *seen == ip) {
                    on_targets.push((ip, None));
                }
            }
            on_targets
        });
        if o.snaplen.is_some() {
            return Err(
                "-S: not supported; tcpcopy always captures whole packets (every byte must reach the target), leave -S out"
                    .into(),
            );
        }
        let input = input(o)?;
        if o.record.is_some() && matches!(input, Input::File { .. }) {
            return Err("--record: only a live capture can be recorded, not a replay".into());
        }
        let stream = stream::settings(o)?;
        let mut core = core_config(o, rules)?;
        if stream.is_some() {
            // Nothing crosses a wire between the core and the socket bridge: the largest
            // segments cost the fewest packets.
            core.mss = bridge::MAX_SEGMENT as u16;
            core.mtu = u16::MAX;
        }
        check_threads(o, &input, &core)?;
        let filter = user_filter(o.filter.as_deref())?;
        if filter.is_some() && matches!(input, Input::Mirror(_)) {
            return Err(
                "-F: filters a live capture; for mirrored input, narrow the mirror session (or --mirror-id)"
                    .into(),
            );
        }
        if filter.is_some() && matches!(input, Input::File { .. }) {
            return Err(
                "-F: filters a live capture; filter a file with `tcpdump -r FILE -w OUT EXPR` and replay OUT"
                    .into(),
            );
        }
        let intercepts = match stream {
            Some(_) => Vec::new(),
            None => servers
                .into_iter()
                .map(|(ip, port)| SocketAddr::new(ip, port.unwrap_or(o.port)))
                .collect(),
        };
        Ok(LiveConfig {
            core,
            intercepts,
            connections: o.connections,
            threads: o.threads,
            input,
            record: o.record.clone(),
            stats_interval: Duration::from_secs(o.stats_interval),
            capture_wait: Duration::from_millis(u64::from(o.capture_wait)),
            duration: (o.duration > 0).then(|| Duration::from_secs(o.duration)),
            send: send_via(o)?,
            compare: compare_settings(&o.report)?,
            report: report_settings(&o.report)?,
            capture_buffer: o.capture_buffer.map(|mb| mb as usize * (1 << 20)),
            notes: compatibility_notes(o),
            filter,
            secret: secret(o.secret_file.as_deref())?,
            protocol: protocol(&o.database)?,
            stream,
        })
    }
}

/// `--protocol` with its logins; `--login` and `--login-file` make no sense without it.
fn protocol(
    d: &crate::cli::DatabaseOpts,
) -> Result<Option<(dialect::Protocol, dialect::Credentials)>, String> {
    let Some(protocol) = d.protocol else {
        if !d.login.is_empty() || d.login_file.is_some() {
            return Err(
                "--login, --login-file: only with --protocol (e.g. --protocol mysql)".into(),
            );
        }
        return Ok(None);
    };
    let mut logins = d.login.clone();
    if let Some(path) = &d.login_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--login-file {}: {e}", path.display()))?;
        logins.extend(
            dialect::Credentials::parse_file(&text)
                .map_err(|e| format!("--login-file {}: {e}", path.display()))?,
        );
    }
    Ok(Some((protocol, dialect::Credentials::new(logins))))
}

/// What the options kept for C TCPCopy's users that change nothing here do instead.
fn compatibility_notes(o: &TcpcopyOpts) -> Vec<String> {
    let mut notes = Vec::new();
    if o.session_pool.is_some() {
        notes.push("-U: ignored, sessions are allocated as needed".to_string());
    }
    if o.lonely {
        notes.push(
            "-L: tcpcopy always goes on while an intercept is unreachable, and reconnects"
                .to_string(),
        );
    }
    notes
}

/// `--compare` and its options; they make no sense without it.
fn compare_settings(r: &ReportOpts) -> Result<Option<CompareSettings>, String> {
    if !r.compare {
        if !r.ignore_header.is_empty() {
            return Err("--ignore-header: only with --compare".into());
        }
        if r.fail_on_diff.is_some() {
            return Err("--fail-on-diff: only with --compare".into());
        }
        if r.baseline.is_some() {
            return Err("--baseline: only with --compare (it is the comparison's baseline)".into());
        }
        return Ok(None);
    }
    let mut ignore: Vec<String> = compare::http::DEFAULT_IGNORED
        .iter()
        .map(|h| h.to_string())
        .collect();
    for h in &r.ignore_header {
        let name = h.to_ascii_lowercase();
        if let Some(again) = name.strip_prefix('-') {
            ignore.retain(|i| i != again);
        } else if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!("--ignore-header {h}: not a header name"));
        } else if !ignore.contains(&name) {
            ignore.push(name);
        }
    }
    Ok(Some(CompareSettings {
        head_bytes: r.compare_bytes,
        ignore_headers: ignore,
    }))
}

fn report_settings(r: &ReportOpts) -> Result<ReportSettings, String> {
    for (name, pct) in [
        ("--fail-on-diff", r.fail_on_diff),
        ("--fail-on-loss", r.fail_on_loss),
    ] {
        if pct.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
            return Err(format!("{name}: a percentage from 0 to 100"));
        }
    }
    Ok(ReportSettings {
        json: r.report_json.clone(),
        html: r.report_html.clone(),
        fail_on_diff: r.fail_on_diff,
        fail_on_loss: r.fail_on_loss,
        metrics: r.metrics,
    })
}

/// `-i`: an existing file is replayed, anything else names one capture interface; or
/// `--input`: mirrored traffic.
fn input(o: &TcpcopyOpts) -> Result<Input, String> {
    let Some((tunnel, port)) = o.mirror else {
        if !o.mirror_ids.is_empty() {
            return Err(
                "--mirror-id: only with mirrored input (--input vxlan|geneve|erspan)".into(),
            );
        }
        return capture_or_file(o);
    };
    if o.input.is_some() || o.interface.is_some() {
        return Err(
            "--input: mirrored input replaces the capture; leave -i and --interface out".into(),
        );
    }
    if o.record.is_some() {
        return Err("--record: only a live capture can be recorded".into());
    }
    Ok(Input::Mirror(MirrorSpec {
        tunnel,
        port,
        ids: o.mirror_ids.clone(),
    }))
}

/// `--input KIND[:PORT]`.
pub fn parse_mirror(s: &str) -> Result<(Tunnel, u16), String> {
    let (kind, port) = match s.split_once(':') {
        Some((k, p)) => (k, Some(p)),
        None => (s, None),
    };
    let tunnel = match kind {
        "vxlan" => Tunnel::Vxlan,
        "geneve" => Tunnel::Geneve,
        "erspan" => Tunnel::Erspan,
        _ => {
            return Err(format!(
                "'{s}': expected vxlan[:PORT], geneve[:PORT] or erspan"
            ))
        }
    };
    let port = match port {
        None => tunnel.default_port(),
        Some(_) if tunnel == Tunnel::Erspan => {
            return Err("erspan is GRE: it has no port".into());
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("'{p}' is not a port number (1-65535)"))?,
    };
    Ok((tunnel, port))
}

fn capture_or_file(o: &TcpcopyOpts) -> Result<Input, String> {
    let replaying = o.input.as_deref().is_some_and(|a| Path::new(a).is_file());
    if o.accelerate != 1.0 && !replaying {
        return Err("-a/--accelerate: only with a replayed file (-i FILE)".into());
    }
    if let Some(gap) = o.max_gap {
        if !replaying {
            return Err("--max-gap: only with a replayed file (-i FILE)".into());
        }
        if !(gap.is_finite() && gap > 0.0) {
            return Err(format!("--max-gap {gap}: a number of seconds above 0"));
        }
    }
    if o.skip_gaps.is_some() && !replaying {
        return Err("-I/--skip-gaps: only with a replayed file (-i FILE)".into());
    }
    if o.loops > 1 && !replaying {
        return Err("-T/--loop: only with a replayed file (-i FILE)".into());
    }
    let Some(arg) = &o.input else {
        return Ok(Input::Capture {
            interface: o.interface.clone(),
        });
    };
    let path = Path::new(arg);
    if path.is_file() {
        Ok(Input::File {
            path: path.to_path_buf(),
            pace: Pace {
                accelerate: o.accelerate,
                max_gap: o.max_gap.map(Duration::from_secs_f64),
                skip_gaps: o.skip_gaps.map(Duration::from_millis),
                loops: o.loops,
            },
        })
    } else if arg.contains('/') || arg.contains('.') {
        Err(format!(
            "-i {arg}: no such file (nor a network interface name)"
        ))
    } else if arg.contains(',') {
        Err(format!("-i {arg}: capturing on several named interfaces is not supported yet; omit -i to capture on all"))
    } else {
        Ok(Input::Capture {
            interface: Some(arg.clone()),
        })
    }
}

/// The session core's configuration.
fn core_config(o: &TcpcopyOpts, rules: Vec<Rule>) -> Result<Config, String> {
    let mut core = Config::new(rules);
    core.fake_clients = o.fake_client.clone().unwrap_or_default();
    if let Some(r) = core.rules.iter().find(|r| {
        core.fake_clients
            .iter()
            .any(|f| f.is_ipv4() != r.target.is_ipv4())
    }) {
        return Err(format!(
            "-c: fake client addresses must be of the same IP version as the target {}",
            r.target
        ));
    }
    core.session_timeout = Duration::from_secs(o.session_timeout);
    core.idle_timeout = o.idle_timeout.map(Duration::from_secs);
    if let Some(ip) = o.localhost_as {
        if core
            .rules
            .iter()
            .any(|r| r.target.is_ipv4() != ip.is_ipv4())
        {
            return Err(format!(
                "-H {ip}: must be of the same IP version as the target"
            ));
        }
    }
    core.localhost_as = o.localhost_as;
    core.join_open_sessions = !o.only_full_sessions;
    if let Some(b) = o.report.baseline {
        if core.rules.iter().any(|r| r.target.is_ipv4() != b.is_ipv4()) {
            return Err(format!(
                "--baseline {b}: must be of the same IP version as the target"
            ));
        }
        if core.rules.iter().any(|r| r.target == b) {
            return Err(format!("--baseline {b}: is the target itself"));
        }
    }
    core.baseline = o.report.baseline;
    core.trace_sends = o.report.compare;
    core.mss = o.mss;
    core.mtu = o.mtu;
    core.initial_rto = Duration::from_millis(o.rtt);
    core.no_wait = o.no_wait;
    core.response_wait = Duration::from_millis(o.response_wait);
    // Every input: a mirror's lost packets and a live capture's ring drops are never resent
    // alike, and a client's own retransmission comes well within the wait.
    core.hole_wait = Some(HOLE_WAIT);
    // The ISN clock starts from the wall clock, so a later run starts further on (4 µs ticks).
    core.isn_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_micros() / 4) as u32);
    core.copies = o.copies;
    core.port_shift = o.port_shift;
    // C TCPCopy shifts by F × 2048 too; the core wraps within 1024..=65535.
    core.port_offset = ((u32::from(o.instance) * 2048) % (65536 - 1024)) as u16;
    core.sample_percent = o.percent;
    core.sample_ramp = o.gradual;
    core.max_buffered_bytes = (o.memory as usize).saturating_mul(1 << 20);
    core.max_session_bytes = core.max_buffered_bytes / 4;
    Ok(core)
}

/// `--threads N`: only for a live capture, and with fake client addresses enough for each.
fn check_threads(o: &TcpcopyOpts, input: &Input, core: &Config) -> Result<(), String> {
    if o.threads <= 1 {
        return Ok(());
    }
    if !matches!(input, Input::Capture { .. }) || o.record.is_some() {
        return Err(
            "--threads: several capture threads only for a live capture without --record".into(),
        );
    }
    if !core.fake_clients.is_empty() && core.fake_clients.len() < usize::from(o.threads) {
        return Err(format!(
            "--threads {}: each capture thread needs fake client addresses of its own, and -c gives {}",
            o.threads,
            core.fake_clients.len()
        ));
    }
    Ok(())
}

/// `--send-layer` and `-o`.
fn send_via(o: &TcpcopyOpts) -> Result<SendVia, String> {
    Ok(match (o.send_layer, &o.output_device) {
        (Some(SendLayer::Ip), Some(_)) => {
            return Err(
                "-o/--output-device sends at the link layer: not with --send-layer ip".into(),
            )
        }
        (Some(SendLayer::Ip), None) | (None, None) => SendVia::Kernel,
        (Some(SendLayer::Link), device) | (None, device @ Some(_)) => SendVia::LinkLayer {
            device: device.clone(),
        },
    })
}

/// Everything the `intercept` driver needs, validated.
pub struct InterceptConfig {
    pub source: ResponseSource,
    /// Where tcpcopy connects.
    pub listen: SocketAddr,
    /// The tcpcopy hosts let in (`None`: any).
    pub allow: Option<Vec<IpAddr>>,
    /// Added to every time intercept reports, in ns (hidden `--clock-offset-ms`: a host whose
    /// clock is off, for tests).
    pub clock_offset_ns: i64,
    /// Responses batched per message at most.
    pub batch: usize,
    /// How long a session route is kept without traffic.
    pub route_timeout: Duration,
    /// Where to serve Prometheus metrics (`--metrics`).
    pub metrics: Option<SocketAddr>,
    /// `-F` (assistant mode): a tcpdump expression the capture must match too, checked with
    /// libpcap.
    pub filter: Option<String>,
    /// `--secret-file`: only a tcpcopy proving this key is let in (encrypted).
    pub secret: Option<protocol::secure::Psk>,
}

/// Where intercept catches the target's responses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseSource {
    /// Queue mode: responses are read from NFQUEUE `queue_num`, which intercept's own iptables
    /// rule fills with the responses from `ports`, or (`None`) the operator's rule. Responses to
    /// `pass` go on to their destination. The kernel queues `max_len` packets at most.
    Queue {
        ports: Option<Vec<u16>>,
        queue_num: u16,
        max_len: u32,
        pass: Vec<IpAddr>,
    },
    /// Assistant mode: capture rings on each interface (`None`: all of them), `threads` per
    /// interface; `service_ports` narrows the capture when known.
    Capture {
        interfaces: Vec<Option<String>>,
        service_ports: Option<Vec<u16>>,
        threads: u16,
    },
}

impl InterceptConfig {
    /// Turns parsed options into a validated configuration; errors are one-line usage errors.
    pub fn from_cli(cli: &InterceptCli) -> Result<InterceptConfig, String> {
        if cli.docker.is_some() {
            return Err(
                "-D: not supported; run intercept in the containers' network namespace (or on the host their answers are routed through)"
                    .into(),
            );
        }
        let source = match &cli.interface {
            None => {
                if cli.threads > 1 {
                    return Err(
                        "--threads is for assistant mode (-i): queue mode reads one NFQUEUE".into(),
                    );
                }
                if cli.filter.is_some() {
                    return Err(
                        "-F: filters the capture of assistant mode (-i); queue mode reads what the iptables NFQUEUE rule diverts"
                            .into(),
                    );
                }
                ResponseSource::Queue {
                    ports: cli.service_ports.clone(),
                    queue_num: cli.queue_num,
                    max_len: cli.queue_length,
                    pass: cli.pass.clone().unwrap_or_default(),
                }
            }
            Some(_) if cli.queue => {
                return Err(
                    "-i/--interface is for assistant mode and cannot be combined with --queue"
                        .into(),
                );
            }
            Some(_) if cli.pass.is_some() => {
                return Err(
                    "-x/--pass is for queue mode: in assistant mode (-i) intercept drops nothing"
                        .into(),
                );
            }
            Some(list) => ResponseSource::Capture {
                interfaces: list
                    .split(',')
                    .map(str::trim)
                    .map(|dev| (dev != "any").then(|| dev.to_string()))
                    .collect(),
                service_ports: cli.service_ports.clone(),
                threads: cli.threads,
            },
        };
        Ok(InterceptConfig {
            source,
            listen: SocketAddr::new(cli.bind, cli.listen_port),
            allow: cli.allow.clone(),
            clock_offset_ns: cli.clock_offset_ms.saturating_mul(1_000_000),
            batch: usize::from(cli.batch),
            route_timeout: Duration::from_secs(cli.route_timeout),
            metrics: cli.metrics,
            filter: user_filter(cli.filter.as_deref())?,
            secret: secret(cli.secret_file.as_deref())?,
        })
    }
}

/// `--secret-file FILE`, read now (once).
fn secret(path: Option<&std::path::Path>) -> Result<Option<protocol::secure::Psk>, String> {
    path.map(crate::channel::read_secret).transpose()
}

/// `-F EXPR`: libpcap must compile it, and its program must suit our capture; the error is
/// libpcap's message (or why the program does not suit).
fn user_filter(expr: Option<&str>) -> Result<Option<String>, String> {
    let Some(expr) = expr else { return Ok(None) };
    netio::UserFilter::check(expr).map_err(|e| format!("-F: {e}"))?;
    Ok(Some(expr.to_string()))
}

// Option values: the parsers clap calls for one option's text.

fn parse_endpoint(s: &str) -> Result<(Option<IpAddr>, u16), String> {
    let bad_port = |p: &str| format!("'{p}' is not a port number (1-65535)");
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad_port(p))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{s}': missing ']' after an IPv6 address"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("'{ip}' is not an IPv6 address"))?;
        let p = tail
            .strip_prefix(':')
            .ok_or_else(|| format!("'{s}': expected [ipv6]:port"))?;
        return Ok((Some(ip), port(p)?));
    }
    match s.rsplit_once(':') {
        Some((ip, p)) => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("'{ip}' is not an IP address"))?;
            Ok((Some(ip), port(p)?))
        }
        None => Ok((None, port(s)?)),
    }
}

/// `[online_ip:]online_port-target_ip:target_port[,...]`
pub fn parse_rules(s: &str) -> Result<Vec<Rule>, String> {
    const FORM: &str = "expected [online_ip:]online_port-target_ip:target_port[,...]";
    s.split(',')
        .map(|part| {
            let (online, target) = part
                .split_once('-')
                .ok_or_else(|| format!("'{part}': {FORM}"))?;
            let (online_addr, online_port) =
                parse_endpoint(online.trim()).map_err(|e| format!("{e}; {FORM}"))?;
            let (tip, tport) = parse_endpoint(target.trim()).map_err(|e| format!("{e}; {FORM}"))?;
            let tip =
                tip.ok_or_else(|| format!("'{target}': the target needs an address; {FORM}"))?;
            Ok(Rule {
                online_addr,
                online_port,
                target: SocketAddr::new(tip, tport),
            })
        })
        .collect()
}

/// `ip[:port][,...]`
pub fn parse_servers(s: &str) -> Result<Vec<(IpAddr, Option<u16>)>, String> {
    s.split(',')
        .map(|part| {
            let part = part.trim();
            if let Ok(ip) = part.parse::<IpAddr>() {
                return Ok((ip, None));
            }
            match parse_endpoint(part) {
                Ok((Some(ip), port)) => Ok((ip, Some(port))),
                _ => Err(format!(
                    "'{part}': expected ip[:port] (IPv6 as [addr]:port)"
                )),
            }
        })
        .collect()
}

/// `ip[,ip]`, `a.b.c.x` (the /24: .1 to .254) or a CIDR (at most 65,536 addresses).
pub fn parse_fake_clients(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if let Some(prefix) = part.strip_suffix(".x") {
            let base: Ipv4Addr = format!("{prefix}.0")
                .parse()
                .map_err(|_| format!("'{part}': expected a.b.c.x"))?;
            let o = base.octets();
            out.extend((1..=254).map(|i| IpAddr::from([o[0], o[1], o[2], i])));
        } else if let Some((Ok(ip), bits)) = part
            .split_once('/')
            .map(|(ip, bits)| (ip.parse::<Ipv6Addr>(), bits))
        {
            let bits: u32 = bits
                .parse()
                .ok()
                .filter(|b| (112..=128).contains(b))
                .ok_or_else(|| format!("'{part}': an IPv6 prefix length must be 112 to 128"))?;
            let size = 1u128 << (128 - bits);
            let net = u128::from(ip) & !(size - 1);
            // Skip the all-zero address of the range (the subnet-router anycast address).
            let first = if size >= 4 { net + 1 } else { net };
            out.extend((first..net + size).map(|h| IpAddr::V6(Ipv6Addr::from(h))));
        } else if let Some((ip, bits)) = part.split_once('/') {
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| format!("'{part}': expected an IPv4 CIDR like 198.19.0.0/24"))?;
            let bits: u32 = bits
                .parse()
                .ok()
                .filter(|b| (16..=32).contains(b))
                .ok_or_else(|| format!("'{part}': prefix length must be 16 to 32"))?;
            let size = 1u64 << (32 - bits);
            let net = u64::from(u32::from(ip)) & !(size - 1);
            let hosts = if size >= 4 {
                net + 1..net + size - 1
            } else {
                net..net + size
            };
            // In range by construction: `net + size` is at most 2^32.
            out.extend(hosts.map(|h| IpAddr::V4(Ipv4Addr::from(h as u32))));
        } else {
            out.push(
                part.parse()
                    .map_err(|_| format!("'{part}': expected ip[,ip], a.b.c.x or a CIDR"))?,
            );
        }
    }
    Ok(out)
}

pub fn parse_accel(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.001..=1_000_000.0).contains(&x) => Ok(x),
        _ => Err(format!("{s}: a factor between 0.001 and 1000000 expected")),
    }
}

pub fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("'{p}' is not a port number"))
        })
        .collect()
}

pub fn parse_ip_list(s: &str) -> Result<Vec<IpAddr>, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| format!("'{p}' is not an IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::TcpcopyCli;

    #[test]
    fn rules_in_every_form() {
        let r =
            parse_rules("80-198.18.0.30:8080,198.18.0.20:443-198.18.0.30:443,80-[2001:2::30]:80")
                .unwrap();
        assert_eq!(
            r[0],
            Rule {
                online_addr: None,
                online_port: 80,
                target: "198.18.0.30:8080".parse().unwrap()
            }
        );
        assert_eq!(r[1].online_addr, Some("198.18.0.20".parse().unwrap()));
        assert_eq!(r[2].target, "[2001:2::30]:80".parse().unwrap());
    }

    #[test]
    fn bad_rules_say_what_is_expected() {
        for bad in [
            "80",
            "80-198.18.0.30",
            "x-198.18.0.30:80",
            "80-1.2.3:80",
            "80-198.18.0.30:0",
            "0-1.1.1.1:80",
        ] {
            let e = parse_rules(bad).unwrap_err();
            assert!(e.contains("expected") || e.contains("port"), "{bad}: {e}");
        }
    }

    #[test]
    fn fake_client_forms() {
        assert_eq!(parse_fake_clients("62.135.200.x").unwrap().len(), 254);
        let cidr = parse_fake_clients("198.19.0.0/24").unwrap();
        assert_eq!(cidr.len(), 254);
        assert_eq!(cidr[0], IpAddr::from([198, 19, 0, 1]));
        assert_eq!(
            parse_fake_clients("198.19.0.5,198.19.0.6").unwrap().len(),
            2
        );
        assert!(parse_fake_clients("198.19.0.0/8").is_err());
        assert_eq!(
            parse_fake_clients("255.255.255.254/31").unwrap().len(),
            2,
            "no overflow at the top"
        );
        assert_eq!(parse_fake_clients("255.255.255.0/24").unwrap().len(), 254);
        assert!(parse_fake_clients("nonsense").is_err());
    }

    #[test]
    fn servers_default_their_port() {
        let s = parse_servers("198.18.0.40,198.18.0.41:9000,[2001:2::40]:36524").unwrap();
        assert_eq!(s[0], ("198.18.0.40".parse().unwrap(), None));
        assert_eq!(s[1], ("198.18.0.41".parse().unwrap(), Some(9000)));
        assert_eq!(s[2].1, Some(36524));
        assert!(parse_servers("host.example").is_err());
    }

    fn tcpcopy(extra: &[&str]) -> Result<LiveConfig, String> {
        let args = ["tcpcopy", "-x", "80-198.18.0.30:80", "-s", "198.18.0.40"];
        let cli = TcpcopyCli::try_parse_from(args.iter().chain(extra)).unwrap();
        LiveConfig::from_opts(&cli.opts)
    }

    #[test]
    fn protocol_options_are_checked() {
        let c = tcpcopy(&["--protocol", "mysql", "--login", "app:pw"]).unwrap();
        let (protocol, logins) = c.protocol.expect("a protocol");
        assert_eq!(protocol, dialect::Protocol::Mysql);
        assert_eq!(logins.password("app"), Some("pw"));
        assert!(tcpcopy(&[]).unwrap().protocol.is_none());
        let e = tcpcopy(&["--login", "app:pw"]).err().unwrap();
        assert!(e.starts_with("--login"), "{e}");
        let e = tcpcopy(&["--protocol", "auto", "--login-file", "/nonexistent/logins"])
            .err()
            .unwrap();
        assert!(e.starts_with("--login-file /nonexistent/logins"), "{e}");
        // Stream mode takes a protocol too (the bridge's answers carry their heads), and
        // refuses logins without one as packet mode does.
        let stream = ["tcpcopy", "-x", "80-198.18.0.30:80", "--mode", "stream"];
        let in_stream = |extra: &[&str]| {
            let cli = TcpcopyCli::try_parse_from(stream.iter().chain(extra)).unwrap();
            LiveConfig::from_opts(&cli.opts)
        };
        let c = in_stream(&["--protocol", "postgres", "--login", "app:pw"]).unwrap();
        assert!(c.stream.is_some());
        let (protocol, logins) = c.protocol.expect("a protocol in stream mode");
        assert_eq!(protocol, dialect::Protocol::Postgres);
        assert_eq!(logins.password("app"), Some("pw"));
        let e = in_stream(&["--login", "app:pw"]).err().unwrap();
        assert!(e.starts_with("--login"), "{e}");
        assert!(TcpcopyCli::try_parse_from(["tcpcopy", "--protocol", "pg"]).is_err());
        assert!(TcpcopyCli::try_parse_from(["tcpcopy", "--login", "no-password"]).is_err());
    }

    fn link_layer(extra: &[&str]) -> Result<Option<Option<String>>, String> {
        tcpcopy(extra).map(|c| match c.send {
            SendVia::Kernel => None,
            SendVia::LinkLayer { device } => Some(device),
        })
    }

    #[test]
    fn the_kernel_routes_unless_told_to_send_at_the_link_layer() {
        assert_eq!(link_layer(&[]), Ok(None));
        assert_eq!(link_layer(&["--send-layer", "ip"]), Ok(None));
        assert_eq!(link_layer(&["--send-layer", "link"]), Ok(Some(None)));
        assert_eq!(link_layer(&["-o", "eth1"]), Ok(Some(Some("eth1".into()))));
        assert_eq!(
            link_layer(&["--send-layer", "link", "-o", "eth1"]),
            Ok(Some(Some("eth1".into())))
        );
        assert!(link_layer(&["--send-layer", "ip", "-o", "eth1"]).is_err());
    }

    #[test]
    fn options_across_each_other_are_checked_with_one_line_naming_the_option() {
        let err = |extra: &[&str]| tcpcopy(extra).err().unwrap_or_default();
        assert!(err(&["-c", "2001:2::5"]).starts_with("-c: "));
        assert!(err(&["--threads", "2", "-c", "198.19.0.5"]).starts_with("--threads 2: "));
        assert!(err(&["-i", "./no-such-file.pcap"]).starts_with("-i ./no-such-file.pcap: "));
        assert!(err(&["-i", "eth0,eth1"]).starts_with("-i eth0,eth1: "));
        let ok = tcpcopy(&["-i", "eth0", "--threads", "2", "-p", "9000"]).unwrap();
        assert_eq!(
            ok.input,
            Input::Capture {
                interface: Some("eth0".into())
            }
        );
        assert_eq!(ok.intercepts, ["198.18.0.40:9000".parse().unwrap()]);
        let cli = TcpcopyCli::try_parse_from(["tcpcopy", "-s", "198.18.0.40"]).unwrap();
        assert!(LiveConfig::from_opts(&cli.opts)
            .err()
            .is_some_and(|e| e.contains("-x/--transfer")));
    }

    #[test]
    fn filter_expressions_are_checked_with_libpcaps_message_and_only_where_they_apply() {
        let err = |extra: &[&str]| tcpcopy(extra).err().unwrap_or_default();
        let bad = err(&["-F", "tcp and prot 80"]);
        assert!(
            bad.starts_with("-F: ") && bad.contains("syntax error"),
            "{bad}"
        );
        assert!(err(&["-F", "ether host 02:00:00:00:00:01"]).starts_with("-F: "));
        let ok = tcpcopy(&["-F", "not host 198.18.0.7"]).unwrap();
        assert_eq!(ok.filter.as_deref(), Some("not host 198.18.0.7"));
        let file = std::env::temp_dir().join(format!("filter-{}.pcap", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let replay = err(&["-i", file.to_str().unwrap(), "-F", "tcp"]);
        std::fs::remove_file(&file).unwrap();
        assert!(
            replay.starts_with("-F: ") && replay.contains("tcpdump -r"),
            "{replay}"
        );

        let a = intercept(&["-i", "eth0", "-F", "tcp and src port 80"]).unwrap();
        assert_eq!(a.filter.as_deref(), Some("tcp and src port 80"));
        let q = intercept(&["--port", "80", "-F", "tcp"]).err().unwrap();
        assert!(q.starts_with("-F: ") && q.contains("assistant mode"), "{q}");
        assert!(intercept(&["-F", "port eighty"]).is_err());
    }

    fn intercept(args: &[&str]) -> Result<InterceptConfig, String> {
        let cli = InterceptCli::try_parse_from(["intercept"].iter().chain(args)).unwrap();
        InterceptConfig::from_cli(&cli)
    }

    #[test]
    fn intercept_modes_and_their_options() {
        let q = intercept(&[
            "--queue",
            "--port",
            "80,8080",
            "--queue-num",
            "3",
            "-q",
            "500",
        ])
        .unwrap();
        assert_eq!(
            q.source,
            ResponseSource::Queue {
                ports: Some(vec![80, 8080]),
                queue_num: 3,
                max_len: 500,
                pass: Vec::new(),
            }
        );
        // Without -i: queue mode, as C intercept, filled by the operator's own rule.
        let bare = intercept(&["-x", "198.18.0.7,198.18.0.8"]).unwrap();
        assert_eq!(
            bare.source,
            ResponseSource::Queue {
                ports: None,
                queue_num: 0,
                max_len: 65_536,
                pass: vec![IpAddr::from([198, 18, 0, 7]), IpAddr::from([198, 18, 0, 8])],
            }
        );
        let a = intercept(&["-i", "eth0, eth1", "--threads", "2"]).unwrap();
        assert_eq!(
            a.source,
            ResponseSource::Capture {
                interfaces: vec![Some("eth0".into()), Some("eth1".into())],
                service_ports: None,
                threads: 2
            }
        );
        let any = intercept(&["-i", "any"]).unwrap();
        assert!(
            matches!(any.source, ResponseSource::Capture { interfaces, .. } if interfaces == [None])
        );
        assert_eq!(
            a.listen,
            SocketAddr::from(([0, 0, 0, 0], protocol::DEFAULT_PORT))
        );
        let err = |args: &[&str]| intercept(args).err().unwrap_or_default();
        assert!(err(&["--queue", "--port", "80", "-i", "eth0"]).starts_with("-i/--interface"));
        assert!(err(&["--port", "80", "--threads", "2"]).starts_with("--threads"));
        assert!(err(&["-i", "eth0", "-x", "198.18.0.7"]).starts_with("-x/--pass"));
        assert!(err(&["-D", "172.17.0.2-198.18.0.9"]).starts_with("-D: not supported"));
        assert_eq!(a.metrics, None);
        let m = intercept(&["--metrics", "127.0.0.1:9100"]).unwrap();
        assert_eq!(m.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 9100))));
    }
}
