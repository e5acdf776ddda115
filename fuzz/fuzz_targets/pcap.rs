//! Capture file reading (`pcap::PcapSource`): arbitrary bytes as a pcap or pcapng file never
//! panic, every packet handed out is consistent with the counters, and damage ends the walk
//! for good. Inputs that start with `R` instead write packets built from the fuzz input with
//! `pcap::PcapNgRecorder` and read them back: what was written is what is read.
#![no_main]

use std::time::Duration;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use pcap::{PcapNgRecorder, PcapSource};
use tcpcopy_fuzz::{endpoint, scratch_file};
use wire::{Flags, SegmentRepr, Seq, TcpPacket};

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("pcap");
    match data.split_first() {
        Some((b'R', rest)) => round_trip(&path, rest),
        _ => read_any(&path, data),
    }
});

fn read_any(path: &std::path::Path, data: &[u8]) {
    std::fs::write(path, data).expect("write the scratch file");
    let Ok(mut source) = PcapSource::open(path) else {
        return;
    };
    assert!(matches!(source.format(), "pcap" | "pcapng"));
    let mut packets = 0u64;
    let mut ended_by_error = false;
    while let Some(packet) = source.next_packet() {
        let Ok(packet) = packet else {
            ended_by_error = true;
            break;
        };
        packets += 1;
        assert!(
            packet.data.len() as u64 <= u64::from(packet.orig_len),
            "orig_len {} below the {} bytes present",
            packet.orig_len,
            packet.data.len()
        );
        let first = packet.data.first().map(|b| b >> 4);
        assert!(matches!(first, Some(4 | 6)), "not an IP packet: {first:?}");
        if let Ok(p) = TcpPacket::parse(packet.data) {
            let _ = (p.src(), p.dst(), p.payload(), p.options().count());
        }
        assert!(packets <= data.len() as u64, "more packets than bytes");
    }
    assert!(
        source.next_packet().is_none(),
        "a packet after the end or an error"
    );
    let stats = source.stats();
    assert_eq!(stats.packets, packets);
    assert_eq!(stats.file_len, data.len() as u64);
    assert!(stats.bytes_read <= stats.file_len, "{stats:?}");
    if !ended_by_error {
        assert_eq!(
            stats.bytes_read, stats.file_len,
            "a clean end before the end"
        );
    }
}

/// Packets written by the recorder read back unchanged, in order.
fn round_trip(path: &std::path::Path, data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut written = Vec::new();
    while !u.is_empty() && written.len() < 64 {
        let Ok(packet) = packet(&mut u) else { break };
        written.push(packet);
    }
    let mut recorder = PcapNgRecorder::create(path).expect("create the scratch file");
    for (at, bytes) in &written {
        recorder
            .write(*at, bytes, bytes.len() as u32)
            .expect("write a packet");
    }
    recorder.finish().expect("finish the file");
    let mut source = PcapSource::open(path).expect("the recorder's file opens");
    for (at, bytes) in &written {
        let got = source
            .next_packet()
            .expect("as many packets as written")
            .expect("the recorder's file is undamaged");
        assert_eq!(got.timestamp, *at);
        assert_eq!(got.data, &bytes[..]);
        assert_eq!(got.orig_len as usize, bytes.len());
    }
    assert!(source.next_packet().is_none(), "more packets than written");
}

fn packet(u: &mut Unstructured<'_>) -> arbitrary::Result<(Duration, Vec<u8>)> {
    let v6 = u.arbitrary()?;
    let nanos: u64 = u.arbitrary()?;
    let repr = SegmentRepr {
        src: endpoint(u, v6)?,
        dst: endpoint(u, v6)?,
        seq: Seq(u.arbitrary()?),
        ack: Seq(u.arbitrary()?),
        flags: Flags(u.arbitrary::<u8>()? & 0x3f),
        window: u.arbitrary()?,
        mss: u.arbitrary()?,
        window_scale: u.arbitrary()?,
        ttl: u.arbitrary()?,
    };
    let len = u.int_in_range(0..=1500usize)?;
    let payload = u.bytes(len.min(u.len()))?;
    let mut out = Vec::new();
    repr.emit(payload, &mut out);
    Ok((Duration::from_nanos(nanos), out))
}
