//! AWS wiring shared by S3, Glue and Athena.
//!
//! One SDK config per process, loaded the standard way (credential chain: environment, profile,
//! SSO, web identity, ECS task role, instance profile; region: `[aws] region`, `AWS_REGION`,
//! profile; endpoints: `AWS_ENDPOINT_URL` and per-service `AWS_ENDPOINT_URL_<SERVICE>`). S3 goes
//! through `object_store`, which has its own, smaller chain: [`SdkCredentials`] hands it the
//! SDK's credentials instead, so every service authenticates the same way.
//!
//! What to do about the errors users meet is [`crate::error::explain_aws`]'s; [`sdk_error`] attaches it.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

static SDK: OnceLock<SdkConfig> = OnceLock::new();

/// Environment variables that say this process works with AWS (a region, credentials, a role,
/// an endpoint): `runner cluster` loads the SDK's chain only then.
pub const POINTS_AT_AWS: &[&str] = &[
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
];

/// Loads the SDK config once; later calls return the first one. `region` (from `[aws] region`)
/// wins over the chain's.
pub async fn init(region: Option<&str>) -> &'static SdkConfig {
    if let Some(c) = SDK.get() {
        return c;
    }
    let cfg = loader(region).load().await;
    let _ = SDK.set(cfg);
    SDK.get().expect("set above")
}

/// The one way the runner configures the AWS SDK: the standard chain (credentials, region,
/// endpoints), the latest behaviour version, and `region` when given. The Glue/Athena/S3 config
/// ([`init`]) and the scoring client's (its own region, timeouts and no SDK retries) both start
/// here.
pub fn loader(region: Option<&str>) -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    match region {
        Some(r) => loader.region(aws_config::Region::new(r.to_string())),
        None => loader,
    }
}

/// A CloudFormation logical id from words: `Runner daily-jobs` -> `RunnerDailyJobs` (ids are
/// alphanumeric).
pub fn cfn_logical_id(words: &str) -> String {
    words
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The SDK config, when [`init`] ran (it does whenever the config names an `s3://` URL or Glue).
pub fn sdk() -> Option<&'static SdkConfig> {
    SDK.get()
}

/// The S3 endpoint override: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` (or the SDK's).
fn s3_endpoint() -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL_S3")
        .ok()
        .or_else(|| sdk().and_then(|s| s.endpoint_url().map(str::to_string)))
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|s| !s.is_empty())
}

/// An S3 store for `bucket`, with the SDK's region and credentials when loaded.
pub fn s3_store(bucket: &str) -> Result<AmazonS3> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(sdk) = sdk() {
        if let Some(r) = sdk.region() {
            b = b.with_region(r.as_ref());
        }
        if let Some(p) = sdk.credentials_provider() {
            b = b.with_credentials(Arc::new(SdkCredentials::new(p)));
        }
    }
    if let Some(ep) = s3_endpoint() {
        // Emulators and S3-compatible stores listen on plain HTTP and want path-style URLs.
        b = b.with_endpoint(&ep).with_allow_http(ep.starts_with("http://")).with_virtual_hosted_style_request(false);
    }
    b.build().map_err(Error::store(format!("opening s3://{bucket}")))
}

/// object_store's credential provider over the SDK's chain, cached until shortly before expiry.
#[derive(Debug)]
pub struct SdkCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl SdkCredentials {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        SdkCredentials { provider, cached: Mutex::new(None) }
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((c, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|e| e > SystemTime::now() + std::time::Duration::from_secs(300));
            if fresh {
                return Ok(c.clone());
            }
        }
        let creds = self.provider.provide_credentials().await.map_err(|e| object_store::Error::Unauthenticated {
            path: String::new(),
            source: format!("{}: {}", crate::error::NO_CREDENTIALS, crate::error::chain(&e)).into(),
        })?;
        let c = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_string(),
            secret_key: creds.secret_access_key().to_string(),
            token: creds.session_token().map(str::to_string),
        });
        *cached = Some((c.clone(), creds.expiry()));
        Ok(c)
    }
}

/// An SDK error as an [`Error::Failed`] with its full chain and what to do.
pub fn sdk_error<E: std::error::Error>(what: impl std::fmt::Display, e: E) -> Error {
    let text = crate::error::chain(&e);
    match crate::error::explain_aws(&text) {
        Some(hint) => Error::Failed(format!("{what}: {text}\n  what to do: {hint}")),
        None => Error::Failed(format!("{what}: {text}")),
    }
}

/// What an AWS operation of the runner touches, for the least-privilege policy
/// (`runner schedule export --format cloudformation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The warehouse's objects (`s3://<bucket>/<prefix>`), or its bucket for listings.
    Warehouse,
    /// The Firehose sources' objects, or their bucket for listings.
    Sources,
    /// The Glue catalog, the database and its tables.
    Glue,
    /// The Athena workgroup.
    AthenaWorkGroup,
    /// The bucket Athena writes query results to.
    AthenaResults,
    /// The SageMaker endpoint (`[scoring] endpoint = "sagemaker"`).
    SageMakerEndpoint,
    /// The API Gateway API (`[scoring] endpoint = "apigateway"` with `sigv4 = true`).
    ApiGateway,
}

