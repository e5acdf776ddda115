//! A minimal RESP2 client, a pipelined redis load and a redis-server wrapper, for the end-to-end test
//! that replicates redis traffic and compares keyspaces.
//!
//! [`pipelined_load`] is deterministic per connection: connection `i` uses only keys starting with
//! `c{i}:` and its commands depend only on the seed and `i`, so the final keyspace does not depend on
//! how connections interleave. Two fresh servers given the same [`PipelineSpec`] end up with equal
//! [`RedisConn::keyspace`]s, and so must a server that received a faithful copy of the traffic.
//!
//! The client reads replies strictly: anything that is not well-formed RESP2 is an error naming what
//! was expected, never a panic. After an I/O or parse error a [`RedisConn`] is out of step with its
//! server and should be dropped.

use crate::netlab::{Child, Lab};
use anyhow::{anyhow, bail, Context as _};
use session::testing::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `+`, `-`, `:`, `$` or `*` line accepted, without its CRLF.
const MAX_LINE: usize = 64 * 1024;
/// redis' own default `proto-max-bulk-len`.
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// Deepest array nesting accepted; keeps garbage from exhausting the stack.
const MAX_DEPTH: usize = 32;
/// Keys per type and connection in [`pipelined_load`]: 5 types × 40 = 200 keys per connection.
const KEYS_PER_TYPE: u64 = 40;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`, the text after the `-`.
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3 abc`; `None` for the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`; `None` for the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

/// The value of one key, in a form where `==` means "same redis value": hash fields and set members
/// are sorted, list items keep their order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// A string (`GET`).
    Str(Vec<u8>),
    /// A list (`LRANGE key 0 -1`).
    List(Vec<Vec<u8>>),
    /// A hash (`HGETALL`).
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// A set (`SMEMBERS`).
    Set(BTreeSet<Vec<u8>>),
}

impl Value {
    /// The redis type name: `"string"`, `"list"`, `"hash"` or `"set"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
        }
    }
}

/// Up to `max` one-line descriptions of how keyspace `b` differs from `a` (missing, extra and
/// different keys, in key order); empty when they are equal. For assertion messages.
pub fn keyspace_diff(
    a: &BTreeMap<Vec<u8>, Value>,
    b: &BTreeMap<Vec<u8>, Value>,
    max: usize,
) -> Vec<String> {
    let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let name = String::from_utf8_lossy(key);
            match (a.get(key), b.get(key)) {
                (Some(x), None) => Some(format!("{name}: {} missing", x.kind())),
                (None, Some(y)) => Some(format!("{name}: unexpected {}", y.kind())),
                (Some(x), Some(y)) if x.kind() != y.kind() => {
                    Some(format!("{name}: {} instead of {}", y.kind(), x.kind()))
                }
                (Some(x), Some(y)) if x != y => Some(format!("{name}: {} differs", x.kind())),
                _ => None,
            }
        })
        .take(max)
        .collect()
}

/// One RESP connection.
#[derive(Debug)]
pub struct RedisConn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    peer: SocketAddr,
}

