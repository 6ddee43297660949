//! AWS wiring shared by S3, Glue and Athena.
//!
//! One SDK config per process, loaded the standard way (credential chain: environment, profile,
//! SSO, web identity, ECS task role, instance profile; region: `[aws] region`, `AWS_REGION`,
//! profile; endpoints: `AWS_ENDPOINT_URL` and per-service `AWS_ENDPOINT_URL_<SERVICE>`). S3 goes
//! through `object_store`, which has its own, smaller chain: [`SdkCredentials`] hands it the
//! SDK's credentials instead, so every service authenticates the same way.
//!
//! [`explain`] turns the errors users meet (no credentials, wrong region, no bucket, access
//! denied, a catalog in another account) into what to do about them.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

static SDK: OnceLock<SdkConfig> = OnceLock::new();

/// Loads the SDK config once; later calls return the first one. `region` (from `[aws] region`)
/// wins over the chain's.
pub async fn init(region: Option<&str>) -> &'static SdkConfig {
    if let Some(c) = SDK.get() {
        return c;
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    let cfg = loader.load().await;
    let _ = SDK.set(cfg);
    SDK.get().expect("set above")
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
            source: format!("{}: {}", NO_CREDENTIALS, crate::error::chain(&e)).into(),
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

pub const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE \
     (after `aws sso login` for SSO), or run with a role (ECS task role, instance profile)";

/// What to do about an AWS error, from its text (SDK, object_store and service messages all
/// carry the error code). `None` when there is nothing better to say than the error itself.
pub fn explain(text: &str) -> Option<&'static str> {
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

/// An SDK error as an [`Error::Failed`] with its full chain and what to do.
pub fn sdk_error<E: std::error::Error>(what: impl std::fmt::Display, e: E) -> Error {
    let text = crate::error::chain(&e);
    match explain(&text) {
        Some(hint) => Error::Failed(format!("{what}: {text}\n  what to do: {hint}")),
        None => Error::Failed(format!("{what}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_what_users_meet() {
        assert!(explain("service error: NoSuchBucket: The specified bucket does not exist").unwrap().contains("create it"));
        assert!(explain("301 PermanentRedirect").unwrap().contains("region"));
        assert!(explain("AccessDenied: Access Denied").unwrap().contains("permission"));
        assert!(
            explain("User: arn:aws:iam::1:user/x is not authorized to perform: glue:GetTable").unwrap().contains("catalog_id")
        );
        assert!(explain("the credential provider was not enabled: CredentialsNotLoaded").unwrap().contains("AWS_PROFILE"));
        assert!(explain("EntityNotFoundException: Database runner not found").unwrap().contains("catalog_id"));
        assert_eq!(explain("something else"), None);
    }
}
