//! The `runner` binary: parse the command line, start logging, call the library, map the
//! result to a documented exit code (see `runner --help`).

use clap::Parser;

// mimalloc: the parser threads allocate and free large buffers; glibc's per-thread arenas kept
// that memory and peak RSS grew with the backlog (341 MiB at 2.8M events, 973 MiB at 11.7M).
// With mimalloc it stays flat (README "Benchmarks").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use runner::cli::{Cli, init_logging, run};
use runner::error::exit;

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
            let mut msg = format!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let s_text = s.to_string();
                if !msg.contains(&s_text) {
                    msg.push_str(&format!("\n  caused by: {s_text}"));
                }
                src = s.source();
            }
            eprintln!("{msg}");
            e.exit_code()
        }
    };
    drop(rt);
    std::process::exit(code);
}
