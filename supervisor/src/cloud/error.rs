//! What can go wrong with a cloud call ([`CloudError`]). The API face renders
//! it (`api/error.rs`); here each variant only carries what the client may see.

/// Why a cloud request failed. Messages never contain a key (see
/// [`super::config::Endpoint::scrub`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// No key configured for the provider: names the environment variable.
    #[error(
        "No API key for `{provider}:` models: set {var} (or --{provider}-api-key) on the node"
    )]
    MissingKey {
        provider: &'static str,
        var: &'static str,
    },
    /// The provider has no such endpoint (`/v1/embeddings` for `anthropic:`).
    #[error("`{provider}:` models are not served on {endpoint}")]
    Unsupported {
        provider: &'static str,
        endpoint: &'static str,
    },
    /// The request cannot be expressed for this provider.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// The provider answered with an error status.
    #[error("{provider}: {message}")]
    Upstream {
        provider: &'static str,
        status: u16,
        message: String,
        /// The provider's `Retry-After`, as sent.
        retry_after: Option<String>,
    },
    /// The provider did not answer (or stopped streaming) within `--cloud-timeout-secs`.
    #[error("{provider} did not answer within {secs} s")]
    Timeout { provider: &'static str, secs: u64 },
    /// The provider could not be reached.
    #[error("{provider} could not be reached")]
    Unreachable { provider: &'static str },
    /// The provider's answer could not be read or translated, or its stream was cut.
    #[error("{provider}: {message}")]
    BadAnswer {
        provider: &'static str,
        message: String,
    },
}

impl CloudError {
    /// A stable label per kind, for logs, metrics and error codes.
    pub fn label(&self) -> &'static str {
        match self {
            CloudError::MissingKey { .. } => "cloud_missing_key",
            CloudError::Unsupported { .. } => "cloud_unsupported",
            CloudError::BadRequest { .. } => "cloud_bad_request",
            CloudError::Upstream { status, .. } => match status {
                401 => "cloud_unauthorized",
                403 => "cloud_forbidden",
                404 => "cloud_not_found",
                429 => "cloud_rate_limited",
                400..=499 => "cloud_rejected",
                _ => "cloud_upstream_error",
            },
            CloudError::Timeout { .. } => "cloud_timeout",
            CloudError::Unreachable { .. } => "cloud_unreachable",
            CloudError::BadAnswer { .. } => "cloud_bad_answer",
        }
    }

    /// The HTTP status to answer with: the provider's own class for its
    /// errors; 504 for a timeout (the node is a gateway here, and the
    /// provider, not the node, was slow); 502 for an unreachable or unreadable
    /// provider.
    pub fn status(&self) -> u16 {
        match self {
            CloudError::MissingKey { .. } => 401,
            CloudError::Unsupported { .. } | CloudError::BadRequest { .. } => 400,
            CloudError::Upstream { status, .. } => match status {
                400..=499 => *status,
                // Anthropic's 529 "overloaded" and other non-standard 5xx.
                500..=504 => *status,
                _ => 503,
            },
            CloudError::Timeout { .. } => 504,
            CloudError::Unreachable { .. } | CloudError::BadAnswer { .. } => 502,
        }
    }
}
