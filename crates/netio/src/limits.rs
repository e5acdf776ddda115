//! Process resource limits the drivers raise at start.

use std::io;

/// Raises the soft limit on open files to the hard limit (no privilege needed) and returns the
/// limit in force: stream mode holds one socket per replicated connection.
pub fn raise_open_files() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live, writable rlimit the kernel fills in during the call.
    crate::sys::check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a live, initialised rlimit the kernel only reads during the call.
        if crate::sys::check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }).is_ok() {
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_files_limit_is_raised_to_at_least_what_it_was() {
        let n = super::raise_open_files().unwrap();
        assert!(n >= 64, "{n}");
        assert_eq!(
            super::raise_open_files().unwrap(),
            n,
            "already at the hard limit"
        );
    }
}