/// One AWS operation the runner can invoke, with the IAM action that allows it.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `glue:GetTable`, `s3:GetObject`, ...
    pub action: &'static str,
    pub scope: Scope,
    /// Where the call is made: an SDK method (`get_table`), an `object_store` method
    /// (`store.put_opts`), or what calls on the runner's behalf (`athena` for the results Athena
    /// writes, `datafusion` for the engine's reads).
    pub call: &'static str,
}

const fn op(action: &'static str, scope: Scope, call: &'static str) -> Operation {
    Operation { action, scope, call }
}

/// Every AWS operation the runner's code can invoke. `tests/iam.rs` finds the SDK calls and
/// object-store calls in `src/` and checks this list against them, and checks that the policy
/// the CloudFormation export grants and the README's IAM section name exactly these actions.
pub const OPERATIONS: &[Operation] = &[
    // S3 through object_store (`store::Location`) and DataFusion's reads of the tables.
    op("s3:ListBucket", Scope::Warehouse, "store.list"),
    op("s3:ListBucket", Scope::Warehouse, "store.list_with_offset"),
    // The catalog's table folders (a delimited listing).
    op("s3:ListBucket", Scope::Warehouse, "store.list_with_delimiter"),
    op("s3:GetObject", Scope::Warehouse, "store.get"),
    op("s3:GetObject", Scope::Warehouse, "store.head"),
    op("s3:PutObject", Scope::Warehouse, "store.put"),
    op("s3:PutObject", Scope::Warehouse, "store.put_opts"),
    op("s3:DeleteObject", Scope::Warehouse, "store.delete"),
    // Bulk deletes (DeleteObjects, 1,000 keys a request) need the same permission.
    op("s3:DeleteObject", Scope::Warehouse, "store.delete_stream"),
    // A rename is CopyObject then DeleteObject.
    op("s3:GetObject", Scope::Warehouse, "store.rename"),
    op("s3:PutObject", Scope::Warehouse, "store.rename"),
    op("s3:DeleteObject", Scope::Warehouse, "store.rename"),
    // A published file is copied into place (CopyObject), its staged copy deleted in bulk.
    op("s3:GetObject", Scope::Warehouse, "store.copy"),
    op("s3:PutObject", Scope::Warehouse, "store.copy"),
    op("s3:GetObject", Scope::Warehouse, "datafusion"),
    op("s3:ListBucket", Scope::Sources, "store.list"),
    op("s3:ListBucket", Scope::Sources, "store.list_with_offset"),
    op("s3:GetObject", Scope::Sources, "store.get"),
    // Glue (`catalog::glue`).
    op("glue:GetDatabase", Scope::Glue, "get_database"),
    op("glue:CreateDatabase", Scope::Glue, "create_database"),
    op("glue:GetTable", Scope::Glue, "get_table"),
    op("glue:CreateTable", Scope::Glue, "create_table"),
    op("glue:UpdateTable", Scope::Glue, "update_table"),
    op("glue:GetPartitions", Scope::Glue, "get_partitions"),
    op("glue:BatchGetPartition", Scope::Glue, "batch_get_partition"),
    op("glue:BatchCreatePartition", Scope::Glue, "batch_create_partition"),
    op("glue:BatchUpdatePartition", Scope::Glue, "batch_update_partition"),
    op("glue:BatchDeletePartition", Scope::Glue, "batch_delete_partition"),
    // Athena (`athena`, `query --engine athena`), and what Athena does with the caller's rights.
    op("athena:StartQueryExecution", Scope::AthenaWorkGroup, "start_query_execution"),
    op("athena:GetQueryExecution", Scope::AthenaWorkGroup, "get_query_execution"),
    op("athena:GetQueryResults", Scope::AthenaWorkGroup, "get_query_results"),
    op("athena:StopQueryExecution", Scope::AthenaWorkGroup, "stop_query_execution"),
    op("s3:GetBucketLocation", Scope::AthenaResults, "athena"),
    op("s3:ListBucket", Scope::AthenaResults, "athena"),
    op("s3:GetObject", Scope::AthenaResults, "athena"),
    op("s3:PutObject", Scope::AthenaResults, "athena"),
    op("s3:GetObject", Scope::Warehouse, "athena"),
    op("s3:ListBucket", Scope::Warehouse, "athena"),
    // Scoring (`score::endpoint`).
    op("sagemaker:InvokeEndpoint", Scope::SageMakerEndpoint, "invoke_endpoint"),
    op("execute-api:Invoke", Scope::ApiGateway, "execute-api"),
];
