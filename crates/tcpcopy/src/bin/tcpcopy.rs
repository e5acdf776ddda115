//! `tcpcopy`: parse options, then run live replication or a replay (or, first word `check`, probe
//! the path; `demo`, the demo lab when built with the `demo` feature).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tcpcopy::metrics::MetricsServer;
use tcpcopy::status::{Status, StatusSnapshot};

use tcpcopy::cli::{self, ReportAction, TcpcopyCli, TcpcopyCommand};
use tcpcopy::{config, live, logging, plumbing, reporting};

fn main() {
    let result = match TcpcopyCommand::parse_or_exit() {
        #[cfg(feature = "demo")]
        TcpcopyCommand::Demo(demo) => {
            tcpcopy::demo::run_demo(demo.seconds, demo.report_html.as_deref())
        }
        TcpcopyCommand::Live(args) => run_live(&args),
        TcpcopyCommand::Check(args) => {
            let cfg = config::LiveConfig::from_opts(&args.opts)
                .unwrap_or_else(|e| cli::usage_error("tcpcopy check", &e));
            // Exit status 0 only for a setup found ready.
            std::process::exit(if tcpcopy::check::run(&cfg) { 0 } else { 1 });
        }
        TcpcopyCommand::PrintConfig(text) => {
            print!("{text}");
            Ok(())
        }
        TcpcopyCommand::Report(r) => match r.action {
            ReportAction::Merge { inputs, output } => reporting::merge_files(&inputs, &output),
        },
    };
    if let Err(e) = result {
        eprintln!("tcpcopy: {e:#}");
        std::process::exit(1);
    }
}

fn run_live(args: &TcpcopyCli) -> anyhow::Result<()> {
    let cfg = config::LiveConfig::from_opts(&args.opts)
        .unwrap_or_else(|e| cli::usage_error("tcpcopy", &e));
    let common = &args.opts.common;
    let mut log = common.log.clone();
    if common.daemon {
        plumbing::daemonize("tcpcopy", &mut log)?;
    }
    logging::init(common.debug, log.as_deref(), common.log_format)?;
    for note in &cfg.notes {
        tracing::info!("{note}");
    }
    let pid_file = logging::write_pid(args.opts.common.pid_file.as_deref())?;
    let stop = plumbing::stop_on_signals()?;
    let settings = cfg.report.clone();
    reporting::create_files(&settings)?;
    let (started, clock) = (SystemTime::now(), Instant::now());
    let board = Arc::new(live::Board::default());
    let protocol = cfg.protocol.as_ref().map(|(p, _)| p.as_str());
    let snapshot = {
        let board = board.clone();
        move || reporting::snapshot(&board, protocol)
    };
    let _metrics = match settings.metrics {
        Some(addr) => Some(MetricsServer::start(addr, Arc::new(snapshot.clone()))?),
        None => None,
    };
    let is_replay = matches!(cfg.input, config::Input::File { .. });
    let status_board = board.clone();
    let _status = Status::start(
        is_replay,
        Arc::new(move || StatusSnapshot {
            counters: snapshot(),
            progress: status_board.progress(),
        }),
    );
    let run = live::run(cfg, stop, board.clone())?;
    drop(_status);
    let stats = run.stats;
    logging::log_stats("final", &stats, protocol);
    logging::print_out(&format!("tcpcopy final: {stats}"));
    if let Some(protocol) = protocol {
        logging::print_out(&format!("tcpcopy final {protocol} {}", stats.logins));
    }
    if let Some(st) = &run.stream {
        let line = live::describe_stream(st);
        tracing::info!("final: {line}");
        logging::print_out(&format!("tcpcopy {line}"));
    }
    let report = reporting::build(
        &stats,
        protocol,
        run.in_flight,
        run.compare.as_ref(),
        started,
        clock.elapsed(),
    );
    logging::print_out(report.to_string().trim_end());
    reporting::write(&report, &settings)?;
    // A damaged replay file: what came before the damage was replayed (and counted above).
    if let Some(e) = run.input_error {
        anyhow::bail!("{e}");
    }
    if let Some(why) = reporting::failed_criteria(&report, &settings) {
        eprintln!("tcpcopy: {why}");
        drop(pid_file);
        std::process::exit(reporting::EXIT_CRITERIA);
    }
    Ok(())
}
