//! One replication setup in a lab: four namespaces, an online and a target server, `intercept` in
//! assistant or queue mode, and `tcpcopy` on the online host, both run as processes from their
//! binaries' directory; optionally a baseline host with its own intercept ([`baseline`]), for
//! comparisons. Shared by `tcpcopy demo`, the load harness (`tcpcopy-bench`) and the end-to-end
//! tests, so that all three exercise the same deployment. Also the checks every replicating run
//! makes ([`checks`]): the [`Sniffer`] that counts target packets reaching the client, and
//! [`proc_usage`] for the programs' CPU and memory.
//!
//! It drives the programs only through their command lines, logs and report files: it links none
//! of their code.

mod baseline;
mod checks;
mod programs;

pub use baseline::{read_report, ASSISTANT2_IP, BASELINE_IP};
pub use checks::{proc_usage, Sniffer};

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::mariadb::{Mariadb, MariadbAuth};
use crate::memcache::Memcached;
use crate::plan::AnswerPlan;
use crate::postgres::{PgAuth, PostgresServer};
use crate::redis::RedisServer;
use crate::stream::{Answer, StreamServer};
use crate::{loadgen, Child, HttpServer, Lab, LabSpec, LoadReport, LoadSpec, Nginx, ScratchDir};
use anyhow::Context;
use baseline::Baseline;
use programs::{base_tcpcopy_args, spawn_intercept, stop_child, wait_log};

/// In tcpcopy's arguments, replaced by the scenario's scratch directory (e.g.
/// `--report {scratch}/report.json`, read back with [`Scenario::read_report`]).
pub const SCRATCH: &str = "{scratch}";

/// Where the target's responses are caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `intercept` on the assistant host; tcpcopy uses fake client addresses (`-c`).
    Assistant,
    /// `intercept -q` on the target; real client addresses kept.
    Queue,
    /// `tcpcopy --mode stream`: no intercept, a connection from the online host per session
    /// (no `-s`, no `-c`).
    Stream,
}

/// Which servers answer on the online and target hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Servers {
    /// The lab's embedded HTTP server (no package needed).
    Embedded,
    /// nginx (package nginx-light).
    Nginx,
    /// The lab's byte-recording stream server (see [`crate::stream`]).
    Stream(Answer),
    /// redis-server (package redis-server), no persistence.
    Redis,
    /// memcached (package memcached) with 2 GB of cache, enough for the hot-backup test's
    /// 100,000 sets of up to 100 KB without evictions.
    Memcached,
    /// PostgreSQL (package postgresql) authenticating TCP clients so (see [`crate::postgres`]).
    Postgres(PgAuth),
    /// mariadbd (packages mariadb-server, mariadb-client), see [`crate::mariadb`].
    Mariadb(MariadbAuth),
}

impl Servers {
    /// The service port the servers listen on (and tcpcopy replicates).
    pub fn port(self) -> u16 {
        match self {
            Servers::Embedded | Servers::Nginx | Servers::Stream(_) => 80,
            Servers::Redis => 6379,
            Servers::Memcached => 11211,
            Servers::Postgres(_) => crate::postgres::PORT,
            Servers::Mariadb(_) => 3306,
        }
    }
}

