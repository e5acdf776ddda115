//! Command-line options of both programs, with the names users know from the C TCPCopy, as clap
//! parses them; [`crate::config`] checks them (its value parsers run while clap parses) and turns
//! them into the validated configurations the drivers take.
//!
//! Every rejected option produces one line naming the option and the expected form, and exit status 2.

// The field docs are also the `--help` text, written in the C tools' notation (`[,dev]`), which
// rustdoc would read as links; escaping them would show the backslashes in `--help`.
#![allow(rustdoc::broken_intra_doc_links)]

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser};

use session::Rule;

use crate::conffile::{ParseError, Parsed};

/// `tcpcopy`'s options for live replication and replay. `tcpcopy demo` is read apart, and only
/// when `demo` is the first word (see [`TcpcopyCommand::parse_from`]).
#[derive(Debug, Parser)]
#[command(
    name = "tcpcopy",
    version,
    disable_version_flag = true,
    about = "Copy live TCP traffic from this (online) host to a target server",
    after_help = "Run `tcpcopy check [OPTIONS]` with a run's options to probe the path (intercept, routes, ip_forward, rp_filter, forged sources, MTU): it names each problem with its fix, or says ready.\nRun `tcpcopy report merge A.json B.json ... -o OUT.json|OUT.html` to combine the --report files of several online hosts."
)]
#[cfg_attr(
    feature = "demo",
    command(
        after_help = "Run `tcpcopy demo [--seconds N]` as root for a self-contained demonstration in network namespaces.\nRun `tcpcopy check [OPTIONS]` with a run's options to probe the path (intercept, routes, ip_forward, rp_filter, forged sources, MTU): it names each problem with its fix, or says ready.\nRun `tcpcopy report merge A.json B.json ... -o OUT.json|OUT.html` to combine the --report files of several online hosts."
    )
)]
pub struct TcpcopyCli {
    #[command(flatten)]
    pub opts: TcpcopyOpts,
    /// Print version
    #[arg(short = 'v', long = "version", short_alias = 'V', action = clap::ArgAction::Version)]
    pub version: (),
    #[command(flatten)]
    pub file: ConfigFileOpts,
}

/// `--config FILE` and `--print-config`, on both programs (see [`crate::conffile`]).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Config file")]
pub struct ConfigFileOpts {
    /// Read options from this TOML file (keys: the long option names, e.g. `copies = 2`); the
    /// command line overrides it
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the options in effect (file, command line and defaults) as a config file and exit
    #[arg(long = "print-config")]
    pub print_config: bool,
}

/// `tcpcopy demo [--seconds N]`.
#[cfg(feature = "demo")]
#[derive(Debug, Parser)]
#[command(
    name = "demo",
    bin_name = "tcpcopy demo",
    about = "Build a lab in network namespaces, replicate for a while, report, clean up (needs root)"
)]
pub struct DemoCli {
    /// Seconds of replication.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Also write tcpcopy's HTML report (answers compared, latency, loss) here
    #[arg(long = "report-html", value_name = "FILE.html")]
    pub report_html: Option<PathBuf>,
}

