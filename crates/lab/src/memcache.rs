//! memcached for the "hot backup" end-to-end test: a text-protocol client, a server wrapper for the lab
//! namespaces and a write load whose expected final state is known exactly.
//!
//! The test writes random keys through [`hot_backup`] to an online memcached while tcpcopy replicates
//! the connections to a target memcached, then compares both servers' key→value maps. The client
//! reads every key a server holds with `lru_crawler metadump all` ([`MemcacheConn::keys`]) and their
//! values with multi-gets ([`MemcacheConn::get_many`]). A bad or unexpected answer is an error naming
//! the server, the command and the answer; after an error the connection should be dropped.

use crate::netlab::{Child, Lab};
use anyhow::{anyhow, bail, Context as _};
use session::testing::Rng;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one answer (or one write) may take before the command fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Memcached::start`] waits for the server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per `get` command in [`MemcacheConn::get_many`].
const GET_BATCH: usize = 100;
/// memcached's key length limit.
const MAX_KEY_LEN: usize = 250;
/// Longest answer line accepted; metadump and stats lines are far shorter.
const MAX_LINE: u64 = 64 * 1024;
/// memcached's largest possible item (`-I` tops out at 1 GB); a longer announced value is garbage.
const MAX_VALUE: usize = 1 << 30;
/// How often [`MemcacheConn::keys`] dumps again while the dump disagrees with `curr_items`.
const DUMP_ATTEMPTS: usize = 10;
/// How long [`MemcacheConn::keys`] retries while the LRU crawler answers `BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// One text-protocol connection to memcached.
#[derive(Debug)]
pub struct MemcacheConn {
    stream: BufReader<TcpStream>,
    peer: SocketAddr,
    /// Reused request buffer, so that a set leaves in one write.
    out: Vec<u8>,
}

impl MemcacheConn {
    /// Connects (within 10 s) with `TCP_NODELAY`; every answer must arrive within 30 s.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<MemcacheConn> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to memcached at {addr}"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .with_context(|| format!("configuring connection to memcached at {addr}"))?;
        Ok(MemcacheConn {
            stream: BufReader::new(stream),
            peer: addr,
            out: Vec::new(),
        })
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The server version from `version`, e.g. `1.6.18`.
    pub fn version(&mut self) -> anyhow::Result<String> {
        let peer = self.peer;
        self.version_inner()
            .with_context(|| format!("memcached at {peer}: version"))
    }

    fn version_inner(&mut self) -> anyhow::Result<String> {
        self.command("version")?;
        let line = self.read_line()?;
        match line.strip_prefix("VERSION ") {
            Some(version) => Ok(version.trim().to_string()),
            None => bail!("unexpected answer {}", shown(&line)),
        }
    }

    /// Stores `value` under `key` (flags 0, no expiry) and waits for `STORED`.
    pub fn set(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let peer = self.peer;
        self.set_inner(key, value)
            .with_context(|| format!("memcached at {peer}: set {key:?} ({} bytes)", value.len()))
    }

    fn set_inner(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        check_key(key)?;
        self.out.clear();
        self.out
            .extend_from_slice(format!("set {key} 0 0 {}\r\n", value.len()).as_bytes());
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
        self.stream
            .get_mut()
            .write_all(&self.out)
            .map_err(|e| io_error(e, "sending"))?;
        let line = self.read_line()?;
        if line != "STORED" {
            bail!("server answered {}", shown(&line));
        }
        Ok(())
    }

    /// Values of those keys that exist (multi-get "get k1 k2 ..."; batch internally, at most 100
    /// keys per command). Missing keys are simply absent from the map.
    pub fn get_many(&mut self, keys: &[String]) -> anyhow::Result<HashMap<String, Vec<u8>>> {
        let peer = self.peer;
        let mut found = HashMap::new();
        for batch in keys.chunks(GET_BATCH) {
            self.get_batch(batch, &mut found).with_context(|| {
                format!(
                    "memcached at {peer}: get of {} keys starting with {:?}",
                    batch.len(),
                    batch[0]
                )
            })?;
        }
        Ok(found)
    }

