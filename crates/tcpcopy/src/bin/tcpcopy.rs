//! `tcpcopy`: parse options, then run live replication or a replay (or, first word `demo`, the demo
//! lab when built with the `demo` feature).

#![forbid(unsafe_code)]

use tcpcopy::cli::{self, TcpcopyCli, TcpcopyCommand};
use tcpcopy::{config, live, logging, plumbing};

fn main() {
    let result = match TcpcopyCommand::parse_or_exit() {
        #[cfg(feature = "demo")]
        TcpcopyCommand::Demo(demo) => tcpcopy::demo::run_demo(demo.seconds),
        TcpcopyCommand::Live(args) => run_live(&args),
    };
    if let Err(e) = result {
        eprintln!("tcpcopy: {e:#}");
        std::process::exit(1);
    }
}

fn run_live(args: &TcpcopyCli) -> anyhow::Result<()> {
    let cfg = config::LiveConfig::from_opts(&args.opts)
        .unwrap_or_else(|e| cli::usage_error("tcpcopy", &e));
    logging::init(args.opts.common.debug, args.opts.common.log.as_deref())?;
    logging::write_pid(args.opts.common.pid_file.as_deref())?;
    let stop = plumbing::stop_on_signals()?;
    let report = live::run(cfg, stop)?;
    let stats = report.stats;
    tracing::info!("final: {stats}");
    println!("tcpcopy final: {stats}");
    // A damaged replay file: what came before the damage was replayed (and counted above).
    if let Some(e) = report.input_error {
        anyhow::bail!("{e}");
    }
    Ok(())
}