/// `tcpcopy report merge A.json B.json ... -o OUT`.
#[derive(Debug, Parser)]
#[command(
    name = "report",
    bin_name = "tcpcopy report",
    about = "Work with tcpcopy's JSON reports"
)]
pub struct ReportCli {
    #[command(subcommand)]
    pub action: ReportAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReportAction {
    /// Combine the reports of several online hosts into one (counts add up, latency
    /// distributions and difference groups merge)
    Merge {
        /// The JSON reports (`--report` of each tcpcopy)
        #[arg(required = true, num_args = 1.., value_name = "REPORT.json")]
        inputs: Vec<PathBuf>,
        /// Where to write the merged report: JSON, or HTML when it ends in .html
        #[arg(short = 'o', long = "output", value_name = "OUT.json|OUT.html")]
        output: PathBuf,
    },
}

/// What `tcpcopy` was asked to do.
#[derive(Debug)]
pub enum TcpcopyCommand {
    /// Replicate live traffic, or replay a file (boxed: the options are large, the demo's not).
    Live(Box<TcpcopyCli>),
    /// `tcpcopy report ...`.
    Report(ReportCli),
    /// `tcpcopy check [OPTIONS]`: probe the path a run with these options would take.
    Check(Box<TcpcopyCli>),
    #[cfg(feature = "demo")]
    Demo(DemoCli),
    /// `--print-config`: the options in effect, as a config file, to print instead of running.
    PrintConfig(String),
}

/// Why `tcpcopy`'s command line was refused (or, for help and version, answered).
#[derive(Debug)]
pub enum CommandLineError {
    Clap(clap::Error),
    /// A one-line usage error that clap does not write.
    Usage(String),
}

impl TcpcopyCommand {
    /// Reads `tcpcopy`'s command line: `demo` as the first word selects the demo, with its own
    /// options; anything else is live options, among which a word `demo` is an error (so that a
    /// stray `demo` never starts a lab).
    pub fn parse_from<I, T>(args: I) -> Result<TcpcopyCommand, CommandLineError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        if args.get(1).is_some_and(|a| a == "report") {
            return ReportCli::try_parse_from(&args[1..])
                .map(TcpcopyCommand::Report)
                .map_err(CommandLineError::Clap);
        }
        if args.get(1).is_some_and(|a| a == "check") {
            let mut rest = args.clone();
            rest.remove(1);
            return match TcpcopyCommand::parse_from(rest)? {
                TcpcopyCommand::Live(cli) => Ok(TcpcopyCommand::Check(cli)),
                other => Ok(other),
            };
        }
        if args.get(1).is_some_and(|a| a == "demo") {
            #[cfg(feature = "demo")]
            return DemoCli::try_parse_from(&args[1..])
                .map(TcpcopyCommand::Demo)
                .map_err(CommandLineError::Clap);
            #[cfg(not(feature = "demo"))]
            return Err(CommandLineError::Usage(
                "this build has no demo (tcpcopy was built without its `demo` feature)".into(),
            ));
        }
        match crate::conffile::parse::<TcpcopyCli>(args) {
            Ok(Parsed::Run(cli)) => Ok(TcpcopyCommand::Live(Box::new(cli))),
            Ok(Parsed::Print(text)) => Ok(TcpcopyCommand::PrintConfig(text)),
            Err(ParseError::File(e)) => Err(CommandLineError::Usage(e.to_string())),
            Err(ParseError::Clap(e)) => Err({
                let word = e.get(clap::error::ContextKind::InvalidArg);
                if matches!(word, Some(clap::error::ContextValue::String(w)) if w == "demo") {
                    CommandLineError::Usage(
                        "'demo' must be the first word (tcpcopy demo [--seconds N]), not follow options"
                            .into(),
                    )
                } else {
                    CommandLineError::Clap(e)
                }
            }),
        }
    }

    /// [`TcpcopyCommand::parse_from`] on `argv`; a refused command line prints one line and
    /// exits with status 2 (help and version print as usual).
    pub fn parse_or_exit() -> TcpcopyCommand {
        match TcpcopyCommand::parse_from(std::env::args_os()) {
            Ok(command) => command,
            Err(CommandLineError::Clap(e)) => exit_with("tcpcopy", e),
            Err(CommandLineError::Usage(msg)) => usage_error("tcpcopy", &msg),
        }
    }
}

/// How tcpcopy's packets reach the target (`--send-layer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SendLayer {
    /// Raw IP socket: the kernel routes every packet.
    Ip,
    /// `AF_PACKET` to the next hop, routed where that cannot be done.
    Link,
}

impl SendLayer {
    /// The option value.
    pub fn name(self) -> &'static str {
        match self {
            SendLayer::Link => "link",
            SendLayer::Ip => "ip",
        }
    }
}