impl RedisConn {
    /// Connects (10 s timeout) with TCP_NODELAY and 30 s read and write timeouts.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<RedisConn> {
        RedisConn::connect_within(addr, CONNECT_TIMEOUT)
    }

    fn connect_within(addr: SocketAddr, timeout: Duration) -> anyhow::Result<RedisConn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to redis at {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .context("setting read timeout")?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .context("setting write timeout")?;
        let reader = BufReader::new(stream.try_clone().context("duplicating socket")?);
        Ok(RedisConn {
            writer: stream,
            reader,
            peer: addr,
        })
    }

    /// Sends all commands in one write, then reads one reply per command. Error replies are
    /// returned as [`Reply::Error`]; only I/O and protocol failures are errors.
    pub fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> anyhow::Result<Vec<Reply>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for cmd in cmds {
            encode_command(&mut out, cmd);
        }
        self.writer
            .write_all(&out)
            .with_context(|| format!("sending {} command(s) to {}", cmds.len(), self.peer))?;
        (0..cmds.len())
            .map(|i| {
                read_reply(&mut self.reader).with_context(|| {
                    format!(
                        "reading reply {} of {} from {}",
                        i + 1,
                        cmds.len(),
                        self.peer
                    )
                })
            })
            .collect()
    }

    /// Sends one command, e.g. `command(&[b"GET", b"k"])`, and returns its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        let cmd: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        let mut replies = self.pipeline(&[cmd])?;
        replies.pop().context("no reply")
    }

    /// The whole keyspace of db 0 (this connection is switched to db 0): a `SCAN` loop with
    /// `COUNT 1000`, `TYPE` per key, then `GET`, `LRANGE 0 -1`, `HGETALL` or `SMEMBERS`. Keys that
    /// vanish while it runs are left out; keys of other types are an error. Meant for a server nobody
    /// writes to meanwhile.
    pub fn keyspace(&mut self) -> anyhow::Result<BTreeMap<Vec<u8>, Value>> {
        expect_ok(self.command(&[b"SELECT", b"0"])?, "SELECT 0")?;
        let mut all = BTreeMap::new();
        let mut cursor = b"0".to_vec();
        loop {
            let reply = self.command(&[b"SCAN", &cursor, b"COUNT", b"1000"])?;
            let (next, keys) = scan_page(reply)?;
            self.read_values(keys, &mut all)?;
            if next == b"0" {
                return Ok(all);
            }
            cursor = next;
        }
    }

    /// Adds the values of `keys` to `all`: one pipeline of `TYPE`s, one of reads.
    fn read_values(
        &mut self,
        keys: Vec<Vec<u8>>,
        all: &mut BTreeMap<Vec<u8>, Value>,
    ) -> anyhow::Result<()> {
        let types: Vec<Vec<Vec<u8>>> = keys
            .iter()
            .map(|k| vec![b"TYPE".to_vec(), k.clone()])
            .collect();
        let mut reads = Vec::new();
        let mut read_keys = Vec::new();
        for (key, reply) in keys.into_iter().zip(self.pipeline(&types)?) {
            let kind = match reply {
                Reply::Simple(kind) => kind,
                other => bail!("TYPE {}: expected a status, got {other:?}", show(&key)),
            };
            let read: Vec<&[u8]> = match kind.as_str() {
                "none" => continue, // deleted since SCAN
                "string" => vec![b"GET", &key],
                "list" => vec![b"LRANGE", &key, b"0", b"-1"],
                "hash" => vec![b"HGETALL", &key],
                "set" => vec![b"SMEMBERS", &key],
                other => bail!("key {}: cannot read type {other}", show(&key)),
            };
            let cmd = read.into_iter().map(<[u8]>::to_vec).collect();
            reads.push(cmd);
            read_keys.push((key, kind));
        }
        for ((key, kind), reply) in read_keys.into_iter().zip(self.pipeline(&reads)?) {
            if let Some(value) = to_value(&kind, reply).with_context(|| show(&key))? {
                all.insert(key, value);
            }
        }
        Ok(())
    }
}

