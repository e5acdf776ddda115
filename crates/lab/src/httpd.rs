//! A small embedded HTTP/1.1 server: the demo's online and target service, and a server whose
//! [`RequestLog`] tests can assert on exactly.
//!
//! Thread per connection, keep-alive, pipelining, `Connection: close`; every request is answered
//! `200 ok\n` (or as its [`AnswerPlan`] says: another status or body, a random value, a delay) and
//! its URI recorded with the connection it came on. Bind it inside a lab namespace with
//! `lab.run_in(ns, || HttpServer::start(addr))`: a socket keeps the namespace it was created in, and
//! the server's threads only use sockets it already has. Dropping the server stops every thread.

use crate::acceptor::{lock, Acceptor};
use crate::http::{ParseError, Request, RequestParser};
use crate::plan::{self, AnswerPlan};
use anyhow::Context as _;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use session::testing::Rng;

/// Body of every plain response.
pub const BODY: &str = plan::PLAIN_BODY;

/// How long a closing connection waits for the client's FIN, so unread request bytes do not turn our
/// close into a RST that destroys the response in flight (nginx's "lingering close").
const LINGER: Duration = Duration::from_secs(1);

/// Every request URI the server saw, with the id of its connection (ids count up in accept order).
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<Vec<(u64, String)>>,
    grew: Condvar,
}

impl RequestLog {
    fn record(&self, conn: u64, uri: &str) {
        lock(&self.entries).push((conn, uri.to_string()));
        self.grew.notify_all();
    }

    /// All URIs in arrival order.
    pub fn uris(&self) -> Vec<String> {
        lock(&self.entries).iter().map(|(_, u)| u.clone()).collect()
    }