pub struct ScenarioSpec {
    pub tag: String,
    pub mode: Mode,
    pub servers: Servers,
    /// Directory holding the `tcpcopy` and `intercept` binaries.
    pub bin_dir: PathBuf,
    pub extra_tcpcopy_args: Vec<String>,
    pub extra_intercept_args: Vec<String>,
    /// Start intercept (false: the test starts it later with [`Scenario::start_intercept`]).
    pub start_intercept: bool,
    /// Start tcpcopy (false: later, with [`Scenario::start_tcpcopy`]).
    pub start_tcpcopy: bool,
    /// Leave TSO/GSO/GRO on the lab's interfaces (the veth default): captures see super-segments.
    pub offload: bool,
    /// Receive on kernel threads (see [`LabSpec::threaded_receive`]), so that each program's
    /// CPU time is its own host's work only.
    pub threaded_receive: bool,
    /// Replicate over IPv6: clients reach the online server at its IPv6 address, tcpcopy sends
    /// to the target's IPv6 address (fake clients from an IPv6 range in assistant mode).
    pub ipv6: bool,
    /// The target's servers, when not `servers` (e.g. nginx online, the embedded server at the
    /// target); same service port.
    pub target_servers: Option<Servers>,
    /// A baseline host at [`BASELINE_IP`] with these servers and its own intercept (in assistant
    /// mode on a second assistant host at [`ASSISTANT2_IP`]); tcpcopy gets `--baseline` and both
    /// intercepts. IPv4 only.
    pub baseline: Option<Servers>,
    /// How the embedded servers answer (see [`crate::plan`]); plain by default.
    pub plans: Plans,
    /// The user tcpcopy and intercept run as, with only `CAP_NET_RAW` and `CAP_NET_ADMIN`
    /// (`None`: root). Default: `TCPCOPY_LAB_USER` (see [`crate::unprivileged`]).
    pub run_as: Option<String>,
}

/// The answer plans of the embedded servers, per host.
#[derive(Clone, Debug, Default)]
pub struct Plans {
    pub online: AnswerPlan,
    pub target: AnswerPlan,
    pub baseline: AnswerPlan,
}

impl ScenarioSpec {
    /// Both programs started, offloads off, no extra tcpcopy options.
    pub fn new(tag: &str, mode: Mode, servers: Servers, bin_dir: PathBuf) -> ScenarioSpec {
        ScenarioSpec {
            tag: tag.into(),
            mode,
            servers,
            bin_dir,
            extra_tcpcopy_args: Vec::new(),
            extra_intercept_args: Vec::new(),
            start_intercept: true,
            start_tcpcopy: true,
            offload: false,
            threaded_receive: false,
            ipv6: false,
            target_servers: None,
            baseline: None,
            plans: Plans::default(),
            run_as: crate::unprivileged::user(),
        }
    }
}

enum Server {
    Embedded(HttpServer),
    Nginx(Nginx),
    Stream(StreamServer),
    /// Held for their `Drop`, which stops the server.
    #[allow(dead_code)]
    Redis(RedisServer),
    #[allow(dead_code)]
    Memcached(Memcached),
    Postgres(PostgresServer),
    Mariadb(Mariadb),
}

impl Server {
    fn uris(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Server::Embedded(s) => Ok(s.log().uris()),
            Server::Nginx(n) => n.access_log(),
            Server::Stream(_)
            | Server::Redis(_)
            | Server::Memcached(_)
            | Server::Postgres(_)
            | Server::Mariadb(_) => {
                anyhow::bail!("only HTTP servers keep a request log")
            }
        }
    }
    fn pid(&self) -> Option<u32> {
        match self {
            Server::Embedded(_) | Server::Stream(_) | Server::Redis(_) => None,
            Server::Memcached(m) => Some(m.pid()),
            Server::Mariadb(m) => Some(m.pid()),
            Server::Nginx(n) => Some(n.pid()),
            Server::Postgres(p) => Some(p.pid()),
        }
    }
    fn stream(&self) -> Option<&StreamServer> {
        match self {
            Server::Stream(s) => Some(s),
            _ => None,
        }
    }
    fn postgres(&self) -> Option<&PostgresServer> {
        match self {
            Server::Postgres(p) => Some(p),
            _ => None,
        }
    }
}

pub struct Scenario {
    // Field order is drop order: processes and servers go before the lab that holds their namespaces.
    extra_online: Vec<ExtraOnline>,
    baseline: Option<Baseline>,
    pub tcpcopy: Option<Child>,
    pub intercept: Option<Child>,
    online: Server,
    target: Server,
    pub lab: Lab,
    pub scratch: ScratchDir,
    spec_mode: Mode,
    servers: Servers,
    ipv6: bool,
    port: u16,
    bin_dir: PathBuf,
    tcpcopy_args: Vec<String>,
    intercept_args: Vec<String>,
}

