//! A byte-exact recording server for fidelity tests, and the clients that drive it.
//!
//! Every connection's received bytes are counted and hashed (SHA-256) from the first byte to the
//! client's FIN, so a test can compare what the online and the target server received without
//! keeping the bytes. Two ways of answering:
//! - [`Answer::Lines`]: an optional greeting as soon as the connection is accepted (a protocol where
//!   the server speaks first, like SMTP or MySQL), then `ok <n>\r\n` for the n-th `\n`-terminated line.
//! - [`Answer::Http`]: one `200` response once a request head *and* its `Content-Length` body arrived
//!   (so a large upload is answered after its last byte, as real servers do).
//!
//! Start it inside a namespace with `lab.run_in(ns, || StreamServer::start(addr, spec))`.

use crate::acceptor::{lock, Acceptor};
use crate::http::parse_head;
use anyhow::{bail, Context as _};
use session::testing::Rng;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a greeting server says first.
pub const GREETING: &[u8] = b"220 tcpcopy-lab stream server ready\r\n";

/// How the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `ok <n>\r\n` per line; with `greeting`, [`GREETING`] first.
    Lines { greeting: bool },
    /// `HTTP/1.1 200 OK` after each complete request (head and body).
    Http,
}

/// One finished connection: what it received, in full.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnRecord {
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// Lines or HTTP requests answered.
    pub answered: u64,
}

#[derive(Default)]
struct Shared {
    records: Mutex<Vec<ConnRecord>>,
    finished: Condvar,
}

/// The server; stops and closes every connection when dropped.
pub struct StreamServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _acceptor: Acceptor,
}

