//! A real nginx inside a lab namespace, for end-to-end tests (the demo never needs it).
//!
//! nginx answers every request `200 ok\n` (a 1 KB body under `/k/`) and writes one access-log
//! line per request holding only `$request_uri`, unbuffered, after the response is sent.
//! Everything it writes stays in the caller's work directory; the master runs in the foreground
//! under a [`Child`] guard.

use crate::netlab::{Child, Lab};
use anyhow::{bail, Context as _};
use std::net::{SocketAddrV4, SocketAddrV6, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The nginx binary: `/usr/sbin/nginx`, else the first `nginx` on `PATH`.
pub fn nginx_binary() -> Option<PathBuf> {
    crate::netlab::find_program("/usr/sbin/nginx", "nginx")
}

/// A running nginx; stopped (SIGTERM, SIGKILL after 3 s) on drop. The work directory is left in place.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    workdir: PathBuf,
    listen: SocketAddrV4,
}

fn config(workdir: &Path, listen: SocketAddrV4, listen6: Option<SocketAddrV6>) -> String {
    let w = workdir.display();
    let also6 = listen6.map_or(String::new(), |a| format!("listen {a};"));
    // `/k/...` answers a 1 KB body (the load harness's requests), everything else `ok`.
    // Connections: a replay that falls behind (stream mode through a NAT) opens a few thousand
    // at once; past `worker_connections` nginx closes idle keep-alive connections ("reusing
    // connections"), which the replay counts as resets by the target.
    let kb = format!("{}\\n", "x".repeat(1023));
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid "{w}/nginx.pid";
error_log "{w}/error.log" warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{
    log_format uri '$request_uri';
    access_log "{w}/access.log" uri;
    client_body_temp_path "{w}/client_body";
    proxy_temp_path "{w}/proxy";
    fastcgi_temp_path "{w}/fastcgi";
    uwsgi_temp_path "{w}/uwsgi";
    scgi_temp_path "{w}/scgi";
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server_tokens off;
    default_type text/plain;
    server {{
        listen {listen};
        {also6}
        location / {{ return 200 "ok\n"; }}
        location /k/ {{ return 200 "{kb}"; }}
    }}
}}
"#
    )
}

/// Starts nginx in `ns` on the configuration in `workdir`.
fn spawn(lab: &Lab, ns: &str, binary: &Path, workdir: &Path) -> anyhow::Result<Child> {
    let args = [
        "-p".to_string(),
        workdir.display().to_string(),
        "-c".to_string(),
        workdir.join("nginx.conf").display().to_string(),
    ];
    lab.spawn(ns, binary, &args, &workdir.join("nginx.out"))
}

impl Nginx {
    /// Writes `workdir/nginx.conf`, starts nginx in `ns` listening on `listen`, and waits (up to
    /// 10 s) until the port accepts connections from inside `ns`.
    pub fn start(
        lab: &Lab,
        ns: &str,
        listen: SocketAddrV4,
        workdir: &Path,
    ) -> anyhow::Result<Nginx> {
        let binary = nginx_binary().context("nginx not found (Debian: apt install nginx-light)")?;
        std::fs::create_dir_all(workdir)
            .with_context(|| format!("creating {}", workdir.display()))?;
        let workdir = workdir
            .canonicalize()
            .with_context(|| format!("resolving {}", workdir.display()))?;
        // nginx would read `$` as a variable and cannot quote `"` or `\` portably.
        if workdir.to_string_lossy().contains(['"', '$', '\\']) {
            bail!(
                "nginx work directory {} contains \", $ or \\",
                workdir.display()
            );
        }
        let conf = workdir.join("nginx.conf");
        // On a lab with IPv6, the same server also listens on the host's IPv6 address.
        let listen6 = lab
            .has_ipv6()
            .then(|| SocketAddrV6::new(Lab::ip6_of(*listen.ip()), listen.port(), 0, 0));
        std::fs::write(&conf, config(&workdir, listen, listen6))
            .with_context(|| format!("writing {}", conf.display()))?;
        // Only this run's requests belong in the log.
        let access = workdir.join("access.log");
        if access.exists() {
            std::fs::remove_file(&access)
                .with_context(|| format!("removing old {}", access.display()))?;
        }
        let child = spawn(lab, ns, &binary, &workdir)?;
        let mut nginx = Nginx {
            child,
            workdir,
            listen,
        };
        nginx
            .wait_ready(lab, ns)
            .with_context(|| format!("starting nginx in {ns} on {listen}"))?;
        Ok(nginx)
    }

    /// Stops nginx (SIGTERM: its connections close) and starts it again in `ns` with the same
    /// configuration, its access log kept; returns once the port accepts again. A server
    /// restarted under replication, as an operator would.
    pub fn restart(&mut self, lab: &Lab, ns: &str) -> anyhow::Result<()> {
        self.child.stop().context("stopping nginx")?;
        let binary = nginx_binary().context("nginx not found")?;
        self.child = spawn(lab, ns, &binary, &self.workdir)?;
        let listen = self.listen;
        self.wait_ready(lab, ns)
            .with_context(|| format!("restarting nginx in {ns} on {listen}"))
    }

    fn wait_ready(&mut self, lab: &Lab, ns: &str) -> anyhow::Result<()> {
        let end = Instant::now() + READY_TIMEOUT;
        let listen = self.listen;
        let child = &mut self.child;
        let ready = lab.run_in(ns, move || loop {
            if !child.is_running() {
                return false;
            }
            if TcpStream::connect_timeout(&listen.into(), Duration::from_millis(200)).is_ok() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        if ready {
            return Ok(());
        }
        let why = if self.child.is_running() {
            format!("port not accepting after {READY_TIMEOUT:?}")
        } else {
            "nginx exited".to_string()
        };
        let error_log = std::fs::read_to_string(self.workdir.join("error.log")).unwrap_or_default();
        bail!(
            "{why}; output: {}; error.log: {}",
            self.child.log_text().trim(),
            error_log.trim()
        )
    }

    /// The request URIs logged so far, in file order.
    pub fn access_log(&self) -> anyhow::Result<Vec<String>> {
        let path = self.workdir.join("access.log");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_string).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The access log once it has at least `n` lines, or whatever it has after `timeout`. nginx logs a
    /// request after sending its response, so a client can see the answer before the line exists.
    pub fn wait_access_log(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let end = Instant::now() + timeout;
        loop {
            let lines = self.access_log()?;
            if lines.len() >= n || Instant::now() >= end {
                return Ok(lines);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops nginx (SIGTERM: fast shutdown) and returns its exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.child.stop()
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn listen(&self) -> SocketAddrV4 {
        self.listen
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn config_keeps_everything_in_workdir() {
        let conf = config(
            Path::new("/w"),
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 30), 80),
            Some("[2001:2::30]:80".parse().unwrap()),
        );
        assert!(conf.contains("listen 198.18.0.30:80;"));
        assert!(conf.contains("listen [2001:2::30]:80;"));
        assert!(conf.contains(r#"access_log "/w/access.log" uri;"#));
        for line in conf
            .lines()
            .filter(|l| l.contains("_path") || l.contains("_log "))
        {
            assert!(line.contains("\"/w/"), "outside workdir: {line}");
        }
    }
}