#[derive(Debug, Args)]
pub struct TcpcopyOpts {
    /// Transfer rules: [online_ip:]online_port-target_ip:target_port[,...]
    #[arg(short = 'x', long = "transfer", value_name = "RULES", value_parser = crate::config::parse_rules)]
    pub transfer: Option<std::vec::Vec<Rule>>,
    /// Intercept servers: ip[:port][,...] (port defaults to -p)
    #[arg(short = 's', long = "intercept", value_name = "SERVERS", value_parser = crate::config::parse_servers)]
    pub intercept: Option<std::vec::Vec<(IpAddr, Option<u16>)>>,
    /// Fake client addresses: ip[,ip...], a.b.c.x for the /24, or a CIDR (IPv4 /16-/32, IPv6 /112-/128)
    #[arg(short = 'c', long = "fake-client", value_name = "ADDRS", value_parser = crate::config::parse_fake_clients)]
    pub fake_client: Option<std::vec::Vec<IpAddr>>,
    /// Capture interface (default: all interfaces)
    #[arg(long = "interface", value_name = "DEV")]
    pub interface: Option<String>,
    /// Capture interface, or a pcap/pcapng file to replay offline (an existing file)
    #[arg(short = 'i', id = "source", value_name = "DEV|FILE")]
    pub input: Option<String>,
    /// Mirrored input, on a collector host: read the packets a mirror session sends,
    /// `vxlan[:PORT]` (AWS, Azure; 4789), `geneve[:PORT]` (6081) or `erspan` (GRE), and
    /// replicate the mirrored traffic as if captured
    #[arg(long = "input", value_name = "KIND[:PORT]", value_parser = crate::config::parse_mirror)]
    pub mirror: Option<(crate::live::Tunnel, u16)>,
    /// Mirrored input: take only these VXLAN/Geneve VNIs or ERSPAN session IDs (default: all)
    #[arg(long = "mirror-id", value_name = "ID[,ID]", value_delimiter = ',')]
    pub mirror_ids: Vec<u32>,
    /// Offline replay: play the file this many times faster than it was recorded
    #[arg(short = 'a', long = "accelerate", value_name = "X", default_value_t = 1.0, value_parser = crate::config::parse_accel)]
    pub accelerate: f64,
    /// Offline replay: pauses in the recording longer than S seconds are shortened to S (and
    /// counted), as tcpreplay's --maxsleep
    #[arg(long = "max-gap", value_name = "S")]
    pub max_gap: Option<f64>,
    /// Offline replay: pauses in the recording longer than MS milliseconds are skipped (and
    /// counted), as C TCPCopy's -I
    #[arg(short = 'I', long = "skip-gaps", value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub skip_gaps: Option<u64>,
    /// Offline replay: play the file N times, one pass after the other (C TCPCopy's -T)
    #[arg(short = 'T', long = "loop", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub loops: u32,
    /// Live: also write every captured client packet to this pcapng file (replayable with -i)
    #[arg(long = "record", value_name = "FILE")]
    pub record: Option<std::path::PathBuf>,
    /// Session timeout in seconds: a session whose target leaves a request unanswered (or that
    /// holds client bytes) this long is reset and forgotten
    #[arg(short = 't', long = "session-timeout", value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub session_timeout: u64,
    /// Idle timeout in seconds: a session with nothing outstanding, idle between requests, is
    /// reset and forgotten after this long (C TCPCopy's -k; default: the session timeout)
    #[arg(short = 'k', long = "idle-timeout", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub idle_timeout: Option<u64>,
    /// Largest TCP payload sent to the target
    #[arg(short = 'D', long = "mss", default_value_t = 1460, value_parser = clap::value_parser!(u16).range(64..))]
    pub mss: u16,
    /// MTU of the path to the target
    #[arg(short = 'M', long = "mtu", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(576..))]
    pub mtu: u16,
    /// Initial retransmission timeout in milliseconds (before an RTT was measured)
    #[arg(short = 'R', long = "rtt", value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..60_000))]
    pub rtt: u64,
    /// Don't wait for the target's response before sending the next request
    #[arg(short = 'W', long = "no-wait")]
    pub no_wait: bool,
    /// Milliseconds to wait for the target's answer before sending the next request anyway
    #[arg(long = "response-wait", value_name = "MS", default_value_t = 500)]
    pub response_wait: u64,
    /// Connections to each intercept (per capture thread)
    #[arg(short = 'C', long = "connections", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub connections: u16,
    /// Capture threads: the kernel spreads client connections over them by flow hash
    /// (PACKET_FANOUT), each with its own sessions, sender and intercept connections
    #[arg(long = "threads", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Default intercept port
    #[arg(short = 'p', long = "port", default_value_t = protocol::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Prove this secret to the intercepts and encrypt the channel to them (a file readable by
    /// its owner only, read once at start; the intercepts need the same file)
    #[arg(long = "secret-file", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Replicate each session N times (each copy a distinct session at the target)
    #[arg(short = 'n', long = "copies", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1023))]
    pub copies: u16,
    /// Copy k of a session uses the client port shifted by k times this
    #[arg(long = "port-shift", value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..))]
    pub port_shift: u16,
    /// This instance's number (C TCPCopy's -f): every session's client port is shifted by
    /// F × 2048, so that tcpcopy instances with different numbers replicating the same clients to
    /// one target do not collide (0: no shift)
    #[arg(short = 'f', long = "instance", value_name = "F", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub instance: u16,
    /// Replicate only sessions whose handshake was captured, not those already open when
    /// tcpcopy started (C TCPCopy's -O)
    #[arg(short = 'O', long = "only-full-sessions")]
    pub only_full_sessions: bool,
    /// Start with 1 % of the connections and take one point more each second, up to -r (C
    /// TCPCopy's -g)
    #[arg(short = 'g', long = "gradual")]
    pub gradual: bool,
    /// Source address for clients on the loopback network, which the target cannot answer (C
    /// TCPCopy's -H); -c takes precedence
    #[arg(short = 'H', long = "localhost-as", value_name = "IP")]
    pub localhost_as: Option<IpAddr>,
    /// Keep replicating while an intercept is unreachable (C TCPCopy's -L; always the case here:
    /// tcpcopy reconnects and goes on)
    #[arg(short = 'L', long = "lonely")]
    pub lonely: bool,
    /// Capture ring size in MB, per capture thread (C TCPCopy's -B; default 64)
    #[arg(short = 'B', long = "capture-buffer", value_name = "MB", value_parser = clap::value_parser!(u32).range(1..=16_384))]
    pub capture_buffer: Option<u32>,
    /// C TCPCopy's session pool size: accepted and ignored (sessions are allocated as needed)
    #[arg(short = 'U', value_name = "KB", hide = true)]
    pub session_pool: Option<String>,
    /// C TCPCopy's snap length: refused (every byte must reach the target)
    #[arg(short = 'S', value_name = "SNAPLEN", hide = true)]
    pub snaplen: Option<String>,
    /// Replicate this percentage of client connections (whole connections, the same ones every run)
    #[arg(short = 'r', long = "percent", value_name = "P", default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub percent: u8,
    /// Memory cap in MB for the sessions (2 KiB each) and the client data they hold for the
    /// target; one session may hold a quarter. Half-open sessions (handshake not completed online)
    /// are shed first; then a session that would pass either is dropped and counted as overflow
    #[arg(short = 'm', long = "memory", value_name = "MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub memory: u64,
    #[command(flatten)]
    pub common: CommonOpts,
    /// How packets reach the target: `ip` (the default) lets the kernel route every packet (raw
    /// socket: netfilter OUTPUT/POSTROUTING, IPsec policies and mark-based routing apply); `link`
    /// hands IPv4 packets straight to the device with the next hop's hardware address (looked up
    /// once per destination and checked every second), skipping all of those, for less CPU
    #[arg(long = "send-layer", value_enum, value_name = "LAYER")]
    pub send_layer: Option<SendLayer>,
    /// Send at the link layer (as --send-layer link), only through this device; packets routed
    /// out of another device are routed by the kernel
    #[arg(short = 'o', long = "output-device", value_name = "DEV")]
    pub output_device: Option<String>,
    /// Longest a captured packet waits before it is replicated, in ms (1-50): the kernel hands
    /// the capture over in blocks at least this often. Longer waits make larger batches and
    /// cost less CPU per request
    #[arg(long = "capture-wait", value_name = "MS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub capture_wait: u32,
    /// Seconds between statistics lines in the log (0: only at exit)
    #[arg(long = "stats-interval", default_value_t = 10)]
    pub stats_interval: u64,
    /// Stop after this many seconds (0: run until SIGINT/SIGTERM)
    #[arg(long = "duration", default_value_t = 0)]
    pub duration: u64,
    /// Capture only what this tcpdump expression (pcap-filter(7)) also matches, e.g. 'not host
    /// 198.18.0.7': it narrows the capture tcpcopy sets up from -x, in the kernel
    #[arg(short = 'F', long = "filter", value_name = "EXPR")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub report: ReportOpts,
    #[command(flatten)]
    pub database: DatabaseOpts,
    #[command(flatten)]
    pub stream: StreamOpts,
}