/// A further online host: its own server and its own tcpcopy, feeding the same target and intercept.
pub struct ExtraOnline {
    pub tcpcopy: Option<Child>,
    _server: Server,
    pub addr: SocketAddr,
}

fn start_server(
    lab: &Lab,
    scratch: &ScratchDir,
    servers: Servers,
    ns: &str,
    ip: Ipv4Addr,
    name: &str,
    plan: &AnswerPlan,
) -> anyhow::Result<Server> {
    let addr = SocketAddrV4::new(ip, servers.port());
    Ok(match servers {
        Servers::Stream(answer) => {
            Server::Stream(lab.run_in(ns, || StreamServer::start(addr.into(), answer))?)
        }
        Servers::Redis => Server::Redis(RedisServer::start(
            lab,
            ns,
            addr,
            &scratch.path().join(name),
            &scratch.path().join(format!("redis-{name}.log")),
        )?),
        Servers::Memcached => Server::Memcached(Memcached::start(
            lab,
            ns,
            addr,
            2048,
            &scratch.path().join(format!("memcached-{name}.log")),
        )?),
        Servers::Mariadb(auth) => Server::Mariadb(Mariadb::start(
            lab,
            ns,
            addr,
            &scratch.path().join(format!("mariadb-{name}")),
            &scratch.path().join(format!("mariadb-{name}.log")),
            auth,
        )?),
        Servers::Embedded => {
            let plan = plan.clone();
            Server::Embedded(lab.run_in(ns, || HttpServer::start_with(addr.into(), plan))?)
        }
        Servers::Nginx => Server::Nginx(Nginx::start(lab, ns, addr, &scratch.path().join(name))?),
        Servers::Postgres(auth) => Server::Postgres(PostgresServer::start(
            lab,
            ns,
            addr,
            auth,
            &scratch.path().join(format!("postgres-{name}")),
            &scratch.path().join(format!("postgres-{name}.log")),
        )?),
    })
}

pub const SERVICE_PORT: u16 = 80;

