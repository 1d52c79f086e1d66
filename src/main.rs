use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = kcp_tmc::cli::Cli::parse();
    kcp_tmc::cli::run(cli)
}