/// Sessions whose login does not replay as bytes: databases.
#[derive(Debug, Args)]
#[command(next_help_heading = "Databases")]
pub struct DatabaseOpts {
    /// The sessions' protocol, when their login must be made again for the target: `mysql`
    /// (MySQL, MariaDB) answers the target's own greeting (its salt) with the password --login
    /// gives for the client's user, `postgres` (PostgreSQL) the target's own SCRAM-SHA-256, md5
    /// or password request; both log sessions open before tcpcopy started in, and skip sessions
    /// that use TLS; `auto` does so for the sessions found to be MySQL or PostgreSQL (from the
    /// client's first packet or the target's greeting) and leaves the others as bytes
    #[arg(long = "protocol", value_name = "PROTOCOL")]
    pub protocol: Option<dialect::Protocol>,
    /// Log in at the target as USER with PASSWORD (repeatable); without a password for its
    /// user, a session's own login goes (which only a target that checks no passwords takes).
    /// Prefer --login-file: a command line is visible to every local user
    #[arg(long = "login", value_name = "USER:PASSWORD")]
    pub login: Vec<dialect::Login>,
    /// Read --login entries from FILE, one USER:PASSWORD a line (# starts a comment)
    #[arg(long = "login-file", value_name = "FILE")]
    pub login_file: Option<PathBuf>,
}

