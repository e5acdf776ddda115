//! Scheduling of the calling thread.

use std::io;

/// Sets the calling thread's nice value (lower runs first; below 0 needs root or CAP_SYS_NICE).
/// Capture threads use it so a busy host stalls them less: a stalled capture thread lets the
/// kernel ring fill, and a client segment dropped there is never sent again.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    // SAFETY: plain integer arguments; on Linux PRIO_PROCESS with a thread id affects that thread
    // only. No memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_nice_works_unprivileged_and_reads_back() {
        std::thread::spawn(|| {
            set_thread_nice(5).expect("raising the nice value is always allowed");
            // SAFETY: as above.
            let tid = unsafe { libc::gettid() };
            // SAFETY: plain integer arguments.
            let got = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
            assert_eq!(got, 5);
        })
        .join()
        .unwrap();
    }
}
