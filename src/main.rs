//! The `dmon` binary: parses the command line and runs one command.

use clap::Parser;

// glibc malloc slows down badly when one thread frees what another allocated,
// which is the pipeline's shape (decode on one thread, drop on the dispatch
// thread); mimalloc does not. Counted, for `dmon bench`'s allocations per
// event, at a cost too small to see there.
#[global_allocator]
static ALLOCATOR: dmon::alloc_count::CountingMimalloc = dmon::alloc_count::CountingMimalloc;

fn main() -> std::process::ExitCode {
    dmon::cmd::Cli::parse().run()
}
