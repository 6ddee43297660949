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

    /// The attempt that staged batch `seq` is older than the commit grace (the process was
    /// paused?): its staging may be collected, so it does not commit; the caller re-plans.
    #[error("the attempt at batch {seq} of stream `{stream}` is {age_s} s old, past the commit grace: not committed")]
    StaleAttempt { stream: String, seq: u64, age_s: u64 },

    #[error("{0}")]
    Failed(String),

    /// A write under a lease generation that is no longer the job's (see `pipeline::lease`).
    #[error("{0}")]
    Fenced(String),

    /// Ctrl-C, after the work in flight was stopped cleanly.
    #[error("{0}")]
    Interrupted(String),

    #[error("internal error (a bug in runner, please report it): {0}")]
    Internal(String),
}

/// What to do about a storage error: the AWS explanation when there is one, else a hint by kind.
fn store_hint(e: &object_store::Error) -> String {
    if let Some(hint) = explain_aws(&chain(e)) {
        return format!("\n  what to do: {hint}");
    }
    retry_hint(e).to_string()
}

/// An error's message and those of its sources, each said once (a source whose text the
/// messages so far already contain adds nothing).
fn messages(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.iter().any(|m| m.contains(&t)) {
            out.push(t);
        }
        src = s.source();
    }
    out
}

/// An error and its sources on one line, `: `-separated (for messages that embed it).
pub fn chain(e: &dyn std::error::Error) -> String {
    messages(e).join(": ")
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

pub const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE \
     (after `aws sso login` for SSO), or run with a role (ECS task role, instance profile)";

/// What to do about an AWS error, from its text (SDK, object_store and service messages all
/// carry the error code). `None` when there is nothing better to say than the error itself.
pub fn explain_aws(text: &str) -> Option<&'static str> {
    let has = |s: &str| text.contains(s);
    if has("NoSuchBucket") || has("bucket does not exist") {
        Some("the bucket does not exist: create it, or fix the bucket name in the URL")
    } else if has("PermanentRedirect") || has("AuthorizationHeaderMalformed") || has("IllegalLocationConstraint") {
        Some("the bucket is in another region: set [aws] region (or AWS_REGION) to the bucket's region")
    } else if has("InvalidClientTokenId") || has("UnrecognizedClientException") || has("InvalidAccessKeyId") {
        Some("the access key is not valid in this region or account: check AWS_PROFILE / the keys, and the region")
    } else if has("SignatureDoesNotMatch") {
        Some("the secret key does not match the access key: check the credentials")
    } else if has("ExpiredToken") {
        Some("the session token has expired: refresh the credentials (e.g. `aws sso login`)")
    } else if has("CredentialsNotLoaded") || has("no AWS credentials") || has("NoCredentialProviders") {
        Some(NO_CREDENTIALS)
    } else if has("dispatch failure") || has("Connection refused") || has("error sending request") {
        Some("the AWS endpoint cannot be reached: check the network, AWS_ENDPOINT_URL and the region")
    } else if has("AccessDenied") || has("not authorized to perform") {
        Some(
            "access denied: the role or user needs permission on this resource (s3:GetObject/PutObject/ListBucket/DeleteObject \
             on the prefix; glue:*Table*, glue:*Partition*, glue:GetDatabase/CreateDatabase; athena:*QueryExecution*); \
             for a Glue database in another account set [catalog] catalog_id and grant access with a resource policy",
        )
    } else if has("EntityNotFoundException") && has("atabase") {
        Some(
            "the Glue database does not exist in this account and region, or belongs to another account: set [catalog] catalog_id",
        )
    } else {
        None
    }
}

/// An error with its whole cause chain, one `caused by:` line per source not already said:
/// what `main` prints on stderr.
pub fn report(e: &dyn std::error::Error) -> String {
    let m = messages(e);
    let mut out = format!("error: {}", m[0]);
    for cause in &m[1..] {
        out.push_str("\n  caused by: ");
        out.push_str(cause);
    }
    out
}

/// ` (did you mean `x`?)` when a candidate is close to `name` (Jaro-Winkler similarity of at
/// least 0.8, ignoring case; the closest wins), else nothing: for errors about a name that does
/// not exist (a job, a table, a column).
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let wanted = name.to_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&wanted, &c.to_lowercase());
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_chain_says_each_message_once() {
        let inner = std::io::Error::other("disk full");
        let e = Error::Io { what: "writing x".into(), source: inner };
        assert_eq!(report(&e), "error: writing x: disk full", "a source already in the message is not repeated");
        let e = Error::Store {
            what: "reading y".into(),
            source: object_store::Error::Generic { store: "S3", source: "timeout".into() },
        };
        let r = report(&e);
        assert!(r.starts_with("error: reading y: ") && r.contains("timeout"), "{r}");
        assert_eq!(chain(&e).lines().count(), r.lines().count(), "one home: the same messages both ways");
    }

    #[test]
    fn explains_what_users_meet() {
        assert!(explain_aws("service error: NoSuchBucket: The specified bucket does not exist").unwrap().contains("create it"));
        assert!(explain_aws("301 PermanentRedirect").unwrap().contains("region"));
        assert!(explain_aws("AccessDenied: Access Denied").unwrap().contains("permission"));
        assert!(
            explain_aws("User: arn:aws:iam::1:user/x is not authorized to perform: glue:GetTable")
                .unwrap()
                .contains("catalog_id")
        );
        assert!(explain_aws("the credential provider was not enabled: CredentialsNotLoaded").unwrap().contains("AWS_PROFILE"));
        assert!(explain_aws("EntityNotFoundException: Database runner not found").unwrap().contains("catalog_id"));
        assert_eq!(explain_aws("something else"), None);
    }

    #[test]
    fn did_you_mean_names_the_closest_name_only_when_it_is_close() {
        let jobs = ["export_tenants", "tenants", "tenant_activity_daily", "jobs_daily"];
        assert_eq!(did_you_mean("tenant", jobs), " (did you mean `tenants`?)");
        assert_eq!(did_you_mean("Jobs_Dialy", jobs), " (did you mean `jobs_daily`?)");
        assert_eq!(did_you_mean("quarantine", jobs), "");
        assert_eq!(did_you_mean("x", Vec::<&str>::new()), "");
    }
}
