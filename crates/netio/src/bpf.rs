//! Classic BPF prefilter for the capture socket.
//!
//! Owns the program that decides in the kernel which packets are worth copying to user space. The
//! program assumes the packet starts at the IP header, as on an `AF_PACKET`/`SOCK_DGRAM` socket;
//! attached anywhere else it filters garbage. It is only a prefilter: user space still validates
//! every packet it parses.
//!
//! Every conditional jump skips at most one instruction (a `ret` or an unconditional `ja`), and
//! only `ja` carries long, 32-bit offsets, so the 8-bit `jt`/`jf` fields can never overflow however
//! long the port and address lists are. Programs longer than [`MAX_INSNS`] are refused by the
//! kernel when attached.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One classic BPF instruction.
pub type Insn = libc::sock_filter;

/// Kernel limit on the length of a classic BPF program (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Return value that keeps the whole packet (the kernel caps it at what the ring can store).
pub const ACCEPT: u32 = u32::MAX;
/// Return value that drops the packet.
pub const REJECT: u32 = 0;
/// The longest IP header plus the longest TCP header the filter accepts (IPv4 with options, 60
/// bytes, and TCP with options, 60 bytes; IPv6 without extension headers is shorter): as a
/// [`TcpFilter::snap_len`], it keeps every header whole and leaves the payload behind.
pub const HEADERS_MAX: u32 = 120;

const fn op(code: u32) -> u16 {
    code as u16
}

const LD_W_ABS: u16 = op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS);
const LD_H_ABS: u16 = op(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS);
const LD_B_ABS: u16 = op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS);
const LD_H_IND: u16 = op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND);
const LDX_IMM: u16 = op(libc::BPF_LDX | libc::BPF_W | libc::BPF_IMM);
const LDX_MSH: u16 = op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH);
const RSH_K: u16 = op(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K);
const TXA: u16 = op(libc::BPF_MISC | libc::BPF_TXA);
const JA: u16 = op(libc::BPF_JMP | libc::BPF_JA);
const JEQ: u16 = op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K);
const JGE: u16 = op(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K);
const JSET: u16 = op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K);
const RET_K: u16 = op(libc::BPF_RET | libc::BPF_K);

/// Ancillary load of `skb->pkt_type` (`SKF_AD_OFF + SKF_AD_PKTTYPE`).
const PKTTYPE: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
const PACKET_OUTGOING: u32 = libc::PACKET_OUTGOING as u32;
const PACKET_HOST: u32 = libc::PACKET_HOST as u32;
const TCP: u32 = libc::IPPROTO_TCP as u32;

// IP header offsets, from the start of the IP header.
const IP4_PROTOCOL: u32 = 9;
const IP4_FLAGS_FRAG: u32 = 6;
const IP4_FRAG_OFFSET_MASK: u32 = 0x1fff;
const IP4_DST: u32 = 16;
const IP4_MIN_HEADER: u32 = 20;
const IP6_NEXT_HEADER: u32 = 6;
const IP6_DST: u32 = 24;
const IP6_HEADER: u32 = 40;
// TCP header offsets, relative to X (the IP header length).
const TCP_SRC_PORT: u32 = 0;
const TCP_DST_PORT: u32 = 2;