/// How the sessions reach the target: forged packets (packet mode), or connections of this host's
/// own (stream mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Packets with the clients' addresses, answers caught by intercept
    Packet,
    /// A TCP connection from this host per session: no intercept, passes NAT
    Stream,
}

/// Stream mode (`--mode stream`) and its options.
#[derive(Debug, Args)]
#[command(next_help_heading = "Stream mode")]
pub struct StreamOpts {
    /// `packet` (the default) sends forged packets with the clients' addresses and reads the
    /// answers from intercept; `stream` replays each session over a TCP connection from this host
    /// (no intercept, no route, no root on the target; passes NAT; the target sees this host as
    /// the client, unless --proxy-protocol)
    #[arg(long = "mode", value_enum, value_name = "MODE", default_value_t = Mode::Packet)]
    pub mode: Mode,
    /// Stream mode: begin each connection with a PROXY protocol v2 header carrying the real
    /// client's address
    #[arg(long = "proxy-protocol")]
    pub proxy_protocol: bool,
    /// Stream mode: speak TLS to the target (rustls; the server's certificate is checked against
    /// the Mozilla roots, or --target-ca)
    #[arg(long = "target-tls")]
    pub target_tls: bool,
    /// Stream mode with TLS: trust these certificate authorities (PEM file) instead of the
    /// Mozilla roots
    #[arg(long = "target-ca", value_name = "FILE")]
    pub target_ca: Option<PathBuf>,
    /// Stream mode with TLS: the server name to ask for and check the certificate against
    /// (default: the target's IP address)
    #[arg(long = "target-sni", value_name = "NAME")]
    pub target_sni: Option<String>,
    /// Stream mode with TLS: accept any certificate (test targets only: no protection against a
    /// man in the middle)
    #[arg(long = "target-insecure")]
    pub target_insecure: bool,
}

