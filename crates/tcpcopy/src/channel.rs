//! The encrypted channel's socket side (`--secret-file`): reading the secret once at start, and
//! the opening exchange over a blocking socket, for tcpcopy (which opens) and intercept (which
//! answers). The handshake and the records are `protocol::secure`'s; what the connection carries
//! afterwards is the drivers' business.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use protocol::secure::{self, Channel, Initiator, Opener, Psk, SecureError};
use protocol::{Decoder, Message};

/// A secret file larger than this is not a secret file.
const MAX_SECRET_FILE: u64 = 64 << 10;
/// The longest an opening exchange may take in all (each read also times out on its own).
pub const OPENING_DEADLINE: Duration = Duration::from_secs(10);
/// The longest first message accepted (a hello or welcome is a few bytes; the handshake
/// messages 48): a peer sending more before it is one speaks another protocol, or floods.
pub const MAX_OPENING: usize = 64 << 10;

/// Reads `--secret-file`: a regular file, non-empty, readable by its owner only. Read once, at
/// start; the error is one line naming the option and the fix.
pub fn read_secret(path: &Path) -> Result<Psk, String> {
    let shown = path.display();
    let what = |e: std::io::Error| format!("--secret-file {shown}: {e}");
    let mut f = File::open(path).map_err(what)?;
    let meta = f.metadata().map_err(what)?;
    if !meta.is_file() {
        return Err(format!("--secret-file {shown}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "--secret-file {shown}: readable by group or others (mode {mode:03o}); chmod 600 {shown}"
        ));
    }
    if meta.size() > MAX_SECRET_FILE {
        return Err(format!(
            "--secret-file {shown}: {} bytes; a secret is at most {MAX_SECRET_FILE} (32 random bytes are plenty)",
            meta.size()
        ));
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(what)?;
    let psk = Psk::derive(&bytes).map_err(|_| {
        format!("--secret-file {shown}: empty (make one with `head -c 32 /dev/urandom > {shown}`)")
    });
    // The bytes themselves are not kept.
    bytes.fill(0);
    psk
}

/// tcpcopy's side: proves the secret to the intercept on `s` (and checks it holds it), then
/// sends `hello` (the plain hello frame) sealed. Returns intercept's first message as `check`
/// judges it, the decoder holding what followed it, and the channel.
pub fn open<T>(
    s: &mut TcpStream,
    psk: &Psk,
    hello: &[u8],
    check: impl FnOnce(&Message<'_>) -> T,
) -> anyhow::Result<(T, Decoder, Channel)> {
    let started = Instant::now();
    let mut out = Vec::new();
    let init = Initiator::start(psk, &mut out)?;
    s.write_all(&out)?;
    let mut dec = Decoder::new();
    let reply = crate::plumbing::read_first_message(s, &mut dec, |m| match m {
        Message::SecureWelcome(b) => Ok(b.to_vec()),
        Message::Reject { reason } => Err(format!("intercept refused us: {reason}")),
        _ => Err("intercept answered in the clear: it has no secret (--secret-file)".into()),
    })?;
    let reply = reply.map_err(anyhow::Error::msg)?;
    let mut channel = match init.finish(&reply) {
        Ok(c) => c,
        Err(SecureError::NotProven) => bail!("intercept did not prove the secret"),
        Err(e) => return Err(e.into()),
    };
    out.clear();
    channel.sealer.seal(hello, &mut out)?;
    s.write_all(&out)?;
    let leftover = dec.take_pending();
    let (first, dec) = read_first_sealed(s, &mut channel.opener, &leftover, started, check)
        .map_err(|e| match e.downcast_ref::<SecureError>() {
            Some(SecureError::BadRecord) => e.context("intercept did not prove the secret"),
            _ => e,
        })?;
    Ok((first, dec, channel))
}

/// intercept's side, given tcpcopy's handshake message: answers it (the only thing sent to a
/// peer that has not proven the secret) and reads the first sealed message, which proves it.
/// Returns that message as `check` judges it, the decoder holding what followed it, and the
/// channel. Sends nothing at all to a peer whose handshake message does not authenticate.
pub fn accept<T>(
    s: &mut TcpStream,
    psk: &Psk,
    first: &[u8],
    raw: &mut Decoder,
    check: impl FnOnce(&Message<'_>) -> T,
) -> anyhow::Result<(T, Decoder, Channel)> {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut channel = match secure::respond(psk, first, &mut out) {
        Ok(c) => c,
        Err(SecureError::NotProven) => bail!("peer did not prove the secret"),
        Err(e) => return Err(e.into()),
    };
    s.write_all(&out)?;
    let leftover = raw.take_pending();
    let (first, dec) = read_first_sealed(s, &mut channel.opener, &leftover, started, check)
        .map_err(|e| match e.downcast_ref::<SecureError>() {
            // A replayed handshake ends here: its records were sealed with other keys.
            Some(SecureError::BadRecord | SecureError::Malformed) => {
                anyhow::anyhow!("peer did not prove the secret ({e})")
            }
            _ => e,
        })?;
    Ok((first, dec, channel))
}

/// Reads records (the first `leftover`, already received) until their plain bytes hold a whole
/// message, judged by `check`; the decoder keeps what followed it.
fn read_first_sealed<T>(
    s: &mut TcpStream,
    opener: &mut Opener,
    leftover: &[u8],
    started: Instant,
    check: impl FnOnce(&Message<'_>) -> T,
) -> anyhow::Result<(T, Decoder)> {
    let mut dec = Decoder::new();
    opener.open(leftover, |p| dec.feed(p))?;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(m) = dec.next_message()? {
            let judged = check(&m);
            return Ok((judged, dec));
        }
        if dec.pending() + opener.pending() > MAX_OPENING {
            bail!("first message longer than {MAX_OPENING} bytes");
        }
        if started.elapsed() > OPENING_DEADLINE {
            bail!("opening exchange not done within {OPENING_DEADLINE:?}");
        }
        let n = s
            .read(&mut buf)
            .context("no answer during the opening exchange")?;
        anyhow::ensure!(
            n > 0,
            "the peer closed the connection during the opening exchange"
        );
        opener.open(&buf[..n], |p| dec.feed(p))?;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_secret_file_must_be_private_non_empty_and_small() {
        let dir = std::env::temp_dir().join(format!("tcpcopy-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        let set = |bytes: &[u8], mode: u32| {
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set(b"0123456789abcdef", 0o600);
        assert!(read_secret(&path).is_ok());
        set(b"0123456789abcdef", 0o640);
        let e = read_secret(&path).unwrap_err();
        assert!(e.contains("readable by group or others (mode 640)"), "{e}");
        set(b"", 0o400);
        assert!(read_secret(&path).unwrap_err().contains("empty"));
        set(&vec![1u8; 70_000], 0o600);
        assert!(read_secret(&path).unwrap_err().contains("at most"));
        assert!(read_secret(&dir)
            .unwrap_err()
            .contains("not a regular file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
