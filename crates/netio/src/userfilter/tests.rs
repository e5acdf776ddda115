use super::*;

/// What the kernel knows about a packet besides its bytes.
#[derive(Clone, Copy)]
struct Meta {
    protocol: u16,
    pkttype: u32,
    vlan: Option<u16>,
}

const IPV4: Meta = Meta {
    protocol: 0x0800,
    pkttype: 0,
    vlan: None,
};

/// Runs a classic BPF program the way the kernel does on a packet socket (all of classic BPF that
/// libpcap emits, and the kernel fields it reads). Out-of-bounds loads end with 0, as there.
fn run(prog: &[Insn], pkt: &[u8], meta: Meta) -> u32 {
    let load = |off: u32, size: u16| -> Option<u32> {
        let n = match size {
            0x00 => 4,
            0x08 => 2,
            _ => 1,
        };
        let off = usize::try_from(i32::try_from(off).ok()?).ok()?;
        let bytes = pkt.get(off..off + n)?;
        Some(bytes.iter().fold(0, |acc, &b| acc << 8 | u32::from(b)))
    };
    let ancillary = |k: u32| -> u32 {
        match k.wrapping_sub(ANCILLARY) as i32 {
            libc::SKF_AD_PROTOCOL => meta.protocol.into(),
            libc::SKF_AD_PKTTYPE => meta.pkttype,
            libc::SKF_AD_VLAN_TAG => meta.vlan.unwrap_or(0).into(),
            libc::SKF_AD_VLAN_TAG_PRESENT => meta.vlan.is_some().into(),
            other => panic!("ancillary load {other} not modelled"),
        }
    };
    let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
    loop {
        let insn = prog[pc];
        pc += 1;
        let (code, k) = (insn.code, insn.k);
        let src = if code & 0x08 != 0 { x } else { k };
        macro_rules! ld {
            ($off:expr) => {
                match load($off, size(code)) {
                    Some(v) => v,
                    None => return 0,
                }
            };
        }
        match class(code) {
            LD => {
                a = match mode(code) {
                    ABS if k >= ANCILLARY => ancillary(k),
                    ABS => ld!(k),
                    IND => ld!(x.wrapping_add(k)),
                    LEN => pkt.len() as u32,
                    0x00 => k,
                    0x60 => mem[k as usize],
                    m => panic!("ld mode {m:#x}"),
                }
            }
            LDX => {
                x = match mode(code) {
                    MSH => 4 * (ld!(k) & 0xf),
                    LEN => pkt.len() as u32,
                    0x00 => k,
                    0x60 => mem[k as usize],
                    m => panic!("ldx mode {m:#x}"),
                }
            }
            0x02 => mem[k as usize] = a,
            0x03 => mem[k as usize] = x,
            0x04 => {
                a = match code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 if src == 0 => return 0,
                    0x30 => a / src,
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.wrapping_shl(src),
                    0x70 => a.wrapping_shr(src),
                    0x80 => a.wrapping_neg(),
                    0x90 if src == 0 => return 0,
                    0x90 => a % src,
                    0xa0 => a ^ src,
                    o => panic!("alu op {o:#x}"),
                }
            }
            JMP => {
                let taken = match code & 0xf0 {
                    0x00 => {
                        pc += k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    o => panic!("jmp op {o:#x}"),
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            RET => return if code == RET_A { a } else { k },
            _ if code == TXA => a = x,
            _ => x = a, // tax
        }
    }
}

fn insn(code: u32, jt: u8, jf: u8, k: u32) -> Insn {
    Insn {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn ret(k: u32) -> Insn {
    insn(libc::BPF_RET | libc::BPF_K, 0, 0, k)
}

/// Our own filter in the tests: keeps 100 bytes of what reaches it.
fn ours() -> Vec<Insn> {
    vec![ret(100)]
}

fn combined(program: Vec<Insn>) -> Vec<Insn> {
    UserFilter::from_program("test", program)
        .and_then(&ours())
        .unwrap()
}

/// An IPv4 TCP packet (20-byte headers each) from 198.18.0.1:`sport` to 198.18.0.2:`dport`.
fn tcp4(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[198, 18, 0, 1]);
    p[16..20].copy_from_slice(&[198, 18, 0, 2]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[32] = 5 << 4;
    p
}

/// The same ports over IPv6, 2001:2::1 to 2001:2::2.
fn tcp6(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&20u16.to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8..10].copy_from_slice(&[0x20, 0x01]);
    p[10] = 0x00;
    p[11] = 0x02;
    p[23] = 1;
    p[24..28].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
    p[39] = 2;
    p[40..42].copy_from_slice(&sport.to_be_bytes());
    p[42..44].copy_from_slice(&dport.to_be_bytes());
    p[52] = 5 << 4;
    p
}

#[test]
fn the_ethertype_becomes_the_kernels_protocol_and_accepting_returns_jump_to_ours() {
    // ldh [12]; jeq #0x800; ret #65535; ret #0 (what `ip` compiles to).
    let prog = vec![
        insn(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 12),
        insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, 0x800),
        ret(65535),
        ret(0),
    ];
    let code = combined(prog);
    assert_eq!(code[0].k, PROTOCOL);
    assert_eq!(code.len(), 5, "one for one, then ours");
    assert_eq!(code[2].code, JA);
    assert_eq!(
        run(&code, &tcp4(1, 2), IPV4),
        100,
        "ours decides the length"
    );
    let v6 = Meta {
        protocol: 0x86dd,
        ..IPV4
    };
    assert_eq!(run(&code, &tcp6(1, 2), v6), 0);
}

#[test]
fn loads_past_the_ethernet_header_move_back_by_its_length() {
    // ldxb 4*([14]&0xf); ldh [x + 16]; jeq #80 (the TCP destination port over IPv4).
    let prog = vec![
        insn(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 0, 0, 14),
        insn(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 0, 0, 16),
        insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, 80),
        ret(262144),
        ret(0),
    ];
    let code = combined(prog);
    assert_eq!((code[0].k, code[1].k), (0, 2));
    assert_eq!(run(&code, &tcp4(1, 80), IPV4), 100);
    assert_eq!(run(&code, &tcp4(80, 1), IPV4), 0);
}

#[test]
fn the_length_counts_the_ethernet_header() {
    // `greater 54`: ld len; jge #54.
    let prog = vec![
        insn(libc::BPF_LD | libc::BPF_W | libc::BPF_LEN, 0, 0, 0),
        insn(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, 0, 1, 54),
        ret(1),
        ret(0),
    ];
    let code = combined(prog);
    assert_eq!(code.len(), 6);
    assert_eq!(run(&code, &tcp4(1, 2), IPV4), 100, "40 + 14 bytes");
    assert_eq!(run(&code, &tcp4(1, 2)[..39], IPV4), 0);
}

#[test]
fn ret_a_keeps_what_a_says() {
    for (a, kept) in [(0, 0), (7, 100)] {
        let prog = vec![
            insn(libc::BPF_LD | libc::BPF_IMM, 0, 0, a),
            insn(libc::BPF_RET | 0x10, 0, 0, 0),
        ];
        assert_eq!(run(&combined(prog), &tcp4(1, 2), IPV4), kept, "A = {a}");
    }
}

#[test]
fn the_ethertype_after_a_tag_is_the_protocol_or_the_bytes() {
    // ldx M[0]; ldh [x + 12]; jeq #0x800, with M[0] = 0 (tag stripped) or 4 (tag in the bytes).
    for (x, pkt, meta) in [
        (0, tcp4(1, 2), IPV4),
        (4, [&[0, 100, 8, 0][..], &tcp4(1, 2)].concat(), {
            Meta {
                protocol: 0x8100,
                ..IPV4
            }
        }),
    ] {
        let prog = vec![
            insn(libc::BPF_LDX | libc::BPF_IMM, 0, 0, x),
            insn(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 0, 0, 12),
            insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, 0x800),
            ret(1),
            ret(0),
        ];
        let code = combined(prog);
        assert_eq!(run(&code, &pkt, meta), 100, "X = {x}");
        let other = Meta {
            protocol: 0x86dd,
            ..meta
        };
        let mut pkt6 = pkt.clone();
        pkt6[2..4].copy_from_slice(&[0x86, 0xdd]);
        let expect = if x == 0 { &pkt } else { &pkt6 };
        assert_eq!(run(&code, expect, other), 0, "X = {x}");
    }
}

