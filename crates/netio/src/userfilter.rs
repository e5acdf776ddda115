//! Filters in tcpdump syntax (`-F EXPR`), run in the kernel in front of the program's own filter.
//!
//! Owns two steps. [`UserFilter::compile`] has libpcap compile the expression, and
//! [`UserFilter::and_then`] translates libpcap's program for our capture sockets and puts it in
//! front of the program's own ([`crate::bpf::TcpFilter`]), so that a packet must pass both.
//! Nothing here opens a capture of ours or attaches anything.
//!
//! libpcap compiles for a link type, and we ask it for Ethernet (`DLT_EN10MB`), on a live handle on
//! `lo` where one can be opened: a live Linux handle tests a VLAN tag the kernel stripped into the
//! packet's metadata (`SKF_AD_VLAN_TAG_PRESENT`, `SKF_AD_VLAN_TAG`), as tcpdump's filter does,
//! while a dead handle (`pcap_open_dead`) would look for the tag in the packet bytes, where the
//! kernel no longer leaves it. libpcap's cooked link type (`DLT_LINUX_SLL`, its choice for "any")
//! is no alternative: it has no `vlan` at all.
//!
//! Our sockets are `AF_PACKET`/`SOCK_DGRAM`: the filter sees the packet from its network header,
//! as if the 14-byte Ethernet header were cut off the frame. So, instruction by instruction:
//! - a load at or past byte 14 of the frame reads 14 bytes earlier;
//! - the 16-bit ethertype (byte 12) becomes the kernel's `skb->protocol` (`SKF_AD_PROTOCOL`),
//!   which for a frame whose tag the kernel stripped is the inner type, as in the frame tcpdump's
//!   filter sees; libpcap's `ldh [x + 12]` (the type after a tag that may still be in the bytes)
//!   reads `skb->protocol` when X is 0 and the bytes otherwise;
//! - the packet length (`len`, `greater`, `less`) counts the 14 bytes, as tcpdump's does;
//! - the kernel's own fields (VLAN tag, packet type for `inbound`/`outbound`) stay as they are;
//! - any other load inside the Ethernet header (the MAC addresses: `ether host`, `broadcast`) is
//!   refused: not every interface has one ([`FilterError::LinkHeader`]);
//! - each `ret` that keeps the packet becomes a jump to the program's own filter, whose own `ret`
//!   then decides what is kept; `ret #0` stays.
//!
//! Expanded instructions move the ones after them, and every jump is recomputed; a conditional
//! jump has 8 bits, so a translation whose jump would span more is refused
//! ([`FilterError::JumpTooFar`]) rather than cut.

use crate::bpf::{Insn, ACCEPT, MAX_INSNS};

/// Length of the Ethernet header libpcap compiles for, which our sockets never show.
const ETH_HEADER: u32 = 14;
/// Offset of the ethertype in that header.
const ETH_TYPE: u32 = 12;
/// Loads at and above this offset are the kernel's own fields (`SKF_AD_OFF`).
const ANCILLARY: u32 = libc::SKF_AD_OFF as u32;
/// `skb->protocol` in host order (`SKF_AD_OFF + SKF_AD_PROTOCOL`).
const PROTOCOL: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32;

const fn op(code: u32) -> u16 {
    code as u16
}

const LD: u16 = op(libc::BPF_LD);
const LDX: u16 = op(libc::BPF_LDX);
const JMP: u16 = op(libc::BPF_JMP);
const RET: u16 = op(libc::BPF_RET);
const ABS: u16 = op(libc::BPF_ABS);
const IND: u16 = op(libc::BPF_IND);
const LEN: u16 = op(libc::BPF_LEN);
const MSH: u16 = op(libc::BPF_MSH);
const HALF: u16 = op(libc::BPF_H);
const JA: u16 = op(libc::BPF_JMP | libc::BPF_JA);
const JEQ_K: u16 = op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K);
const TXA: u16 = op(libc::BPF_MISC | libc::BPF_TXA);
const ADD_K: u16 = op(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K);
const RET_K: u16 = op(libc::BPF_RET | libc::BPF_K);
const RET_A: u16 = op(libc::BPF_RET | 0x10);

