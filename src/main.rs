//! The `dmon` binary: parses the command line and runs one command.

use clap::Parser;

// glibc malloc slows down badly when one thread frees what another allocated,
// which is the pipeline's shape (decode on one thread, drop on the dispatch
// thread); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dmon::cmd::Cli::parse().run()
}