#[test]
fn mac_addresses_and_unknown_instructions_are_refused() {
    let mac = vec![
        insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 2),
        ret(1),
    ];
    assert_eq!(
        UserFilter::from_program("ether host", mac)
            .and_then(&ours())
            .err(),
        Some(FilterError::LinkHeader { offset: 2 })
    );
    let ret_x = vec![insn(libc::BPF_RET | libc::BPF_X, 0, 0, 0)];
    assert!(matches!(
        UserFilter::from_program("", ret_x).and_then(&ours()),
        Err(FilterError::Unsupported(_))
    ));
    let off_the_end = vec![insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 5, 0)];
    assert_eq!(
        UserFilter::from_program("", off_the_end)
            .and_then(&ours())
            .err(),
        Some(FilterError::Malformed(0))
    );
}

#[test]
fn jumps_stretched_past_255_and_programs_past_the_kernel_limit_are_refused() {
    // A jump over 200 `ld len`, which become 400 instructions.
    let mut prog = vec![insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 200, 0, 0)];
    prog.extend((0..200).map(|_| insn(libc::BPF_LD | libc::BPF_W | libc::BPF_LEN, 0, 0, 0)));
    prog.push(ret(1));
    assert_eq!(
        UserFilter::from_program("", prog).and_then(&ours()).err(),
        Some(FilterError::JumpTooFar)
    );
    let long = vec![ret(1); MAX_INSNS];
    assert_eq!(
        UserFilter::from_program("", long).and_then(&ours()).err(),
        Some(FilterError::TooLong(MAX_INSNS + 1))
    );
}