/// What the target answered, compared with production, and the reports of a run.
#[derive(Debug, Args)]
#[command(next_help_heading = "Comparison and reports")]
pub struct ReportOpts {
    /// Compare the target's answers with the online server's (captured too): HTTP/1.x by status,
    /// headers and body, any other protocol by digest and first bytes
    #[arg(long = "compare")]
    pub compare: bool,
    /// First bytes of each answer intercept forwards and the comparison keeps (16-65535)
    #[arg(long = "compare-bytes", value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u16).range(16..))]
    pub compare_bytes: u16,
    /// HTTP header left out of the comparison, added to the defaults (Date, Server, Age,
    /// Expires, Last-Modified, ETag, Set-Cookie, X-Request-Id, Keep-Alive, Connection); `-NAME`
    /// compares a default one again
    #[arg(long = "ignore-header", value_name = "NAME")]
    pub ignore_header: Vec<String>,
    /// A second target running production's version, fed the same sessions: differences it shows
    /// as well are reported as noise, not as regressions
    #[arg(long = "baseline", value_name = "ADDR:PORT")]
    pub baseline: Option<std::net::SocketAddr>,
    /// Write the JSON report here at exit (schema: docs/report.schema.json)
    #[arg(long = "report", value_name = "FILE.json")]
    pub report_json: Option<PathBuf>,
    /// Write a self-contained HTML report here at exit
    #[arg(long = "report-html", value_name = "FILE.html")]
    pub report_html: Option<PathBuf>,
    /// Exit with status 3 when more than PCT % of the compared requests differ
    #[arg(long = "fail-on-diff", value_name = "PCT")]
    pub fail_on_diff: Option<f64>,
    /// Exit with status 3 when more than PCT % of the online requests were lost
    #[arg(long = "fail-on-loss", value_name = "PCT")]
    pub fail_on_loss: Option<f64>,
    /// Serve Prometheus metrics on ADDR:PORT (GET /metrics)
    #[arg(long = "metrics", value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, Parser)]
#[command(
    name = "intercept",
    version,
    disable_version_flag = true,
    about = "Catch a target server's responses and stream them to tcpcopy"
)]
pub struct InterceptCli {
    /// Assistant mode: capture on these interfaces, dev[,dev] (`any`: all of them). Without -i,
    /// intercept runs in queue mode
    #[arg(short = 'i', long = "interface", value_name = "DEV[,DEV]")]
    pub interface: Option<String>,
    /// Queue mode (the mode without -i): run on the target, read its responses from NFQUEUE and
    /// drop them. With --port, intercept adds the iptables rule itself (and removes it at exit);
    /// without, it reads the queue that the operator's rule fills (`iptables -I OUTPUT -p tcp
    /// --sport PORT -j NFQUEUE`)
    #[arg(long = "queue")]
    pub queue: bool,
    /// Service port(s) whose responses to catch: port[,port] (queue mode: intercept adds its
    /// NFQUEUE rule for them; assistant mode: narrows the capture, which otherwise ignores only
    /// TCP to or from the listen port)
    #[arg(long = "port", value_name = "PORTS", value_parser = crate::config::parse_ports)]
    pub service_ports: Option<std::vec::Vec<u16>>,
    /// NFQUEUE number for queue mode
    #[arg(long = "queue-num", default_value_t = 0)]
    pub queue_num: u16,
    /// Queue mode: packets the kernel queues at most before it drops new ones (C intercept's -q)
    #[arg(short = 'q', long = "queue-length", value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_length: u32,
    /// Queue mode: responses to these addresses pass (are neither dropped nor reported), e.g.
    /// a monitoring host's (C intercept's -x): ip[,ip]
    #[arg(short = 'x', long = "pass", value_name = "IPS", value_parser = crate::config::parse_ip_list)]
    pub pass: Option<std::vec::Vec<IpAddr>>,
    /// C intercept's docker address pairs: refused (run intercept in the container's network
    /// namespace instead)
    #[arg(short = 'D', value_name = "PAIRS", hide = true)]
    pub docker: Option<String>,
    /// Listen port for tcpcopy connections
    #[arg(short = 'p', long = "listen-port", default_value_t = protocol::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub listen_port: u16,
    /// Listen address
    #[arg(short = 'b', long = "bind", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Allowed tcpcopy hosts: ip[,ip] (default: any)
    #[arg(long = "allow", value_name = "IPS", value_parser = crate::config::parse_ip_list)]
    pub allow: Option<std::vec::Vec<IpAddr>>,
    /// Let in only a tcpcopy that proves this secret, and encrypt the channel (a file readable
    /// by its owner only, read once at start; tcpcopy needs the same file)
    #[arg(long = "secret-file", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Testing: milliseconds added to every time this intercept reports (a host whose clock is off)
    #[arg(
        long = "clock-offset-ms",
        value_name = "MS",
        hide = true,
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub clock_offset_ms: i64,
    /// Capture threads per interface (assistant mode): the kernel spreads flows over them
    /// (PACKET_FANOUT)
    #[arg(long = "threads", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Responses batched per message at most (a batch also leaves at the end of each capture round)
    #[arg(short = 'n', long = "batch", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub batch: u16,
    /// Seconds a session route is kept without traffic
    #[arg(short = 't', long = "route-timeout", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub route_timeout: u64,
    /// Session hash size (accepted for compatibility; the table grows as needed)
    #[arg(short = 's', long = "hash-size")]
    pub hash_size: Option<u32>,
    /// Prometheus endpoint: serve GET /metrics on this address
    #[arg(long = "metrics", value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Assistant mode: capture only responses this tcpdump expression (pcap-filter(7)) also
    /// matches, e.g. 'tcp and src port 80', in the kernel
    #[arg(short = 'F', long = "filter", value_name = "EXPR")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub common: CommonOpts,
    /// Print version
    #[arg(short = 'v', long = "version", short_alias = 'V', action = clap::ArgAction::Version)]
    pub version: (),
    #[command(flatten)]
    pub file: ConfigFileOpts,
}