/// What the capture socket should let through: TCP over IPv4 or IPv6 (no extension headers, no
/// non-first fragments), narrowed by the lists below. Every list left empty means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpFilter {
    /// Accept only TCP whose destination port is one of these.
    pub dst_ports: Vec<u16>,
    /// Accept only TCP whose source port is one of these.
    pub src_ports: Vec<u16>,
    /// Accept only IPv4 packets whose destination address is one of these (IPv6 packets ignore it).
    pub dst_addrs: Vec<Ipv4Addr>,
    /// Accept only IPv6 packets whose destination address is one of these (IPv4 packets ignore it).
    pub dst_addrs_v6: Vec<Ipv6Addr>,
    /// Reject TCP that has this port as source or destination (hides our own control channel).
    pub exclude_port: Option<u16>,
    /// Reject packets the host itself sent (`PACKET_OUTGOING`), except those `answer_ports`
    /// accepts.
    pub drop_outgoing: bool,
    /// Also accept TCP whose source port is one of these, in either direction and whatever the
    /// other lists say: a server's answers, captured beside its clients' packets.
    pub answer_ports: Vec<u16>,
    /// Keep at most this many bytes of each packet (from its IP header); `None` keeps it whole.
    /// The kernel copies only these into the ring, and still reports the packet's length on the
    /// wire. [`HEADERS_MAX`] keeps the headers, for a reader that needs no payload.
    pub snap_len: Option<u32>,
}

impl TcpFilter {
    /// Builds the program. Its length grows by two instructions per port, two per IPv4 address and
    /// nine per IPv6 address; [`MAX_INSNS`] bounds what the kernel accepts.
    pub fn compile(&self) -> Vec<Insn> {
        let mut asm = Asm::default();
        // With answers to take, outgoing packets are sorted out by port below.
        let answers = !self.answer_ports.is_empty();
        if self.drop_outgoing && !answers {
            asm.stmt(LD_W_ABS, PKTTYPE);
            asm.reject_if(JEQ, PACKET_OUTGOING);
        }

        let mut ipv6 = Label::default();
        let mut transport = Label::default();
        asm.stmt(LD_B_ABS, 0);
        asm.stmt(RSH_K, 4);
        asm.goto_if(JEQ, 6, &mut ipv6);
        asm.reject_unless(JEQ, 4);

        asm.stmt(LD_B_ABS, IP4_PROTOCOL);
        asm.reject_unless(JEQ, TCP);
        asm.stmt(LD_H_ABS, IP4_FLAGS_FRAG);
        asm.reject_if(JSET, IP4_FRAG_OFFSET_MASK);
        if !self.dst_addrs.is_empty() && !answers {
            asm.stmt(LD_W_ABS, IP4_DST);
            asm.require_one_of(self.dst_addrs.iter().map(|&a| u32::from(a)));
        }
        asm.stmt(LDX_MSH, 0);
        asm.stmt(TXA, 0);
        asm.reject_unless(JGE, IP4_MIN_HEADER);
        asm.goto(&mut transport);

        asm.bind(ipv6);
        asm.stmt(LD_B_ABS, IP6_NEXT_HEADER);
        asm.reject_unless(JEQ, TCP);
        if !self.dst_addrs_v6.is_empty() && !answers {
            asm.require_ipv6_dst(&self.dst_addrs_v6);
        }
        asm.stmt(LDX_IMM, IP6_HEADER);

        asm.bind(transport);
        let keep = self.snap_len.unwrap_or(ACCEPT).max(1);
        if answers {
            // A server's answers are sent by this host or seen passing (a mirror); one
            // addressed to this host is some other conversation's.
            let mut not_answer = Label::default();
            asm.stmt(LD_W_ABS, PKTTYPE);
            asm.goto_if(JEQ, PACKET_HOST, &mut not_answer);
            asm.stmt(LD_H_IND, TCP_SRC_PORT);
            for &port in &self.answer_ports {
                // Not this port: on to the next one (or past the accept).
                asm.push(JEQ, 0, 1, port.into());
                asm.stmt(RET_K, keep);
            }
            asm.bind(not_answer);
            if self.drop_outgoing {
                asm.stmt(LD_W_ABS, PKTTYPE);
                asm.reject_if(JEQ, PACKET_OUTGOING);
            }
        }
        if let Some(port) = self.exclude_port {
            for field in [TCP_SRC_PORT, TCP_DST_PORT] {
                asm.stmt(LD_H_IND, field);
                asm.reject_if(JEQ, port.into());
            }
        }
        for (field, ports) in [
            (TCP_SRC_PORT, &self.src_ports),
            (TCP_DST_PORT, &self.dst_ports),
        ] {
            if !ports.is_empty() {
                asm.stmt(LD_H_IND, field);
                asm.require_one_of(ports.iter().map(|&p| p.into()));
            }
        }
        asm.stmt(RET_K, keep);
        asm.code
    }
}

