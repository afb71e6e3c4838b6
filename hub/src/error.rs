//! The hub's two outward error types.
//!
//! - [`HubError`]: why [`crate::run`] could not start or stopped abnormally (for `main`).
//! - [`ApiError`]: why one request was refused. It carries the wire [`ErrorReply`] and turns into
//!   the matching HTTP status with that JSON body. Refusals the client caused (4xx) are logged at
//!   info/warn for the operator's curiosity; hub failures (5xx) are logged once at error, unless
//!   the layer that failed already did.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kho_shared::protocol::{ErrorCode, ErrorReply};

use crate::apply::ApplyError;
use crate::config::ConfigError;
use crate::tls::TlsError;
use crate::warehouse::WarehouseError;

/// Why the hub could not run.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Mqtt(#[from] crate::ingest::mqtt::MqttSetupError),
    #[error("could not start the applier thread: {0}")]
    Thread(std::io::Error),
}

/// One refused request.
#[derive(Debug)]
pub struct ApiError {
    pub reply: ErrorReply,
    /// Set when the failing layer already logged this at error.
    logged: bool,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { reply: ErrorReply { code, message: message.into(), expected_seq: None }, logged: false }
    }

    pub fn gap(expected: u64) -> ApiError {
        let mut e = ApiError::new(
            ErrorCode::SequenceGap,
            format!("batch starts past the next expected sequence; resend from {expected}"),
        );
        e.reply.expected_seq = Some(expected);
        e
    }

    pub fn code(&self) -> ErrorCode {
        self.reply.code
    }

    /// The HTTP status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self.reply.code {
            ErrorCode::Unauthorized | ErrorCode::BadSignature => StatusCode::UNAUTHORIZED,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::DigestMismatch | ErrorCode::Malformed | ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::SequenceGap => StatusCode::CONFLICT,
            ErrorCode::SchemaConflict => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> ApiError {
        match e {
            ApplyError::Gap { expected } => ApiError::gap(expected),
            ApplyError::Warehouse(WarehouseError::SchemaConflict { dataset, problem }) => {
                ApiError::new(ErrorCode::SchemaConflict, format!("dataset {dataset}: {problem}"))
            }
            ApplyError::Warehouse(other) => ApiError::new(ErrorCode::Internal, other.to_string()),
            ApplyError::Transaction(msg) => ApiError {
                logged: true,
                ..ApiError::new(ErrorCode::Internal, format!("warehouse transaction failed: {msg}"))
            },
            ApplyError::Stopped => ApiError::new(ErrorCode::Unavailable, "the hub is shutting down"),
        }
    }
}

impl ApiError {
    /// Logs the refusal once, at the level its cause deserves, in the current span (which
    /// carries the agent); the response then does not log it again.
    pub fn log(mut self) -> ApiError {
        if !self.logged {
            let (code, message) = (self.reply.code, &self.reply.message);
            match code {
                ErrorCode::Internal => tracing::error!(?code, %message, "request failed"),
                ErrorCode::SequenceGap | ErrorCode::Unavailable | ErrorCode::RateLimited => {
                    tracing::info!(?code, %message, "request refused")
                }
                _ => tracing::warn!(?code, %message, "request refused"),
            }
            self.logged = true;
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = self.log();
        (this.status(), Json(this.reply)).into_response()
    }
}