/// Options both programs share.
#[derive(Debug, Args)]
pub struct CommonOpts {
    /// Log file (default: stderr)
    #[arg(short = 'l', long = "log")]
    pub log: Option<PathBuf>,
    /// Pid file
    #[arg(short = 'P', long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Run in the background, once started (as C TCPCopy's -d); without -l, the log goes to
    /// /var/log/PROGRAM.log
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Debug logging
    #[arg(long = "debug")]
    pub debug: bool,
    /// Log lines as text, or as JSON objects (one per line; the statistics as fields)
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses `argv` (with its `--config FILE` when `P` has that option), printing a one-line error
/// and exiting with status 2 on bad options; `--print-config` prints and exits with status 0.
pub fn parse_or_exit<P: Parser>() -> P {
    let name = P::command().get_name().to_string();
    match crate::conffile::parse::<P>(std::env::args_os().collect()) {
        Ok(Parsed::Run(p)) => p,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            std::process::exit(0)
        }
        Err(ParseError::Clap(e)) => exit_with(&name, e),
        Err(ParseError::File(e)) => usage_error(&name, &e.to_string()),
    }
}

/// Prints help/version normally; everything else as one line, exit 2.
pub fn exit_with(name: &str, e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let text = e.to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid options")
                .trim();
            // clap's "tip: a similar argument exists" goes on the same line.
            let tip = match e.get(clap::error::ContextKind::SuggestedArg) {
                Some(clap::error::ContextValue::String(s)) => format!(" (did you mean {s}?)"),
                Some(clap::error::ContextValue::Strings(s)) if !s.is_empty() => {
                    format!(" (did you mean {}?)", s.join(" or "))
                }
                _ => String::new(),
            };
            eprintln!("{name}: {}{tip}", line.trim_start_matches("error: "));
            std::process::exit(crate::EXIT_USAGE)
        }
    }
}

/// A one-line usage error for a rule clap cannot express.
pub fn usage_error(program: &str, msg: &str) -> ! {
    eprintln!("{program}: {msg}");
    std::process::exit(crate::EXIT_USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_command_lines_parse() {
        use clap::CommandFactory;
        TcpcopyCli::command().debug_assert();
        InterceptCli::command().debug_assert();
        let t = TcpcopyCli::try_parse_from([
            "tcpcopy",
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "198.18.0.40",
            "-c",
            "198.19.0.0/24",
            "-t",
            "30",
            "-W",
        ])
        .unwrap();
        assert_eq!(t.opts.transfer.unwrap().len(), 1);
        assert_eq!(t.opts.fake_client.unwrap().len(), 254);
        let i = InterceptCli::try_parse_from([
            "intercept",
            "--queue",
            "--port",
            "80,8080",
            "--allow",
            "198.18.0.20",
        ])
        .unwrap();
        assert_eq!(i.service_ports.unwrap(), vec![80, 8080]);
        assert_eq!(i.allow.unwrap().len(), 1);
        assert_eq!(i.clock_offset_ms, 0);
        let skewed =
            InterceptCli::try_parse_from(["intercept", "--clock-offset-ms", "-3002"]).unwrap();
        assert_eq!(skewed.clock_offset_ms, -3002);
        let help = InterceptCli::command().render_help().to_string();
        assert!(
            !help.contains("clock-offset"),
            "a testing option stays out of --help"
        );
    }

    #[test]
    fn check_as_the_first_word_takes_a_runs_options() {
        let args = [
            "tcpcopy",
            "check",
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "198.18.0.40",
        ];
        match TcpcopyCommand::parse_from(args) {
            Ok(TcpcopyCommand::Check(cli)) => {
                assert_eq!(cli.opts.transfer.unwrap()[0].target.port(), 80);
                assert!(cli.opts.intercept.is_some());
            }
            other => panic!("not a check: {other:?}"),
        }
        // Elsewhere, `check` is no option.
        let late = TcpcopyCommand::parse_from(["tcpcopy", "-x", "80-198.18.0.30:80", "check"]);
        assert!(late.is_err());
        assert!(matches!(
            TcpcopyCommand::parse_from(["tcpcopy", "check", "--bogus"]),
            Err(CommandLineError::Clap(_))
        ));
    }

    #[test]
    fn clap_error_names_the_option() {
        let e = TcpcopyCli::try_parse_from(["tcpcopy", "-x", "80"]).unwrap_err();
        let first = e.to_string().lines().next().unwrap().to_string();
        assert!(first.contains("--transfer"), "{first}");
    }
}