    fn get_batch(
        &mut self,
        batch: &[String],
        found: &mut HashMap<String, Vec<u8>>,
    ) -> anyhow::Result<()> {
        for key in batch {
            check_key(key)?;
        }
        self.command(&format!("get {}", batch.join(" ")))?;
        loop {
            let line = self.read_line()?;
            if line == "END" {
                return Ok(());
            }
            // VALUE <key> <flags> <bytes> [<cas unique>]
            let fields: Vec<&str> = line.split(' ').collect();
            let (key, len) = match fields.as_slice() {
                ["VALUE", key, _flags, len] | ["VALUE", key, _flags, len, _] => (*key, *len),
                _ => bail!("unexpected answer {}", shown(&line)),
            };
            let len: usize = len
                .parse()
                .ok()
                .filter(|&n| n <= MAX_VALUE)
                .ok_or_else(|| anyhow!("bad value length in {}", shown(&line)))?;
            if !batch.iter().any(|k| k == key) {
                bail!("server returned key {key:?}, which was not asked for");
            }
            let value = self.read_value(len)?;
            found.insert(key.to_string(), value);
        }
    }

    /// Reads a `len`-byte data block and its `\r\n` terminator.
    fn read_value(&mut self, len: usize) -> anyhow::Result<Vec<u8>> {
        // Grown as data arrives, so that a garbage length cannot allocate a gigabyte up front.
        let mut data = Vec::with_capacity(len.min(1 << 20) + 2);
        (&mut self.stream)
            .take(len as u64 + 2)
            .read_to_end(&mut data)
            .map_err(|e| io_error(e, "reading a value"))?;
        if data.len() < len + 2 {
            bail!(
                "connection closed after {} of {} value bytes",
                data.len().min(len),
                len
            );
        }
        if !data.ends_with(b"\r\n") {
            bail!("{len}-byte value not followed by \\r\\n");
        }
        data.truncate(len);
        Ok(data)
    }

    /// Every key the server holds, via `lru_crawler metadump all` (lines `key=<urlencoded> exp=...`,
    /// ending with `END`), with the %XX escapes decoded. Unordered.
    ///
    /// The dump walks the LRUs while the server keeps working, so it is only exact on a quiet server.
    /// It is compared with `curr_items` read before and after; while those agree with each other
    /// but not with the dump, it dumps again (up to 10 times), then returns the last dump as is.
    /// A `BUSY` crawler (another dump running) is waited for, up to 10 s.
    pub fn keys(&mut self) -> anyhow::Result<Vec<String>> {
        let peer = self.peer;
        self.keys_inner()
            .with_context(|| format!("memcached at {peer}: lru_crawler metadump all"))
    }

    fn keys_inner(&mut self) -> anyhow::Result<Vec<String>> {
        let mut attempt = 1;
        loop {
            let before = self.stat_inner("curr_items")?;
            let keys = self.metadump()?;
            let after = self.stat_inner("curr_items")?;
            let quiet = before.is_some() && before == after;
            if !quiet || after == Some(keys.len() as u64) || attempt >= DUMP_ATTEMPTS {
                return Ok(keys);
            }
            attempt += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metadump(&mut self) -> anyhow::Result<Vec<String>> {
        let busy_end = Instant::now() + BUSY_TIMEOUT;
        'dump: loop {
            self.command("lru_crawler metadump all")?;
            let mut keys = Vec::new();
            loop {
                let line = self.read_line()?;
                if line == "END" {
                    return Ok(keys);
                }
                if line.starts_with("BUSY") && keys.is_empty() {
                    if Instant::now() >= busy_end {
                        bail!(
                            "crawler still busy after {BUSY_TIMEOUT:?}: {}",
                            shown(&line)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue 'dump;
                }
                keys.push(metadump_key(&line)?);
            }
        }
    }

    /// One counter from "stats" (e.g. "cmd_set", "curr_items", "evictions"), `None` if absent. A
    /// present but non-integer statistic (e.g. "version", "rusage_user") is an error.
    pub fn stat(&mut self, name: &str) -> anyhow::Result<Option<u64>> {
        let peer = self.peer;
        self.stat_inner(name)
            .with_context(|| format!("memcached at {peer}: stats ({name})"))
    }

    fn stat_inner(&mut self, name: &str) -> anyhow::Result<Option<u64>> {
        self.command("stats")?;
        let mut value = None;
        loop {
            let line = self.read_line()?;
            if line == "END" {
                break;
            }
            let mut fields = line.splitn(3, ' ');
            match (fields.next(), fields.next(), fields.next()) {
                (Some("STAT"), Some(stat), Some(v)) if stat == name => value = Some(v.to_string()),
                (Some("STAT"), Some(_), Some(_)) => {}
                _ => bail!("unexpected answer {}", shown(&line)),
            }
        }
        // Read up to END first, so the connection stays usable after a non-integer statistic.
        value
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| anyhow!("statistic {name} is not an integer: {v:?}"))
            })
            .transpose()
    }

