//! The Debian package: `cargo deb -p tcpcopy` builds it once; one test installs it on this
//! machine with dpkg, checks every file against the repository, runs both programs, verifies the
//! systemd units and purges it; another installs it with apt into a minimal Debian made by
//! debootstrap (a clean Debian, dependencies resolved by apt), runs it there and purges it.
//! After a purge, nothing the package installed may be left. Then that Debian gets systemd and
//! the package again and boots in a container, where the units run for real.
//!
//! Needs root, dpkg, systemd-analyze, debootstrap (and the Debian mirror), systemd-nspawn, ip
//! and cargo-deb (in `$CARGO_HOME/bin`, `~/.cargo/bin` or `PATH`). Without them the tests are
//! skipped, unless `TCPCOPY_REQUIRE_DEB` is set (as CI does): then a missing one fails the test.
//! They also leave the machine as they found it when they fail: the package is purged, the
//! container killed, its namespace name and the Debian tree removed, in drop guards; a machine
//! where a `tcpcopy` package is already installed is left alone (skipped, or failed under
//! `TCPCOPY_REQUIRE_DEB`).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lab::httpd::HttpServer;

const PACKAGE: &str = "tcpcopy";
const UNITS: [&str; 3] = ["tcpcopy.service", "tcpcopy@.service", "intercept.service"];

/// The repository root (the workspace).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Whether a test can go on; without `what`, skips (false) or, when CI requires the package
/// tests, fails.
fn require(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("TCPCOPY_REQUIRE_DEB").is_some() {
        panic!("{what}, and TCPCOPY_REQUIRE_DEB is set");
    }
    eprintln!("SKIPPED: {what} (set TCPCOPY_REQUIRE_DEB to fail instead)");
    false
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// cargo-deb where `cargo install` puts it, or on the PATH.
fn cargo_deb() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    cargo_home
        .map(|h| h.join("bin/cargo-deb"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("cargo-deb"))
}

/// Runs `cmd`, panicking with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("UTF-8 output")
}

/// This test binary's target directory (`target`), where cargo-deb builds too: the
/// dependencies are built already, so only the two programs are (without `demo`).
fn target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tcpcopy"));
    // CARGO_BIN_EXE_tcpcopy is <target>/<profile>/tcpcopy.
    bin.ancestors().nth(2).expect("target dir").to_path_buf()
}

/// Where the package test keeps its files (`target/package`).
fn package_target_dir() -> PathBuf {
    target_dir().join("package")
}

/// Keeps a copy of the programs the other tests run (built with `demo`) while cargo-deb builds
/// the package's over them, and puts them back when dropped.
struct KeepPrograms(Vec<(PathBuf, PathBuf)>);

impl KeepPrograms {
    fn new() -> KeepPrograms {
        let dir = PathBuf::from(env!("CARGO_BIN_EXE_tcpcopy"));
        let dir = dir.parent().expect("bin dir");
        let kept = package_target_dir().join("kept");
        std::fs::create_dir_all(&kept).expect("create the kept folder");
        let pairs = ["tcpcopy", "intercept"]
            .iter()
            .map(|name| (dir.join(name), kept.join(name)))
            .collect::<Vec<_>>();
        for (bin, copy) in &pairs {
            std::fs::copy(bin, copy).expect("keep a copy of the program");
        }
        KeepPrograms(pairs)
    }
}

impl Drop for KeepPrograms {
    fn drop(&mut self) {
        for (bin, copy) in &self.0 {
            // The build may have hard-linked its own program there: replace the link, not its target.
            let _ = std::fs::remove_file(bin);
            let _ = std::fs::copy(copy, bin);
        }
    }
}

/// The .deb, built once for both tests; None when a test must skip.
fn deb() -> Option<&'static Path> {
    static DEB: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEB.get_or_init(|| {
        if !require(is_root(), "not root") {
            return None;
        }
        let tool = cargo_deb();
        if !require(
            tool.is_some(),
            "cargo-deb is missing (cargo install cargo-deb --locked)",
        ) {
            return None;
        }
        Some(build(&tool.expect("checked above")))
    })
    .as_deref()
}