/// Forward jumps waiting for their target; [`Asm::bind`] resolves them.
#[derive(Default)]
struct Label(Vec<usize>);

#[derive(Default)]
struct Asm {
    code: Vec<Insn>,
}

impl Asm {
    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) {
        self.code.push(Insn { code, jt, jf, k });
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.push(code, 0, 0, k);
    }

    fn reject_unless(&mut self, jump: u16, k: u32) {
        self.push(jump, 1, 0, k);
        self.stmt(RET_K, REJECT);
    }

    fn reject_if(&mut self, jump: u16, k: u32) {
        self.push(jump, 0, 1, k);
        self.stmt(RET_K, REJECT);
    }

    fn goto_if(&mut self, jump: u16, k: u32, target: &mut Label) {
        self.push(jump, 0, 1, k);
        self.goto(target);
    }

    fn goto(&mut self, target: &mut Label) {
        target.0.push(self.code.len());
        self.stmt(JA, 0);
    }

    fn bind(&mut self, label: Label) {
        let here = self.code.len();
        for at in label.0 {
            if let Some(insn) = self.code.get_mut(at) {
                insn.k = (here - at - 1) as u32;
            }
        }
    }

    /// Continues only if the accumulator equals one of `values`.
    fn require_one_of(&mut self, values: impl Iterator<Item = u32>) {
        let mut hit = Label::default();
        for value in values {
            self.goto_if(JEQ, value, &mut hit);
        }
        self.stmt(RET_K, REJECT);
        self.bind(hit);
    }

    /// Continues only if the IPv6 destination is one of `addrs`; a mismatching word skips to the
    /// next candidate, which is at most seven instructions away.
    fn require_ipv6_dst(&mut self, addrs: &[Ipv6Addr]) {
        let mut hit = Label::default();
        for addr in addrs {
            let octets = addr.octets();
            for (i, word) in octets.chunks_exact(4).enumerate() {
                let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
                self.stmt(LD_W_ABS, IP6_DST + 4 * i as u32);
                self.push(JEQ, 0, (2 * (3 - i) + 1) as u8, word);
            }
            self.goto(&mut hit);
        }
        self.stmt(RET_K, REJECT);
        self.bind(hit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: u32 = libc::PACKET_HOST as u32;

    /// Runs `prog` the way the kernel does for the subset of classic BPF that `compile` emits.
    fn run(prog: &[Insn], pkt: &[u8], pkttype: u32) -> u32 {
        let load = |off: u32, size: usize| -> Option<u32> {
            let bytes = pkt.get(off as usize..off as usize + size)?;
            Some(bytes.iter().fold(0, |acc, &b| acc << 8 | u32::from(b)))
        };
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let insn = prog[pc];
            pc += 1;
            let (jt, jf) = (usize::from(insn.jt), usize::from(insn.jf));
            let k = insn.k;
            // An out-of-bounds load ends the program with 0, as in the kernel.
            match insn.code {
                LD_W_ABS if k == PKTTYPE => a = pkttype,
                LD_W_ABS => {
                    a = match load(k, 4) {
                        Some(v) => v,
                        None => return 0,
                    }
                }
                LD_H_ABS => {
                    a = match load(k, 2) {
                        Some(v) => v,
                        None => return 0,
                    }
                }
                LD_B_ABS => {
                    a = match load(k, 1) {
                        Some(v) => v,
                        None => return 0,
                    }
                }
                LD_H_IND => {
                    a = match load(x + k, 2) {
                        Some(v) => v,
                        None => return 0,
                    }
                }
                LDX_IMM => x = k,
                LDX_MSH => {
                    x = match load(k, 1) {
                        Some(v) => 4 * (v & 0xf),
                        None => return 0,
                    }
                }
                RSH_K => a >>= k,
                TXA => a = x,
                JA => pc += k as usize,
                JEQ => pc += if a == k { jt } else { jf },
                JGE => pc += if a >= k { jt } else { jf },
                JSET => pc += if a & k != 0 { jt } else { jf },
                RET_K => return k,
                other => panic!("interpreter does not know opcode {other:#x}"),
            }
        }
    }

    fn accepts(filter: &TcpFilter, pkt: &[u8]) -> bool {
        run(&filter.compile(), pkt, HOST) != REJECT
    }

    fn ipv4(protocol: u8, dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 5 << 4;
        p
    }

    fn tcp4(sport: u16, dport: u16) -> Vec<u8> {
        ipv4(6, [10, 0, 0, 2], sport, dport)
    }

    fn ipv6(next_header: u8, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = next_header;
        p[7] = 64;
        p[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p[40..42].copy_from_slice(&sport.to_be_bytes());
        p[42..44].copy_from_slice(&dport.to_be_bytes());
        p[52] = 5 << 4;
        p
    }

    fn tcp6(sport: u16, dport: u16) -> Vec<u8> {
        ipv6(6, "2001:db8::2".parse().unwrap(), sport, dport)
    }

    #[test]
    fn default_filter_accepts_only_unfragmented_tcp() {
        let any = TcpFilter::default();
        assert!(accepts(&any, &tcp4(1, 2)));
        assert!(accepts(&any, &tcp6(1, 2)));
        assert!(
            !accepts(&any, &ipv4(17, [10, 0, 0, 2], 1, 2)),
            "UDP over IPv4"
        );
        assert!(
            !accepts(&any, &ipv6(17, Ipv6Addr::LOCALHOST, 1, 2)),
            "UDP over IPv6"
        );
        assert!(
            !accepts(&any, &ipv6(0, Ipv6Addr::LOCALHOST, 1, 2)),
            "IPv6 extension header"
        );
        assert!(!accepts(&any, &[]), "empty");

        let mut bad_version = tcp4(1, 2);
        bad_version[0] = 0x55;
        assert!(!accepts(&any, &bad_version));

        let mut first_fragment = tcp4(1, 2);
        first_fragment[6] = 0x20; // more fragments, offset 0: carries the TCP header
        assert!(accepts(&any, &first_fragment));
        let mut later_fragment = tcp4(1, 2);
        later_fragment[7] = 0x01;
        assert!(!accepts(&any, &later_fragment));
        let mut dont_fragment = tcp4(1, 2);
        dont_fragment[6] = 0x40;
        assert!(accepts(&any, &dont_fragment));
    }

    #[test]
    fn truncated_or_bogus_headers_are_rejected() {
        let any = TcpFilter::default();
        let ports = TcpFilter {
            dst_ports: vec![2],
            ..any.clone()
        };
        assert!(
            !accepts(&ports, &tcp4(1, 2)[..22]),
            "TCP header cut before the dst port"
        );
        assert!(!accepts(&ports, &tcp6(1, 2)[..42]));
        let mut short_ihl = tcp4(1, 2);
        short_ihl[0] = 0x44;
        assert!(!accepts(&any, &short_ihl));
    }

    #[test]
    fn ip_options_move_the_ports() {
        let filter = TcpFilter {
            dst_ports: vec![80],
            ..Default::default()
        };
        let mut pkt = tcp4(1, 2);
        pkt[0] = 0x46;
        pkt.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL
        pkt[26..28].copy_from_slice(&80u16.to_be_bytes());
        assert!(accepts(&filter, &pkt));
        pkt[26..28].copy_from_slice(&81u16.to_be_bytes());
        assert!(!accepts(&filter, &pkt));
    }

    #[test]
    fn an_accepted_packet_is_kept_whole_or_cut_to_the_snap_length() {
        let whole = TcpFilter {
            dst_ports: vec![80],
            ..Default::default()
        };
        let headers = TcpFilter {
            snap_len: Some(HEADERS_MAX),
            ..whole.clone()
        };
        for build in [tcp4, tcp6] {
            assert_eq!(run(&whole.compile(), &build(9, 80), HOST), ACCEPT);
            assert_eq!(run(&headers.compile(), &build(9, 80), HOST), HEADERS_MAX);
            assert_eq!(run(&headers.compile(), &build(9, 81), HOST), REJECT);
        }
        // Zero would drop everything: the least kept is one byte.
        let zero = TcpFilter {
            snap_len: Some(0),
            ..whole
        };
        assert_eq!(run(&zero.compile(), &tcp4(9, 80), HOST), 1);
    }

    #[test]
    fn port_lists() {
        let dst = TcpFilter {
            dst_ports: vec![80, 443],
            ..Default::default()
        };
        let src = TcpFilter {
            src_ports: vec![5000],
            ..Default::default()
        };
        for build in [tcp4, tcp6] {
            assert!(accepts(&dst, &build(9, 80)));
            assert!(accepts(&dst, &build(9, 443)));
            assert!(!accepts(&dst, &build(80, 8080)));
            assert!(accepts(&src, &build(5000, 1)));
            assert!(!accepts(&src, &build(1, 5000)));
        }
        let both = TcpFilter {
            src_ports: vec![1],
            dst_ports: vec![2],
            ..Default::default()
        };
        assert!(accepts(&both, &tcp4(1, 2)));
        assert!(!accepts(&both, &tcp4(1, 3)));
        assert!(!accepts(&both, &tcp4(3, 2)));
    }

    #[test]
    fn destination_address_lists_apply_per_family() {
        let v6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let only_v4 = TcpFilter {
            dst_addrs: vec![[192, 0, 2, 1].into(), [10, 0, 0, 2].into()],
            ..Default::default()
        };
        assert!(accepts(&only_v4, &tcp4(1, 2)));
        assert!(!accepts(&only_v4, &ipv4(6, [10, 0, 0, 3], 1, 2)));
        assert!(
            accepts(&only_v4, &ipv6(6, Ipv6Addr::LOCALHOST, 1, 2)),
            "v4 list ignores IPv6"
        );

        let only_v6 = TcpFilter {
            dst_addrs_v6: vec![Ipv6Addr::LOCALHOST, v6],
            ..Default::default()
        };
        assert!(accepts(&only_v6, &tcp6(1, 2)));
        assert!(accepts(&only_v6, &ipv6(6, Ipv6Addr::LOCALHOST, 1, 2)));
        assert!(accepts(&only_v6, &tcp4(1, 2)), "v6 list ignores IPv4");
        for near_miss in [
            "2001:db8::3",
            "2001:db9::2",
            "2001:db8:0:1::2",
            "2001:db8::1:0:0:2",
        ] {
            assert!(
                !accepts(&only_v6, &ipv6(6, near_miss.parse().unwrap(), 1, 2)),
                "{near_miss}"
            );
        }
    }

    #[test]
    fn exclude_port_hides_both_directions() {
        let filter = TcpFilter {
            exclude_port: Some(36524),
            ..Default::default()
        };
        for build in [tcp4, tcp6] {
            assert!(accepts(&filter, &build(1, 2)));
            assert!(!accepts(&filter, &build(36524, 2)));
            assert!(!accepts(&filter, &build(1, 36524)));
        }
    }

    #[test]
    fn drop_outgoing_tests_the_packet_type() {
        let outgoing = libc::PACKET_OUTGOING as u32;
        let keep = TcpFilter::default().compile();
        let drop = TcpFilter {
            drop_outgoing: true,
            ..Default::default()
        }
        .compile();
        assert_eq!(run(&keep, &tcp4(1, 2), outgoing), ACCEPT);
        assert_eq!(run(&drop, &tcp4(1, 2), outgoing), REJECT);
        assert_eq!(run(&drop, &tcp4(1, 2), HOST), ACCEPT);
        assert_eq!(run(&drop, &tcp6(1, 2), outgoing), REJECT);
    }

    #[test]
    fn answers_are_taken_in_both_directions_beside_incoming_client_packets() {
        let outgoing = libc::PACKET_OUTGOING as u32;
        let filter = TcpFilter {
            dst_ports: vec![80, 443],
            dst_addrs: vec![Ipv4Addr::new(10, 0, 0, 9)],
            drop_outgoing: true,
            answer_ports: vec![80, 443],
            ..Default::default()
        }
        .compile();
        // Client packets: incoming only, to the service ports.
        assert_eq!(run(&filter, &tcp4(40000, 80), HOST), ACCEPT);
        assert_eq!(run(&filter, &tcp6(40000, 443), HOST), ACCEPT);
        assert_eq!(
            run(&filter, &tcp4(40000, 80), outgoing),
            REJECT,
            "our own sends"
        );
        assert_eq!(run(&filter, &tcp4(40000, 8080), HOST), REJECT);
        // The server's answers: from a service port, sent by this host or seen passing.
        let passing = libc::PACKET_OTHERHOST as u32;
        assert_eq!(run(&filter, &tcp4(80, 40000), outgoing), ACCEPT);
        assert_eq!(run(&filter, &tcp4(443, 40000), passing), ACCEPT);
        assert_eq!(
            run(&filter, &tcp4(80, 40000), HOST),
            REJECT,
            "addressed to this host: another conversation's (a proxy's upstream)"
        );
        assert_eq!(run(&filter, &tcp6(443, 40000), outgoing), ACCEPT);
        assert_eq!(run(&filter, &tcp4(8080, 40000), outgoing), REJECT);
        assert_eq!(
            run(&filter, &ipv4(17, [10, 0, 0, 2], 80, 40000), outgoing),
            REJECT,
            "UDP"
        );
    }

    #[test]
    fn long_lists_stay_within_kernel_limits() {
        let filter = TcpFilter {
            dst_ports: (1000..1600).collect(),
            src_ports: (2000..2600).collect(),
            dst_addrs: (0..300u32).map(Ipv4Addr::from).collect(),
            dst_addrs_v6: (0..100u128).map(Ipv6Addr::from).collect(),
            exclude_port: Some(1),
            drop_outgoing: true,
            answer_ports: Vec::new(),
            snap_len: Some(HEADERS_MAX),
        };
        let prog = filter.compile();
        assert!(prog.len() <= MAX_INSNS, "{} instructions", prog.len());
        for (pc, insn) in prog.iter().enumerate() {
            let after = pc + 1;
            match insn.code {
                JA => assert!(after + (insn.k as usize) < prog.len(), "ja at {pc}"),
                RET_K => {}
                code if code & 0x07 == libc::BPF_JMP as u16 => {
                    assert!(
                        after + usize::from(insn.jt.max(insn.jf)) < prog.len(),
                        "jump at {pc}"
                    );
                }
                _ => assert!(after < prog.len(), "falls off the end at {pc}"),
            }
        }
        assert_eq!(prog.last().map(|i| i.code), Some(RET_K));

        // The far ends of every list are reachable through the long jumps.
        assert!(accepts(&filter, &ipv4(6, 299u32.to_be_bytes(), 2599, 1599)));
        assert!(!accepts(
            &filter,
            &ipv4(6, 300u32.to_be_bytes(), 2599, 1599)
        ));
        assert!(accepts(
            &filter,
            &ipv6(6, Ipv6Addr::from(99u128), 2000, 1000)
        ));
        assert!(!accepts(
            &filter,
            &ipv6(6, Ipv6Addr::from(100u128), 2000, 1000)
        ));
    }
}
