//! `kho-hub status`: the freshness of every catalogue dataset as a terminal table.
//!
//! **Source of truth: a running hub's API.** The command fetches `GET /api/v1/freshness` (and
//! `/api/v1/catalog` for department names) from `--url` (default: the config's `hub.listen`, with
//! `https` unless `insecure_dev_http`), trusting `--ca` (default: the self-signed CA in
//! `<data_dir>/tls/ca.pem` when it exists). Reading the API rather than the warehouse file shows
//! exactly what the hub judged — same clock, same catalogue revision, same history — and works from
//! an operator's machine. The table is grouped by department; statuses are coloured when stdout is
//! a terminal (`--color always|never|auto`), plain otherwise, so it pipes cleanly into `grep`.
//! [`render`] is pure and unit-tested.

use std::fmt::Write as _;

use jiff::Timestamp;
use kho_shared::schedule::PROVINCE_OFFSET;
use serde_json::Value;

/// Why the status command failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot read CA certificate {path}: {source}")]
    Ca { path: std::path::PathBuf, source: std::io::Error },
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("GET {url}: {message}")]
    Fetch { url: String, message: String },
}

/// Fetches a JSON document from the hub.
pub async fn fetch(base: &str, path: &str, ca: Option<&std::path::Path>) -> Result<Value, StatusError> {
    crate::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(15));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|source| StatusError::Ca { path: ca.to_path_buf(), source })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| StatusError::Client(e.to_string()))?;
        builder = builder.tls_certs_only([cert]);
    }
    let client = builder.build().map_err(|e| StatusError::Client(e.to_string()))?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let fail = |message: String| StatusError::Fetch { url: url.clone(), message };
    let resp = client.get(&url).send().await.map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("{status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))
}

fn local(t: Option<&str>) -> String {
    t.and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| PROVINCE_OFFSET.to_datetime(t).strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

fn cadence(schedule: &Value) -> String {
    match &schedule["cadence"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("every").and_then(Value::as_str).map_or("?".into(), |e| format!("every {e}")),
        _ => "?".into(),
    }
}

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
}

fn status_colour(status: &str) -> &'static str {
    match status {
        "on_time" => "32",
        "due" => "33",
        "overdue" => "1;31",
        _ => "35",
    }
}

/// The table for a freshness document (and the catalogue, for department names). Pure.
pub fn render(freshness: &Value, catalog: &Value, colour: bool) -> String {
    let empty = Vec::new();
    let datasets = freshness["datasets"].as_array().unwrap_or(&empty);
    let departments = catalog["departments"].as_array().unwrap_or(&empty);
    let mut out = String::new();
    let _ = writeln!(out, "Evaluated at {} (Asia/Ho_Chi_Minh)", local(freshness["evaluated_at"].as_str()));
    if datasets.is_empty() {
        let _ = writeln!(out, "No datasets in the catalogue.");
        return out;
    }
    let header = ["DATASET", "STATUS", "AGENT", "CADENCE", "PERIOD", "DEADLINE", "LAST UPDATE"];
    let mut order: Vec<&str> = departments.iter().filter_map(|d| d["code"].as_str()).collect();
    for d in datasets {
        if let Some(code) = d["department"].as_str().filter(|c| !order.contains(c)) {
            order.push(code);
        }
    }
    for code in order {
        let rows: Vec<[String; 7]> = datasets
            .iter()
            .filter(|d| d["department"].as_str() == Some(code))
            .map(|d| {
                let last = [d["max_loaded_at"].as_str(), d["last_sync_at"].as_str()].into_iter().flatten().max();
                [
                    d["dataset"].as_str().unwrap_or("?").to_string(),
                    d["status"].as_str().unwrap_or("error").to_string(),
                    if d["agent_offline"].as_bool() == Some(true) { "offline".into() } else { "online".into() },
                    cadence(&d["schedule"]),
                    d["period"]["label"].as_str().unwrap_or("-").to_string(),
                    local(d["deadline"].as_str()),
                    local(last),
                ]
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let name = departments.iter().find(|d| d["code"].as_str() == Some(code)).and_then(|d| d["name"].as_str());
        let _ = writeln!(out, "\n{}", paint(&format!("{code} — {}", name.unwrap_or("")), "1", colour));
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String; 7], out: &mut String, colour: bool| {
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = " ".repeat(w - cell.chars().count());
                let shown = match i {
                    1 => paint(cell, status_colour(cell), colour),
                    2 if cell == "offline" => paint(cell, "31", colour),
                    _ => cell.clone(),
                };
                let _ = write!(out, "  {shown}{pad}");
            }
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(&header.map(String::from), &mut out, false);
        for r in &rows {
            line(r, &mut out, colour);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> (Value, Value) {
        let f = json!({
            "evaluated_at": "2026-03-10T01:00:00Z",
            "datasets": [{
                "dataset": "thu_chi_ngan_sach", "department": "so_tai_chinh", "status": "overdue",
                "agent_offline": true, "schedule": {"cadence": "monthly"},
                "period": {"label": "2026-02"}, "deadline": "2026-03-05T10:00:00Z",
                "max_loaded_at": "2026-02-03T03:00:00Z", "last_sync_at": null
            }, {
                "dataset": "ho_so", "department": "so_y_te", "status": "on_time", "agent_offline": false,
                "schedule": {"cadence": {"every": "6h"}}, "period": {"label": "2026-03-10T00:00"},
                "deadline": "2026-03-10T00:00:00Z", "max_loaded_at": null, "last_sync_at": "2026-03-10T00:30:00Z"
            }]
        });
        let c = json!({"departments": [{"code": "so_y_te", "name": "Sở Y tế"}, {"code": "so_tai_chinh", "name": "Sở Tài chính"}]});
        (f, c)
    }

    #[test]
    fn plain_table_groups_by_department_in_local_time() {
        let (f, c) = doc();
        let text = render(&f, &c, false);
        assert!(!text.contains('\x1b'), "{text}");
        let y_te = text.find("so_y_te — Sở Y tế").expect("y te header");
        let tai_chinh = text.find("so_tai_chinh — Sở Tài chính").expect("tai chinh header");
        assert!(y_te < tai_chinh, "catalogue order: {text}");
        assert!(text.contains("Evaluated at 2026-03-10 08:00"), "{text}");
        let row = text.lines().find(|l| l.contains("thu_chi_ngan_sach")).expect("row");
        for cell in ["overdue", "offline", "monthly", "2026-02", "2026-03-05 17:00", "2026-02-03 10:00"] {
            assert!(row.contains(cell), "{cell} missing in {row:?}");
        }
        assert!(text.contains("every 6h"), "{text}");
    }

    #[test]
    fn colour_only_when_asked() {
        let (f, c) = doc();
        let text = render(&f, &c, true);
        assert!(text.contains("\x1b[1;31moverdue\x1b[0m"), "{text}");
        assert!(text.contains("\x1b[32mon_time\x1b[0m"), "{text}");
    }
}
