//! `intercept`: parse options, then catch the target's responses and serve them to tcpcopy.

use tcpcopy::cli::{self, InterceptCli};
use tcpcopy::{intercept, logging, plumbing};

fn main() {
    let args: InterceptCli = cli::parse_or_exit();
    if let Err(e) = intercept::validate(&args) {
        cli::usage_error("intercept", &e);
    }
    if let Err(e) = run(&args) {
        eprintln!("intercept: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &InterceptCli) -> anyhow::Result<()> {
    logging::init(args.common.debug, args.common.log.as_deref())?;
    logging::write_pid(args.common.pid_file.as_deref())?;
    let stop = plumbing::stop_on_signals()?;
    // Returns once a signal arrived; the queue-mode iptables rule is removed on the way out.
    intercept::run(args, stop)?;
    // Source threads may be blocked in the kernel: leave without joining them.
    std::process::exit(0)
}