impl StreamServer {
    pub fn start(bind: SocketAddr, answer: Answer) -> anyhow::Result<StreamServer> {
        let listener = TcpListener::bind(bind).with_context(|| format!("stream: bind {bind}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let conn_shared = Arc::clone(&shared);
        let acceptor = Acceptor::start(listener, "stream", move |stream, _, stop| {
            if let Ok(record) = serve(stream, answer, stop) {
                lock(&conn_shared.records).push(record);
                conn_shared.finished.notify_all();
            }
        })?;
        Ok(StreamServer {
            addr,
            shared,
            _acceptor: acceptor,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections finished so far (client closed), in the order they finished.
    pub fn records(&self) -> Vec<ConnRecord> {
        lock(&self.shared.records).clone()
    }

    /// Waits until `n` connections finished or `timeout` passed; returns the records.
    pub fn wait_records(&self, n: usize, timeout: Duration) -> Vec<ConnRecord> {
        let end = Instant::now() + timeout;
        let mut records = lock(&self.shared.records);
        while records.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            records = self
                .shared
                .finished
                .wait_timeout(records, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        records.clone()
    }
}

fn serve(mut stream: TcpStream, answer: Answer, stop: &AtomicBool) -> io::Result<ConnRecord> {
    stream.set_nodelay(true)?;
    if answer == (Answer::Lines { greeting: true }) {
        stream.write_all(GREETING)?;
    }
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let mut answered = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    // HTTP: the head being collected, then the body bytes still to come.
    let mut head = Vec::new();
    let mut body_left = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if stop.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let data = &buf[..n];
        hash.update(data);
        bytes += n as u64;
        let mut out = Vec::new();
        match answer {
            Answer::Lines { .. } => {
                for _ in data.iter().filter(|&&b| b == b'\n') {
                    answered += 1;
                    out.extend_from_slice(format!("ok {answered}\r\n").as_bytes());
                }
            }
            Answer::Http => {
                const OK: &[u8] =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
                let mut rest = data;
                loop {
                    if body_left > 0 {
                        let take = (rest.len() as u64).min(body_left);
                        body_left -= take;
                        rest = &rest[take as usize..];
                        if body_left > 0 {
                            break;
                        }
                        answered += 1;
                        out.extend_from_slice(OK);
                        continue;
                    }
                    head.extend_from_slice(rest);
                    rest = &[];
                    let Ok(Some((h, used))) = parse_head(&head) else {
                        break; // more bytes needed (or a bad head: nothing more is answered)
                    };
                    let len = h.content_length().ok().flatten().unwrap_or(0);
                    let after = head.split_off(used);
                    let take = (after.len() as u64).min(len);
                    body_left = len - take;
                    // Whatever follows the body is the start of the next (pipelined) request.
                    head = after[take as usize..].to_vec();
                    if body_left == 0 {
                        answered += 1;
                        out.extend_from_slice(OK);
                    }
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    Ok(ConnRecord {
        bytes,
        sha256: hash.finalize().into(),
        answered,
    })
}

/// What a client sent on one connection, to compare with a [`ConnRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

impl Sent {
    pub fn matches(&self, r: &ConnRecord) -> bool {
        self.bytes == r.bytes && self.sha256 == r.sha256
    }
}

/// One HTTP POST of `body_len` pseudo-random bytes (from `seed`), written in 1 MiB pieces; waits for
/// the `200` answer, then closes.
pub fn upload(addr: SocketAddr, body_len: u64, seed: u64) -> anyhow::Result<Sent> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("upload: connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: lab\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n\r\n"
    );
    let mut hash = Sha256::new();
    hash.update(head.as_bytes());
    s.write_all(head.as_bytes())?;
    let mut filler = Rng::new(seed);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = body_len;
    while left > 0 {
        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        filler.fill_printable(&mut chunk[..n]);
        hash.update(&chunk[..n]);
        s.write_all(&chunk[..n]).context("upload: write")?;
        left -= n as u64;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while !answer.ends_with(b"\r\n\r\nok\n") {
        let n = s.read(&mut buf).context("upload: waiting for the answer")?;
        if n == 0 {
            bail!("upload: server closed before answering");
        }
        answer.extend_from_slice(&buf[..n]);
    }
    if !answer.starts_with(b"HTTP/1.1 200 ") {
        bail!("upload: answer {:?}", String::from_utf8_lossy(&answer));
    }
    s.shutdown(Shutdown::Write)?;
    while s.read(&mut buf)? > 0 {}
    Ok(Sent {
        bytes: head.len() as u64 + body_len,
        sha256: hash.finalize().into(),
    })
}

/// A server-speaks-first session: reads the greeting, then sends each line (a `\n` is appended) and
/// waits for its `ok <n>` before the next; closes at the end.
pub fn greeted_session(addr: SocketAddr, lines: &[Vec<u8>]) -> anyhow::Result<Sent> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("greeted: connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    let mut got = Vec::new();
    read_until(&mut s, &mut got, GREETING)?;
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    for (i, line) in lines.iter().enumerate() {
        let mut msg = line.clone();
        msg.push(b'\n');
        hash.update(&msg);
        bytes += msg.len() as u64;
        s.write_all(&msg)?;
        read_until(&mut s, &mut got, format!("ok {}\r\n", i + 1).as_bytes())?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut buf = [0u8; 64];
    while s.read(&mut buf)? > 0 {}
    Ok(Sent {
        bytes,
        sha256: hash.finalize().into(),
    })
}

fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, want: &[u8]) -> anyhow::Result<()> {
    let mut buf = [0u8; 512];
    while !got.ends_with(want) {
        let n = s
            .read(&mut buf)
            .with_context(|| format!("waiting for {:?}", String::from_utf8_lossy(want)))?;
        if n == 0 {
            bail!(
                "server closed while we waited for {:?}",
                String::from_utf8_lossy(want)
            );
        }
        got.extend_from_slice(&buf[..n]);
    }
    got.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn server(answer: Answer) -> StreamServer {
        StreamServer::start((Ipv4Addr::LOCALHOST, 0).into(), answer).expect("bind")
    }

    #[test]
    fn upload_is_hashed_and_answered_after_its_body() {
        let srv = server(Answer::Http);
        let sent = upload(srv.local_addr(), 3_000_000, 9).expect("upload");
        let rec = srv.wait_records(1, Duration::from_secs(10));
        assert_eq!(rec.len(), 1);
        assert!(sent.matches(&rec[0]), "{sent:?} vs {:?}", rec[0]);
        assert_eq!(rec[0].answered, 1);
        let other = upload(srv.local_addr(), 3_000_000, 10).expect("upload");
        assert_ne!(other.sha256, sent.sha256, "the seed changes the body");
    }

    #[test]
    fn greeting_comes_first_and_every_line_is_answered() {
        let srv = server(Answer::Lines { greeting: true });
        let lines: Vec<Vec<u8>> = (0..20).map(|i| format!("LINE {i}").into_bytes()).collect();
        let sent = greeted_session(srv.local_addr(), &lines).expect("session");
        let rec = srv.wait_records(1, Duration::from_secs(10));
        assert!(sent.matches(&rec[0]));
        assert_eq!(rec[0].answered, 20);
    }

    #[test]
    fn a_client_without_greeting_server_times_out_clearly() {
        let srv = server(Answer::Lines { greeting: false });
        let mut s = TcpStream::connect(srv.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let err = read_until(&mut s, &mut Vec::new(), GREETING).unwrap_err();
        assert!(format!("{err:#}").contains("waiting for"), "{err:#}");
    }
}
