//! Running in the background (`-d`, as the C TCPCopy's programs do), without hiding a failed start.
//!
//! [`daemonize`] forks. The parent stays in the foreground until the child says it is ready
//! ([`Daemon::ready`]) and then exits 0; if the child dies first, the parent exits with the child's
//! status. Until it is ready the child's standard error is a pipe to the parent, which copies it to
//! its own: the one-line error of a start that failed (a missing capability, a port in use) reaches
//! the terminal or the init script that started the program, as in the foreground. Once ready the
//! child's standard streams are `/dev/null`, it leads a session of its own (no controlling
//! terminal) and its working directory is unchanged, so relative paths given on the command line
//! keep their meaning.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys;

/// What the child writes when it is ready; never part of an error line.
const READY: &[u8] = b"\0ready\n";

/// The child's side: says once that the start went well.
#[derive(Debug)]
pub struct Daemon {
    status: File,
}

impl Daemon {
    /// Tells the waiting parent that the start went well, showing `line` (it exits 0), and
    /// points standard error at `/dev/null`, also when the parent is gone.
    pub fn ready(mut self, line: &str) -> io::Result<()> {
        let told = self
            .status
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.status.write_all(READY));
        redirect(
            libc::STDERR_FILENO,
            &File::options().write(true).open("/dev/null")?,
        )?;
        told
    }
}

/// Forks into the background. Returns in the child only; the parent waits (see the module doc)
/// and exits. Call it before any thread is started: only the calling thread survives a fork.
pub fn daemonize() -> io::Result<Daemon> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys::context("pipe")(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just created these descriptors and nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller guarantees a single thread, so the child inherits no lock held by
    // another thread; it only makes plain syscalls before returning to ordinary code.
    match unsafe { libc::fork() } {
        -1 => Err(sys::context("fork")(io::Error::last_os_error())),
        0 => {
            drop(read);
            // SAFETY: setsid has no memory effects; it fails only if we already lead a group.
            if unsafe { libc::setsid() } == -1 {
                return Err(sys::context("setsid")(io::Error::last_os_error()));
            }
            let null = File::options().read(true).write(true).open("/dev/null")?;
            redirect(libc::STDIN_FILENO, &null)?;
            redirect(libc::STDOUT_FILENO, &null)?;
            redirect(libc::STDERR_FILENO, &write)?;
            Ok(Daemon {
                status: File::from(write),
            })
        }
        child => {
            drop(write);
            std::process::exit(wait_for(File::from(read), child))
        }
    }
}

/// The parent: copies what the child writes to standard error until it is ready (exit status 0)
/// or gone (its own status).
fn wait_for(mut status: File, child: libc::pid_t) -> i32 {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match status.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if let Some(at) = find(&seen, READY) {
                    let _ = io::stderr().write_all(&seen[..at]);
                    return 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = io::stderr().write_all(&seen);
    let mut code = 0;
    loop {
        // SAFETY: `code` is a valid place for the status; `child` is our own child.
        let r = unsafe { libc::waitpid(child, &mut code, 0) };
        if r == child {
            break;
        }
        if r == -1 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return 1;
        }
    }
    if libc::WIFEXITED(code) {
        libc::WEXITSTATUS(code)
    } else {
        1
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn redirect(target: libc::c_int, to: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: both descriptors are open; dup2 replaces `target` atomically.
    if unsafe { libc::dup2(to.as_raw_fd(), target) } == -1 {
        return Err(sys::context("dup2")(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_marker_is_found_across_reads() {
        let mut seen = b"warning: x\n".to_vec();
        assert_eq!(find(&seen, READY), None);
        seen.extend_from_slice(b"\0rea");
        assert_eq!(find(&seen, READY), None);
        seen.extend_from_slice(b"dy\n");
        assert_eq!(find(&seen, READY), Some(11));
    }
}