    /// Sends one command line (without the `\r\n`).
    fn command(&mut self, line: &str) -> anyhow::Result<()> {
        let stream = self.stream.get_mut();
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| io_error(e, "sending"))
    }

    /// One answer line without its line end (`\r\n`, or the bare `\n` metadump lines end with).
    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = Vec::new();
        (&mut self.stream)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(e, "reading an answer"))?;
        if line.last() != Some(&b'\n') {
            if line.len() as u64 >= MAX_LINE {
                bail!("answer line longer than {MAX_LINE} bytes");
            }
            if line.is_empty() {
                bail!("connection closed by the server");
            }
            bail!(
                "connection closed in the middle of answer {}",
                shown(&String::from_utf8_lossy(&line))
            );
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|e| {
            anyhow!(
                "answer line is not UTF-8: {}",
                shown(&String::from_utf8_lossy(e.as_bytes()))
            )
        })
    }
}

/// An I/O error with a readable cause; a read timeout shows as "no answer within 30 s".
fn io_error(e: io::Error, doing: &str) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            anyhow!("{doing}: no progress within {IO_TIMEOUT:?}")
        }
        _ => anyhow!("{doing}: {e}"),
    }
}

/// A server line for an error message: quoted, and cut after 200 characters.
fn shown(line: &str) -> String {
    const LIMIT: usize = 200;
    match line.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &line[..cut], line.len()),
        None => format!("{line:?}"),
    }
}

/// memcached's text-protocol key rules: 1 to 250 bytes, no spaces or control characters.
fn check_key(key: &str) -> anyhow::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        bail!("invalid key {key:?}: must be 1 to {MAX_KEY_LEN} bytes");
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("invalid key {key:?}: contains whitespace or control characters");
    }
    Ok(())
}

/// The decoded key of one metadump line (`key=<urlencoded> exp=... la=... ...`).
fn metadump_key(line: &str) -> anyhow::Result<String> {
    let encoded = line
        .split(' ')
        .next()
        .and_then(|first| first.strip_prefix("key="))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| anyhow!("unexpected metadump line {}", shown(line)))?;
    url_decode(encoded).with_context(|| format!("in metadump line {}", shown(line)))
}

/// Decodes `%XX` escapes (memcached escapes every byte outside `A-Za-z0-9-._~`); the result must
/// be UTF-8. `+` stays `+`.
fn url_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("bad %-escape at byte {i} of {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("{s:?} decodes to non-UTF-8 bytes"))
}

/// The memcached binary: `/usr/bin/memcached`, else the first `memcached` on `PATH`.
pub fn memcached_binary() -> Option<PathBuf> {
    crate::netlab::find_program("/usr/bin/memcached", "memcached")
}

/// Command-line arguments for a TCP-only memcached on `listen` with `memory_mb` of item memory.
fn memcached_args(listen: SocketAddrV4, memory_mb: u32) -> Vec<String> {
    [
        "-l",
        &listen.ip().to_string(),
        "-p",
        &listen.port().to_string(),
        "-U",
        "0",
        "-m",
        &memory_mb.to_string(),
        "-c",
        "4096",
        "-t",
        "2",
        "-I",
        "2m",
        "-u",
        "root",
    ]
    .map(str::to_string)
    .to_vec()
}

/// Whether a server on `addr` accepts a connection (within 200 ms) and answers `version`.
fn answers_version(addr: SocketAddr) -> bool {
    let ask = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"version\r\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.starts_with("VERSION "))
    };
    matches!(ask(), Ok(true))
}

