//! The `runner` binary: parse the command line, start logging, call the library, map the
//! result to a documented exit code (see `runner --help`). It prints the error itself: it is
//! the last thing the process says.
#![allow(clippy::disallowed_macros)]

use clap::Parser;

use runner::cli::{Cli, init_logging, run};
use runner::error::exit;

/// jemalloc, not glibc malloc: ingest allocates a buffer per object, a builder per column and a
/// string per field on every core. glibc spent about 17% of the ingest's CPU in malloc and free
/// and, with an arena per thread, grew with the backlog (it was held to two arenas, which cost
/// throughput). jemalloc: the 500-tenant ingest 12-15% faster, the SQL DAG the same, peak RSS
/// bounded by the batches in flight, not the backlog (README, "Ingest"). mimalloc 2.0 was slower,
/// with twice the system time.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Planning and (de)serialising a deep SQL plan recurses once per node: Ballista's scheduler
    // overflowed the 2 MiB default stack on tenant_state's plan. Stack is only reserved, not used.
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(16 << 20).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILED);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(runner::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("{}", runner::error::report(&e));
            e.exit_code()
        }
    };
    drop(rt);
    if runner::store::counting::enabled() {
        eprintln!("{}", runner::store::counting::report());
    }
    std::process::exit(code);
}
