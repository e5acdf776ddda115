//! Where the packets for the target go out: at the link layer ([`netio::link`]), or routed by the
//! kernel through a raw socket ([`netio::raw`]), as `--send-layer` / `-o` chose. Opens the sockets
//! and forwards batches; what to send is the session core's business.

use anyhow::Context;

use netio::link::LinkSender;
use netio::raw::RawSender;

use crate::config::SendVia;

/// The socket(s) the packets for the target leave by.
pub enum Sender {
    Link(LinkSender),
    Ip(RawSender),
}

impl Sender {
    pub fn open(via: &SendVia) -> anyhow::Result<Sender> {
        Ok(match via {
            SendVia::LinkLayer { device } => Sender::Link(LinkSender::open(device.as_deref()).context(
                "cannot open the sockets to send to the target (run as root, or with CAP_NET_RAW)",
            )?),
            SendVia::Kernel => Sender::Ip(RawSender::open().context(
                "cannot open a raw socket to send to the target (run as root, or with CAP_NET_RAW)",
            )?),
        })
    }

    /// Opens the sockets for these destinations now, while the program may still (see
    /// [`netio::raw::RawSender::prepare`]).
    pub fn prepare(&mut self, dsts: &[std::net::IpAddr]) -> anyhow::Result<()> {
        match self {
            Sender::Link(s) => s.prepare(dsts),
            Sender::Ip(s) => s.prepare(dsts),
        }
        .context("cannot open a raw socket to send to the target")
    }

    #[inline]
    pub fn send_all<'a>(
        &mut self,
        packets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), netio::raw::SendFailures> {
        match self {
            Sender::Link(s) => s.send_all(packets),
            Sender::Ip(s) => s.send_all(packets),
        }
    }
}
