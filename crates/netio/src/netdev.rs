//! Network device settings the lab needs without the `ethtool` program.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys;

/// `SIOCETHTOOL` and the legacy ethtool commands for GRO (`linux/sockios.h`, `linux/ethtool.h`).
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    /// `struct ifreq` is 40 bytes on 64-bit Linux; the union's other members are larger.
    _pad: [u8; 16],
}

fn ethtool(dev: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let name = CString::new(dev).map_err(|_| sys::invalid_input("interface name with NUL"))?;
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(sys::invalid_input(format!(
            "interface name {dev:?} too long"
        )));
    }
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    for (d, &s) in req.name.iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = sys::check(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `req` is a live ifreq-sized struct whose data pointer points at `value`, alive for
    // the call; the kernel reads the name and reads/writes `value` only.
    sys::check(unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut req) })
        .map_err(sys::context(format!("ethtool ioctl on {dev}")))?;
    Ok(value.data)
}

/// Turns generic receive offload on or off for `dev` (in the calling thread's namespace), as
/// `ethtool -K dev gro on|off` does. On a veth, GRO on also makes its receive side a NAPI
/// device, which `/sys/class/net/dev/threaded` can then move to a kernel thread of its own.
pub fn set_gro(dev: &str, on: bool) -> io::Result<()> {
    ethtool(dev, ETHTOOL_SGRO, u32::from(on)).map(drop)
}

/// Turns TCP segmentation offload on or off for `dev`, as `ethtool -K dev tso on|off` does. A
/// veth hands packets to its peer's NAPI (see [`set_gro`]) only when the sender has TSO off.
pub fn set_tso(dev: &str, on: bool) -> io::Result<()> {
    ethtool(dev, ETHTOOL_STSO, u32::from(on)).map(drop)
}

/// Whether generic receive offload is on for `dev`.
pub fn gro(dev: &str) -> io::Result<bool> {
    ethtool(dev, ETHTOOL_GGRO, 0).map(|v| v != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfreqData>(), 40);
    }

    #[test]
    fn unknown_or_bad_names_are_errors() {
        assert!(gro("no-such-dev0").is_err());
        assert!(gro("a-name-longer-than-sixteen").is_err());
        assert!(gro("nul\0").is_err());
    }
}
