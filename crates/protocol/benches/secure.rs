//! What the encrypted channel costs per frame batch (`cargo bench -p tcpcopy-protocol`): sealing
//! and opening one batch of response headers as intercept sends them (64 packets of 52 bytes of
//! IP+TCP headers, one `Responses` frame), against encoding it in the clear.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::secure::{self, Initiator, Psk};
use protocol::{Decoder, ResponseBatch};

/// A batch of 64 response headers, framed.
fn batch() -> Vec<u8> {
    let mut b = ResponseBatch::new();
    for i in 0..64u8 {
        let mut pkt = [0u8; 52];
        pkt[0] = 0x45;
        pkt[3] = 52;
        pkt[19] = i;
        b.push(&pkt);
    }
    let mut out = Vec::new();
    b.finish(&mut out);
    out
}

fn channel_pair() -> (secure::Channel, secure::Channel) {
    let psk = Psk::derive(&[7u8; 32]).unwrap();
    let mut hello = Vec::new();
    let init = Initiator::start(&psk, &mut hello).unwrap();
    let mut welcome = Vec::new();
    let responder = secure::respond(&psk, &hello[5..], &mut welcome).unwrap();
    (init.finish(&welcome[5..]).unwrap(), responder)
}

fn bench(c: &mut Criterion) {
    let frames = batch();
    let mut g = c.benchmark_group("response batch (64 headers)");
    g.throughput(Throughput::Bytes(frames.len() as u64));
    g.bench_function("plain: decode", |b| {
        let mut dec = Decoder::new();
        b.iter(|| {
            dec.feed(black_box(&frames));
            black_box(dec.next_message().unwrap().is_some())
        })
    });
    let (_, mut intercept) = channel_pair();
    let mut wire = Vec::new();
    g.bench_function("seal", |b| {
        b.iter(|| {
            wire.clear();
            intercept
                .sealer
                .seal(black_box(&frames), &mut wire)
                .unwrap();
        })
    });
    // Sealed in advance, in order: each opens with the next nonce.
    let mut sealed = Vec::new();
    g.bench_function("open + decode", |b| {
        let (mut a, mut z) = channel_pair();
        let mut dec = Decoder::new();
        b.iter_custom(|iters| {
            sealed.clear();
            for _ in 0..iters {
                a.sealer.seal(&frames, &mut sealed).unwrap();
            }
            let start = std::time::Instant::now();
            for rec in sealed.chunks(secure::Sealer::sealed_len(frames.len())) {
                z.opener.open(rec, |p| dec.feed(p)).unwrap();
                black_box(dec.next_message().unwrap().is_some());
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
