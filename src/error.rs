//! The library's error type.
//!
//! Errors are classed the way a user acts on them: a *config* error says what to fix in which
//! file (exit 78, like `EX_CONFIG`), a *usage* error is a wrong command line (exit 2), an
//! *external* error comes from storage or the network and says whether a retry helps (exit 1),
//! and anything else is a failed run (exit 1). `main.rs` maps them with [`Error::exit_code`].

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Documented exit codes (see README "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    /// Skipped: another run of the job holds its lease (`EX_TEMPFAIL`: the next trigger retries).
    pub const LOCKED: i32 = 75;
    pub const CONFIG: i32 = 78;
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {message}")]
    Config { file: String, message: String },

    #[error("{0}")]
    Usage(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("{what}: {source}{}", store_hint(source))]
    Store {
        what: String,
        #[source]
        source: object_store::Error,
    },

    #[error("{context}: {source}")]
    DataFusion {
        context: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    #[error("{context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    #[error("{context}: {source}")]
    Parquet {
        context: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Another writer committed the batch this run planned; the caller re-plans.
    #[error("batch {seq} of stream `{stream}` was committed by another run")]
    CommitConflict { stream: String, seq: u64 },

    #[error("{0}")]
    Failed(String),

    /// Ctrl-C, after the work in flight was stopped cleanly.
    #[error("{0}")]
    Interrupted(String),

    #[error("internal error (a bug in runner, please report it): {0}")]
    Internal(String),
}

/// What to do about a storage error: the AWS explanation when there is one, else a hint by kind.
fn store_hint(e: &object_store::Error) -> String {
    if let Some(hint) = crate::aws::explain(&chain(e)) {
        return format!("\n  what to do: {hint}");
    }
    retry_hint(e).to_string()
}

/// An error and its sources, `: `-separated, each said once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

fn retry_hint(e: &object_store::Error) -> &'static str {
    match e {
        object_store::Error::NotFound { .. } => " (check the URL or path in runner.toml)",
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            " (check credentials and permissions; retrying will not help)"
        }
        object_store::Error::Generic { .. } => " (may be transient: retrying the run is safe)",
        _ => "",
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => exit::CONFIG,
            Error::Usage(_) => exit::USAGE,
            Error::Interrupted(_) => exit::INTERRUPTED,
            _ => exit::FAILED,
        }
    }

    pub fn store(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> Error {
        let what = what.into();
        move |source| Error::Store { what, source }
    }

    pub fn df(context: impl Into<String>) -> impl FnOnce(datafusion::error::DataFusionError) -> Error {
        let context = context.into();
        move |source| Error::DataFusion { context, source }
    }

    pub fn arrow(context: impl Into<String>) -> impl FnOnce(arrow::error::ArrowError) -> Error {
        let context = context.into();
        move |source| Error::Arrow { context, source }
    }

    pub fn parquet(context: impl Into<String>) -> impl FnOnce(parquet::errors::ParquetError) -> Error {
        let context = context.into();
        move |source| Error::Parquet { context, source }
    }
}