/// A memcached process started in a lab network namespace; killed on drop (SIGTERM, SIGKILL after
/// 3 s).
#[derive(Debug)]
pub struct Memcached {
    child: Child,
    listen: SocketAddrV4,
}

impl Memcached {
    /// Starts `memcached` (`/usr/bin/memcached`, else on `PATH`) inside namespace `ns`, TCP only on
    /// `listen`, with `-m <memory_mb> -c 4096 -t 2 -I 2m -u root`, output in `log`, and waits (up to
    /// 10 s, connecting from inside `ns`) until it answers.
    pub fn start(
        lab: &Lab,
        ns: &str,
        listen: SocketAddrV4,
        memory_mb: u32,
        log: &Path,
    ) -> anyhow::Result<Memcached> {
        let binary = memcached_binary()
            .ok_or_else(|| anyhow!("memcached not found: apt-get install memcached"))?;
        // Otherwise the readiness check below could take the old server's answer for ours.
        let taken = lab.run_in(ns, || {
            TcpStream::connect_timeout(&listen.into(), Duration::from_millis(200)).is_ok()
        });
        if taken {
            bail!("starting memcached in {ns}: {listen} is already in use");
        }
        let mut child = lab.spawn(ns, &binary, &memcached_args(listen, memory_mb), log)?;
        child
            .wait_serving(ns, READY_TIMEOUT, || answers_version(listen.into()))
            .with_context(|| format!("starting memcached on {listen}"))?;
        let server = Memcached { child, listen };
        Ok(server)
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.listen.into()
    }

    /// The memcached process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// What a hot-backup load writes. Connection `c` sets keys `c{c}:k{n}` with `n` drawn at random
/// below `keys_per_connection`, so later sets overwrite some keys; the final map does not depend on
/// how connections interleave at the server. Value lengths are log-uniform in
/// `min_len..=max_len`, contents arbitrary bytes; everything is deterministic from `seed` (and the
/// number of connections).
#[derive(Debug, Clone)]
pub struct HotBackupSpec {
    /// Sets over all connections, spread evenly.
    pub sets: usize,
    /// Shortest value in bytes, at least 1.
    pub min_len: usize,
    /// Longest value in bytes (inclusive); with `-I 2m` a little under 2 MiB at most.
    pub max_len: usize,
    /// Distinct keys each connection draws from, at least 1.
    pub keys_per_connection: usize,
    /// Seed of the pseudo-random keys, lengths and contents.
    pub seed: u64,
}

impl HotBackupSpec {
    fn check(&self) -> anyhow::Result<()> {
        if self.min_len == 0 || self.min_len > self.max_len {
            bail!(
                "hot backup: need 1 <= min_len <= max_len, got {}..={}",
                self.min_len,
                self.max_len
            );
        }
        if self.keys_per_connection == 0 {
            bail!("hot backup: keys_per_connection must be at least 1");
        }
        Ok(())
    }
}

/// Runs `spec.sets` sets spread evenly over the given already-open connections, one thread per
/// connection, each set waiting for `STORED` before the next. Returns the expected final map: the
/// last value written to every key. The first failing set stops all connections and is returned.
pub fn hot_backup(
    conns: Vec<MemcacheConn>,
    spec: &HotBackupSpec,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    spec.check()?;
    if conns.is_empty() {
        if spec.sets == 0 {
            return Ok(HashMap::new());
        }
        bail!("hot backup: {} sets but no connections", spec.sets);
    }
    let count = conns.len();
    let failed = AtomicBool::new(false);
    let results: Vec<anyhow::Result<HashMap<String, Vec<u8>>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(index, conn)| {
                let sets = spec.sets / count + usize::from(index < spec.sets % count);
                let failed = &failed;
                scope.spawn(move || {
                    let result = write_connection(conn, index, sets, spec, failed);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        workers
            .into_iter()
            .enumerate()
            .map(|(index, worker)| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("hot backup: connection {index} panicked")))
            })
            .collect()
    });
    let mut expected = HashMap::new();
    for result in results {
        expected.extend(result?);
    }
    Ok(expected)
}

