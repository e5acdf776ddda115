use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::classic::*;
use crate::link::*;
use crate::pcapng::*;
use session::testing::Rng;

/// A packet as read back, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    timestamp: Duration,
    data: Vec<u8>,
    orig_len: u32,
}

fn got(timestamp: Duration, data: &[u8], orig_len: u32) -> Got {
    Got {
        timestamp,
        data: data.to_vec(),
        orig_len,
    }
}

fn ts(seconds: u64, nanos: u32) -> Duration {
    Duration::new(seconds, nanos)
}

/// Reads every packet; the error message that ended the walk, if any.
fn drain(source: &mut PcapSource) -> (Vec<Got>, Option<String>) {
    let mut packets = Vec::new();
    while let Some(packet) = source.next_packet() {
        match packet {
            Ok(packet) => packets.push(got(packet.timestamp, packet.data, packet.orig_len)),
            Err(error) => {
                assert!(source.next_packet().is_none(), "a packet after an error");
                return (packets, Some(error.to_string()));
            }
        }
    }
    assert!(source.next_packet().is_none(), "a packet after the end");
    (packets, None)
}

fn memory_source(bytes: &[u8]) -> Result<PcapSource, PcapFileError> {
    let len = bytes.len() as u64;
    PcapSource::from_reader("mem".into(), Box::new(Cursor::new(bytes.to_vec())), len)
}

/// Reads a whole in-memory file that must be undamaged.
fn read_clean(bytes: &[u8]) -> (Vec<Got>, SourceStats) {
    let mut source = memory_source(bytes).expect("open");
    let (packets, error) = drain(&mut source);
    assert_eq!(error, None);
    let stats = source.stats();
    assert_eq!(stats.bytes_read, bytes.len() as u64);
    assert_eq!(stats.packets, packets.len() as u64);
    (packets, stats)
}

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = format!("tcpcopy-pcap-test-{}-{unique}-{name}", std::process::id());
        TempFile(std::env::temp_dir().join(file))
    }

    fn with(name: &str, bytes: &[u8]) -> TempFile {
        let file = TempFile::new(name);
        std::fs::write(&file.0, bytes).expect("write temp file");
        file
    }

    fn open_error(&self) -> String {
        match PcapSource::open(&self.0) {
            Ok(_) => panic!("{} opened", self.0.display()),
            Err(error) => error.to_string(),
        }
    }

    /// The error that ends reading the file (it must open).
    fn read_error(&self) -> (usize, String) {
        let mut source = PcapSource::open(&self.0).expect("open");
        let (packets, error) = drain(&mut source);
        (packets.len(), error.expect("an error"))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---- Packets and frames ----

fn ipv4(payload_len: usize, tag: u8) -> Vec<u8> {
    let total = 20 + payload_len;
    let mut packet = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        tag,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    packet.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    packet.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7) ^ tag));
    packet
}

fn ipv6(payload_len: usize, tag: u8) -> Vec<u8> {
    let mut packet = vec![
        0x60,
        0,
        0,
        tag,
        (payload_len >> 8) as u8,
        payload_len as u8,
        6,
        64,
    ];
    packet.extend_from_slice(&[0xfd; 16]);
    packet.extend_from_slice(&[0xfe; 16]);
    packet.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(3) ^ tag));
    packet
}

fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for tag in tags {
        frame.extend_from_slice(&tag.to_be_bytes());
        frame.extend_from_slice(&[0x00, 0x64]);
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    frame.extend_from_slice(&protocol.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = protocol.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

// ---- File builders ----

/// Bytes in one byte order.
struct Out {
    bytes: Vec<u8>,
    big: bool,
}

impl Out {
    fn u16(&mut self, value: u16) {
        let raw = if self.big {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        self.bytes.extend_from_slice(&raw);
    }

    fn u32(&mut self, value: u32) {
        let raw = if self.big {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        self.bytes.extend_from_slice(&raw);
    }

    fn u64(&mut self, value: u64) {
        let raw = if self.big {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        self.bytes.extend_from_slice(&raw);
    }
}

/// One classic pcap record: seconds, fraction, frame, wire length.
type Record<'a> = (u32, u32, &'a [u8], u32);

fn pcap_file(big: bool, nanos: bool, link: u32, snaplen: u32, records: &[Record]) -> Vec<u8> {
    let mut out = Out {
        bytes: Vec::new(),
        big,
    };
    out.u32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    out.u16(2);
    out.u16(4);
    out.u32(0);
    out.u32(0);
    out.u32(snaplen);
    out.u32(link);
    for &(seconds, fraction, frame, orig_len) in records {
        out.u32(seconds);
        out.u32(fraction);
        out.u32(frame.len() as u32);
        out.u32(orig_len);
        out.bytes.extend_from_slice(frame);
    }
    out.bytes
}

/// A pcapng file built block by block.
struct Ng(Out);

impl Ng {
    fn new(big: bool) -> Ng {
        let mut ng = Ng(Out {
            bytes: Vec::new(),
            big,
        });
        ng.section(big);
        ng
    }

    fn section(&mut self, big: bool) {
        self.0.big = big;
        let mut body = Out {
            bytes: Vec::new(),
            big,
        };
        body.u32(BYTE_ORDER_MAGIC);
        body.u16(1);
        body.u16(0);
        body.u64(u64::MAX);
        self.block(SECTION_HEADER, &body.bytes);
    }

    fn block(&mut self, kind: u32, body: &[u8]) {
        let padded = body.len().next_multiple_of(4);
        let len = (12 + padded) as u32;
        self.0.u32(kind);
        self.0.u32(len);
        self.0.bytes.extend_from_slice(body);
        self.0
            .bytes
            .resize(self.0.bytes.len() + padded - body.len(), 0);
        self.0.u32(len);
    }

    fn body(&self) -> Out {
        Out {
            bytes: Vec::new(),
            big: self.0.big,
        }
    }

    /// An interface; `options` are (code, value) pairs.
    fn interface(&mut self, link: u16, snaplen: u32, options: &[(u16, &[u8])]) {
        let mut body = self.body();
        body.u16(link);
        body.u16(0);
        body.u32(snaplen);
        for (code, value) in options {
            body.u16(*code);
            body.u16(value.len() as u16);
            body.bytes.extend_from_slice(value);
            body.bytes.resize(body.bytes.len().next_multiple_of(4), 0);
        }
        if !options.is_empty() {
            body.u32(0);
        }
        self.block(INTERFACE_DESCRIPTION, &body.bytes);
    }

    fn enhanced(&mut self, interface: u32, units: u64, frame: &[u8], orig_len: u32) {
        let mut body = self.body();
        body.u32(interface);
        body.u32((units >> 32) as u32);
        body.u32(units as u32);
        body.u32(frame.len() as u32);
        body.u32(orig_len);
        body.bytes.extend_from_slice(frame);
        body.bytes.resize(body.bytes.len().next_multiple_of(4), 0);
        // An EPB comment that is not UTF-8: pcap-file 2 rejects that.
        body.u16(1);
        body.u16(3);
        body.bytes.extend_from_slice(&[0xff, 0xfe, 0xfd, 0]);
        body.u32(0);
        self.block(ENHANCED_PACKET, &body.bytes);
    }

    fn obsolete(&mut self, interface: u16, units: u64, frame: &[u8], orig_len: u32) {
        let mut body = self.body();
        body.u16(interface);
        body.u16(0);
        body.u32((units >> 32) as u32);
        body.u32(units as u32);
        body.u32(frame.len() as u32);
        body.u32(orig_len);
        body.bytes.extend_from_slice(frame);
        self.block(OBSOLETE_PACKET, &body.bytes);
    }

    fn simple(&mut self, frame: &[u8], orig_len: u32) {
        let mut body = self.body();
        body.u32(orig_len);
        body.bytes.extend_from_slice(frame);
        self.block(SIMPLE_PACKET, &body.bytes);
    }
}

// ---- Classic pcap ----

#[test]
fn pcap_ethernet_little_endian_microseconds_with_vlan_tags() {
    let v4 = ipv4(40, 1);
    let v6 = ipv6(33, 2);
    let tiny = ipv4(20, 3);
    let arp = ethernet(&[], 0x0806, &[0; 28]);
    let plain = ethernet(&[], ETHERTYPE_IPV4, &v4);
    let tagged = ethernet(&[0x8100], ETHERTYPE_IPV6, &v6);
    let qinq = ethernet(&[0x88a8, 0x8100], ETHERTYPE_IPV4, &v4);
    // A short frame padded to Ethernet's 60-byte minimum: the padding is not IP.
    let mut padded = ethernet(&[], ETHERTYPE_IPV4, &tiny);
    padded.resize(60, 0);
    let file = pcap_file(
        false,
        false,
        1,
        65535,
        &[
            (1_700_000_000, 123_456, &plain, plain.len() as u32),
            (1_700_000_000, 999_999, &arp, arp.len() as u32),
            (1_700_000_001, 0, &tagged, tagged.len() as u32),
            (1_700_000_002, 7, &qinq, qinq.len() as u32),
            (1_700_000_003, 500_000, &padded, 60),
        ],
    );
    let mut source = memory_source(&file).expect("open");
    assert_eq!(source.format(), "pcap");
    let (packets, error) = drain(&mut source);
    assert_eq!(error, None);
    assert_eq!(
        packets,
        [
            got(ts(1_700_000_000, 123_456_000), &v4, 60),
            got(ts(1_700_000_001, 0), &v6, 73),
            got(ts(1_700_000_002, 7_000), &v4, 60),
            got(ts(1_700_000_003, 500_000_000), &tiny, 40),
        ]
    );
    let stats = source.stats();
    assert_eq!((stats.packets, stats.skipped), (4, 1));
    assert_eq!(stats.bytes_read, file.len() as u64);
    assert_eq!(stats.file_len, file.len() as u64);
}

#[test]
fn pcap_big_endian_nanoseconds_linux_cooked() {
    let v4 = ipv4(100, 4);
    let v6 = ipv6(0, 5);
    let first = sll(ETHERTYPE_IPV4, &v4);
    let second = sll(ETHERTYPE_IPV6, &v6);
    let other = sll(0x0003, &[1, 2, 3]);
    let records: [Record; 3] = [
        (1, 999_999_999, &first, first.len() as u32),
        (2, 1, &other, other.len() as u32),
        (3, 42, &second, second.len() as u32),
    ];
    let (packets, stats) = read_clean(&pcap_file(true, true, 113, 65535, &records));
    assert_eq!(
        packets,
        [got(ts(1, 999_999_999), &v4, 120), got(ts(3, 42), &v6, 40)]
    );
    assert_eq!(stats.skipped, 1);
}

#[test]
fn pcap_linux_cooked_v2() {
    let v4 = ipv4(8, 6);
    let v6 = ipv6(12, 7);
    let first = sll2(ETHERTYPE_IPV4, &v4);
    let second = sll2(ETHERTYPE_IPV6, &v6);
    let records: [Record; 2] = [
        (10, 1, &first, first.len() as u32),
        (11, 2, &second, second.len() as u32),
    ];
    let (packets, _) = read_clean(&pcap_file(false, true, 276, 65535, &records));
    assert_eq!(packets, [got(ts(10, 1), &v4, 28), got(ts(11, 2), &v6, 52)]);
}

#[test]
fn pcap_raw_ip_link_types() {
    let v4 = ipv4(10, 8);
    let v6 = ipv6(10, 9);
    let records: [Record; 3] = [
        (5, 1, &v4, 30),
        (6, 2, &v6, 50),
        (7, 3, &[0x10, 0, 0, 0], 4),
    ];
    for link in [101, 12, 14] {
        let (packets, stats) = read_clean(&pcap_file(false, false, link, 65535, &records));
        assert_eq!(
            packets,
            [got(ts(5, 1_000), &v4, 30), got(ts(6, 2_000), &v6, 50)]
        );
        assert_eq!(stats.skipped, 1, "link type {link}");
    }
    let (packets, stats) = read_clean(&pcap_file(false, false, 228, 65535, &records));
    assert_eq!(
        (packets, stats.skipped),
        (vec![got(ts(5, 1_000), &v4, 30)], 2)
    );
    let (packets, stats) = read_clean(&pcap_file(true, false, 229, 65535, &records));
    assert_eq!(
        (packets, stats.skipped),
        (vec![got(ts(6, 2_000), &v6, 50)], 2)
    );
}

#[test]
fn pcap_snapshot_length_cuts_are_kept_short() {
    // Captured with -s 64: the wire length is above the snapshot length (pcap-file 2 rejects
    // such records), the IP length says how long the packet really was.
    let v4 = ipv4(1400, 10);
    let frame = ethernet(&[], ETHERTYPE_IPV4, &v4);
    let cut = &frame[..64];
    let records: [Record; 1] = [(9, 9, cut, frame.len() as u32)];
    let (packets, _) = read_clean(&pcap_file(false, false, 1, 64, &records));
    assert_eq!(packets, [got(ts(9, 9_000), &v4[..50], 1420)]);
}

// ---- pcapng ----

#[test]
fn pcapng_enhanced_packets_default_microseconds() {
    let v4 = ipv4(30, 11);
    let mut ng = Ng::new(false);
    ng.interface(101, 0, &[]);
    ng.enhanced(0, 1_700_000_000_123_456, &v4, 50);
    ng.enhanced(0, 1_700_000_001_000_001, &v4, 50);
    let mut source = memory_source(&ng.0.bytes).expect("open");
    assert_eq!(source.format(), "pcapng");
    let (packets, error) = drain(&mut source);
    assert_eq!(error, None);
    assert_eq!(
        packets,
        [
            got(ts(1_700_000_000, 123_456_000), &v4, 50),
            got(ts(1_700_000_001, 1_000), &v4, 50)
        ]
    );
    assert_eq!(source.stats().bytes_read, ng.0.bytes.len() as u64);
}

#[test]
fn pcapng_two_interfaces_with_their_own_link_types_and_resolutions() {
    let v4 = ipv4(20, 12);
    let v6 = ipv6(24, 13);
    let on_ethernet = ethernet(&[0x8100], ETHERTYPE_IPV4, &v4);
    let mut ng = Ng::new(true);
    // Options pcap-file 2 rejects: a name that is not UTF-8, a 4-byte if_tzone.
    ng.interface(1, 65535, &[(2, &[0xc3, 0x28]), (10, &[0, 0, 0, 0])]);
    ng.interface(101, 0, &[(9, &[9]), (2, b"raw0")]);
    ng.block(4, &[0, 0, 0, 0]); // name resolution: skipped
    ng.block(0x4000_0bad, &[1, 2, 3, 4, 5, 6, 7, 8]); // unknown: skipped
    ng.enhanced(
        0,
        1_700_000_000_000_001,
        &on_ethernet,
        on_ethernet.len() as u32,
    );
    ng.enhanced(1, 1_700_000_000_000_000_123, &v6, 64);
    ng.obsolete(1, 5_000_000_007, &v4, 40);
    ng.block(5, &[0; 12]); // interface statistics: skipped
    let (packets, stats) = read_clean(&ng.0.bytes);
    assert_eq!(
        packets,
        [
            got(ts(1_700_000_000, 1_000), &v4, 40),
            got(ts(1_700_000_000, 123), &v6, 64),
            got(ts(5, 7), &v4, 40),
        ]
    );
    assert_eq!(stats.skipped, 0);
}

#[test]
fn pcapng_simple_packets_take_the_previous_timestamp_and_the_snapshot_length() {
    let v4 = ipv4(60, 14);
    let frame = ethernet(&[], ETHERTYPE_IPV4, &v4);
    let mut ng = Ng::new(false);
    ng.interface(1, 54, &[(9, &[3])]);
    ng.simple(&frame, frame.len() as u32); // before any timestamp
    ng.enhanced(0, 7_500, &frame[..54], frame.len() as u32);
    ng.simple(&frame[..54], frame.len() as u32);
    let (packets, _) = read_clean(&ng.0.bytes);
    let cut = got(ts(7, 500_000_000), &v4[..40], 80);
    assert_eq!(
        packets,
        [got(Duration::ZERO, &v4[..40], 80), cut.clone(), cut]
    );
}

#[test]
fn pcapng_sections_switch_byte_order_and_interfaces() {
    let v4 = ipv4(4, 15);
    let mut ng = Ng::new(false);
    ng.interface(101, 0, &[]);
    ng.enhanced(0, 1_000_000, &v4, 24);
    ng.section(true);
    ng.interface(228, 0, &[(9, &[0x8a]), (14, &100i64.to_be_bytes())]);
    ng.enhanced(0, (3 << 10) + 512, &v4, 24);
    let (packets, _) = read_clean(&ng.0.bytes);
    assert_eq!(
        packets,
        [got(ts(1, 0), &v4, 24), got(ts(103, 500_000_000), &v4, 24)]
    );

    // A negative offset below the epoch stops at the epoch rather than failing.
    let mut ng = Ng::new(true);
    ng.interface(101, 0, &[(14, &(-10i64).to_be_bytes())]);
    ng.enhanced(0, 25_000_000, &v4, 24);
    ng.enhanced(0, 1_000_000, &v4, 24);
    let (packets, _) = read_clean(&ng.0.bytes);
    assert_eq!(
        packets,
        [got(ts(15, 0), &v4, 24), got(Duration::ZERO, &v4, 24)]
    );
}

#[test]
fn pcapng_packet_on_an_unsupported_interface_is_an_error() {
    let v4 = ipv4(4, 16);
    let mut ng = Ng::new(false);
    ng.interface(105, 0, &[]); // 802.11, no packets: fine
    ng.interface(101, 0, &[]);
    ng.enhanced(1, 0, &v4, 24);
    ng.enhanced(0, 0, &v4, 24);
    let mut source = memory_source(&ng.0.bytes).expect("open");
    let (packets, error) = drain(&mut source);
    assert_eq!(packets.len(), 1);
    let expected =
        "mem: link type 105 is not supported (Ethernet, Linux cooked SLL/SLL2 and raw IP are)";
    assert_eq!(error.as_deref(), Some(expected));
}

/// Appends something wrong to a pcapng file.
type Damage<'a> = &'a dyn Fn(&mut Ng);

#[test]
fn pcapng_damage_is_described() {
    let v4 = ipv4(4, 17);
    let mut base = Ng::new(false);
    base.interface(101, 0, &[]);
    let cases: [(Damage, &str); 5] = [
        (
            &|ng| ng.enhanced(3, 0, &v4, 24),
            "packet on interface 3, which is not described",
        ),
        (
            &|ng| ng.interface(101, 0, &[(9, &[20])]),
            "timestamp resolution 0x14 is not supported",
        ),
        (&|ng| ng.block(6, &[0; 8]), "packet block too short"),
        (
            &|ng| {
                ng.0.u32(6);
                ng.0.u32(14);
                ng.0.bytes.extend_from_slice(&[0; 10]);
            },
            "block of type 0x6 has length 14",
        ),
        (
            &|ng| {
                ng.0.u32(6);
                ng.0.u32(12);
                ng.0.u32(16);
            },
            "block length 12 and trailing length 16 differ",
        ),
    ];
    for (damage, detail) in cases {
        let mut ng = Ng(Out {
            bytes: base.0.bytes.clone(),
            big: false,
        });
        ng.enhanced(0, 0, &v4, 24);
        damage(&mut ng);
        let (packets, error) = drain(&mut memory_source(&ng.0.bytes).expect("open"));
        assert_eq!(packets.len(), 1);
        assert_eq!(
            error,
            Some(format!("mem: damaged after 1 packets: {detail}"))
        );
    }
}

// ---- Recorder ----

fn recorded_packets(count: usize) -> Vec<Got> {
    (0..count)
        .map(|i| {
            let data = if i % 3 == 0 {
                ipv6(i % 200, i as u8)
            } else {
                ipv4(i % 1500, i as u8)
            };
            let timestamp = ts(
                1_700_000_000 + (i / 7) as u64,
                (i as u32 * 104_729) % 1_000_000_000,
            );
            // Every 10th packet was cut short by the capture.
            if i % 10 == 5 {
                let wire = data.len() as u32;
                got(timestamp, &data[..data.len().min(54)], wire)
            } else {
                let len = data.len() as u32;
                Got {
                    timestamp,
                    data,
                    orig_len: len,
                }
            }
        })
        .collect()
}

fn record(path: &Path, packets: &[Got]) {
    let mut recorder = PcapNgRecorder::create(path).expect("create");
    for packet in packets {
        recorder
            .write(packet.timestamp, &packet.data, packet.orig_len)
            .expect("write");
    }
    recorder.finish().expect("finish");
}

#[test]
fn recorder_round_trip() {
    let file = TempFile::new("round-trip.pcapng");
    let written = recorded_packets(1000);
    record(&file.0, &written);
    let mut source = PcapSource::open(&file.0).expect("open");
    assert_eq!(source.format(), "pcapng");
    let (read, error) = drain(&mut source);
    assert_eq!(error, None);
    assert_eq!(read.len(), 1000);
    assert_eq!(read, written);
    let stats = source.stats();
    assert_eq!((stats.packets, stats.skipped), (1000, 0));
    assert_eq!(stats.bytes_read, stats.file_len);
    assert_eq!(
        stats.file_len,
        std::fs::metadata(&file.0).expect("metadata").len()
    );
}

#[test]
fn recorder_rejects_what_it_cannot_write() {
    let file = TempFile::new("reject.pcapng");
    let mut recorder = PcapNgRecorder::create(&file.0).expect("create");
    let too_late = recorder.write(Duration::MAX, &ipv4(0, 0), 20);
    assert_eq!(
        too_late.map_err(|error| error.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    let huge = vec![0x45; MAX_RECORD];
    let too_long = recorder.write(Duration::ZERO, &huge, 0);
    assert_eq!(
        too_long.map_err(|error| error.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    recorder.write(ts(1, 2), &ipv4(1, 1), 0).expect("write");
    recorder.finish().expect("finish");
    let (packets, error) = drain(&mut PcapSource::open(&file.0).expect("open"));
    assert_eq!(
        (packets, error),
        (vec![got(ts(1, 2), &ipv4(1, 1), 21)], None)
    );
}

fn tcpdump(args: &[&str]) -> Option<std::process::Output> {
    Command::new("tcpdump").args(args).output().ok()
}

#[test]
fn tcpdump_reads_what_the_recorder_writes() {
    let probe = TempFile::with(
        "probe.pcap",
        &pcap_file(false, false, 101, 65535, &[(1, 0, &ipv4(0, 0), 20)]),
    );
    let probe_path = probe.0.to_string_lossy().into_owned();
    match tcpdump(&["-r", &probe_path, "-c", "1"]) {
        Some(output) if output.status.success() => {}
        Some(output) => {
            eprintln!("tcpdump cannot read a pcap file here, check skipped: {output:?}");
            return;
        }
        None => {
            eprintln!("tcpdump not found, check skipped");
            return;
        }
    }
    let file = TempFile::new("for-tcpdump.pcapng");
    let path = file.0.to_string_lossy().into_owned();
    let written = recorded_packets(50);
    record(&file.0, &written);

    let output = tcpdump(&["-r", &path, "-c", "1"]).expect("tcpdump");
    assert!(output.status.success(), "{output:?}");
    let listing =
        tcpdump(&["-r", &path, "-nn", "-tt", "--time-stamp-precision=nano"]).expect("tcpdump");
    assert!(listing.status.success(), "{listing:?}");
    let stdout = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(stdout.lines().count(), written.len(), "{stdout}");
    let first = &written[0].timestamp;
    let expected = format!("{}.{:09} IP6 ", first.as_secs(), first.subsec_nanos());
    assert!(
        stdout.starts_with(&expected),
        "expected {expected:?}, got {stdout}"
    );

    // tcpdump turns it into a classic nanosecond pcap that reads back the same.
    let converted = TempFile::new("from-tcpdump.pcap");
    let converted_path = converted.0.to_string_lossy().into_owned();
    let args = [
        "-r",
        &path,
        "-w",
        &converted_path,
        "--time-stamp-precision=nano",
    ];
    let output = tcpdump(&args).expect("tcpdump");
    assert!(output.status.success(), "{output:?}");
    let mut source = PcapSource::open(&converted.0).expect("open");
    assert_eq!(source.format(), "pcap");
    assert_eq!(drain(&mut source), (written, None));
}

// ---- Errors, exact messages ----

#[test]
fn error_messages() {
    let missing = TempFile::new("missing.pcap");
    let not_found = io::Error::from(io::ErrorKind::NotFound);
    let message = missing.open_error();
    assert!(
        message.starts_with(&format!("{}: ", missing.0.display())),
        "{message}"
    );
    assert!(message.contains("No such file"), "{message} / {not_found}");

    let empty = TempFile::with("empty.pcap", &[]);
    assert_eq!(
        empty.open_error(),
        format!("{}: not a pcap or pcapng file", empty.0.display())
    );

    let mut noise = [0u8; 100];
    Rng::new(1).fill(&mut noise);
    let noise = TempFile::with("noise.pcap", &noise);
    assert_eq!(
        noise.open_error(),
        format!("{}: not a pcap or pcapng file", noise.0.display())
    );

    let wifi = TempFile::with("wifi.pcap", &pcap_file(false, false, 105, 65535, &[]));
    let expected =
        "link type 105 is not supported (Ethernet, Linux cooked SLL/SLL2 and raw IP are)";
    assert_eq!(
        wifi.open_error(),
        format!("{}: {expected}", wifi.0.display())
    );

    let (a, b, c) = (ipv4(100, 1), ipv4(100, 2), ipv4(100, 3));
    let whole = pcap_file(
        false,
        false,
        101,
        65535,
        &[(1, 0, &a, 120), (2, 0, &b, 120), (3, 0, &c, 120)],
    );
    let cut = TempFile::with("cut.pcap", &whole[..24 + 2 * 136 + 60]);
    let truncated = format!("{}: truncated after 2 packets", cut.0.display());
    assert_eq!(cut.read_error(), (2, truncated));
    let cut_header = TempFile::with("cut-header.pcap", &whole[..24 + 136 + 9]);
    let truncated = format!("{}: truncated after 1 packets", cut_header.0.display());
    assert_eq!(cut_header.read_error(), (1, truncated));
    let cut_file_header = TempFile::with("cut-file-header.pcap", &whole[..20]);
    let truncated = format!("{}: truncated after 0 packets", cut_file_header.0.display());
    assert_eq!(cut_file_header.open_error(), truncated);

    let mut ng = Ng::new(false);
    ng.interface(101, 0, &[]);
    ng.enhanced(0, 1, &a, 120);
    let first_end = ng.0.bytes.len();
    ng.enhanced(0, 2, &b, 120);
    let cut = TempFile::with("cut.pcapng", &ng.0.bytes[..first_end + 70]);
    let truncated = format!("{}: truncated after 1 packets", cut.0.display());
    assert_eq!(cut.read_error(), (1, truncated));

    let mut huge = pcap_file(false, false, 101, 65535, &[(1, 0, &a, 120)]);
    huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    let huge = TempFile::with("huge.pcap", &huge);
    let damaged = format!(
        "{}: damaged after 1 packets: packet record claims 4294967295 bytes",
        huge.0.display()
    );
    assert_eq!(huge.read_error(), (1, damaged));
}

/// tcpdump's timestamp_invalid_micro.pcap, in spirit: a record whose microseconds field is not a
/// fraction of a second. What came before it is read; then the walk ends with one line.
#[test]
fn an_invalid_timestamp_is_damage_not_an_hour_s_wait() {
    let v4 = ipv4(10, 8);
    let records: [Record; 3] = [(5, 1, &v4, 30), (6, u32::MAX, &v4, 30), (7, 3, &v4, 30)];
    let mut source = memory_source(&pcap_file(false, false, 101, 65535, &records)).unwrap();
    let (packets, error) = drain(&mut source);
    assert_eq!(packets, [got(ts(5, 1_000), &v4, 30)]);
    let error = error.expect("an error");
    assert!(
        error.contains("after 1 packets") || error.contains("1 packet"),
        "{error}"
    );
    assert!(
        error.contains("invalid timestamp (4294967295 microseconds in a second)"),
        "{error}"
    );
}

#[test]
fn timestamp_resolutions() {
    assert_eq!(timestamp_units(1_234_567, 6), Some(ts(1, 234_567_000)));
    assert_eq!(timestamp_units(u64::MAX, 19), Some(ts(1, 844_674_407)));
    assert_eq!(
        timestamp_units(u64::MAX, 0),
        Some(Duration::from_secs(u64::MAX))
    );
    assert_eq!(
        timestamp_units(3 << 62 | 1 << 61, 0x80 | 63),
        Some(ts(1, 750_000_000))
    );
    assert_eq!(timestamp_units(1, 20), None);
    assert_eq!(timestamp_units(1, 0x80 | 64), None);
    assert_eq!(
        pcap_timestamp(1, 999_999, false).ok(),
        Some(ts(1, 999_999_000))
    );
    assert_eq!(
        pcap_timestamp(u32::MAX, 999_999_999, true).ok(),
        Some(ts(u64::from(u32::MAX), 999_999_999))
    );
    // A fraction of a second or more is damage, not an hour's wait.
    assert!(pcap_timestamp(1, 1_000_000, false).is_err());
    assert!(pcap_timestamp(1, u32::MAX, true).is_err());
}

// ---- Fuzzing: never a panic, always an end ----

fn valid_pcap() -> Vec<u8> {
    let (v4, v6) = (ipv4(30, 1), ipv6(20, 2));
    let first = ethernet(&[0x8100], ETHERTYPE_IPV4, &v4);
    let second = ethernet(&[], ETHERTYPE_IPV6, &v6);
    let arp = ethernet(&[], 0x0806, &[0; 28]);
    pcap_file(
        false,
        false,
        1,
        65535,
        &[
            (1, 2, &first, 68),
            (3, 4, &arp, 42),
            (5, 6, &second, 74),
            (7, 8, &first, 68),
        ],
    )
}

fn valid_pcapng() -> Vec<u8> {
    let (v4, v6) = (ipv4(30, 1), ipv6(20, 2));
    let mut ng = Ng::new(false);
    ng.interface(1, 0, &[(9, &[9])]);
    ng.interface(101, 0, &[]);
    ng.enhanced(0, 10, &ethernet(&[], ETHERTYPE_IPV4, &v4), 64);
    ng.enhanced(1, 20, &v6, 60);
    ng.simple(&ethernet(&[], ETHERTYPE_IPV4, &v4), 64);
    ng.obsolete(1, 30, &v4, 50);
    ng.section(true);
    ng.interface(113, 0, &[]);
    ng.enhanced(0, 40, &sll(ETHERTYPE_IPV6, &v6), 76);
    ng.0.bytes
}

/// Reads all of `bytes`, checking what comes out is sane; returns how many packets.
fn read_anything(bytes: &[u8]) -> usize {
    let Ok(mut source) = memory_source(bytes) else {
        return 0;
    };
    let mut packets = 0;
    while let Some(packet) = source.next_packet() {
        let Ok(packet) = packet else {
            break;
        };
        packets += 1;
        assert!(matches!(
            packet.data.first().map(|byte| byte >> 4),
            Some(4 | 6)
        ));
        assert!(packet.orig_len as usize >= packet.data.len());
        // Every packet took at least a 16-byte record header or a 12-byte block.
        assert!(
            packets * 12 <= bytes.len(),
            "more packets than the file can hold"
        );
    }
    assert!(source.next_packet().is_none());
    assert!(source.stats().bytes_read <= bytes.len() as u64);
    packets
}

#[test]
fn valid_fuzz_seeds_read_completely() {
    assert_eq!(read_anything(&valid_pcap()), 3);
    assert_eq!(read_anything(&valid_pcapng()), 5);
}

fn file_start() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(valid_pcap()[..24].to_vec()),
        Just(valid_pcapng()[..28].to_vec()),
        Just(pcap_file(true, true, 113, 65535, &[])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_random_bytes(start in file_start(), noise in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = start;
        bytes.extend_from_slice(&noise);
        read_anything(&bytes);
    }

    #[test]
    fn fuzz_truncated_files(ng in any::<bool>(), cut in any::<Index>()) {
        let whole = if ng { valid_pcapng() } else { valid_pcap() };
        let len = cut.index(whole.len() + 1);
        let mut source = memory_source(&whole[..len]).ok();
        if let Some(source) = &mut source {
            let (_, error) = drain(source);
            let complete = source.stats().bytes_read == len as u64;
            prop_assert!(error.is_some() != complete, "{error:?} at {len}");
            if let Some(error) = error {
                prop_assert!(error.starts_with("mem: truncated after "), "{error}");
            }
        }
    }

    #[test]
    fn fuzz_damaged_files(
        ng in any::<bool>(),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 1..6),
        cut in any::<Index>(),
    ) {
        let mut bytes = if ng { valid_pcapng() } else { valid_pcap() };
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        let len = cut.index(bytes.len() + 1).max(bytes.len() / 2);
        read_anything(&bytes[..len]);
    }
}
