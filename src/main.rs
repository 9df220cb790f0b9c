//! The `dmon` binary: parses the command line and runs one command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    dmon::cmd::Cli::parse().run()
}
