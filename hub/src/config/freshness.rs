//! Config sections for the catalogue, the freshness evaluator and alerts.
//!
//! ```toml
//! [catalog]
//! path = "catalog.toml"        # optional; relative to the config file. No catalogue = no freshness
//! reload_interval = "5s"       # how often the file's mtime is checked (SIGHUP reloads at once)
//!
//! [freshness]
//! evaluate_interval = "30s"
//! agent_offline_after = "15m"
//! quality_interval = "5m"     # the periodic quality pass: full unique/reference checks,
//!                             # row counts per period, quality history
//!
//! [alerts]
//! webhook_url = "https://ioc.sonla.example/hooks/kho"   # optional; no URL = no alerts
//! queue_capacity = 1024
//! timeout = "10s"
//! max_backoff = "5m"
//! digest_at = "07:30"          # optional; a daily digest per department at this local time
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Seconds matter little for daily-to-yearly deadlines; a few seconds after a change is plenty.
pub const DEFAULT_CATALOG_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Statuses turn at deadlines measured in hours or days; 30 s keeps transitions accurate to the
/// half minute at the cost of reading a few metadata rows.
pub const DEFAULT_EVALUATE_INTERVAL: Duration = Duration::from_secs(30);
/// Agents heartbeat every 30 s by default: 15 minutes is ~30 missed heartbeats, long enough to
/// ride out a hub restart or a short network cut without an alert.
pub const DEFAULT_AGENT_OFFLINE_AFTER: Duration = Duration::from_secs(15 * 60);
/// The periodic quality pass runs one set-based query per `unique`/`reference` rule and one count
/// per `row_count` rule on the writer: every 5 minutes keeps that a small share of its time while
/// a late referenced value clears its violations within minutes.
pub const DEFAULT_QUALITY_INTERVAL: Duration = Duration::from_secs(300);
/// Alerts waiting for delivery. When full, a new alert is dropped, logged at ERROR and counted
/// (`kho_hub_alerts_dropped_total`): the evaluator never waits on a webhook. A province produces a
/// few alerts a day, so 1024 is days of a dead receiver.
pub const DEFAULT_ALERT_QUEUE_CAPACITY: usize = 1024;
/// One webhook call's time limit.
pub const DEFAULT_ALERT_TIMEOUT: Duration = Duration::from_secs(10);
/// Cap of the retry backoff: a receiver down for hours is retried every 5 minutes.
pub const DEFAULT_ALERT_MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSection {
    pub path: Option<PathBuf>,
    #[serde(default = "default_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for CatalogSection {
    fn default() -> Self {
        CatalogSection { path: None, reload_interval: DEFAULT_CATALOG_RELOAD_INTERVAL }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSection {
    #[serde(default = "default_evaluate", with = "humantime_serde")]
    pub evaluate_interval: Duration,
    #[serde(default = "default_offline", with = "humantime_serde")]
    pub agent_offline_after: Duration,
    #[serde(default = "default_quality", with = "humantime_serde")]
    pub quality_interval: Duration,
}

impl Default for FreshnessSection {
    fn default() -> Self {
        FreshnessSection {
            evaluate_interval: DEFAULT_EVALUATE_INTERVAL,
            agent_offline_after: DEFAULT_AGENT_OFFLINE_AFTER,
            quality_interval: DEFAULT_QUALITY_INTERVAL,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    pub webhook_url: Option<String>,
    #[serde(default = "default_alert_queue")]
    pub queue_capacity: usize,
    #[serde(default = "default_alert_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_alert_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Local time (Asia/Ho_Chi_Minh, `HH:MM`) of the daily digest per department; none = no digest.
    #[serde(default)]
    pub digest_at: Option<String>,
    /// PEM file of the CA that signed the webhook receiver's certificate (for an `https` receiver
    /// with a private CA); the platform's roots otherwise.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

impl AlertsSection {
    /// The parsed `digest_at` (validated by [`validate`]).
    pub fn digest_time(&self) -> Option<jiff::civil::Time> {
        self.digest_at.as_deref().and_then(parse_local_time)
    }
}

/// `HH:MM` (or `HH:MM:SS`), 24-hour.
fn parse_local_time(text: &str) -> Option<jiff::civil::Time> {
    let t: jiff::civil::Time = text.trim().parse().ok()?;
    Some(t)
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            webhook_url: None,
            queue_capacity: DEFAULT_ALERT_QUEUE_CAPACITY,
            timeout: DEFAULT_ALERT_TIMEOUT,
            max_backoff: DEFAULT_ALERT_MAX_BACKOFF,
            digest_at: None,
            ca_cert: None,
        }
    }
}

fn default_reload() -> Duration {
    DEFAULT_CATALOG_RELOAD_INTERVAL
}
fn default_evaluate() -> Duration {
    DEFAULT_EVALUATE_INTERVAL
}
fn default_quality() -> Duration {
    DEFAULT_QUALITY_INTERVAL
}
fn default_offline() -> Duration {
    DEFAULT_AGENT_OFFLINE_AFTER
}
fn default_alert_queue() -> usize {
    DEFAULT_ALERT_QUEUE_CAPACITY
}
fn default_alert_timeout() -> Duration {
    DEFAULT_ALERT_TIMEOUT
}
fn default_alert_backoff() -> Duration {
    DEFAULT_ALERT_MAX_BACKOFF
}

/// Problems in these sections, each naming its field.
pub fn validate(
    catalog: &CatalogSection,
    freshness: &FreshnessSection,
    alerts: &AlertsSection,
    bad: &mut dyn FnMut(&str, String),
) {
    if catalog.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        bad("catalog.path", "must not be empty (leave it out for no catalogue)".into());
    }
    if catalog.reload_interval < Duration::from_millis(10) {
        bad("catalog.reload_interval", "must be at least 10ms".into());
    }
    if freshness.evaluate_interval < Duration::from_millis(10) {
        bad("freshness.evaluate_interval", "must be at least 10ms".into());
    }
    if freshness.quality_interval < Duration::from_millis(10) {
        bad("freshness.quality_interval", "must be at least 10ms".into());
    }
    if freshness.agent_offline_after.is_zero() {
        bad("freshness.agent_offline_after", "must be greater than 0".into());
    }
    if let Some(url) = &alerts.webhook_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bad("alerts.webhook_url", format!("{url:?} must start with http:// or https://"));
    }
    if alerts.queue_capacity == 0 {
        bad("alerts.queue_capacity", "must be at least 1".into());
    }
    if let Some(text) = &alerts.digest_at
        && parse_local_time(text).is_none()
    {
        bad("alerts.digest_at", format!("{text:?} is not a local time like \"07:30\""));
    }
    if alerts.ca_cert.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        bad("alerts.ca_cert", "must not be empty (leave it out to use the platform's roots)".into());
    }
    if alerts.timeout.is_zero() {
        bad("alerts.timeout", "must be greater than 0".into());
    }
}
