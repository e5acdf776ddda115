//! `intercept`: parse options, then catch the target's responses and serve them to tcpcopy.

#![forbid(unsafe_code)]

use tcpcopy::cli::{self, InterceptCli};
use tcpcopy::config::InterceptConfig;
use tcpcopy::{intercept, logging, plumbing};

fn main() {
    let args: InterceptCli = cli::parse_or_exit();
    let cfg =
        InterceptConfig::from_cli(&args).unwrap_or_else(|e| cli::usage_error("intercept", &e));
    if let Err(e) = run(&args, &cfg) {
        eprintln!("intercept: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &InterceptCli, cfg: &InterceptConfig) -> anyhow::Result<()> {
    let mut log = args.common.log.clone();
    if args.common.daemon {
        plumbing::daemonize("intercept", &mut log)?;
    }
    logging::init(args.common.debug, log.as_deref(), args.common.log_format)?;
    let pid_file = logging::write_pid(args.common.pid_file.as_deref())?;
    let stop = plumbing::stop_on_signals()?;
    // Returns once a signal arrived; the queue-mode iptables rule is removed on the way out.
    intercept::run(cfg, stop)?;
    drop(pid_file);
    // Source threads may be blocked in the kernel: leave without joining them.
    std::process::exit(0)
}