/// One connection's share of [`hot_backup`]; stops early (without error) once `failed` is set.
fn write_connection(
    mut conn: MemcacheConn,
    index: usize,
    sets: usize,
    spec: &HotBackupSpec,
    failed: &AtomicBool,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let mut writes = SetStream::new(spec, index);
    let mut written = HashMap::new();
    for n in 0..sets {
        if failed.load(Ordering::Relaxed) {
            break;
        }
        let (key, value) = writes.next_set();
        conn.set(&key, &value)
            .with_context(|| format!("hot backup connection {index}, set {n} of {sets}"))?;
        written.insert(key, value);
    }
    Ok(written)
}

/// The deterministic sequence of (key, value) sets of one hot-backup connection.
struct SetStream {
    rng: Rng,
    conn: usize,
    keys: usize,
    min_len: usize,
    max_len: usize,
}

impl SetStream {
    fn new(spec: &HotBackupSpec, conn: usize) -> SetStream {
        SetStream {
            rng: Rng::for_stream(spec.seed, conn),
            conn,
            keys: spec.keys_per_connection,
            min_len: spec.min_len,
            max_len: spec.max_len,
        }
    }

    fn next_set(&mut self) -> (String, Vec<u8>) {
        let key = format!("c{}:k{}", self.conn, self.rng.below(self.keys));
        let mut value = vec![0; self.rng.log_uniform(self.min_len, self.max_len)];
        self.rng.fill(&mut value);
        (key, value)
    }
}