const fn class(code: u16) -> u16 {
    code & 0x07
}
const fn size(code: u16) -> u16 {
    code & 0x18
}
const fn mode(code: u16) -> u16 {
    code & 0xe0
}

/// Why an expression cannot filter the capture.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// libpcap refused the expression; its message, as it gave it.
    #[error("{0}")]
    Syntax(String),
    /// The expression reads the Ethernet header itself (byte `offset`), e.g. a MAC address.
    #[error(
        "the expression reads byte {offset} of the Ethernet header (a MAC address?), which the capture does not see; test what follows it (ip, ip6, host, port, vlan, ...)"
    )]
    LinkHeader { offset: u32 },
    /// libpcap produced an instruction this translation does not know.
    #[error(
        "the compiled expression uses an instruction the capture cannot run (opcode {0:#06x})"
    )]
    Unsupported(u16),
    /// libpcap's program jumps outside itself or runs off its end.
    #[error("the compiled expression is malformed at instruction {0}")]
    Malformed(usize),
    /// The expression and the program's own filter together exceed the kernel's limit.
    #[error("the expression and the program's own filter need {0} instructions; the kernel takes {MAX_INSNS}")]
    TooLong(usize),
    /// A conditional jump of the translation would span more than 255 instructions.
    #[error("the expression is too large to put in front of the program's own filter")]
    JumpTooFar,
    /// `vlan` needs libpcap's live handle, and none could be opened.
    #[error("`vlan` needs a live libpcap handle on lo to compile, and none could be opened: {0}")]
    NoLiveHandle(String),
}

/// A compiled `-F` expression, as libpcap wrote it for Ethernet (see the module doc).
#[derive(Clone, Debug)]
pub struct UserFilter {
    expr: String,
    program: Vec<Insn>,
}

impl UserFilter {
    /// Checks `expr` without privileges: libpcap parses it on a dead handle, and its program
    /// must translate. The errors are those [`UserFilter::compile`] would give.
    pub fn check(expr: &str) -> Result<(), FilterError> {
        let filter = UserFilter {
            expr: expr.to_string(),
            program: compile_dead(expr)?,
        };
        filter.and_then(&[]).map(drop)
    }

    /// Compiles `expr` with libpcap for Ethernet, on a live handle on `lo` (see the module doc;
    /// it needs `CAP_NET_RAW`). Without one, the dead handle's program serves, unless the
    /// expression says `vlan`, whose program would then be wrong.
    pub fn compile(expr: &str) -> Result<UserFilter, FilterError> {
        let dead = compile_dead(expr)?;
        let program = match compile_live(expr) {
            Ok(program) => program,
            Err(_) if !mentions_vlan(expr) => dead,
            Err(why) => return Err(FilterError::NoLiveHandle(why)),
        };
        let filter = UserFilter {
            expr: expr.to_string(),
            program,
        };
        filter.and_then(&[])?;
        Ok(filter)
    }

    /// A filter from a program written for Ethernet, as libpcap writes them (for tests and
    /// tools; [`UserFilter::compile`] is the usual way).
    pub fn from_program(expr: &str, program: Vec<Insn>) -> UserFilter {
        UserFilter {
            expr: expr.to_string(),
            program,
        }
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// libpcap's program, for Ethernet, untranslated.
    pub fn program(&self) -> &[Insn] {
        &self.program
    }

    /// The program for our capture sockets: this filter translated, then `ours`, which a packet
    /// this filter keeps must also pass (and whose `ret` says how much of it is kept). Empty
    /// `ours` keeps whole every packet this filter keeps.
    pub fn and_then(&self, ours: &[Insn]) -> Result<Vec<Insn>, FilterError> {
        let keep_all = [Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: ACCEPT,
        }];
        let ours = if ours.is_empty() { &keep_all[..] } else { ours };
        let mut code = translate(&self.program)?;
        code.extend_from_slice(ours);
        if code.len() > MAX_INSNS {
            return Err(FilterError::TooLong(code.len()));
        }
        Ok(code)
    }
}