/// Appends `cmd` as a RESP array of bulk strings.
fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, cmd: &[A]) {
    out.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
    for arg in cmd {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one complete reply.
fn read_reply<R: BufRead>(r: &mut R) -> anyhow::Result<Reply> {
    read_nested(r, 0)
}

fn read_nested<R: BufRead>(r: &mut R, depth: usize) -> anyhow::Result<Reply> {
    let line = read_line(r)?;
    let (&kind, rest) = line
        .split_first()
        .context("RESP: expected a type byte (+ - : $ *), got an empty line")?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Reply::Simple(text())),
        b'-' => Ok(Reply::Error(text())),
        b':' => Ok(Reply::Int(parse_int(rest, "an integer after ':'")?)),
        b'$' => {
            let len = parse_int(rest, "a bulk string length after '$'")?;
            if len == -1 {
                return Ok(Reply::Bulk(None));
            }
            if !(0..=MAX_BULK).contains(&len) {
                bail!("RESP: expected a bulk string length from -1 to {MAX_BULK}, got {len}");
            }
            // Reading through `take` grows the buffer with the data instead of trusting `len`.
            let mut data = Vec::new();
            r.take(len as u64 + 2)
                .read_to_end(&mut data)
                .context("reading bulk string")?;
            if data.len() < len as usize + 2 {
                bail!(
                    "RESP: expected {len} bulk string bytes and CRLF, connection closed after {}",
                    data.len()
                );
            }
            if !data.ends_with(b"\r\n") {
                bail!("RESP: expected CRLF after a bulk string of {len} bytes");
            }
            data.truncate(len as usize);
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let n = parse_int(rest, "an array length after '*'")?;
            if n == -1 {
                return Ok(Reply::Array(None));
            }
            if n < 0 {
                bail!("RESP: expected an array length of -1 or more, got {n}");
            }
            if depth >= MAX_DEPTH {
                bail!("RESP: expected arrays nested at most {MAX_DEPTH} deep");
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                items.push(read_nested(r, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        other => bail!(
            "RESP: expected a type byte (+ - : $ *), got {:?} (0x{other:02x})",
            char::from(other)
        ),
    }
}

/// One CRLF-terminated line without its CRLF.
fn read_line<R: BufRead>(r: &mut R) -> anyhow::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .context("reading reply line")?;
    if line.is_empty() {
        bail!("RESP: expected a reply, connection closed");
    }
    if !line.ends_with(b"\n") {
        if line.len() > MAX_LINE {
            bail!("RESP: expected a line of at most {MAX_LINE} bytes");
        }
        bail!("RESP: expected a CRLF-terminated line, connection closed after {line:?}");
    }
    if !line.ends_with(b"\r\n") {
        bail!("RESP: expected CRLF at the end of a line, got a bare LF");
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(digits: &[u8], what: &str) -> anyhow::Result<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("RESP: expected {what}, got {:?}", show(digits)))
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn expect_ok(reply: Reply, what: &str) -> anyhow::Result<()> {
    match reply {
        Reply::Simple(s) if s == "OK" => Ok(()),
        other => bail!("{what}: expected OK, got {other:?}"),
    }
}

/// The cursor and keys of one `SCAN` reply.
fn scan_page(reply: Reply) -> anyhow::Result<(Vec<u8>, Vec<Vec<u8>>)> {
    if let Reply::Array(Some(parts)) = &reply {
        if let [Reply::Bulk(Some(cursor)), keys] = parts.as_slice() {
            return Ok((cursor.clone(), bulk_list(keys.clone(), "SCAN keys")?));
        }
    }
    bail!("SCAN: expected [cursor, [keys]], got {reply:?}")
}

/// The items of an array of non-null bulk strings.
fn bulk_list(reply: Reply, what: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    match reply {
        Reply::Array(Some(items)) => items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(Some(b)) => Ok(b),
                other => bail!("{what}: expected bulk strings, got {other:?}"),
            })
            .collect(),
        other => bail!("{what}: expected an array, got {other:?}"),
    }
}

/// The value read for a key of type `kind`; `None` if the key vanished meanwhile (redis never
/// keeps empty lists, hashes or sets).
fn to_value(kind: &str, reply: Reply) -> anyhow::Result<Option<Value>> {
    if let Reply::Error(e) = &reply {
        bail!("reading {kind}: {e}");
    }
    let value = match kind {
        "string" => match reply {
            Reply::Bulk(Some(v)) => Value::Str(v),
            Reply::Bulk(None) => return Ok(None),
            other => bail!("GET: expected a bulk string, got {other:?}"),
        },
        "list" => Value::List(bulk_list(reply, "LRANGE")?),
        "hash" => {
            let flat = bulk_list(reply, "HGETALL")?;
            if flat.len() % 2 != 0 {
                bail!(
                    "HGETALL: expected field/value pairs, got {} items",
                    flat.len()
                );
            }
            let mut pairs = flat.into_iter();
            let mut hash = BTreeMap::new();
            while let (Some(field), Some(value)) = (pairs.next(), pairs.next()) {
                hash.insert(field, value);
            }
            Value::Hash(hash)
        }
        "set" => Value::Set(bulk_list(reply, "SMEMBERS")?.into_iter().collect()),
        other => bail!("cannot read type {other}"),
    };
    let empty = match &value {
        Value::Str(_) => false,
        Value::List(v) => v.is_empty(),
        Value::Hash(h) => h.is_empty(),
        Value::Set(s) => s.is_empty(),
    };
    Ok((!empty).then_some(value))
}

/// The redis-server binary: `/usr/bin/redis-server`, else the first `redis-server` on `PATH`.
pub fn redis_server_binary() -> Option<PathBuf> {
    crate::netlab::find_program("/usr/bin/redis-server", "redis-server")
}

/// The arguments for a server without persistence, logging to stdout, working in `workdir`.
fn server_args(listen: SocketAddrV4, workdir: &Path) -> Vec<String> {
    let args = [
        "--bind",
        &listen.ip().to_string(),
        "--port",
        &listen.port().to_string(),
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        &workdir.display().to_string(),
        "--logfile",
        "",
    ];
    args.iter().map(|a| a.to_string()).collect()
}

/// True once `addr` answers `PING` with `PONG` and is served by process `pid` (not by some other
/// server that already held the address: ours would then exit, failing to bind).
fn answers_ping(addr: SocketAddr, pid: u32) -> bool {
    let Ok(mut conn) = RedisConn::connect_within(addr, Duration::from_millis(200)) else {
        return false;
    };
    // The reader's socket is a clone of the writer's: the timeout applies to both.
    let _ = conn.writer.set_read_timeout(Some(Duration::from_secs(1)));
    let pong = matches!(conn.command(&[b"PING"]), Ok(Reply::Simple(s)) if s == "PONG");
    let want = format!("process_id:{pid}\r\n");
    pong && matches!(
        conn.command(&[b"INFO", b"server"]),
        Ok(Reply::Bulk(Some(info))) if show(&info).contains(&want)
    )
}

/// A redis-server started in a lab network namespace; stopped (SIGTERM, SIGKILL after 3 s) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    listen: SocketAddrV4,
}

impl RedisServer {
    /// Starts redis-server (see [`redis_server_binary`]) in namespace `ns` on `listen`, without
    /// persistence, with working directory `workdir` (created) and its log in `log`, and waits up
    /// to 10 s until `PING` from inside `ns` answers `PONG` (from this process: a server that
    /// already held `listen` does not count).
    pub fn start(
        lab: &Lab,
        ns: &str,
        listen: SocketAddrV4,
        workdir: &Path,
        log: &Path,
    ) -> anyhow::Result<RedisServer> {
        let binary = redis_server_binary()
            .context("redis-server not found: apt-get install redis-server")?;
        std::fs::create_dir_all(workdir)
            .with_context(|| format!("creating {}", workdir.display()))?;
        let workdir = workdir
            .canonicalize()
            .with_context(|| format!("resolving {}", workdir.display()))?;
        let mut child = lab.spawn(ns, &binary, &server_args(listen, &workdir), log)?;
        let pid = child.pid(); // `ip netns exec` execs redis-server
        child
            .wait_serving(ns, READY_TIMEOUT, || answers_ping(listen.into(), pid))
            .with_context(|| format!("starting redis-server on {listen}"))?;
        let server = RedisServer { child, listen };
        Ok(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listen.into()
    }

    /// Stops it (SIGTERM) and returns its exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.child.stop()
    }
}

/// A pipelined load: `connections` threads, each with its own connection and key prefix `c{conn}:`,
/// doing `rounds` round trips of `per_round` commands each.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Connections, one thread each.
    pub connections: usize,
    /// Round trips per connection.
    pub rounds: usize,
    /// Commands per round trip.
    pub per_round: usize,
    /// Seeds every connection's command stream.
    pub seed: u64,
}