/// `cargo deb -p tcpcopy`, as a packager runs it, into a fresh output directory.
fn build(cargo_deb: &Path) -> PathBuf {
    let target = target_dir();
    let out_dir = package_target_dir().join("debian-test");
    let _kept = KeepPrograms::new();
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut cmd = Command::new(cargo_deb);
    cmd.current_dir(repo())
        .args(["-p", PACKAGE, "-o"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", &target);
    // The variables cargo sets for this test describe this test, not the build cargo-deb asks for.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR" {
            cmd.env_remove(name);
        }
    }
    let started = Instant::now();
    let printed = stdout(&mut cmd);
    eprintln!("cargo deb: {:.0} s", started.elapsed().as_secs_f64());
    let deb = printed
        .lines()
        .map(PathBuf::from)
        .find(|p| p.extension() == Some(OsStr::new("deb")))
        .unwrap_or_else(|| panic!("no .deb named in cargo-deb's output:\n{printed}"));
    assert!(deb.is_file(), "{} missing", deb.display());
    deb
}

/// The paths the .deb holds (`/usr/bin/tcpcopy`, directories included).
fn deb_contents(deb: &Path) -> Vec<String> {
    stdout(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A Debian system: this machine, or a tree made by debootstrap that commands run in by chroot.
struct System {
    root: PathBuf,
}

impl System {
    fn host() -> System {
        System { root: "/".into() }
    }
    fn cmd(&self, program: &str) -> Command {
        let mut cmd = if self.root == Path::new("/") {
            Command::new(program)
        } else {
            let mut cmd = Command::new("chroot");
            cmd.arg(&self.root).arg(program);
            cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
            cmd
        };
        // dpkg's messages in English; a minimal Debian has no other locale.
        cmd.env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }
    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
    fn exists(&self, path: &str) -> bool {
        self.path(path).symlink_metadata().is_ok()
    }
    fn installed(&self) -> bool {
        self.cmd("dpkg-query")
            .args(["-W", "-f", "${db:Status-Status}", PACKAGE])
            .output()
            .is_ok_and(|o| o.stdout == b"installed")
    }
}

/// Purges the package when dropped, so that a failed test leaves no package behind.
struct Installed<'a> {
    system: &'a System,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if self.system.installed() {
            let _ = self.system.cmd("dpkg").args(["--purge", PACKAGE]).output();
        }
    }
}

/// What the installed package holds, and which of those paths were there before it (shared
/// directories such as /usr/bin).
struct Inventory {
    listed: Vec<String>,
    there_before: BTreeSet<String>,
}

impl Inventory {
    fn before_install(system: &System, deb: &Path) -> Inventory {
        let contents = deb_contents(deb);
        let there_before = contents
            .iter()
            .filter(|p| system.exists(p))
            .cloned()
            .collect();
        Inventory {
            listed: contents,
            there_before,
        }
    }

    /// Takes dpkg's own list of the installed files, which must hold the .deb's contents.
    fn after_install(&mut self, system: &System) {
        let listed: Vec<String> = stdout(system.cmd("dpkg").args(["-L", PACKAGE]))
            .lines()
            .filter(|p| *p != "/.")
            .map(str::to_string)
            .collect();
        for path in &self.listed {
            assert!(listed.contains(path), "dpkg -L does not list {path}");
            assert!(system.exists(path), "{path} not installed");
        }
        self.listed = listed;
    }

    /// Purges, then checks every path the package brought is gone and dpkg knows it no more.
    fn purge_and_check(&self, system: &System) {
        run(system.cmd("dpkg").args(["--purge", PACKAGE]));
        let left: Vec<&String> = self
            .listed
            .iter()
            .filter(|p| !self.there_before.contains(*p) && system.exists(p))
            .collect();
        assert!(left.is_empty(), "left after purge: {left:?}");
        for dir in ["/etc/tcpcopy", "/var/log/tcpcopy"] {
            assert!(!system.exists(dir), "{dir} left after purge");
        }
        assert!(!system.installed(), "dpkg still has {PACKAGE} installed");
        let status = system
            .cmd("dpkg")
            .args(["-s", PACKAGE])
            .output()
            .expect("dpkg -s");
        let said = String::from_utf8_lossy(&status.stderr);
        assert!(
            !status.status.success() && said.contains("is not installed"),
            "dpkg -s {PACKAGE} after purge: {said}"
        );
        let state = unit_links(system, "/var/lib/systemd");
        assert!(
            state.is_empty(),
            "systemd state left after purge: {state:?}"
        );
    }
}