/// An Ethernet frame around `ip` (type from its version), with an 802.1Q tag if `vlan`.
fn frame(ip: &[u8], vlan: Option<u16>) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if let Some(tag) = vlan {
        f.extend([0x81, 0x00]);
        f.extend(tag.to_be_bytes());
    }
    f.extend(if ip[0] >> 4 == 6 {
        [0x86, 0xdd]
    } else {
        [8, 0]
    });
    f.extend(ip);
    f
}

/// libpcap's own interpreter on the frame and ours on the translation over what our socket sees
/// (the frame past its Ethernet header, its type as the protocol) agree, expression by expression.
#[test]
fn translated_programs_decide_as_libpcap_does_on_the_whole_frame() {
    let mut udp = tcp4(53, 53);
    udp[9] = 17;
    let mut packets = vec![udp];
    for (s, d) in [
        (40000, 80),
        (80, 40000),
        (40001, 443),
        (22, 40002),
        (8080, 8080),
    ] {
        packets.push(tcp4(s, d));
        packets.push(tcp6(s, d));
        let mut other_host = tcp4(s, d);
        other_host[15] = 9;
        packets.push(other_host);
    }
    let frames: Vec<Vec<u8>> = packets
        .iter()
        .flat_map(|p| [frame(p, None), frame(p, Some(100)), frame(p, Some(200))])
        .collect();
    for expr in [
        "tcp port 80",
        "tcp dst port 443 or src port 22",
        "host 198.18.0.9",
        "not host 198.18.0.9 and (port 80 or port 8080)",
        "ip6 and tcp port 80",
        "ip6 and src host 2001:2::1 and tcp",
        "tcp[tcpflags] & tcp-syn != 0 or ip6",
        "vlan 100 and tcp port 80",
        "vlan and ip",
        "greater 70",
        "udp",
    ] {
        let handle = libpcap::Capture::dead(libpcap::Linktype::ETHERNET).unwrap();
        let program = handle.compile(expr, true).unwrap();
        let filter = UserFilter::from_program(expr, instructions(&program).unwrap());
        let code = filter.and_then(&[]).unwrap();
        let mut matched = 0;
        for f in &frames {
            let meta = Meta {
                protocol: u16::from_be_bytes([f[12], f[13]]),
                ..IPV4
            };
            let ours = run(&code, &f[14..], meta) != 0;
            assert_eq!(ours, program.filter(f), "{expr} on {f:02x?}");
            matched += usize::from(ours);
        }
        assert!(matched > 0 && matched < frames.len(), "{expr}: {matched}");
    }
}

#[test]
fn bad_expressions_give_libpcaps_message() {
    let err = UserFilter::check("tcp and prot 80").unwrap_err();
    let FilterError::Syntax(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("syntax error"), "{msg}");
    assert!(matches!(
        UserFilter::check("ether host 02:00:00:00:00:01"),
        Err(FilterError::LinkHeader { .. })
    ));
    assert!(UserFilter::check("tcp and src port 80").is_ok());
    assert!(mentions_vlan("tcp and (Vlan 10)"));
    assert!(!mentions_vlan("host vlanhost"));
}

/// With a live handle (root), `vlan` reads the tag the kernel stripped into the metadata.
#[test]
fn vlan_reads_the_stripped_tag_on_a_live_handle() {
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a live libpcap handle");
        return;
    }
    let filter = UserFilter::compile("vlan 100 and tcp port 80").unwrap();
    let code = filter.and_then(&ours()).unwrap();
    let pkt = tcp4(40000, 80);
    let tagged = |vlan| Meta { vlan, ..IPV4 };
    assert_eq!(run(&code, &pkt, tagged(Some(100))), 100);
    assert_eq!(run(&code, &pkt, tagged(Some(200))), 0);
    assert_eq!(run(&code, &pkt, tagged(None)), 0);
    assert_eq!(run(&code, &tcp4(40000, 81), tagged(Some(100))), 0);
}

/// The cost, measured: instructions the kernel runs in front of the program's own filter.
#[test]
fn a_typical_expression_adds_a_few_dozen_instructions() {
    for (expr, at_most) in [
        ("tcp and src port 80", 30),
        ("not host 198.18.0.7", 20),
        ("ip6 and dst port 80", 15),
    ] {
        let filter = UserFilter::check(expr).and_then(|()| {
            let program = compile_dead(expr)?;
            UserFilter::from_program(expr, program).and_then(&ours())
        });
        let added = filter.unwrap().len() - ours().len();
        eprintln!("{expr}: {added} instructions");
        assert!(added <= at_most, "{expr}: {added}");
    }
}
