//! Driving `wrk` (Debian package `wrk`) from a lab namespace, for the load harness.
//!
//! Every request gets a unique URI (`/k/{tag}/{thread}/{n}`), so a server's access log tells which
//! requests arrived, which did not and which arrived twice. wrk has no rate option; a fixed rate comes
//! from its Lua `delay()` hook: each connection waits `delay_ms` before each request, so `c`
//! connections make at most `c * 1000 / delay_ms` requests/s. With `close`, every request carries
//! `Connection: close` and wrk opens a new connection for the next one (one request per connection).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::netlab::{find_program, Lab};

/// The wrk binary: `/usr/bin/wrk`, else the first `wrk` on `PATH`.
pub fn wrk_binary() -> Option<PathBuf> {
    find_program("/usr/bin/wrk", "wrk")
}

#[derive(Clone, Debug)]
pub struct WrkSpec {
    /// `http://host:port` (no path).
    pub base_url: String,
    /// URI component that tells this run's requests apart from others in the same log.
    pub tag: String,
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    /// Pause before every request, per connection (None: as fast as the server answers).
    pub delay_ms: Option<u32>,
    /// One request per connection.
    pub close: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkReport {
    /// Responses wrk completed.
    pub requests: u64,
    pub seconds: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx answers.
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl WrkReport {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// The Lua script for `spec`.
fn script(spec: &WrkSpec) -> String {
    let close = if spec.close {
        r#"wrk.headers["Connection"] = "close""#
    } else {
        ""
    };
    let delay = spec
        .delay_ms
        .map(|ms| format!("function delay() return {ms} end"))
        .unwrap_or_default();
    format!(
        r#"local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local n = 0
{close}
function request()
  n = n + 1
  return wrk.format("GET", "/k/{tag}/" .. tid .. "/" .. n)
end
{delay}
"#,
        tag = spec.tag
    )
}

/// Runs wrk in `ns` with the script written to `workdir`, and parses its summary.
pub fn run(lab: &Lab, ns: &str, spec: &WrkSpec, workdir: &Path) -> anyhow::Result<WrkReport> {
    let wrk = wrk_binary().context("wrk not found (Debian: apt install wrk)")?;
    let path = workdir.join(format!("wrk-{}.lua", spec.tag));
    std::fs::write(&path, script(spec)).with_context(|| format!("writing {}", path.display()))?;
    let args = [
        wrk.display().to_string(),
        "--latency".into(),
        "-t".into(),
        spec.threads.to_string(),
        "-c".into(),
        spec.connections.to_string(),
        "-d".into(),
        format!("{}s", spec.duration.as_secs().max(1)),
        "-s".into(),
        path.display().to_string(),
        format!("{}/", spec.base_url),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.sh(ns, &args)?;
    parse(&out).with_context(|| format!("unexpected wrk output:\n{out}"))
}

/// `1.23ms` → 1230 µs.
fn duration_us(s: &str) -> Option<u64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    Some((v * scale).round() as u64)
}

/// Parses wrk's text summary (wrk 4).
pub fn parse(out: &str) -> anyhow::Result<WrkReport> {
    let mut r = WrkReport::default();
    let mut seen_total = false;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v, ..] => r.p50_us = duration_us(v).context("p50")?,
            ["99%", v, ..] => r.p99_us = duration_us(v).context("p99")?,
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().context("request count")?;
                r.seconds =
                    duration_us(secs.trim_end_matches(',')).context("run time")? as f64 / 1e6;
                seen_total = true;
            }
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                r.errors += n.parse::<u64>().context("non-2xx count")?
            }
            _ => {}
        }
    }
    if !seen_total {
        bail!("no request total");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 5s test @ http://198.18.0.20:80/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   353.67us  400.12us  12.01ms   95.20%
    Req/Sec    25.01k     1.20k   27.90k    70.00%
  Latency Distribution
     50%  281.00us
     75%  372.00us
     90%  510.00us
     99%    1.87ms
  248812 requests in 5.00s, 38.21MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  49762.40
Transfer/sec:      7.64MB
";

    #[test]
    fn summary_is_parsed() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.requests, 248_812);
        assert_eq!(r.seconds, 5.0);
        assert_eq!(r.p50_us, 281);
        assert_eq!(r.p99_us, 1870);
        assert_eq!(r.errors, 12);
        assert!((r.rate() - 49_762.4).abs() < 1.0);
    }

    #[test]
    fn output_without_a_total_is_an_error() {
        assert!(parse("unable to connect to 198.18.0.20:80 Connection refused").is_err());
    }

    #[test]
    fn script_paces_and_closes_when_asked() {
        let spec = WrkSpec {
            base_url: "http://198.18.0.20:80".into(),
            tag: "r1".into(),
            threads: 2,
            connections: 50,
            duration: Duration::from_secs(5),
            delay_ms: Some(5),
            close: true,
        };
        let s = script(&spec);
        assert!(s.contains("function delay() return 5 end"));
        assert!(s.contains(r#"wrk.headers["Connection"] = "close""#));
        assert!(s.contains(r#""/k/r1/" .. tid"#));
        let s = script(&WrkSpec {
            delay_ms: None,
            close: false,
            ..spec
        });
        assert!(!s.contains("delay") && !s.contains("close"));
    }
}