    /// URIs grouped by connection, connections in accept order, URIs in arrival order. Connections
    /// that sent no request do not appear.
    pub fn by_connection(&self) -> Vec<Vec<String>> {
        let entries = lock(&self.entries);
        let mut groups: Vec<(u64, Vec<String>)> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        for (conn, uri) in entries.iter() {
            let i = *index.entry(*conn).or_insert_with(|| {
                groups.push((*conn, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(uri.clone());
        }
        groups.sort_by_key(|(conn, _)| *conn);
        groups.into_iter().map(|(_, uris)| uris).collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least `n` requests are logged or `timeout` passes; returns the count reached.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        let mut entries = lock(&self.entries);
        while entries.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            entries = self
                .grew
                .wait_timeout(entries, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        entries.len()
    }
}

struct Shared {
    log: Arc<RequestLog>,
    requests: AtomicU64,
    plan: AnswerPlan,
    /// Draws the values of [`plan::Twist::Noise`] answers.
    noise: Mutex<Rng>,
}

/// The embedded server. Stops (closing every connection) when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _acceptor: Acceptor,
}

impl HttpServer {
    /// Binds `bind` (port 0 picks a free port, see [`HttpServer::local_addr`]) and starts serving.
    pub fn start(bind: SocketAddr) -> anyhow::Result<HttpServer> {
        HttpServer::start_with(bind, AnswerPlan::plain())
    }

    /// Like [`HttpServer::start`], answering as `plan` says. Noise values are drawn from a
    /// generator seeded by the clock and the address, so two servers never show the same ones.
    pub fn start_with(bind: SocketAddr, plan: AnswerPlan) -> anyhow::Result<HttpServer> {
        let listener = TcpListener::bind(bind).with_context(|| format!("httpd: bind {bind}"))?;
        let addr = listener.local_addr().context("httpd: local_addr")?;
        let clock = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let place = match addr.ip() {
            std::net::IpAddr::V4(v4) => u64::from(u32::from(v4)),
            std::net::IpAddr::V6(v6) => u128::from(v6) as u64,
        };
        let shared = Arc::new(Shared {
            log: Arc::default(),
            requests: AtomicU64::new(0),
            plan,
            noise: Mutex::new(Rng::new(
                clock ^ place.rotate_left(32) ^ u64::from(addr.port()),
            )),
        });
        let conn_shared = Arc::clone(&shared);
        let acceptor = Acceptor::start(listener, "httpd", move |stream, id, stop| {
            let _ = serve(stream, id, &conn_shared, stop);
        })
        .context("httpd: spawn accept thread")?;
        Ok(HttpServer {
            addr,
            shared,
            _acceptor: acceptor,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn log(&self) -> Arc<RequestLog> {
        Arc::clone(&self.shared.log)
    }

    /// Requests answered or being answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

/// Appends the answer to `request` to `out`; returns how long to wait before sending it.
fn respond(out: &mut Vec<u8>, request: &Request, shared: &Shared) -> Duration {
    let connection = if request.keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let noise = lock(&shared.noise).next_u64();
    let answer = shared.plan.answer(&request.uri, noise);
    let body = if request.method == "HEAD" {
        ""
    } else {
        answer.body.as_str()
    };
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n{body}",
            answer.status,
            plan::reason(answer.status),
            answer.body.len()
        )
        .as_bytes(),
    );
    answer.delay
}

fn respond_error(out: &mut Vec<u8>, err: &ParseError) {
    let body = format!("{err}\n");
    out.extend_from_slice(
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

fn serve(mut stream: TcpStream, id: u64, shared: &Shared, stop: &AtomicBool) -> io::Result<()> {
    // Accepted sockets do not inherit O_NONBLOCK on Linux, but be explicit: the loop below blocks.
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let mut parser = RequestParser::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        parser.feed(&buf[..n]);
        let mut close = false;
        let mut delay = Duration::ZERO;
        // Answer every complete request in this read with one write: pipelined clients get their
        // responses in order, and nothing waits on a half-parsed request.
        loop {
            match parser.next_request() {
                Ok(Some(request)) => {
                    shared.log.record(id, &request.uri);
                    shared.requests.fetch_add(1, Ordering::Relaxed);
                    delay += respond(&mut out, &request, shared);
                    if !request.keep_alive {
                        close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    respond_error(&mut out, &e);
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            stream.write_all(&out)?;
            out.clear();
        }
        if close {
            stream.shutdown(Shutdown::Write)?;
            stream.set_read_timeout(Some(LINGER))?;
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn server() -> HttpServer {
        HttpServer::start((Ipv4Addr::LOCALHOST, 0).into()).expect("bind loopback")
    }

    fn read_all(stream: &mut TcpStream) -> String {
        let mut s = String::new();
        stream.read_to_string(&mut s).expect("read until close");
        s
    }

    #[test]
    fn pipelined_requests_get_ordered_responses() {
        let srv = server();
        let mut c = TcpStream::connect(srv.local_addr()).expect("connect");
        c.write_all(
            b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody\
              GET /3 HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .expect("write");
        let text = read_all(&mut c);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\nok\n"), "{text}");
        assert_eq!(srv.log().uris(), ["/1", "/2", "/3"]);
        assert_eq!(srv.requests(), 3);
    }

    #[test]
    fn request_split_across_writes() {
        let srv = server();
        let mut c = TcpStream::connect(srv.local_addr()).expect("connect");
        for part in [
            &b"GET /sp"[..],
            b"lit HTTP/1.1\r\nHo",
            b"st: a\r\n",
            b"\r\n",
        ] {
            c.write_all(part).expect("write");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(srv.log().wait_for(1, Duration::from_secs(5)), 1);
        c.write_all(b"GET /two HTTP/1.0\r\n\r\n").expect("write");
        read_all(&mut c);
        assert_eq!(srv.log().by_connection(), [["/split", "/two"]]);
    }

    #[test]
    fn malformed_request_gets_400_and_close() {
        let srv = server();
        let mut c = TcpStream::connect(srv.local_addr()).expect("connect");
        c.write_all(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("write");
        let text = read_all(&mut c);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    }

    #[test]
    fn by_connection_groups_in_accept_order() {
        let srv = server();
        let mut a = TcpStream::connect(srv.local_addr()).expect("connect");
        a.write_all(b"GET /a1 HTTP/1.1\r\n\r\n").expect("write");
        srv.log().wait_for(1, Duration::from_secs(5));
        let mut b = TcpStream::connect(srv.local_addr()).expect("connect");
        b.write_all(b"GET /b1 HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("write");
        read_all(&mut b);
        a.write_all(b"GET /a2 HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("write");
        read_all(&mut a);
        assert_eq!(srv.log().uris(), ["/a1", "/b1", "/a2"]);
        assert_eq!(srv.log().by_connection(), [vec!["/a1", "/a2"], vec!["/b1"]]);
    }

    #[test]
    fn answers_follow_the_plan() {
        use crate::plan::Twist;
        let mut plan = AnswerPlan::plain();
        plan.set("/st", Twist::Status(503))
            .set("/bo", Twist::Body("KO!\n".into()))
            .set("/no", Twist::Noise)
            .set("/de", Twist::Delay(Duration::from_millis(30)));
        let srv = HttpServer::start_with((Ipv4Addr::LOCALHOST, 0).into(), plan).expect("bind");
        let get = |uri: &str| {
            let mut c = TcpStream::connect(srv.local_addr()).expect("connect");
            let started = Instant::now();
            c.write_all(format!("GET {uri} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes())
                .expect("write");
            (read_all(&mut c), started.elapsed())
        };
        let plain_head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n";
        let (plain, fast) = get("/plain");
        assert!(
            plain.starts_with(plain_head) && plain.ends_with("\r\n\r\nok\n"),
            "{plain}"
        );
        let (st, _) = get("/st");
        assert!(
            st.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{st}"
        );
        assert!(st.ends_with("\r\n\r\nok\n"), "{st}");
        let (bo, _) = get("/bo");
        assert!(
            bo.contains("Content-Length: 4\r\n") && bo.ends_with("\r\n\r\nKO!\n"),
            "{bo}"
        );
        let (n1, n2) = (get("/no").0, get("/no").0);
        assert_ne!(n1, n2, "a new value per answer");
        assert!(
            n1.contains("Content-Length: 20\r\n") && n1.ends_with("\n"),
            "{n1}"
        );
        let (de, slow) = get("/de");
        assert!(de.starts_with(plain_head), "{de}");
        assert!(slow >= Duration::from_millis(30), "{slow:?}");
        assert!(fast < Duration::from_millis(30), "{fast:?}");
    }

    #[test]
    fn drop_closes_idle_keepalive_connections() {
        let srv = server();
        let mut c = TcpStream::connect(srv.local_addr()).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        c.write_all(b"GET /idle HTTP/1.1\r\n\r\n").expect("write");
        let mut response = Vec::new();
        let mut buf = [0u8; 256];
        while !response.ends_with(b"\r\n\r\nok\n") {
            let n = c.read(&mut buf).expect("response");
            assert!(n > 0, "EOF before the response");
            response.extend_from_slice(&buf[..n]);
        }
        // The connection is now idle in keep-alive; dropping the server must not wait for it.
        let started = Instant::now();
        drop(srv);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "connection still open"
        );
    }
}
