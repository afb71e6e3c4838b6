//! The listener: one axum router (ingest + status + metrics) behind per-request limits, served
//! over HTTPS with rustls (or plain HTTP in insecure dev mode), stopped gracefully on cancellation.
//!
//! Per-request limits (architecture invariant 5): at most `max_concurrent_requests` requests are in
//! a handler at once — more are refused at once with 503 `unavailable`, which agents retry with
//! backoff — and each request, body upload included, must finish within `request_timeout`. A
//! client must send its request headers within `header_read_timeout` (slowloris), and finish the
//! TLS handshake within axum-server's 10 s handshake timeout, or the connection is closed. At most
//! `limits.max_connections` connections are open at once ([`crate::conn_limit`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use kho_shared::protocol::ErrorCode;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, HubError};

/// How long in-flight requests may run after shutdown starts; the applier's commit of anything
/// already queued is awaited separately, so this only bounds slow uploads.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Concurrency and time bounds applied to every request.
pub struct RequestLimits {
    pub permits: Arc<Semaphore>,
    pub timeout: Duration,
}

/// The hub's whole HTTP surface.
pub fn router(routes: Router, limits: Arc<RequestLimits>) -> Router {
    routes.layer(middleware::from_fn_with_state(limits, limit_request))
}

async fn limit_request(State(limits): State<Arc<RequestLimits>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = Arc::clone(&limits.permits).try_acquire_owned() else {
        return ApiError::new(ErrorCode::Unavailable, "too many concurrent requests; retry later").into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Unavailable,
            format!("request did not finish within {}", humantime::format_duration(limits.timeout)),
        )
        .into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains within
/// [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    header_read_timeout: Duration,
    connections: crate::conn_limit::LimitAcceptor,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!(grace = ?SHUTDOWN_GRACE, "shutting down the listener");
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    let service = router.into_make_service();
    match tls {
        Some(config) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(config);
            let server = axum_server::tls_rustls::from_tcp_rustls(listener, rustls).map_err(HubError::Serve)?;
            // The limit sees the raw TCP stream: a connection over it costs no handshake.
            let mut server = server.map(|tls| tls.acceptor(connections));
            server.http_builder().http1().header_read_timeout(header_read_timeout);
            server.handle(handle).serve(service).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener).map_err(HubError::Serve)?.acceptor(connections);
            server.http_builder().http1().header_read_timeout(header_read_timeout);
            server.handle(handle).serve(service).await
        }
    }
    .map_err(HubError::Serve)
}