impl Scenario {
    pub fn online_addr() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Lab::ONLINE_IP), SERVICE_PORT)
    }

    pub fn start(spec: &ScenarioSpec) -> anyhow::Result<Scenario> {
        crate::netlab::cleanup_orphans(&spec.tag);
        let target_servers = spec.target_servers.unwrap_or(spec.servers);
        anyhow::ensure!(
            target_servers.port() == spec.servers.port(),
            "the target's servers must listen on the online service port"
        );
        anyhow::ensure!(
            !(spec.ipv6 && spec.baseline.is_some()),
            "the baseline host is IPv4 only"
        );
        anyhow::ensure!(
            !(spec.mode == Mode::Stream && spec.baseline.is_some()),
            "no baseline host in stream mode"
        );
        let mut lab = Lab::create(&LabSpec {
            offload: spec.offload,
            threaded_receive: spec.threaded_receive,
            ..LabSpec::unique(&spec.tag)
        })
        .context("building the lab")?;
        lab.set_run_as(spec.run_as.clone());
        let scratch = ScratchDir::new(&spec.tag)?;
        let port = spec.servers.port();
        let baseline = match spec.baseline {
            Some(servers) => Some(Baseline::start(&mut lab, &scratch, spec, servers)?),
            None => None,
        };
        let plans = &spec.plans;
        let online = start_server(
            &lab,
            &scratch,
            spec.servers,
            lab.ns_online(),
            Lab::ONLINE_IP,
            "online",
            &plans.online,
        )?;
        let target = start_server(
            &lab,
            &scratch,
            target_servers,
            lab.ns_target(),
            Lab::TARGET_IP,
            "target",
            &plans.target,
        )?;
        let mut sc = Scenario {
            extra_online: Vec::new(),
            baseline,
            servers: spec.servers,
            tcpcopy: None,
            intercept: None,
            online,
            target,
            lab,
            scratch,
            spec_mode: spec.mode,
            ipv6: spec.ipv6,
            port,
            bin_dir: spec.bin_dir.clone(),
            tcpcopy_args: Vec::new(),
            intercept_args: spec.extra_intercept_args.clone(),
        };
        let start_intercept = spec.start_intercept && spec.mode != Mode::Stream;
        if start_intercept {
            sc.start_intercept()?;
        }
        let mut args = base_tcpcopy_args(spec, sc.baseline.as_ref().map(Baseline::intercept_ip));
        args.extend(spec.extra_tcpcopy_args.iter().cloned());
        sc.tcpcopy_args = sc.with_scratch(&args);
        if spec.start_tcpcopy {
            sc.start_tcpcopy()?;
            if start_intercept || spec.mode == Mode::Stream {
                sc.wait_connected(Duration::from_secs(15))?;
            }
        }
        Ok(sc)
    }

    /// Starts tcpcopy on the online host.
    pub fn start_tcpcopy(&mut self) -> anyhow::Result<()> {
        let log = self.scratch.path().join("tcpcopy.log");
        let exe = self.bin_dir.join("tcpcopy");
        self.tcpcopy =
            Some(
                self.lab
                    .spawn(self.lab.ns_online(), &exe, &self.tcpcopy_args, &log)?,
            );
        Ok(())
    }

    /// Adds online host `role` at `ip` with the same kind of server and its own tcpcopy, started
    /// with the usual options, `-c` replaced by `fake_clients` (each tcpcopy needs its own fake
    /// range in assistant mode, or two of them could pick the same endpoint at the target). Returns
    /// the host's index for [`Scenario::extra_online`].
    pub fn add_online_host(
        &mut self,
        role: &str,
        ip: Ipv4Addr,
        fake_clients: &str,
    ) -> anyhow::Result<usize> {
        let ns = self.lab.add_host(role, ip)?;
        let plan = AnswerPlan::plain();
        let server = start_server(&self.lab, &self.scratch, self.servers, &ns, ip, role, &plan)?;
        let mut args = Vec::new();
        let mut it = self.tcpcopy_args.iter();
        while let Some(a) = it.next() {
            if a == "-c" {
                it.next();
            } else {
                args.push(a.clone());
            }
        }
        if self.spec_mode == Mode::Assistant {
            args.extend(["-c".to_string(), fake_clients.to_string()]);
        }
        let log = self.scratch.path().join(format!("tcpcopy-{role}.log"));
        let child = self
            .lab
            .spawn(&ns, &self.bin_dir.join("tcpcopy"), &args, &log)?;
        self.extra_online.push(ExtraOnline {
            tcpcopy: Some(child),
            _server: server,
            addr: SocketAddr::new(IpAddr::V4(ip), self.port),
        });
        Ok(self.extra_online.len() - 1)
    }

    /// Waits until the tcpcopy of extra online host `i` connected to intercept.
    pub fn wait_extra_connected(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let child = self.extra_online[i].tcpcopy.as_ref();
        wait_log(child, "connected to intercept", 1, timeout)
    }

    pub fn extra_online(&self, i: usize) -> &ExtraOnline {
        &self.extra_online[i]
    }

    /// Stops the tcpcopy of extra online host `i`; returns its log.
    pub fn stop_extra_tcpcopy(&mut self, i: usize) -> anyhow::Result<String> {
        stop_child(&mut self.extra_online[i].tcpcopy, "tcpcopy")
    }

    /// Starts tcpcopy on the online host with the usual options plus `extra` (e.g. `-i FILE`).
    pub fn start_tcpcopy_with(&mut self, extra: &[String]) -> anyhow::Result<()> {
        let mut args = self.tcpcopy_args.clone();
        args.extend(self.with_scratch(extra));
        let n = std::fs::read_dir(self.scratch.path())?.count();
        let log = self.scratch.path().join(format!("tcpcopy-{n}.log"));
        let exe = self.bin_dir.join("tcpcopy");
        self.tcpcopy = Some(self.lab.spawn(self.lab.ns_online(), &exe, &args, &log)?);
        Ok(())
    }

    /// Waits up to `timeout` for tcpcopy to end by itself (a replay does); returns its exit
    /// status and log.
    pub fn wait_tcpcopy_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, String)> {
        let mut c = self.tcpcopy.take().context("tcpcopy not running")?;
        let status = c.wait_timeout(timeout)?;
        let log = c.log_text();
        match status {
            Some(status) => Ok((status, log)),
            None => {
                let _ = c.stop();
                anyhow::bail!("tcpcopy did not finish within {timeout:?}:\n{log}")
            }
        }
    }

    /// Starts tcpdump on the online host, writing the service's packets to `file`.
    pub fn start_tcpdump(&self, file: &Path) -> anyhow::Result<Child> {
        let log = self.scratch.path().join("tcpdump.log");
        let args: Vec<String> = [
            "-i",
            Lab::IFACE,
            "-U",
            "--immediate-mode",
            "-B",
            "65536",
            "-s",
            "0",
            "-w",
            &file.display().to_string(),
            "tcp",
            "port",
            &self.port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = self
            .lab
            .spawn(self.lab.ns_online(), Path::new("tcpdump"), &args, &log)?;
        // tcpdump says "listening on ..." once its capture is open.
        wait_log(Some(&child), "listening on", 1, Duration::from_secs(10))?;
        Ok(child)
    }

    /// Starts (or restarts) intercept in the namespace the mode calls for.
    pub fn start_intercept(&mut self) -> anyhow::Result<()> {
        let ns = match self.spec_mode {
            Mode::Assistant => self.lab.ns_assistant(),
            Mode::Queue => self.lab.ns_target(),
            Mode::Stream => anyhow::bail!("no intercept in stream mode"),
        };
        let child = spawn_intercept(
            &self.lab,
            &self.scratch,
            &self.bin_dir,
            ns,
            self.spec_mode,
            self.port,
            &self.intercept_args,
        )?;
        self.intercept = Some(child);
        Ok(())
    }

    /// Waits until tcpcopy logged a (new) connection to intercept (in stream mode: that it
    /// captures).
    pub fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        if self.spec_mode == Mode::Stream {
            return self.wait_tcpcopy_log("capturing on", 1, timeout);
        }
        self.wait_tcpcopy_log("connected to intercept", 1, timeout)
    }

    /// Waits until `needle` appears at least `count` times in tcpcopy's log.
    pub fn wait_tcpcopy_log(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_log(self.tcpcopy.as_ref(), needle, count, timeout)
    }

    pub fn tcpcopy_log(&self) -> String {
        self.tcpcopy
            .as_ref()
            .map(|c| c.log_text())
            .unwrap_or_default()
    }

    pub fn intercept_log(&self) -> String {
        self.intercept
            .as_ref()
            .map(|c| c.log_text())
            .unwrap_or_default()
    }

    /// Runs the load generator in the client namespace against the online server.
    pub fn load(&self, spec: &LoadSpec) -> anyhow::Result<LoadReport> {
        self.lab.run_in(self.lab.ns_client(), || loadgen::run(spec))
    }

    pub fn online_uris(&self) -> anyhow::Result<Vec<String>> {
        self.online.uris()
    }

    pub fn target_uris(&self) -> anyhow::Result<Vec<String>> {
        self.target.uris()
    }

    /// Polls the target's request log until it holds `n` requests or `timeout` passes.
    pub fn wait_target(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut last = (0, Instant::now());
        loop {
            let uris = self.target.uris()?;
            if uris.len() >= n || Instant::now() >= deadline {
                return Ok(uris);
            }
            // Give up early when nothing moved for 10 s.
            if uris.len() != last.0 {
                last = (uris.len(), Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(10) {
                return Ok(uris);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The online and the target service address (IPv6 ones in an IPv6 scenario).
    pub fn online_service(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip(Lab::ONLINE_IP), self.port)
    }

    pub fn target_service(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip(Lab::TARGET_IP), self.port)
    }

    /// The online and the target MariaDB servers ([`Servers::Mariadb`]), to read their rows.
    pub fn mariadbs(&self) -> Option<(&Mariadb, &Mariadb)> {
        match (&self.online, &self.target) {
            (Server::Mariadb(online), Server::Mariadb(target)) => Some((online, target)),
            _ => None,
        }
    }

    fn host_ip(&self, v4: Ipv4Addr) -> IpAddr {
        if self.ipv6 {
            IpAddr::V6(Lab::ip6_of(v4))
        } else {
            IpAddr::V4(v4)
        }
    }

    /// The stream servers (online, target), for [`Servers::Stream`].
    pub fn stream_servers(&self) -> Option<(&StreamServer, &StreamServer)> {
        Some((self.online.stream()?, self.target.stream()?))
    }

    /// Drops `percent` of the service's packets at random on the target host, in both directions
    /// (iptables `statistic`; the rules go with the namespace).
    pub fn inject_target_loss(&self, percent: f64) -> anyhow::Result<()> {
        let p = format!("{:.4}", percent / 100.0);
        let port = self.port.to_string();
        for (chain, dir) in [("INPUT", "--dport"), ("OUTPUT", "--sport")] {
            self.lab.sh(
                self.lab.ns_target(),
                &[
                    "iptables",
                    "-I",
                    chain,
                    "-p",
                    "tcp",
                    dir,
                    &port,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Packets the loss rules dropped so far (INPUT, OUTPUT).
    pub fn injected_drops(&self) -> anyhow::Result<(u64, u64)> {
        let count = |chain: &str| -> anyhow::Result<u64> {
            let out = self.lab.sh(
                self.lab.ns_target(),
                &["iptables", "-L", chain, "-v", "-n", "-x"],
            )?;
            Ok(out
                .lines()
                .filter(|l| l.contains("statistic"))
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum())
        };
        Ok((count("INPUT")?, count("OUTPUT")?))
    }

    /// Restarts the target's server (nginx only), its request log kept: every connection it
    /// had closes.
    pub fn restart_target_server(&mut self) -> anyhow::Result<()> {
        match &mut self.target {
            Server::Nginx(n) => n.restart(&self.lab, self.lab.ns_target()),
            _ => anyhow::bail!("only an nginx target can be restarted"),
        }
    }

    pub fn online_server_pid(&self) -> Option<u32> {
        self.online.pid()
    }

    /// The online and the target PostgreSQL servers, with [`Servers::Postgres`].
    pub fn postgres(&self) -> Option<(&PostgresServer, &PostgresServer)> {
        self.online.postgres().zip(self.target.postgres())
    }

    /// Stops tcpcopy with SIGTERM and returns its log (with the final statistics line).
    pub fn stop_tcpcopy(&mut self) -> anyhow::Result<String> {
        stop_child(&mut self.tcpcopy, "tcpcopy")
    }

    pub fn stop_intercept(&mut self) -> anyhow::Result<String> {
        stop_child(&mut self.intercept, "intercept")
    }

    /// Starts counting, in the client namespace, every packet whose source is the target.
    pub fn sniff_client(&self) -> anyhow::Result<Sniffer> {
        Sniffer::start(
            self.lab.ns_client(),
            self.host_ip(Lab::TARGET_IP),
            self.host_ip(Lab::ONLINE_IP),
        )
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
}

/// tcpcopy's final statistics in its log: what follows `tcpcopy final: ` on the last line that
/// has it (a `session::Stats` line, which `str::parse` reads back).
pub fn final_line(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .find_map(|l| Some(l.split_once("tcpcopy final: ")?.1))
}

/// Lab runs of one process, one at a time: they share the machine's CPUs, and timing matters.
pub fn sequential() -> std::sync::MutexGuard<'static, ()> {
    static SEQUENTIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SEQUENTIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The directory of the running program, which must also hold the `tcpcopy` and `intercept`
/// binaries that a [`Scenario`] runs (`cargo build --release` puts them side by side).
pub fn programs_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running program")?;
    let dir = exe.parent().context("program without a directory")?;
    for name in ["tcpcopy", "intercept"] {
        anyhow::ensure!(
            dir.join(name).is_file(),
            "no {name} binary next to {} (build them with `cargo build --release`)",
            exe.display()
        );
    }
    Ok(dir.to_path_buf())
}