/// The next command of a connection with key prefix `prefix` (e.g. `c3:`). Each type has its own
/// keys (`s` strings, `n` counters, `l` lists, `h` hashes, `z` sets), so no command can fail.
fn load_command(rng: &mut Rng, prefix: &str) -> Vec<Vec<u8>> {
    let key = |rng: &mut Rng, kind: char| -> Vec<u8> {
        format!("{prefix}{kind}{}", rng.range(0, KEYS_PER_TYPE - 1)).into_bytes()
    };
    let word = |rng: &mut Rng, kind: char, n: u64| -> Vec<u8> {
        format!("{kind}{}", rng.range(0, n - 1)).into_bytes()
    };
    let cmd = |name: &str, args: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        std::iter::once(name.as_bytes().to_vec())
            .chain(args)
            .collect()
    };
    match rng.range(0, 99) {
        0..=19 => cmd("SET", vec![key(rng, 's'), rng.bytes(1, 2000)]),
        20..=31 => cmd("APPEND", vec![key(rng, 's'), rng.bytes(1, 200)]),
        32..=46 => {
            let delta = rng.range(0, 2000) as i64 - 1000;
            cmd(
                "INCRBY",
                vec![key(rng, 'n'), delta.to_string().into_bytes()],
            )
        }
        47..=55 => {
            let kind = ['s', 'n', 'l', 'h', 'z'][rng.range(0, 4) as usize];
            cmd("DEL", vec![key(rng, kind)])
        }
        56..=70 => cmd("RPUSH", vec![key(rng, 'l'), rng.bytes(1, 32)]),
        71..=85 => cmd(
            "HSET",
            vec![key(rng, 'h'), word(rng, 'f', 20), rng.bytes(1, 64)],
        ),
        _ => cmd("SADD", vec![key(rng, 'z'), word(rng, 'm', 50)]),
    }
}

