//! The four-host lab: client, online, target and assistant network namespaces on one bridge.
//!
//! ```text
//!   {prefix}-cli  198.18.0.10 ─┐
//!   {prefix}-onl  198.18.0.20 ─┤ br0 in {prefix}-br
//!   {prefix}-tgt  198.18.0.30 ─┤   (target: 198.19.0.0/16 via 198.18.0.40)
//!   {prefix}-ast  198.18.0.40 ─┘   (assistant: ip_forward=0, so responses to fake clients die there)
//! ```
//!
//! Every host has `lo` and [`Lab::IFACE`] (a veth whose peer is a port of `br0`); the bridge lives in
//! its own namespace, so nothing is created in the root namespace. Reverse-path filtering is off
//! everywhere (tcpcopy sends with foreign source addresses). Unless [`LabSpec::offload`] is set,
//! segmentation offloads are disabled so captured segments are at most one MSS; see
//! [`Lab::notes`] for how. IPv6 (`2001:2::/64`, [`Lab::ip6_of`]) is configured when the kernel has it.
//!
//! A [`Lab`] removes everything it created when dropped, also during a panic: it kills every process
//! still inside its namespaces (never this process) and deletes the namespaces, which destroys the
//! veths and the bridge. It shells out only to `ip`, `sh` (its builtin `kill`) and, when present,
//! `ethtool`; sysctls are written through /proc from a thread inside the namespace.

use anyhow::{bail, Context as _};
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Grace period between SIGTERM and SIGKILL when cleaning up.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// `ip netns add` races on first use of /run/netns; labs of one process are created one at a time.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Unique and short, e.g. `"tcl1234"`; namespaces are `"{prefix}-cli"`, `"{prefix}-br"`, ...
    /// Letters, digits, `_` and `-` only.
    pub prefix: String,
    /// Leave TSO/GSO/GRO on (the veth default), for tests of re-segmentation. Default `false`.
    pub offload: bool,
    /// Receive on kernel threads, as separate machines would: every veth end gets NAPI (TSO off,
    /// GRO on, merging capped at one packet unless `offload`) in threaded mode. A plain veth hands
    /// a packet to the receiver inside the sender's send call, so the switch's and the receiving
    /// host's network stack run on the sender's CPU time; with this they run on `napi/...`
    /// kernel threads, and a process's CPU time is its own host's work. Default `false`.
    pub threaded_receive: bool,
}

impl LabSpec {
    pub fn new(prefix: impl Into<String>) -> LabSpec {
        LabSpec {
            prefix: prefix.into(),
            offload: false,
            threaded_receive: false,
        }
    }

    /// `{tag}{pid}`: unique per process; give each concurrent lab of a process its own tag.
    pub fn unique(tag: &str) -> LabSpec {
        LabSpec::new(format!("{tag}{}", process::id()))
    }
}

impl Default for LabSpec {
    /// `LabSpec::unique("tcl")`.
    fn default() -> LabSpec {
        LabSpec::unique("tcl")
    }
}

#[derive(Debug)]
struct Host {
    role: String,
    ns: String,
}

/// A running lab. See the module documentation.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    bridge_ns: String,
    hosts: Vec<Host>,
    /// Namespaces to delete on drop, in creation order.
    created: Vec<String>,
    offload: bool,
    threaded_receive: bool,
    ethtool: bool,
    ipv6: bool,
    notes: Vec<String>,
    /// Who runs tcpcopy and intercept ([`crate::unprivileged`]); `None`: root.
    run_as: Option<String>,
}

