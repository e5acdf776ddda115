//! `tcpcopy`: parse options, then run live replication (or the demo / bench lab).

use tcpcopy::cli::{self, TcpcopyCli, TcpcopyCommand};
use tcpcopy::{demo, live, logging, plumbing};

fn main() {
    let args: TcpcopyCli = cli::parse_or_exit();
    let result = match args.command {
        Some(TcpcopyCommand::Demo { seconds }) => demo::run_demo(seconds),
        Some(TcpcopyCommand::Bench {
            seconds,
            pps: true,
            threaded_receive,
            send_layer,
            ..
        }) => tcpcopy::pps::run_pps(seconds, threaded_receive, send_layer),
        Some(TcpcopyCommand::Bench {
            seconds,
            rows,
            threaded_receive,
            threads,
            send_layer,
            capture_wait,
            repeat,
            c_tool,
            ..
        }) => demo::run_bench(&demo::BenchOpts {
            seconds,
            rows,
            threaded_receive,
            threads,
            send_layer,
            capture_wait,
            repeat,
            c_tool,
        }),
        None => run_live(&args),
    };
    if let Err(e) = result {
        eprintln!("tcpcopy: {e:#}");
        std::process::exit(1);
    }
}

fn run_live(args: &TcpcopyCli) -> anyhow::Result<()> {
    let cfg =
        live::LiveConfig::from_opts(&args.opts).unwrap_or_else(|e| cli::usage_error("tcpcopy", &e));
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