/// Whether `expr` has the word `vlan` (libpcap's keyword; no other keyword contains it).
fn mentions_vlan(expr: &str) -> bool {
    expr.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word.eq_ignore_ascii_case("vlan"))
}

fn compile_dead(expr: &str) -> Result<Vec<Insn>, FilterError> {
    let handle = libpcap::Capture::dead(libpcap::Linktype::ETHERNET)
        .map_err(|e| FilterError::Syntax(e.to_string()))?;
    let program = handle.compile(expr, true).map_err(libpcap_message)?;
    instructions(&program)
}

/// On a live handle on `lo`, which Linux gives the Ethernet link type. The handle's own socket
/// takes `lo`'s packets for the moment it lives; nothing reads them.
fn compile_live(expr: &str) -> Result<Vec<Insn>, String> {
    let handle = libpcap::Capture::from_device("lo")
        .and_then(|c| c.snaplen(128).buffer_size(1 << 18).timeout(1).open())
        .map_err(|e| e.to_string())?;
    if handle.get_datalink() != libpcap::Linktype::ETHERNET {
        return Err(format!("lo has link type {:?}", handle.get_datalink()));
    }
    let program = handle.compile(expr, true).map_err(|e| e.to_string())?;
    instructions(&program).map_err(|e| e.to_string())
}

fn libpcap_message(e: libpcap::Error) -> FilterError {
    match e {
        libpcap::Error::PcapError(msg) => FilterError::Syntax(msg),
        other => FilterError::Syntax(other.to_string()),
    }
}

/// The crate shows an instruction only as `code jt jf k` (the form of `tcpdump -ddd`).
fn instructions(program: &libpcap::BpfProgram) -> Result<Vec<Insn>, FilterError> {
    program
        .get_instructions()
        .iter()
        .enumerate()
        .map(|(pc, insn)| {
            let text = insn.to_string();
            let mut fields = text.split(' ').map(str::parse::<u32>);
            let mut next = || fields.next().and_then(Result::ok);
            let (Some(code), Some(jt), Some(jf), Some(k)) = (next(), next(), next(), next()) else {
                return Err(FilterError::Malformed(pc));
            };
            Ok(Insn {
                code: u16::try_from(code).map_err(|_| FilterError::Malformed(pc))?,
                jt: u8::try_from(jt).map_err(|_| FilterError::Malformed(pc))?,
                jf: u8::try_from(jf).map_err(|_| FilterError::Malformed(pc))?,
                k,
            })
        })
        .collect()
}

/// Where a translated jump goes.
#[derive(Clone, Copy, Debug)]
enum Dest {
    /// The translation of this instruction of the original program.
    Old(usize),
    /// This instruction of the current instruction's own expansion.
    Local(usize),
    /// The first instruction of the program's own filter.
    Ours,
}

#[derive(Clone, Copy, Debug)]
enum Flow {
    Next,
    Jump(Dest),
    Branch(Dest, Dest),
}