/// (shortest value, longest value, total bytes) of `map`; `(0, 0, 0)` when empty.
pub fn value_len_stats(map: &HashMap<String, Vec<u8>>) -> (usize, usize, u64) {
    let mut lens = map.values().map(Vec::len);
    let Some(first) = lens.next() else {
        return (0, 0, 0);
    };
    lens.fold((first, first, first as u64), |(min, max, total), len| {
        (min.min(len), max.max(len), total + len as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `addr` until it answers `version` while `running()` (true), or until `running()` turns
    /// false or `end` passes (false).
    fn wait_answering(addr: SocketAddr, end: Instant, mut running: impl FnMut() -> bool) -> bool {
        loop {
            if !running() {
                return false;
            }
            if answers_version(addr) {
                // The answer may have come from another server that holds the port and made ours exit.
                return running();
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Shutdown, TcpListener};
    use std::process::{Command, Stdio};

    #[test]
    fn url_decode_handles_escapes() {
        assert_eq!(url_decode("c0%3Ak17").unwrap(), "c0:k17");
        assert_eq!(url_decode("plain-key_1.~").unwrap(), "plain-key_1.~");
        assert_eq!(url_decode("a%2fb%25c+").unwrap(), "a/b%c+");
        assert_eq!(url_decode("%C3%A9").unwrap(), "é");
        for bad in ["%", "%4", "%zz", "ab%4g", "%FF"] {
            assert!(url_decode(bad).is_err(), "{bad:?} decoded");
        }
    }

    #[test]
    fn metadump_lines_parse() {
        let line = "key=c3%3Ak99 exp=-1 la=1795624582 cas=7 fetch=no cls=2 size=120";
        assert_eq!(metadump_key(line).unwrap(), "c3:k99");
        for bad in [
            "",
            "ERROR",
            "key= exp=-1",
            "BUSY currently processing crawler request",
        ] {
            assert!(metadump_key(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("c0:k1").is_ok());
        assert!(check_key(&"k".repeat(250)).is_ok());
        for bad in [
            String::new(),
            "k".repeat(251),
            "a b".into(),
            "a\r\nb".into(),
        ] {
            assert!(check_key(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prng_is_deterministic() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..100).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        assert!(draw(0).iter().all(|&x| x != 0));

        let spec = HotBackupSpec {
            sets: 0,
            min_len: 10,
            max_len: 1000,
            keys_per_connection: 50,
            seed: 9,
        };
        let sets = |conn| {
            let mut stream = SetStream::new(&spec, conn);
            (0..200).map(|_| stream.next_set()).collect::<Vec<_>>()
        };
        assert_eq!(sets(1), sets(1));
        assert_ne!(sets(0), sets(1));
        for (key, value) in sets(1) {
            let n: usize = key.strip_prefix("c1:k").unwrap().parse().unwrap();
            assert!(n < 50);
            assert!((10..=1000).contains(&value.len()));
        }
    }

    #[test]
    fn value_lengths_are_log_uniform_within_bounds() {
        let mut rng = Rng::new(1);
        let (min, max) = (10, 100 * 1024);
        let lens: Vec<usize> = (0..100_000).map(|_| rng.log_uniform(min, max)).collect();
        assert!(lens.iter().all(|l| (min..=max).contains(l)));
        // Mean (max - min) / ln(max / min) ≈ 11 KB; median √(min·max) ≈ 1 KB.
        let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
        let expected = (max - min) as f64 / (max as f64 / min as f64).ln();
        assert!((mean / expected - 1.0).abs() < 0.05, "mean {mean}");
        let below_median = lens.iter().filter(|&&l| l < 1012).count();
        assert!((47_000..53_000).contains(&below_median), "{below_median}");
        // Each decade gets about a quarter.
        let small = lens.iter().filter(|&&l| l < 100).count();
        assert!((23_000..27_000).contains(&small), "{small}");

        // Narrow ranges reach both ends.
        let seen: HashSet<usize> = (0..1000).map(|_| rng.log_uniform(3, 5)).collect();
        assert_eq!(seen, HashSet::from([3, 4, 5]));
        assert_eq!(rng.log_uniform(7, 7), 7);
    }

    #[test]
    fn value_len_stats_summarises() {
        assert_eq!(value_len_stats(&HashMap::new()), (0, 0, 0));
        let map = HashMap::from([
            ("a".to_string(), vec![0; 10]),
            ("b".to_string(), vec![0; 3]),
            ("c".to_string(), vec![0; 7]),
        ]);
        assert_eq!(value_len_stats(&map), (3, 10, 20));
    }

    #[test]
    fn bad_specs_are_refused() {
        let spec = HotBackupSpec {
            sets: 10,
            min_len: 0,
            max_len: 10,
            keys_per_connection: 5,
            seed: 1,
        };
        assert!(hot_backup(Vec::new(), &spec).is_err());
        let spec = HotBackupSpec {
            min_len: 11,
            ..spec
        };
        assert!(hot_backup(Vec::new(), &spec).is_err());
        let spec = HotBackupSpec {
            min_len: 1,
            keys_per_connection: 0,
            ..spec
        };
        assert!(hot_backup(Vec::new(), &spec).is_err());
        let spec = HotBackupSpec {
            keys_per_connection: 1,
            ..spec
        };
        assert!(
            hot_backup(Vec::new(), &spec).is_err(),
            "sets without connections"
        );
    }

    /// A one-connection server that answers the first request with `answer`, then closes.
    fn scripted_server(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(answer);
            let _ = stream.shutdown(Shutdown::Write);
            // Drain, so that closing does not reset the connection before the client read.
            let _ = io::copy(&mut stream, &mut io::sink());
        });
        addr
    }

    #[test]
    fn bad_answers_are_errors() {
        type Op = fn(&mut MemcacheConn) -> anyhow::Result<()>;
        let set: Op = |c| c.set("k", b"v");
        let get: Op = |c| c.get_many(&["a".to_string()]).map(drop);
        let keys: Op = |c| c.keys().map(drop);
        let stat: Op = |c| c.stat("x").map(drop);
        let version: Op = |c| c.version().map(drop);
        let cases: [(Op, &'static [u8], &str); 10] = [
            (set, b"NOT_STORED\r\n", "NOT_STORED"),
            (
                set,
                b"SERVER_ERROR out of memory storing object\r\n",
                "out of memory",
            ),
            (get, b"VALUE a 0 zz\r\nEND\r\n", "bad value length"),
            (get, b"VALUE b 0 1\r\nx\r\nEND\r\n", "not asked for"),
            (get, b"VALUE a 0 10\r\nabc", "closed after 3 of 10"),
            (get, b"VALUE a 0 3\r\nabcdEND\r\n", "not followed by"),
            (
                keys,
                b"STAT curr_items 0\r\nEND\r\nERROR\r\n",
                "unexpected metadump line",
            ),
            (stat, b"STAT x 1.5\r\nEND\r\n", "not an integer"),
            (version, b"", "closed by the server"),
            (version, b"VERSION 1.6", "middle of answer"),
        ];
        for (op, answer, expected) in cases {
            let mut conn = MemcacheConn::connect(scripted_server(answer)).unwrap();
            let err = format!("{:#}", op(&mut conn).unwrap_err());
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains('\n'), "multi-line error: {err}");
        }
    }

    /// A memcached on loopback, killed when dropped (also when the test fails).
    struct LocalMemcached {
        child: std::process::Child,
        addr: SocketAddr,
    }

    impl LocalMemcached {
        fn start(memory_mb: u32) -> LocalMemcached {
            let binary =
                memcached_binary().expect("memcached not found: apt-get install memcached");
            // A free port: bind to port 0, note the port, release it for memcached.
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            let child = Command::new(binary)
                .args(memcached_args(listen, memory_mb))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawning memcached");
            let mut server = LocalMemcached {
                child,
                addr: listen.into(),
            };
            let end = Instant::now() + READY_TIMEOUT;
            let child = &mut server.child;
            assert!(
                wait_answering(server.addr, end, || matches!(child.try_wait(), Ok(None))),
                "memcached on {listen} did not start"
            );
            server
        }
    }

    impl Drop for LocalMemcached {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn sorted(mut keys: Vec<String>) -> Vec<String> {
        keys.sort();
        keys
    }

    #[test]
    fn real_memcached_round_trip_and_hot_backup() {
        let server = LocalMemcached::start(256);
        let mut conn = MemcacheConn::connect(server.addr).unwrap();
        assert!(conn.version().unwrap().starts_with("1."));
        assert_eq!(conn.keys().unwrap(), Vec::<String>::new());

        // Values are length-prefixed: protocol-looking bytes are just data.
        let tricky = b"\r\nEND\r\nVALUE x 0 1\r\n\0\xff".to_vec();
        conn.set("alpha", b"one").unwrap();
        conn.set("odd:key/%+", &tricky).unwrap();
        conn.set("empty", b"").unwrap();
        let asked = ["alpha", "odd:key/%+", "empty", "missing"].map(str::to_string);
        let got = conn.get_many(&asked).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got["alpha"], b"one");
        assert_eq!(got["odd:key/%+"], tricky);
        assert_eq!(got["empty"], b"");
        assert_eq!(
            sorted(conn.keys().unwrap()),
            ["alpha", "empty", "odd:key/%+"]
        );
        assert_eq!(conn.stat("cmd_set").unwrap(), Some(3));
        assert_eq!(conn.stat("curr_items").unwrap(), Some(3));
        assert_eq!(conn.stat("no_such_statistic").unwrap(), None);
        assert!(conn.stat("version").is_err());

        // Over -I 2m: refused, and memcached swallows the data, so the connection stays usable.
        let err = conn.set("huge", &vec![b'x'; 2 << 20]).unwrap_err();
        assert!(format!("{err:#}").contains("too large"), "{err:#}");
        assert!(conn.set("bad key", b"v").is_err());
        assert_eq!(conn.stat("curr_items").unwrap(), Some(3));

        let spec = HotBackupSpec {
            sets: 500,
            min_len: 10,
            max_len: 100 * 1024,
            keys_per_connection: 150,
            seed: 7,
        };
        let conns = (0..2)
            .map(|_| MemcacheConn::connect(server.addr).unwrap())
            .collect();
        let expected = hot_backup(conns, &spec).unwrap();
        assert!(expected.len() < 300, "no key was overwritten");
        assert!(expected
            .keys()
            .all(|k| k.starts_with("c0:k") || k.starts_with("c1:k")));
        let (min, max, total) = value_len_stats(&expected);
        assert!(min >= 10 && max <= 100 * 1024 && total > 0);

        let wanted: Vec<String> = expected.keys().cloned().collect();
        assert_eq!(conn.get_many(&wanted).unwrap(), expected);
        let mut all_keys = wanted;
        all_keys.extend(["alpha", "empty", "odd:key/%+"].map(str::to_string));
        assert_eq!(sorted(conn.keys().unwrap()), sorted(all_keys));
        assert_eq!(conn.stat("cmd_set").unwrap(), Some(3 + 500));
        assert_eq!(conn.stat("evictions").unwrap(), Some(0));
    }
}
