//! `tcpcopy-bench`: the load harness (rows of wrk load; `--c-tool DIR` for the C TCPCopy side by
//! side), or with `--pps` the packets/s microbenchmark. Runs the `tcpcopy` and `intercept`
//! binaries found next to itself.

#![forbid(unsafe_code)]

use bench::harness::{run_bench, BenchOpts};
use clap::Parser;

/// Measure tcpcopy and intercept in a lab of network namespaces (needs root).
#[derive(Debug, Parser)]
#[command(name = "tcpcopy-bench", version)]
struct BenchCli {
    #[command(flatten)]
    opts: BenchOpts,
    /// Instead: the packets/s microbenchmark of capture -> rewrite -> send (uses --seconds,
    /// --send-layer).
    #[arg(long)]
    pps: bool,
}

fn main() {
    let args: BenchCli = tcpcopy::cli::parse_or_exit();
    let result = if args.pps {
        bench::pps::run_pps(
            args.opts.seconds,
            args.opts.threaded_receive,
            args.opts.send_layer,
        )
    } else {
        run_bench(&args.opts)
    };
    if let Err(e) = result {
        eprintln!("tcpcopy-bench: {e:#}");
        std::process::exit(1);
    }
}