/// Files and links under `dir` (recursively) named after one of the units.
fn unit_links(system: &System, dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("tcpcopy") || name.starts_with("intercept") {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(&system.path(dir), &mut found);
    found
}

/// `--version` of both installed programs, run inside `system`.
fn check_versions(system: &System) {
    for program in ["tcpcopy", "intercept"] {
        let printed = stdout(system.cmd(&format!("/usr/bin/{program}")).arg("--version"));
        assert_eq!(
            printed.trim(),
            format!("{program} {}", env!("CARGO_PKG_VERSION")),
            "/usr/bin/{program} --version"
        );
    }
}

/// Installs with dpkg on this machine and checks what went where.
#[test]
fn installs_on_this_machine_verifies_the_units_and_purges_cleanly() {
    let Some(deb) = deb() else { return };
    let host = System::host();
    let tools = ["dpkg", "systemd-analyze", "gzip"]
        .iter()
        .all(|t| on_path(t).is_some());
    if !require(tools, "dpkg, systemd-analyze or gzip is missing")
        || !require(
            !host.installed(),
            "a tcpcopy package is installed on this machine",
        )
    {
        return;
    }
    let started = Instant::now();
    check_control(deb);
    let mut inventory = Inventory::before_install(&host, deb);
    let links_before = unit_links(&host, "/etc/systemd/system");
    let _guard = Installed { system: &host };
    run(Command::new("dpkg").arg("-i").arg(deb));
    inventory.after_install(&host);

    check_files(&host);
    check_versions(&host);
    check_no_demo();
    assert_eq!(
        unit_links(&host, "/etc/systemd/system"),
        links_before,
        "installing enabled a unit"
    );
    verify_units();

    inventory.purge_and_check(&host);
    eprintln!("this machine: {:.0} s", started.elapsed().as_secs_f64());
}

/// The control fields a packager sets: section, computed dependencies.
fn check_control(deb: &Path) {
    let fields = stdout(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .args(["Package", "Section", "Depends"]),
    );
    assert!(fields.contains("Package: tcpcopy\n"), "{fields}");
    assert!(fields.contains("Section: net\n"), "{fields}");
    let depends = fields
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends: {fields}"));
    assert!(
        depends.contains("libc6 (>="),
        "computed dependencies: {depends}"
    );
}

/// Each installed file equals the repository's (man pages gzipped), the config files are
/// conffiles, and the programs are executable.
fn check_files(host: &System) {
    let repo = repo();
    let same = [
        (
            "completions/tcpcopy.bash",
            "/usr/share/bash-completion/completions/tcpcopy",
        ),
        (
            "completions/intercept.bash",
            "/usr/share/bash-completion/completions/intercept",
        ),
        (
            "completions/_tcpcopy",
            "/usr/share/zsh/vendor-completions/_tcpcopy",
        ),
        (
            "completions/_intercept",
            "/usr/share/zsh/vendor-completions/_intercept",
        ),
        (
            "completions/tcpcopy.fish",
            "/usr/share/fish/vendor_completions.d/tcpcopy.fish",
        ),
        (
            "completions/intercept.fish",
            "/usr/share/fish/vendor_completions.d/intercept.fish",
        ),
        ("packaging/etc/tcpcopy.toml", "/etc/tcpcopy/tcpcopy.toml"),
        (
            "packaging/etc/intercept.toml",
            "/etc/tcpcopy/intercept.toml",
        ),
        ("packaging/etc/logrotate", "/etc/logrotate.d/tcpcopy"),
    ];
    let units = UNITS.map(|u| {
        (
            format!("packaging/systemd/{u}"),
            format!("/usr/lib/systemd/system/{u}"),
        )
    });
    let pairs = same
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .chain(units);
    for (source, installed) in pairs {
        let want = std::fs::read(repo.join(&source)).expect("repository file");
        let got =
            std::fs::read(host.path(&installed)).unwrap_or_else(|e| panic!("{installed}: {e}"));
        assert!(want == got, "{installed} differs from {source}");
    }
    for page in ["tcpcopy.1", "intercept.1"] {
        let installed = format!("/usr/share/man/man1/{page}.gz");
        let text = run(Command::new("gzip").arg("-dc").arg(host.path(&installed))).stdout;
        let want = std::fs::read(repo.join("docs/man").join(page)).expect("man page");
        assert!(text == want, "{installed} is not docs/man/{page} gzipped");
    }
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", PACKAGE]));
    for file in [
        "/etc/tcpcopy/tcpcopy.toml",
        "/etc/tcpcopy/intercept.toml",
        "/etc/logrotate.d/tcpcopy",
    ] {
        assert!(
            conffiles.contains(&format!(" {file} ")),
            "{file} is not a conffile: {conffiles}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    for program in ["/usr/bin/tcpcopy", "/usr/bin/intercept"] {
        let mode = std::fs::metadata(program)
            .expect(program)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{program} mode");
    }
}

/// The package is the production build: `demo` (and the lab code it links) left out. (`--help`:
/// a build with the demo only prints its help, it does not run it.)
fn check_no_demo() {
    let out = Command::new("/usr/bin/tcpcopy")
        .args(["demo", "--help"])
        .output()
        .expect("run tcpcopy demo");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "tcpcopy demo: {said}");
    assert!(
        said.contains("without its `demo` feature"),
        "tcpcopy demo: {said}"
    );
}

/// `systemd-analyze verify` on the installed units (the template through an instance): no
/// error, and no warning about them (it only warns about a directive it cannot parse). With
/// `man` installed it also finds the man pages the units name.
fn verify_units() {
    let man = if on_path("man").is_some() {
        "--man=yes"
    } else {
        "--man=no"
    };
    let out = Command::new("systemd-analyze")
        .args(["verify", man])
        .args([
            "/usr/lib/systemd/system/tcpcopy.service",
            "/usr/lib/systemd/system/intercept.service",
            "tcpcopy@example.service",
        ])
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("tcpcopy") || l.contains("intercept"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns: {ours:?}");
}

/// A minimal Debian (debootstrap's minbase) of this machine's release, removed when dropped.
struct DebianTree {
    system: System,
}

impl DebianTree {
    fn create(dir: PathBuf) -> DebianTree {
        let _ = std::fs::remove_dir_all(&dir);
        let tree = DebianTree {
            system: System { root: dir },
        };
        let (suite, mirror) = release_and_mirror();
        run(Command::new("debootstrap")
            .args(["--variant=minbase", &suite])
            .arg(&tree.system.root)
            .arg(mirror));
        tree
    }
}

impl Drop for DebianTree {
    fn drop(&mut self) {
        // Nothing is mounted in the tree; never remove one that has a mount inside.
        let root = self.system.root.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&root)))
        {
            eprintln!("{root} has a mount inside: not removed");
            return;
        }
        let _ = std::fs::remove_dir_all(&self.system.root);
    }
}