impl Lab {
    pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    pub const ONLINE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
    pub const TARGET_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 30);
    pub const ASSISTANT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 40);
    /// Prefix length of the lab segment.
    pub const PREFIX_LEN: u8 = 24;
    /// tcpcopy's `-c` range in assistant mode (the target routes all of 198.19.0.0/16 to the assistant).
    pub const FAKE_CLIENT_NET: &'static str = "198.19.0.0/24";
    /// The IPv6 fake client range, routed by the target to the assistant like [`Lab::FAKE_CLIENT_NET`].
    pub const FAKE_CLIENT_NET6: &'static str = "2001:2:0:1::/64";
    /// The lab interface inside each host namespace.
    pub const IFACE: &'static str = "eth0";
    const BRIDGE: &'static str = "br0";
    /// What a target host routes to its assistant: every fake client address (IPv4).
    pub const FAKE_ROUTE: &'static str = "198.19.0.0/16";

    /// Builds the lab, first removing namespaces left by an earlier run with the same prefix.
    pub fn create(spec: &LabSpec) -> anyhow::Result<Lab> {
        validate_name(&spec.prefix, 32).context("LabSpec::prefix")?;
        preflight()?;
        let _serial = CREATE_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        cleanup_stale(&format!("{}-", spec.prefix));
        let ethtool = !spec.offload && tool_works("ethtool", &["--version"]);
        // From here on, dropping `lab` (on any error) removes what was built so far.
        let mut lab = Lab {
            prefix: spec.prefix.clone(),
            bridge_ns: format!("{}-br", spec.prefix),
            hosts: Vec::new(),
            created: Vec::new(),
            offload: spec.offload,
            threaded_receive: spec.threaded_receive,
            ethtool,
            ipv6: Path::new("/proc/sys/net/ipv6").exists(),
            notes: Vec::new(),
            run_as: crate::unprivileged::user(),
        };
        lab.build()
            .with_context(|| format!("creating lab {}", spec.prefix))?;
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let br = self.bridge_ns.clone();
        self.add_namespace(&br)?;
        if self.ipv6 {
            // The bridge has no address; keep its own IPv6 stack (MLD, RS) off the lab segment.
            set_sysctls(&br, &[("net/ipv6/conf/all/disable_ipv6", "1")])?;
            set_sysctls(&br, &[("net/ipv6/conf/default/disable_ipv6", "1")])?;
        }
        ip(&["-n", &br, "link", "add", Self::BRIDGE, "type", "bridge"])?;
        ip(&[
            "-n",
            &br,
            "link",
            "set",
            Self::BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", Self::BRIDGE, "up"])?;
        // The bridge is the lab's switch: with br_netfilter loaded (Docker loads it), the kernel
        // would run iptables on every frame it forwards, a cost no real switch adds to the hosts.
        run_in_ns(&br, || {
            for table in ["iptables", "ip6tables", "arptables"] {
                let knob = format!("/proc/sys/net/bridge/bridge-nf-call-{table}");
                if std::path::Path::new(&knob).exists() {
                    let _ = std::fs::write(&knob, "0");
                }
            }
        });
        for (role, addr) in [
            ("cli", Self::CLIENT_IP),
            ("onl", Self::ONLINE_IP),
            ("tgt", Self::TARGET_IP),
            ("ast", Self::ASSISTANT_IP),
        ] {
            self.add_host(role, addr)?;
        }
        let tgt = self.ns_target().to_string();
        let ast = self.ns_assistant().to_string();
        ip(&[
            "-n",
            &tgt,
            "route",
            "add",
            Self::FAKE_ROUTE,
            "via",
            &Self::ASSISTANT_IP.to_string(),
        ])?;
        set_sysctls(&ast, &[("net/ipv4/ip_forward", "0")])?;
        if self.ipv6 {
            let via = Self::ip6_of(Self::ASSISTANT_IP).to_string();
            ip(&[
                "-n",
                &tgt,
                "-6",
                "route",
                "add",
                Self::FAKE_CLIENT_NET6,
                "via",
                &via,
            ])?;
            set_sysctls(&ast, &[("net/ipv6/conf/all/forwarding", "0")])?;
        }
        Ok(())
    }

    fn add_namespace(&mut self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_string());
        Ok(())
    }

    /// Adds one more host `{prefix}-{role}` on the bridge with `addr`/24 (and [`Lab::ip6_of`]`(addr)`
    /// /64), configured like the four standard hosts; returns its namespace name. `role` must be
    /// unique in the lab, at most 15 characters.
    pub fn add_host(&mut self, role: &str, addr: Ipv4Addr) -> anyhow::Result<String> {
        validate_name(role, 15).context("host role")?;
        if self.hosts.iter().any(|h| h.role == role) || role == "br" {
            bail!("lab {}: host role {role:?} already exists", self.prefix);
        }
        let ns = format!("{}-{role}", self.prefix);
        let br = self.bridge_ns.clone();
        let dev = Self::IFACE;
        self.add_namespace(&ns)?;
        self.hosts.push(Host {
            role: role.to_string(),
            ns: ns.clone(),
        });
        ip(&[
            "-n", &br, "link", "add", role, "type", "veth", "peer", "name", dev, "netns", &ns,
        ])?;
        ip(&["-n", &br, "link", "set", role, "master", Self::BRIDGE, "up"])?;
        // The effective rp_filter is the maximum of `all` and the interface's own value.
        let rp_filter: Vec<String> = ["all", "default", "lo", dev]
            .iter()
            .map(|conf| format!("net/ipv4/conf/{conf}/rp_filter"))
            .collect();
        let sysctls: Vec<(&str, &str)> = rp_filter.iter().map(|p| (p.as_str(), "0")).collect();
        set_sysctls(&ns, &sysctls)?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let cidr = format!("{addr}/{}", Self::PREFIX_LEN);
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", dev])?;
        if self.ipv6 {
            let cidr6 = format!("{}/64", Self::ip6_of(addr));
            ip(&["-n", &ns, "-6", "addr", "add", &cidr6, "dev", dev, "nodad"])?;
        }
        if !self.offload {
            self.disable_offloads(&ns, dev)?;
            self.disable_offloads(&br, role)?;
        }
        ip(&["-n", &ns, "link", "set", dev, "up"])?;
        if self.threaded_receive {
            self.thread_receive(&ns, dev)?;
            self.thread_receive(&br, role)?;
        }
        Ok(ns)
    }

    /// See [`LabSpec::threaded_receive`].
    fn thread_receive(&mut self, ns: &str, dev: &str) -> anyhow::Result<()> {
        // A veth passes a packet to its peer's NAPI only when the sending end has TSO off.
        run_in_ns(ns, || {
            netio::netdev::set_tso(dev, false)?;
            netio::netdev::set_gro(dev, true)
        })
        .with_context(|| format!("{ns}/{dev}: TSO off, GRO (veth NAPI) on"))?;
        if !self.offload {
            if let Err(e) = ip(&["-n", ns, "link", "set", "dev", dev, "gro_max_size", "1500"]) {
                self.note(format!("{ns}/{dev}: gro_max_size not supported: {e:#}"));
            }
        }
        // `ip netns exec` mounts the namespace's own /sys.
        let knob = format!("echo 1 > /sys/class/net/{dev}/threaded");
        self.sh(ns, &["sh", "-c", &knob])
            .with_context(|| format!("{ns}/{dev}: threaded NAPI"))?;
        Ok(())
    }

    /// veth does TSO/GSO by default, so a capture would see segments of up to 64 KB. With `ethtool`
    /// the offloads are turned off; without it (a bare Debian has none), `gso_max_segs 1` makes the
    /// stack build one-MSS segments, which is what a capture sees, and `gro_max_size` stops merging.
    fn disable_offloads(&mut self, ns: &str, dev: &str) -> anyhow::Result<()> {
        if self.ethtool {
            let args = [
                "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
            ];
            if let Err(e) = self.sh(ns, &args) {
                self.note(format!("{ns}/{dev}: {e:#}"));
            }
            return Ok(());
        }
        ip(&["-n", ns, "link", "set", "dev", dev, "gso_max_segs", "1"])
            .context("limiting GSO (no ethtool)")?;
        if let Err(e) = ip(&["-n", ns, "link", "set", "dev", dev, "gro_max_size", "1500"]) {
            self.note(format!("{ns}/{dev}: gro_max_size not supported: {e:#}"));
        }
        if self.notes.is_empty() {
            self.note(
                "ethtool not found: offloads limited with `ip link set gso_max_segs 1 \
                 gro_max_size 1500` (tx checksum offload stays on)"
                    .to_string(),
            );
        }
        Ok(())
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Remarks from creation, e.g. how offloads were handled.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every namespace of the lab, the bridge's first.
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// Whether hosts also have IPv6 addresses ([`Lab::ip6_of`]).
    pub fn has_ipv6(&self) -> bool {
        self.ipv6
    }

    /// The IPv6 address of the host with IPv4 `addr`: `198.18.0.30` → `2001:2::30` (same digits).
    pub fn ip6_of(addr: Ipv4Addr) -> Ipv6Addr {
        let last = addr.octets()[3];
        // Decimal digits of a u8 are valid hex digits and at most 0x255, so this cannot fail.
        let low = u16::from_str_radix(&last.to_string(), 16).unwrap_or(0);
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, low)
    }

    fn host_ns(&self, role: &str) -> &str {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .map_or("", |h| h.ns.as_str())
    }

    pub fn ns_client(&self) -> &str {
        self.host_ns("cli")
    }

    pub fn ns_online(&self) -> &str {
        self.host_ns("onl")
    }

    pub fn ns_target(&self) -> &str {
        self.host_ns("tgt")
    }

    pub fn ns_assistant(&self) -> &str {
        self.host_ns("ast")
    }

    pub fn ns_bridge(&self) -> &str {
        &self.bridge_ns
    }

    /// Runs `ip netns exec ns cmd...` and returns its stdout; the error carries stderr.
    pub fn sh(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let (program, args) = cmd.split_first().context("Lab::sh: empty command")?;
        let output = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ip netns exec")?;
        if !output.status.success() {
            bail!(
                "`{}` in {ns} failed ({}): {}",
                cmd.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Reads a sysctl in `ns`, e.g. `sysctl(ns, "net.ipv4.ip_forward")` → `"0"`.
    pub fn sysctl(&self, ns: &str, key: &str) -> anyhow::Result<String> {
        let path = sysctl_path(key);
        run_in_ns(ns, || std::fs::read_to_string(&path))
            .with_context(|| format!("{ns}: reading {}", path.display()))
            .map(|v| v.trim().to_string())
    }

    /// Writes a sysctl in `ns`, e.g. `set_sysctl(ns, "net.ipv4.ip_forward", "1")`.
    pub fn set_sysctl(&self, ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
        let path = sysctl_path(key);
        run_in_ns(ns, || std::fs::write(&path, value))
            .with_context(|| format!("{ns}: writing {value} to {}", path.display()))
    }

    /// Starts `program args...` inside `ns` with stdout and stderr appended to `log` (truncated
    /// first). `ip netns exec` execs the program, so [`Child::pid`] is the program's pid.
    pub fn spawn(
        &self,
        ns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Child> {
        // tcpcopy and intercept as an unprivileged user, when one is asked for.
        let (program, args) = crate::unprivileged::wrap(self.run_as.as_deref(), program, args)?;
        self.spawn_as_is(ns, &program, &args, log)
    }

    /// Runs tcpcopy and intercept as `user` with only the two capabilities from now on (`None`:
    /// as root); the default is `TCPCOPY_LAB_USER`'s ([`crate::unprivileged`]).
    pub fn set_run_as(&mut self, user: Option<String>) {
        self.run_as = user;
    }

    /// [`Lab::spawn`] as root whatever [`Lab::set_run_as`] says (what only root may do, such as
    /// logging to /var/log).
    pub fn spawn_as_root(
        &self,
        ns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Child> {
        self.spawn_as_is(ns, program, args, log)
    }

    fn spawn_as_is(
        &self,
        ns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Child> {
        if program.components().count() > 1 && !program.exists() {
            bail!("spawn in {ns}: {} does not exist", program.display());
        }
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating log descriptor")?;
        let inner = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {} in {ns}", program.display()))?;
        Ok(Child {
            inner,
            name: program.display().to_string(),
            log: log.to_path_buf(),
        })
    }

    /// Runs `f` on a thread inside network namespace `ns` and returns its result. Sockets created by
    /// `f` stay in `ns`; threads spawned by `f` start in `ns`. Panics (with a clear message) if the
    /// namespace cannot be entered, and passes on a panic of `f`.
    pub fn run_in<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        run_in_ns(ns, f)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Hosts first, bridge last: the order they were created, reversed.
        for ns in self.created.iter().rev() {
            if let Err(e) = remove_namespace(ns) {
                eprintln!("tcpcopy-lab: cleanup of {ns}: {e:#}");
            }
        }
    }
}

/// [`Lab::run_in`] without a lab: runs `f` on a scoped thread that first enters `/run/netns/{ns}`.
pub fn run_in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            if let Err(e) = netio::netns::enter(ns) {
                panic!("cannot enter network namespace {ns:?}: {e}");
            }
            f()
        });
        match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Deletes every namespace whose name starts with `prefix_start` after killing the processes in it
/// (never this process). For leftovers of crashed runs: pass a prefix that only your runs use. Does
/// nothing for an empty prefix. Returns the names removed; failures are reported on stderr.
pub fn cleanup_stale(prefix_start: &str) -> Vec<String> {
    if prefix_start.is_empty() {
        return Vec::new();
    }
    let Ok(listing) = ip(&["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    // Lines look like "name" or "name (id: 3)".
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        if name.starts_with(prefix_start) {
            match remove_namespace(name) {
                Ok(()) => removed.push(name.to_string()),
                Err(e) => eprintln!("tcpcopy-lab: removing stale namespace {name}: {e:#}"),
            }
        }
    }
    removed
}

/// Removes labs made by [`LabSpec::unique`]`(tag)` in processes that no longer exist: namespaces
/// named `{tag}{pid}-*` where `/proc/{pid}` is gone (a test run killed before its `Drop` ran). Labs of
/// live processes, including concurrent test binaries, are left alone. Returns the names removed.
pub fn cleanup_orphans(tag: &str) -> Vec<String> {
    if tag.is_empty() {
        return Vec::new();
    }
    let Ok(listing) = ip(&["netns", "list"]) else {
        return Vec::new();
    };
    let orphan_prefixes: std::collections::BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.strip_prefix(tag))
        .filter_map(|rest| {
            let (pid, _) = rest.split_once('-')?;
            let numeric = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
            let live = Path::new("/proc").join(pid).exists();
            (numeric && !live).then(|| format!("{tag}{pid}-"))
        })
        .collect();
    orphan_prefixes
        .iter()
        .flat_map(|prefix| cleanup_stale(prefix))
        .collect()
}

/// Whether this process runs with effective uid 0.
/// A server program: `preferred` (where Debian installs it) if it exists, else the first `name` on
/// `PATH`.
pub fn find_program(preferred: &str, name: &str) -> Option<PathBuf> {
    let debian = PathBuf::from(preferred);
    if debian.is_file() {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// Fails unless run as root, naming what needs it (`"the demo"`): the lab builds namespaces.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        is_root(),
        "{what} builds network namespaces: run it as root"
    );
    Ok(())
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    line.split_whitespace().nth(2)?.parse().ok()
}

fn preflight() -> anyhow::Result<()> {
    if !tool_works("ip", &["-V"]) {
        bail!("the `ip` command (iproute2) was not found in PATH; install iproute2");
    }
    match effective_uid() {
        Some(0) => Ok(()),
        Some(uid) => {
            bail!("creating network namespaces needs root (running as uid {uid}); rerun with sudo")
        }
        None => bail!("cannot read the effective uid from /proc/self/status"),
    }
}

fn tool_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn validate_name(name: &str, max: usize) -> anyhow::Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if name.is_empty() || name.len() > max || !ok_chars {
        bail!("{name:?}: expected 1 to {max} characters from [A-Za-z0-9_-]");
    }
    Ok(())
}

/// Runs `ip args...`; the error names the command and carries its stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Writes `/proc/sys/{path}` values from a thread inside `ns` (sysctl files under /proc/sys/net
/// belong to the namespace of the thread that opens them), without needing the `sysctl` tool.
fn set_sysctls(ns: &str, values: &[(&str, &str)]) -> anyhow::Result<()> {
    run_in_ns(ns, || {
        for (path, value) in values {
            let path = Path::new("/proc/sys").join(path);
            std::fs::write(&path, value)
                .with_context(|| format!("{ns}: writing {value} to {}", path.display()))?;
        }
        Ok(())
    })
}

fn namespace_pids(ns: &str) -> anyhow::Result<Vec<u32>> {
    let own = process::id();
    Ok(ip(&["netns", "pids", ns])?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != own)
        .collect())
}

/// Sends `signal` (a name such as `TERM`) with the shell's builtin `kill`: no `unsafe`, and no
/// dependency on procps, which minimal systems lack.
fn send_signal(pids: &[u32], signal: &str) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .args([
            "-c",
            r#"sig=$1; shift; kill -s "$sig" "$@""#,
            "kill",
            signal,
        ])
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running sh for kill")?;
    if !status.success() {
        bail!("kill -s {signal} {pids:?} failed ({status})");
    }
    Ok(())
}

/// Kills what still runs in `ns` (TERM, then KILL after [`KILL_GRACE`]) and deletes it.
fn remove_namespace(ns: &str) -> anyhow::Result<()> {
    let pids = namespace_pids(ns).unwrap_or_default();
    if !pids.is_empty() {
        let _ = send_signal(&pids, "TERM"); // some may exit meanwhile
        let end = Instant::now() + KILL_GRACE;
        loop {
            let left = namespace_pids(ns).unwrap_or_default();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= end {
                let _ = send_signal(&left, "KILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    ip(&["netns", "del", ns]).map(drop)
}

mod child;
pub use child::Child;
