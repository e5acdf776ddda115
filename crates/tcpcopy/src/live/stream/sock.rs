//! One stream-mode connection's socket: a nonblocking TCP stream, optionally under TLS (rustls),
//! with the bytes that must go first (a PROXY protocol header). Reads and writes plaintext; says
//! what happened in the terms the bridge takes.
//!
//! Owns the socket and the TLS state; it decides nothing about what to write or when to close
//! (the bridge's commands say).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use mio::net::TcpStream;
use rustls::ClientConnection;

/// Plaintext bytes rustls may hold for sending: what TLS adds to the bridge's own bound.
const TLS_BUFFER: usize = 256 << 10;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// The nonblocking connect is under way.
    Connecting,
    /// Connected; the TLS handshake is under way.
    Handshaking,
    /// Carrying the session's bytes.
    Open,
}

/// What reading a connection brought.
pub(super) enum Got {
    /// Bytes into the buffer (0: nothing more for now).
    Bytes(usize),
    /// The target closed its side.
    Eof,
    /// The connection failed.
    Failed(io::Error),
}

pub(super) struct Sock {
    pub(super) stream: TcpStream,
    pub(super) phase: Phase,
    tls: Option<Box<ClientConnection>>,
    /// Sent raw, first, once connected (a PROXY protocol header).
    preamble: Vec<u8>,
    /// The bridge asked for a shutdown; with TLS, done once close_notify went out.
    pub(super) shutdown: bool,
    /// The bridge was told the connection opened; the target's end of stream was read.
    pub(super) connected: bool,
    pub(super) eof: bool,
}

impl Sock {
    pub(super) fn new(stream: TcpStream, tls: Option<ClientConnection>, preamble: Vec<u8>) -> Sock {
        let tls = tls.map(|mut c| {
            c.set_buffer_limit(Some(TLS_BUFFER));
            Box::new(c)
        });
        Sock {
            stream,
            phase: Phase::Connecting,
            tls,
            preamble,
            shutdown: false,
            connected: false,
            eof: false,
        }
    }

    /// While connecting: `Ok(true)` once connected (the preamble sent), `Ok(false)` while still
    /// under way, the error when it failed.
    pub(super) fn check_connected(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => return Ok(false),
            Err(e) => return Err(e),
        }
        if !self.preamble.is_empty() {
            // A fresh connection's send buffer takes a few dozen bytes whole.
            let n = self.stream.write(&self.preamble)?;
            if n < self.preamble.len() {
                return Err(io::Error::other(
                    "the PROXY header did not fit the send buffer",
                ));
            }
            self.preamble.clear();
        }
        self.phase = if self.tls.is_some() {
            Phase::Handshaking
        } else {
            Phase::Open
        };
        Ok(true)
    }

    /// Moves the TLS handshake on: `Ok(true)` once it is done.
    pub(super) fn handshake(&mut self) -> Result<bool, String> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(true);
        };
        loop {
            flush_tls(tls, &mut self.stream).map_err(|e| e.to_string())?;
            if !tls.is_handshaking() {
                self.phase = Phase::Open;
                return Ok(true);
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Err("the target closed the connection during the handshake".into()),
                Ok(_) => {
                    tls.process_new_packets().map_err(|e| e.to_string())?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    flush_tls(tls, &mut self.stream).map_err(|e| e.to_string())?;
                    return Ok(!tls.is_handshaking());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Writes plaintext: how much was taken (0: none for now).
    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => match self.stream.write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                r => r,
            },
            Some(tls) => {
                let n = tls.writer().write(data)?;
                flush_tls(tls, &mut self.stream)?;
                Ok(n)
            }
        }
    }

    /// Sends what TLS still holds (after a writable event).
    pub(super) fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            Some(tls) => flush_tls(tls, &mut self.stream),
            None => Ok(()),
        }
    }

    /// Shuts the writing side down (TLS: after its close_notify).
    pub(super) fn shut_down(&mut self) -> io::Result<()> {
        self.shutdown = true;
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            flush_tls(tls, &mut self.stream)?;
            if tls.wants_write() {
                // The rest goes at the next writable event, and the shutdown after it.
                return Ok(());
            }
        }
        self.stream.shutdown(Shutdown::Write)
    }

    /// Whether a shutdown waits for TLS bytes still to go.
    pub(super) fn shutdown_pending(&self) -> bool {
        self.shutdown && self.tls.as_deref().is_some_and(|t| t.wants_write())
    }

    /// Closes abortively: the target gets a reset.
    pub(super) fn abort(&self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }

    /// Reads plaintext into `buf`.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> Got {
        let Some(tls) = self.tls.as_deref_mut() else {
            return match self.stream.read(buf) {
                Ok(0) => Got::Eof,
                Ok(n) => Got::Bytes(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Got::Bytes(0),
                Err(e) => Got::Failed(e),
            };
        };
        loop {
            // Plaintext already decrypted first.
            match tls.reader().read(buf) {
                Ok(0) => return Got::Eof,
                Ok(n) => return Got::Bytes(n),
                // A TCP end without close_notify: the end of the answer all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Got::Eof,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Got::Failed(e),
            }
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Got::Eof,
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        return Got::Failed(io::Error::other(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Got::Bytes(0),
                Err(e) => return Got::Failed(e),
            }
        }
    }
}

/// Writes the TLS records rustls holds until the socket takes no more.
fn flush_tls(tls: &mut ClientConnection, stream: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