type Piece = (Insn, Flow);

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Translates libpcap's Ethernet program for a `SOCK_DGRAM` socket; every accepting `ret` jumps
/// to where the program's own filter will follow (right after the result).
fn translate(program: &[Insn]) -> Result<Vec<Insn>, FilterError> {
    let pieces = program
        .iter()
        .enumerate()
        .map(|(pc, insn)| expand(pc, *insn, program.len()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut starts = Vec::with_capacity(pieces.len());
    let mut total = 0;
    for piece in &pieces {
        starts.push(total);
        total += piece.len();
    }
    let mut out = Vec::with_capacity(total);
    for (old, piece) in pieces.iter().enumerate() {
        for &(mut insn, flow) in piece {
            let here = out.len();
            let offset = |dest: Dest| -> usize {
                let to = match dest {
                    Dest::Old(pc) => starts[pc],
                    Dest::Local(i) => starts[old] + i,
                    Dest::Ours => total,
                };
                // Every destination lies ahead (checked in `expand`).
                to - here - 1
            };
            match flow {
                Flow::Next => {}
                Flow::Jump(dest) => insn.k = offset(dest) as u32,
                Flow::Branch(t, f) => {
                    insn.jt = u8::try_from(offset(t)).map_err(|_| FilterError::JumpTooFar)?;
                    insn.jf = u8::try_from(offset(f)).map_err(|_| FilterError::JumpTooFar)?;
                }
            }
            out.push(insn);
        }
    }
    Ok(out)
}

/// One instruction of libpcap's program as instructions for our socket.
fn expand(pc: usize, insn: Insn, len: usize) -> Result<Vec<Piece>, FilterError> {
    let code = insn.code;
    // A jump's target, which must lie inside the program.
    let target = |skip: usize| -> Result<Dest, FilterError> {
        let to = pc + 1 + skip;
        if to < len {
            Ok(Dest::Old(to))
        } else {
            Err(FilterError::Malformed(pc))
        }
    };
    let same = |k: u32| vec![(Insn { k, ..insn }, Flow::Next)];
    Ok(match (class(code), mode(code)) {
        (LD, ABS) => same(abs_offset(insn)?),
        (LD, IND) if insn.k == ETH_TYPE && size(code) == HALF => {
            // The ethertype after a tag libpcap may have skipped (X = 4) or not (X = 0).
            target(0)?;
            vec![
                (stmt(TXA, 0), Flow::Next),
                (stmt(JEQ_K, 0), Flow::Branch(Dest::Local(2), Dest::Local(4))),
                (stmt(LD | HALF | ABS, PROTOCOL), Flow::Next),
                (stmt(JA, 0), Flow::Jump(target(0)?)),
                (
                    Insn {
                        k: ETH_TYPE.wrapping_sub(ETH_HEADER),
                        ..insn
                    },
                    Flow::Next,
                ),
            ]
        }
        (LD, IND) | (LDX, MSH) => same(payload_offset(insn)?),
        (LD, LEN) => vec![(insn, Flow::Next), (stmt(ADD_K, ETH_HEADER), Flow::Next)],
        (LDX, LEN) => return Err(FilterError::Unsupported(code)),
        (JMP, _) if code == JA => vec![(insn, Flow::Jump(target(insn.k as usize)?))],
        (JMP, _) => vec![(
            insn,
            Flow::Branch(target(insn.jt.into())?, target(insn.jf.into())?),
        )],
        (RET, _) if code == RET_K && insn.k == 0 => vec![(insn, Flow::Next)],
        (RET, _) if code == RET_K => vec![(stmt(JA, 0), Flow::Jump(Dest::Ours))],
        (RET, _) if code == RET_A => vec![
            (stmt(JEQ_K, 0), Flow::Branch(Dest::Local(2), Dest::Local(1))),
            (stmt(JA, 0), Flow::Jump(Dest::Ours)),
            (stmt(RET_K, 0), Flow::Next),
        ],
        (RET, _) => return Err(FilterError::Unsupported(code)),
        _ => {
            // Everything else neither reads the packet nor ends the program; it must not be last.
            if pc + 1 >= len {
                return Err(FilterError::Malformed(pc));
            }
            vec![(insn, Flow::Next)]
        }
    })
}

/// Where an absolute load reads on our socket.
fn abs_offset(insn: Insn) -> Result<u32, FilterError> {
    let k = insn.k;
    if k >= ANCILLARY {
        Ok(k)
    } else if k == ETH_TYPE && size(insn.code) == HALF {
        Ok(PROTOCOL)
    } else {
        payload_offset(insn)
    }
}

/// A frame offset past the Ethernet header, on our socket.
fn payload_offset(insn: Insn) -> Result<u32, FilterError> {
    let k = insn.k;
    if k < ETH_HEADER {
        Err(FilterError::LinkHeader { offset: k })
    } else if k <= i32::MAX as u32 {
        Ok(k - ETH_HEADER)
    } else {
        // Negative offsets other than the kernel's fields (SKF_NET_OFF, SKF_LL_OFF).
        Err(FilterError::Unsupported(insn.code))
    }
}

#[cfg(test)]
mod tests;
