//! Running tcpcopy and intercept in the lab as an unprivileged user holding only `CAP_NET_RAW` and
//! `CAP_NET_ADMIN`, the way a careful operator runs them.
//!
//! With `TCPCOPY_LAB_USER=USER` (CI sets `nobody`), [`Lab::spawn`](crate::Lab::spawn) starts the two
//! programs through `setpriv` as USER, from copies that carry the two file capabilities
//! (`setcap cap_net_raw,cap_net_admin+ep`): no root, no other capability. Every other program of
//! the lab (nginx, tcpdump, iptables of the test itself) still runs as root. Scratch directories
//! are then writable by all, so that reports, recordings and pid files can be written there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context as _};

/// The environment variable naming the user.
pub const USER_VAR: &str = "TCPCOPY_LAB_USER";

/// The user the lab runs our programs as, when one is asked for.
pub fn user() -> Option<String> {
    std::env::var(USER_VAR).ok().filter(|u| !u.is_empty())
}

/// Whether `program` is one of ours (tcpcopy or intercept), by file name.
fn is_ours(program: &Path) -> bool {
    matches!(
        program.file_name().and_then(|n| n.to_str()),
        Some("tcpcopy" | "intercept")
    )
}

/// The program and arguments that run `program args` as `user` with the two capabilities; the
/// same when no user is asked for, or `program` is not ours.
pub fn wrap(
    user: Option<&str>,
    program: &Path,
    args: &[String],
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    match user {
        Some(user) if is_ours(program) => as_user(user, program, args),
        _ => Ok((program.to_path_buf(), args.to_vec())),
    }
}

/// `setpriv --reuid USER --regid GROUP --clear-groups CAPPED args...`.
pub fn as_user(
    user: &str,
    program: &Path,
    args: &[String],
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let capped = capped_copy(program)?;
    let gid = id(&["-g", user])?;
    let uid = id(&["-u", user])?;
    let mut wrapped = vec![
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".to_string(),
        capped.display().to_string(),
    ];
    wrapped.extend(args.iter().cloned());
    Ok((PathBuf::from("setpriv"), wrapped))
}

fn id(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("id")
        .args(args)
        .output()
        .context("running id")?;
    if !out.status.success() {
        bail!(
            "{USER_VAR}: id {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A copy of `program` with the two file capabilities, readable and runnable by all, made once
/// per build of it (keyed by its path, size and modification time).
fn capped_copy(program: &Path) -> anyhow::Result<PathBuf> {
    static MADE: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let meta = std::fs::metadata(program)
        .with_context(|| format!("{} does not exist", program.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = format!("{}-{}-{modified}", program.display(), meta.len());
    let dir = std::env::temp_dir()
        .join("tcpcopy-lab-caps")
        .join(format!("{:016x}", fnv(key.as_bytes())));
    let name = program.file_name().context("a program name")?;
    let capped = dir.join(name);
    if capped.is_file() {
        return Ok(capped);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir.parent().unwrap_or(&dir), 0o755)?;
    set_mode(&dir, 0o755)?;
    let partial = dir.join(format!(".{}.partial", name.to_string_lossy()));
    std::fs::copy(program, &partial).with_context(|| format!("copying {}", program.display()))?;
    set_mode(&partial, 0o755)?;
    let out = Command::new("setcap")
        .args(["cap_net_raw,cap_net_admin+ep"])
        .arg(&partial)
        .output()
        .context("running setcap (package libcap2-bin)")?;
    if !out.status.success() {
        bail!(
            "setcap {}: {}",
            partial.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::rename(&partial, &capped)?;
    Ok(capped)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Makes a scratch directory writable by an unprivileged user of the lab (`TCPCOPY_LAB_USER`,
/// or one a test names itself: its programs write reports and pid files there).
pub fn share_dir(path: &Path) -> anyhow::Result<()> {
    set_mode(path, 0o777)
}

/// FNV-1a: a stable name for a build of a program.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_programs_are_wrapped() {
        assert!(is_ours(Path::new("/x/target/release/tcpcopy")));
        assert!(is_ours(Path::new("intercept")));
        assert!(!is_ours(Path::new("/usr/sbin/nginx")));
        assert!(!is_ours(Path::new("tcpdump")));
    }
}