/// This machine's Debian release (`bookworm`) and the mirror its apt uses.
fn release_and_mirror() -> (String, String) {
    let os = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    let suite = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .expect("VERSION_CODENAME in /etc/os-release")
        .trim_matches('"')
        .to_string();
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let one_line = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let mirror = deb822
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|uris| uris.split_whitespace().next())
        .or_else(|| {
            one_line
                .lines()
                .find_map(|l| l.strip_prefix("deb "))
                .and_then(|rest| rest.split_whitespace().find(|w| w.contains("://")))
        })
        .unwrap_or("http://deb.debian.org/debian")
        .to_string();
    (suite, mirror)
}

/// Installs with apt (dependencies resolved from the mirror) into a fresh minimal Debian, runs
/// both programs there and purges.
#[test]
fn installs_on_a_clean_debian_and_purges_cleanly() {
    let Some(deb) = deb() else { return };
    if !require(on_path("debootstrap").is_some(), "debootstrap is missing") {
        return;
    }
    let started = Instant::now();
    let tree =
        DebianTree::create(package_target_dir().join(format!("debian-{}", std::process::id())));
    let debian = &tree.system;
    eprintln!("debootstrap: {:.0} s", started.elapsed().as_secs_f64());
    assert!(!debian.installed());
    std::fs::copy(deb, debian.path("/tmp/tcpcopy.deb")).expect("copy the .deb");
    let mut inventory = Inventory::before_install(debian, deb);
    let _guard = Installed { system: debian };
    run(debian.cmd("apt-get").args(["update", "-q"]));
    run(debian
        .cmd("apt-get")
        .args(["install", "-y", "-q", "/tmp/tcpcopy.deb"]));
    inventory.after_install(debian);
    check_versions(debian);
    // ExecReload's kill comes from a dependency a minimal Debian lacks.
    assert!(
        debian.exists("/bin/kill"),
        "procps not installed with the package"
    );

    inventory.purge_and_check(debian);
    eprintln!("clean Debian: {:.0} s", started.elapsed().as_secs_f64());

    // Booting the tree under systemd takes a minute or two more: on request (`TCPCOPY_PACKAGE_BOOT=1`).
    let boot = std::env::var_os("TCPCOPY_PACKAGE_BOOT").is_some();
    if boot
        && require(
            on_path("systemd-nspawn").is_some() && on_path("ip").is_some(),
            "systemd-nspawn or ip is missing: the units were not run",
        )
    {
        let started = Instant::now();
        units_at_work(debian);
        eprintln!(
            "units under systemd: {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// The installed units at work, hardening and all: the clean Debian gets systemd and the package
/// again, boots in a container (its own network: loopback only), and there intercept (queue
/// mode) and tcpcopy start as services, replicate requests from an online server to a target
/// server on loopback, reload, and stop, intercept removing its iptables rule.
fn units_at_work(debian: &System) {
    run(debian
        .cmd("apt-get")
        .args(["install", "-y", "-q", "systemd", "/tmp/tcpcopy.deb"]));
    let _guard = Installed { system: debian };
    configure_units(debian);
    let container = Container::boot(&debian.root);
    let netns = NetnsAttached::new(&container.name, container.init);
    let (_online, target) = in_netns(&netns.name, || {
        let online = HttpServer::start(ONLINE.parse().unwrap()).expect("online server");
        let target = HttpServer::start(TARGET.parse().unwrap()).expect("target server");
        (online, target)
    });
    // Type=notify: start returns once both told systemd they are ready.
    container.run(&["systemctl", "start", "intercept.service", "tcpcopy.service"]);
    let rules = container.run(&["iptables", "-S", "OUTPUT"]);
    assert!(
        rules.contains("NFQUEUE"),
        "intercept's rule missing: {rules}"
    );

    let uris: Vec<String> = (0..REQUESTS).map(|i| format!("/package-{i}")).collect();
    let sent = uris.clone();
    in_netns(&netns.name, move || {
        sent.iter().for_each(|uri| get(ONLINE, uri))
    });
    let log = target.log();
    log.wait_for(uris.len(), Duration::from_secs(10));
    let mut got = log.uris();
    got.sort();
    assert_eq!(
        got, uris,
        "requests the target received from tcpcopy.service"
    );

    container.run(&[
        "systemctl",
        "reload",
        "tcpcopy.service",
        "intercept.service",
    ]);
    let active = container.run(&[
        "systemctl",
        "is-active",
        "tcpcopy.service",
        "intercept.service",
    ]);
    assert_eq!(active, "active\nactive\n", "after reload");
    container.run(&["systemctl", "stop", "tcpcopy.service", "intercept.service"]);
    let result = container.run(&[
        "systemctl",
        "show",
        "-p",
        "Result",
        "--value",
        "tcpcopy.service",
        "intercept.service",
    ]);
    // One block per unit, a blank line between.
    let results: Vec<&str> = result.split_whitespace().collect();
    assert_eq!(results, ["success", "success"], "how the services ended");
    let rules = container.run(&["iptables", "-S", "OUTPUT"]);
    assert!(!rules.contains("NFQUEUE"), "intercept's rule left: {rules}");
}

const ONLINE: &str = "127.0.0.1:8080";
const TARGET: &str = "127.0.0.1:8081";
const REQUESTS: usize = 5;

/// What the services run: the config files when the programs read one (`--config`), else the
/// same options in drop-ins replacing the units' command lines.
fn configure_units(debian: &System) {
    let help = stdout(debian.cmd("/usr/bin/tcpcopy").arg("--help"));
    let tcpcopy = [
        ("transfer", "\"8080-127.0.0.1:8081\""),
        ("intercept", "\"127.0.0.1\""),
        ("interface", "\"lo\""),
        ("log", "\"/var/log/tcpcopy/tcpcopy.log\""),
    ];
    let intercept = [
        ("queue", "true"),
        ("port", "\"8081\""),
        ("log", "\"/var/log/tcpcopy/intercept.log\""),
    ];
    let write = |path: &str, text: String| {
        let path = debian.path(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("config dir");
        std::fs::write(&path, text).expect("write config");
    };
    for (program, options) in [("tcpcopy", &tcpcopy[..]), ("intercept", &intercept[..])] {
        if help.contains("--config") {
            let toml: String = options
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            write(&format!("/etc/tcpcopy/{program}.toml"), toml);
            continue;
        }
        let args: Vec<String> = options
            .iter()
            .map(|(k, v)| match *v {
                "true" => format!("--{k}"),
                v => format!("--{k} {}", v.trim_matches('"')),
            })
            .collect();
        let drop_in = format!(
            "[Service]\nExecStart=\nExecStart=/usr/bin/{program} {}\n",
            args.join(" ")
        );
        write(
            &format!("/etc/systemd/system/{program}.service.d/test.conf"),
            drop_in,
        );
    }
}

/// One HTTP request to `addr`, answered 200.
fn get(addr: &str, uri: &str) {
    let mut conn = TcpStream::connect(addr).expect("connect to the online server");
    write!(
        conn,
        "GET {uri} HTTP/1.1\r\nHost: online\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "online answered: {answer}"
    );
}

/// Runs `f` on a thread inside network namespace `name`; sockets it opens stay there.
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = name.to_string();
    std::thread::spawn(move || {
        netio::netns::enter(&name).expect("enter the container's network namespace");
        f()
    })
    .join()
    .expect("thread in the container's network namespace")
}

/// The Debian tree booted with systemd by systemd-nspawn, on a network of its own (loopback
/// only). Killed with everything in it when dropped.
struct Container {
    nspawn: Child,
    name: String,
    /// The container's systemd, as this machine numbers it.
    init: u32,
}

impl Container {
    fn boot(root: &Path) -> Container {
        let name = format!("tcpcopy-package-{}", std::process::id());
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--boot",
                "--private-network",
                "--register=no",
                "--keep-unit",
            ])
            .arg(format!("--machine={name}"))
            .arg("--directory")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start systemd-nspawn");
        let mut container = Container {
            init: 0,
            nspawn,
            name,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while container.init == 0 {
            assert!(
                Instant::now() < deadline,
                "the container's systemd did not start"
            );
            container.init = child_of(container.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let state = container.try_run(&["systemctl", "is-system-running"]);
            if state == "running\n" || state == "degraded\n" {
                return container;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not boot: {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `args` inside the container; its stdout (empty when it could not run).
    fn try_run(&self, args: &[&str]) -> String {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a"])
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Runs `args` inside the container, which must succeed; its stdout.
    fn run(&self, args: &[&str]) -> String {
        stdout(
            Command::new("nsenter")
                .args(["-t", &self.init.to_string(), "-a"])
                .args(args)
                .env("LC_ALL", "C"),
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Killing the container's init kills every process of its PID namespace.
        if self.init != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &self.init.to_string()])
                .status();
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let _ = std::fs::remove_dir(format!("/run/systemd/nspawn/propagate/{}", self.name));
    }
}

/// The process whose parent is `parent`, if any.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so count from its closing parenthesis.
            let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
}

/// A name in /run/netns for a process's network namespace (`ip netns attach`), removed when
/// dropped.
struct NetnsAttached {
    name: String,
}

impl NetnsAttached {
    fn new(name: &str, pid: u32) -> NetnsAttached {
        run(Command::new("ip").args(["netns", "attach", name, &pid.to_string()]));
        NetnsAttached {
            name: name.to_string(),
        }
    }
}

impl Drop for NetnsAttached {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
