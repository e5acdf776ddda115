//! Per-test scratch directories under the system temp dir, removed on drop.
//!
//! Set `TCPCOPY_LAB_KEEP=1` to keep them for a post-mortem (logs, nginx.conf, access logs).

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh, empty directory `tcpcopy-lab-{tag}-{pid}-{n}`; removed when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    pub fn new(tag: &str) -> anyhow::Result<ScratchDir> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tcpcopy-lab-{tag}-{}-{n}", std::process::id()));
        // A previous process with the same pid may have kept its directory.
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        crate::unprivileged::share_dir(&path)?;
        Ok(ScratchDir {
            path,
            keep: std::env::var_os("TCPCOPY_LAB_KEEP").is_some(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory on disk after drop and returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