/// Runs `spec` on fresh connections to `addr`; returns the number of commands sent.
pub fn pipelined_load(addr: SocketAddr, spec: &PipelineSpec) -> anyhow::Result<u64> {
    let conns = (0..spec.connections)
        .map(|i| RedisConn::connect(addr).with_context(|| format!("load connection c{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    pipelined_load_on(conns, spec)
}

/// Runs `spec` on connections the caller opened earlier; `conns[i]` is connection `c{i}`, and there
/// must be exactly `spec.connections` of them. Every reply must be a non-error; returns the number
/// of commands sent.
pub fn pipelined_load_on(conns: Vec<RedisConn>, spec: &PipelineSpec) -> anyhow::Result<u64> {
    if conns.len() != spec.connections {
        bail!(
            "pipelined load: {} connections given, spec wants {}",
            conns.len(),
            spec.connections
        );
    }
    let failed = AtomicBool::new(false);
    let results: Vec<anyhow::Result<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                let failed = &failed;
                scope.spawn(move || {
                    let result = run_connection(&mut conn, i, spec, failed);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    result.with_context(|| format!("load connection c{i}"))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow!("load thread panicked")))
            })
            .collect()
    });
    results.into_iter().sum()
}

/// The rounds of connection `index`; stops early once another connection failed.
fn run_connection(
    conn: &mut RedisConn,
    index: usize,
    spec: &PipelineSpec,
    failed: &AtomicBool,
) -> anyhow::Result<u64> {
    let prefix = format!("c{index}:");
    let mut rng = Rng::for_stream(spec.seed, index);
    let mut sent = 0;
    for round in 0..spec.rounds {
        if failed.load(Ordering::Relaxed) {
            break; // the failing connection reports the error
        }
        let cmds: Vec<_> = (0..spec.per_round)
            .map(|_| load_command(&mut rng, &prefix))
            .collect();
        let replies = conn
            .pipeline(&cmds)
            .with_context(|| format!("round {round}"))?;
        for (cmd, reply) in cmds.iter().zip(&replies) {
            if let Reply::Error(e) = reply {
                bail!("round {round}: {} {}: {e}", show(&cmd[0]), show(&cmd[1]));
            }
        }
        sent += cmds.len() as u64;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScratchDir;
    use std::io::Cursor;
    use std::net::{Ipv4Addr, TcpListener};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    fn parse(bytes: &[u8]) -> anyhow::Result<Reply> {
        read_reply(&mut Cursor::new(bytes))
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn parses_scalars() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(
            parse(b"-ERR wrong type\r\n").unwrap(),
            Reply::Error("ERR wrong type".into())
        );
        assert_eq!(parse(b":-42\r\n").unwrap(), Reply::Int(-42));
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), bulk(""));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Array(None));
        assert_eq!(parse(b"*0\r\n").unwrap(), Reply::Array(Some(vec![])));
        // Bulk strings are binary: CRLF inside is data.
        assert_eq!(parse(b"$4\r\na\r\nb\r\n").unwrap(), bulk("a\r\nb"));
    }

    #[test]
    fn parses_nested_arrays() {
        let bytes = b"*3\r\n$1\r\n0\r\n*2\r\n$-1\r\n*1\r\n:7\r\n*-1\r\n";
        let expected = Reply::Array(Some(vec![
            bulk("0"),
            Reply::Array(Some(vec![
                Reply::Bulk(None),
                Reply::Array(Some(vec![Reply::Int(7)])),
            ])),
            Reply::Array(None),
        ]));
        assert_eq!(parse(bytes).unwrap(), expected);
    }

    #[test]
    fn reads_consecutive_replies_split_across_reads() {
        /// Hands out at most `chunk` bytes per read.
        struct Trickle<'a> {
            data: &'a [u8],
            chunk: usize,
        }
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.chunk.min(buf.len()).min(self.data.len());
                buf[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                Ok(n)
            }
        }
        let data = b"*2\r\n$5\r\nhello\r\n:12345\r\n+PONG\r\n$3\r\nxyz\r\n";
        for chunk in [1, 2, 3, 7] {
            let mut r = BufReader::with_capacity(4, Trickle { data, chunk });
            let first = read_reply(&mut r).unwrap();
            assert_eq!(
                first,
                Reply::Array(Some(vec![bulk("hello"), Reply::Int(12345)]))
            );
            assert_eq!(read_reply(&mut r).unwrap(), Reply::Simple("PONG".into()));
            assert_eq!(read_reply(&mut r).unwrap(), bulk("xyz"));
            let eof = read_reply(&mut r).unwrap_err().to_string();
            assert!(eof.contains("connection closed"), "{eof}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "expected a reply"),
            (b"\r\n", "type byte"),
            (b"!oops\r\n", "type byte"),
            (b"+OK", "CRLF-terminated"),
            (b"+OK\n", "bare LF"),
            (b":12x\r\n", "integer after ':'"),
            (b":\r\n", "integer after ':'"),
            (b"$abc\r\n", "bulk string length"),
            (b"$-2\r\n", "bulk string length from -1"),
            (b"$99999999999\r\n", "bulk string length from -1"),
            (b"$5\r\nab", "5 bulk string bytes"),
            (b"$3\r\nabcXY", "CRLF after a bulk string"),
            (b"*-5\r\n", "array length of -1"),
            (b"*2\r\n:1\r\n", "expected a reply"),
            (b"*9223372036854775807\r\n", "expected a reply"),
        ];
        for (bytes, expected) in cases {
            let err = format!("{:#}", parse(bytes).unwrap_err());
            assert!(err.contains(expected), "{bytes:?}: {err}");
        }
        let deep = b"*1\r\n".repeat(10_000);
        let err = parse(&deep).unwrap_err().to_string();
        assert!(err.contains("nested"), "{err}");
        let long = [b"+".as_slice(), &vec![b'a'; MAX_LINE + 10], b"\r\n"].concat();
        let err = parse(&long).unwrap_err().to_string();
        assert!(err.contains("at most"), "{err}");
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET".as_slice(), b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn load_commands_follow_the_seed() {
        let stream = |seed, conn: usize| -> Vec<Vec<Vec<u8>>> {
            let mut rng = Rng::for_stream(seed, conn);
            (0..200)
                .map(|_| load_command(&mut rng, &format!("c{conn}:")))
                .collect()
        };
        assert_eq!(stream(7, 0), stream(7, 0));
        assert_ne!(stream(7, 0), stream(8, 0));
        assert_ne!(stream(7, 0), stream(7, 1));
        let names: BTreeSet<Vec<u8>> = stream(7, 0).into_iter().map(|c| c[0].clone()).collect();
        assert_eq!(names.len(), 7, "every command kind appears: {names:?}");
    }

    #[test]
    fn keyspace_diff_names_keys() {
        let a = BTreeMap::from([
            (b"x".to_vec(), Value::Str(b"1".to_vec())),
            (b"y".to_vec(), Value::List(vec![b"a".to_vec()])),
        ]);
        let mut b = a.clone();
        assert!(keyspace_diff(&a, &b, 10).is_empty());
        b.insert(b"x".to_vec(), Value::Str(b"2".to_vec()));
        b.remove(b"y".as_slice());
        b.insert(b"z".to_vec(), Value::Set(BTreeSet::new()));
        assert_eq!(
            keyspace_diff(&a, &b, 10),
            ["x: string differs", "y: list missing", "z: unexpected set"]
        );
        assert_eq!(keyspace_diff(&a, &b, 1).len(), 1);
    }

    /// A redis-server on 127.0.0.1, killed on drop (also when the test fails).
    struct LocalRedis {
        child: std::process::Child,
        addr: SocketAddr,
        _dir: ScratchDir,
    }

    impl LocalRedis {
        fn start() -> LocalRedis {
            let binary = redis_server_binary().expect("redis-server not installed");
            let dir = ScratchDir::new("redis").unwrap();
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let listen = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            let log = dir.path().join("redis.log");
            let child = Command::new(binary)
                .args(server_args(listen, dir.path()))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut server = LocalRedis {
                child,
                addr: listen.into(),
                _dir: dir,
            };
            let end = Instant::now() + READY_TIMEOUT;
            while !answers_ping(server.addr, server.child.id()) {
                assert!(
                    matches!(server.child.try_wait(), Ok(None)),
                    "redis-server exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                assert!(Instant::now() < end, "redis-server not ready");
                std::thread::sleep(Duration::from_millis(20));
            }
            server
        }
    }

    impl Drop for LocalRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn pipelined_load_is_deterministic_on_real_servers() {
        let spec = PipelineSpec {
            connections: 2,
            rounds: 50,
            per_round: 16,
            seed: 0x5eed,
        };
        let first = LocalRedis::start();
        assert_eq!(pipelined_load(first.addr, &spec).unwrap(), 2 * 50 * 16);
        let mut conn = RedisConn::connect(first.addr).unwrap();
        let keyspace = conn.keyspace().unwrap();
        assert!(!keyspace.is_empty());
        let kinds: BTreeSet<&str> = keyspace.values().map(Value::kind).collect();
        assert_eq!(
            kinds,
            BTreeSet::from(["string", "list", "hash", "set"]),
            "all types present"
        );
        for prefix in ["c0:", "c1:"] {
            assert!(keyspace.keys().any(|k| k.starts_with(prefix.as_bytes())));
        }
        assert_eq!(
            conn.command(&[b"DBSIZE"]).unwrap(),
            Reply::Int(keyspace.len() as i64)
        );
        // Counters are strings to redis; they must read back as integers.
        assert!(keyspace
            .iter()
            .filter(|(k, _)| k.starts_with(b"c0:n"))
            .all(|(_, v)| matches!(v, Value::Str(s) if show(s).parse::<i64>().is_ok())));

        // The same spec on a fresh server, with the connections opened first.
        let second = LocalRedis::start();
        let conns = (0..spec.connections)
            .map(|_| RedisConn::connect(second.addr).unwrap())
            .collect();
        assert_eq!(pipelined_load_on(conns, &spec).unwrap(), 2 * 50 * 16);
        let again = RedisConn::connect(second.addr).unwrap().keyspace().unwrap();
        assert!(
            keyspace == again,
            "keyspaces differ: {:?}",
            keyspace_diff(&keyspace, &again, 10)
        );

        // An error reply comes back as a reply, and the connection stays usable.
        assert_eq!(
            conn.command(&[b"SET", b"t", b"x"]).unwrap(),
            Reply::Simple("OK".into())
        );
        let reply = conn.command(&[b"INCR", b"t"]).unwrap();
        assert!(
            matches!(&reply, Reply::Error(e) if e.starts_with("ERR")),
            "{reply:?}"
        );
        assert_eq!(
            conn.command(&[b"PING"]).unwrap(),
            Reply::Simple("PONG".into())
        );
    }
}
