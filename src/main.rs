//! The `runner` binary: parse the command line, start logging, call the library, map the
//! result to a documented exit code (see `runner --help`). It prints the error itself: it is
//! the last thing the process says.
#![allow(clippy::disallowed_macros)]

use clap::Parser;

use runner::cli::{Cli, init_logging, run};
use runner::error::exit;

fn main() {
    limit_malloc_arenas();
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

/// The parser threads allocate and free large buffers; glibc gives each thread its own arena and
/// keeps what they free, so peak RSS grew with the backlog (341 MiB for 2.8M events, 973 MiB for
/// 11.7M). Two arenas keep it flat (384 MiB for 11.7M) at ~7% of the throughput. mimalloc was
/// measured too and held more (566 MiB and 698 MiB). `MALLOC_ARENA_MAX` still overrides.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; called before any thread is started.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
