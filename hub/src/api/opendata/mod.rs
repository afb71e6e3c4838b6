//! The open-data API: a CKAN-compatible subset, so the province's portal tools and harvesters can
//! read the datasets the catalogue marks `open_data = true`, live from the warehouse.
//!
//! - `GET|POST /api/3/action/package_list` (`limit`, `offset`);
//! - `GET|POST /api/3/action/package_show?id=`;
//! - `GET|POST /api/3/action/package_search?q=&rows=&start=`;
//! - `GET|POST /api/3/action/datastore_search?resource_id=&limit=&offset=&q=&include_total=`;
//! - `GET|POST /api/3/action/resource_show?id=` and `organization_list` (`all_fields`);
//! - `GET /opendata/<id>.csv` and `GET /opendata/<id>.json`: every current row (deleted rows
//!   excluded, `_kho_*` columns never shown), streamed.
//!
//! Answers use CKAN's envelope (see [`ckan`]). **A dataset is visible only if the catalogue in
//! force marks it open**: any other id — not in the catalogue, not open, or only in the warehouse —
//! is the same 404 as a dataset that does not exist, on every route, so nothing about it leaks.
//! The check reads the catalogue at each request, so a reload that closes a dataset takes effect
//! at once. Package metadata (modification times) comes from the freshness evaluator's snapshot.
//!
//! **Bounded**: every row read (`datastore_search` or a download) holds one of
//! [`OPEN_DATA_READS`] permits for its whole duration — more at once get 503 — and runs on the
//! blocking pool on its own warehouse connection ([`crate::warehouse::rows`]). A download moves
//! through a channel of [`DOWNLOAD_CHANNEL`] chunks, so a slow client holds at most that much in
//! memory; when the client goes away, the read stops. An error before the first byte is a 500;
//! one later cuts the response short (the client sees an incomplete transfer, never a silently
//! truncated file that looks whole).

pub mod ckan;
pub mod download;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::catalog::{CatalogHandle, Dataset, Department};
use crate::freshness::{DatasetView, SnapshotCell};
use crate::metrics::Metrics;
use crate::warehouse::WarehouseReader;
use crate::warehouse::rows::{RowChunk, RowQuery};
use ckan::{CkanError, Format, PackageInput, Params};

/// Row reads (searches and downloads) at once; each holds a warehouse connection.
pub const OPEN_DATA_READS: usize = 4;
/// Encoded chunks (of up to [`crate::warehouse::rows::ROW_CHUNK`] rows) a download buffers.
pub const DOWNLOAD_CHANNEL: usize = 8;

/// State of the open-data routes.
#[derive(Clone)]
pub struct OpenData {
    pub reader: Arc<dyn WarehouseReader>,
    pub catalog: CatalogHandle,
    pub snapshot: SnapshotCell,
    pub reads: Arc<Semaphore>,
    /// `https`, or `http` in insecure dev mode: the scheme of the URLs the API publishes.
    pub scheme: &'static str,
    pub metrics: Arc<Metrics>,
    /// Personal-data declarations (a dataset exposing personal data is refused) and the audit
    /// log of sensitive reads (issue 14).
    pub privacy: Option<(crate::privacy::Index, crate::privacy::AuditSink)>,
}

impl OpenData {
    pub fn new(
        reader: Arc<dyn WarehouseReader>,
        catalog: CatalogHandle,
        snapshot: SnapshotCell,
        scheme: &'static str,
        metrics: Arc<Metrics>,
    ) -> OpenData {
        let reads = Arc::new(Semaphore::new(OPEN_DATA_READS));
        OpenData { reader, catalog, snapshot, reads, scheme, metrics, privacy: None }
    }

    /// An open dataset with its department and freshness, or the 404 every other id gets.
    fn open(&self, id: &str) -> Result<Published, CkanError> {
        let catalog = self.catalog.get();
        let dataset =
            catalog.dataset(id).filter(|d| d.open_data).ok_or_else(|| CkanError::NotFound("dataset".into()))?;
        self.refuse_personal(id)?;
        Ok(Published {
            department: catalog.department(&dataset.department).cloned(),
            view: self.snapshot.get().dataset(id).cloned(),
            dataset: dataset.clone(),
        })
    }

    /// Every open dataset, in catalogue order.
    fn all_open(&self) -> Vec<Published> {
        let catalog = self.catalog.get();
        let snapshot = self.snapshot.get();
        catalog
            .datasets
            .iter()
            .filter(|d| d.open_data && self.refuse_personal(&d.id).is_ok())
            .map(|d| Published {
                department: catalog.department(&d.department).cloned(),
                view: snapshot.dataset(&d.id).cloned(),
                dataset: d.clone(),
            })
            .collect()
    }

    /// Refuses a dataset whose agent keeps `personal` or `sensitive` columns raw (issue 14).
    fn refuse_personal(&self, id: &str) -> Result<(), CkanError> {
        let Some((index, _)) = &self.privacy else { return Ok(()) };
        let exposed = index.exposed(id);
        if exposed.is_empty() {
            return Ok(());
        }
        Err(CkanError::Forbidden(format!(
            "dataset {id} is not published: its columns {} hold personal data kept unprotected; the department \
             must pseudonymise, generalise, mask or drop them in its agent config (Decree 13/2023/ND-CP)",
            exposed.join(", ")
        )))
    }

    /// Writes the audit entry of a read of `id`'s rows when it holds sensitive columns.
    async fn audit_read(&self, id: &str, route: &str) {
        if let Some((index, audit)) = &self.privacy
            && index.is_sensitive(id)
        {
            audit.sensitive_read(id, route, "open-data").await;
        }
    }

    fn permit(&self) -> Result<OwnedSemaphorePermit, CkanError> {
        Arc::clone(&self.reads)
            .try_acquire_owned()
            .map_err(|_| CkanError::Busy("too many open-data reads at once; retry shortly".into()))
    }
}

struct Published {
    dataset: Dataset,
    department: Option<Department>,
    view: Option<DatasetView>,
}

impl Published {
    fn input(&self) -> PackageInput<'_> {
        PackageInput { dataset: &self.dataset, department: self.department.as_ref(), view: self.view.as_ref() }
    }
}

/// The open-data routes.
pub fn routes(state: OpenData) -> Router {
    Router::new()
        .route("/api/3/action/{action}", get(action_get).post(action_post))
        .route("/opendata/{file}", get(download))
        .with_state(state)
}

/// The hub's public base URL as the client reached it (`Host`, or HTTP/2's authority).
fn base_url(scheme: &str, headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}")
}

fn respond(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json;charset=utf-8")], body.to_string()).into_response()
}

fn fail(help: &str, e: &CkanError) -> Response {
    if matches!(e, CkanError::Internal(_)) {
        tracing::error!(error = %e, "open-data request failed");
    }
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, ckan::failure(help, e))
}

async fn action_get(
    State(s): State<OpenData>,
    Path(action): Path<String>,
    Query(query): Query<std::collections::BTreeMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let base = base_url(s.scheme, &headers, &uri);
    run_action(s, action, Ok(Params(query)), base).await
}

async fn action_post(
    State(s): State<OpenData>,
    Path(action): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let base = base_url(s.scheme, &headers, &uri);
    run_action(s, action, Params::from_json(&body), base).await
}

async fn run_action(s: OpenData, action: String, params: Result<Params, CkanError>, base: String) -> Response {
    let help = ckan::help_url(&base, &action);
    let params = match params {
        Ok(p) => p,
        Err(e) => return fail(&help, &e),
    };
    let result = match action.as_str() {
        "package_list" => package_list(&s, &params),
        "package_show" => package_show(&s, &params, &base),
        "package_search" => package_search(&s, &params, &base),
        "resource_show" => resource_show(&s, &params, &base),
        "organization_list" => organization_list(&s, &params),
        "datastore_search" => datastore_search(&s, &params).await,
        _ => {
            s.metrics.open_data_request(false);
            let body = json!({"help": help, "success": false,
                "error": {"__type": "Bad Request", "message": format!("Action name not known: {action}")}});
            return respond(StatusCode::BAD_REQUEST, body);
        }
    };
    s.metrics.open_data_request(result.is_ok());
    match result {
        Ok(result) => respond(StatusCode::OK, ckan::success(&help, result)),
        Err(e) => fail(&help, &e),
    }
}

fn package_list(s: &OpenData, p: &Params) -> Result<Value, CkanError> {
    p.only(&["limit", "offset"])?;
    let offset = p.count("offset", 0)?;
    let limit = p.count("limit", u64::MAX)?;
    let names: Vec<String> = s
        .all_open()
        .into_iter()
        .map(|d| d.dataset.id)
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    Ok(json!(names))
}

fn package_show(s: &OpenData, p: &Params, base: &str) -> Result<Value, CkanError> {
    p.only(&["id", "use_default_schema", "include_tracking"])?;
    let id = p.required("id")?;
    Ok(ckan::package(&s.open(id)?.input(), base))
}

fn resource_show(s: &OpenData, p: &Params, base: &str) -> Result<Value, CkanError> {
    p.only(&["id", "include_tracking"])?;
    let id = p.required("id")?;
    let not_found = || CkanError::NotFound("resource".into());
    let (dataset, _) = ckan::parse_resource_id(id).ok_or_else(not_found)?;
    let package = ckan::package(&s.open(dataset).map_err(|_| not_found())?.input(), base);
    let resources = package["resources"].as_array().cloned().unwrap_or_default();
    resources.into_iter().find(|r| r["id"] == id).ok_or_else(not_found)
}

/// The departments that publish at least one open dataset, by code (`all_fields=true`: dicts).
fn organization_list(s: &OpenData, p: &Params) -> Result<Value, CkanError> {
    p.only(&["all_fields", "limit", "offset"])?;
    let all_fields = flag(p, "all_fields", false)?;
    let offset = usize::try_from(p.count("offset", 0)?).unwrap_or(usize::MAX);
    let limit = usize::try_from(p.count("limit", u64::MAX)?).unwrap_or(usize::MAX);
    let mut seen = std::collections::BTreeSet::new();
    let orgs: Vec<Value> = s
        .all_open()
        .into_iter()
        .filter_map(|d| d.department)
        .filter(|dep| seen.insert(dep.code.clone()))
        .skip(offset)
        .take(limit)
        .map(|dep| {
            if all_fields {
                json!({"id": dep.code, "name": dep.code, "title": dep.name, "display_name": dep.name,
                       "type": "organization", "is_organization": true, "state": "active"})
            } else {
                Value::from(dep.code)
            }
        })
        .collect();
    Ok(Value::Array(orgs))
}

fn package_search(s: &OpenData, p: &Params, base: &str) -> Result<Value, CkanError> {
    p.only(&["q", "rows", "start"])?;
    let q = p.text("q").unwrap_or("");
    let rows = p.count("rows", ckan::SEARCH_DEFAULT_ROWS)?.min(ckan::SEARCH_MAX_ROWS);
    let start = p.count("start", 0)?;
    let all = s.all_open();
    let hits: Vec<&Published> = all.iter().filter(|d| ckan::matches(&d.input(), q)).collect();
    let results: Vec<Value> = hits
        .iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(rows).unwrap_or(usize::MAX))
        .map(|d| ckan::package(&d.input(), base))
        .collect();
    Ok(json!({"count": hits.len(), "results": results, "sort": "score desc, metadata_modified desc",
              "facets": {}, "search_facets": {}}))
}

fn flag(p: &Params, name: &str, default: bool) -> Result<bool, CkanError> {
    match p.text(name).map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(_) => Err(CkanError::invalid(name, "Must be true or false")),
    }
}

async fn datastore_search(s: &OpenData, p: &Params) -> Result<Value, CkanError> {
    p.only(&["resource_id", "id", "limit", "offset", "q", "include_total", "records_format"])?;
    let resource_id = match p.text("resource_id") {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => p.required("id").map_err(|_| CkanError::invalid("resource_id", "Missing value"))?.to_string(),
    };
    if p.text("records_format").is_some_and(|f| f != "objects") {
        return Err(CkanError::invalid("records_format", "only \"objects\" is supported"));
    }
    let (dataset, _) = ckan::parse_resource_id(&resource_id).ok_or_else(|| CkanError::NotFound("resource".into()))?;
    let published = s.open(dataset).map_err(as_resource)?;
    s.audit_read(dataset, "datastore_search").await;
    let limit = p.count("limit", ckan::DATASTORE_DEFAULT_LIMIT)?.min(ckan::DATASTORE_MAX_LIMIT);
    let offset = p.count("offset", 0)?;
    let include_total = flag(p, "include_total", true)?;
    let query = RowQuery {
        q: p.text("q").filter(|q| !q.is_empty()).map(str::to_string),
        offset,
        limit: Some(limit),
        with_total: include_total,
    };
    let permit = s.permit()?;
    let reader = Arc::clone(&s.reader);
    let id = published.dataset.id.clone();
    let read = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut columns = Vec::new();
        // No table yet (nothing received): no columns and, if asked, a total of 0.
        let mut total = query.with_total.then_some(0);
        let mut records = Vec::new();
        reader.read_live(&id, &query, &mut |chunk| {
            match chunk {
                RowChunk::Header { columns: c, total: t } => (columns, total) = (c, t),
                RowChunk::Rows(rows) => records.extend(rows),
            }
            true
        })?;
        Ok::<_, crate::warehouse::WarehouseError>((columns, total, records))
    })
    .await
    .map_err(|e| CkanError::Internal(format!("open-data read stopped: {e}")))?;
    let (columns, total, records) = read.map_err(|e| CkanError::Internal(e.to_string()))?;
    s.metrics.open_data_rows(records.len());
    let records: Vec<Value> = records
        .into_iter()
        .map(|row| Value::Object(columns.iter().map(|c| c.name.clone()).zip(row).collect()))
        .collect();
    let mut result = json!({
        "resource_id": resource_id,
        "fields": ckan::fields(&columns),
        "records": records,
        "limit": limit,
        "offset": offset,
        "include_total": include_total,
        "records_format": "objects",
        "_links": ckan::links(&resource_id, limit, offset),
    });
    if let Some(total) = total {
        result["total"] = json!(total);
    }
    Ok(result)
}

/// A dataset error as a resource's: not found stays not found; a refusal keeps its reason.
fn as_resource(e: CkanError) -> CkanError {
    match e {
        CkanError::Forbidden(_) => e,
        _ => CkanError::NotFound("resource".into()),
    }
}

/// `GET /opendata/<id>.csv|json[?bom=true]`: the dataset's current rows, streamed.
async fn download(
    State(s): State<OpenData>,
    Path(file): Path<String>,
    Query(query): Query<std::collections::BTreeMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let help = ckan::help_url(&base_url(s.scheme, &headers, &uri), "datastore_search");
    let result = start_download(&s, &file, Params(query)).await;
    s.metrics.open_data_request(result.is_ok());
    match result {
        Ok(response) => response,
        Err(e) => fail(&help, &e),
    }
}

async fn start_download(s: &OpenData, file: &str, params: Params) -> Result<Response, CkanError> {
    params.only(&["bom"])?;
    let bom = flag(&params, "bom", false)?;
    let (id, format) = match file.rsplit_once('.') {
        Some((id, "csv")) => (id, Format::Csv),
        Some((id, "json")) => (id, Format::Json),
        _ => return Err(CkanError::NotFound("resource".into())),
    };
    let published = s.open(id).map_err(as_resource)?;
    s.audit_read(id, "download").await;
    let permit = s.permit()?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(DOWNLOAD_CHANNEL);
    let reader = Arc::clone(&s.reader);
    let metrics = Arc::clone(&s.metrics);
    let dataset = published.dataset.id.clone();
    let span = tracing::info_span!("open_data_download", dataset = %dataset, format = format.extension());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _span = span.enter();
        let mut encoder = download::Encoder::new(format, bom);
        let all = RowQuery::default();
        let read = reader.read_live(&dataset, &all, &mut |chunk| {
            if let RowChunk::Rows(rows) = &chunk {
                metrics.open_data_rows(rows.len());
            }
            tx.blocking_send(Ok(Bytes::from(encoder.chunk(chunk)))).is_ok()
        });
        match read {
            Ok(_) => {
                let _ = tx.blocking_send(Ok(Bytes::from(encoder.finish())));
            }
            Err(e) => {
                tracing::error!(error = %e, "open-data download failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    // The first chunk (the header, or the whole of an empty file) decides the status.
    let first = match rx.recv().await {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => return Err(CkanError::Internal(e.to_string())),
        None => return Err(CkanError::Internal("the download stopped before it started".into())),
    };
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body =
        Body::from_stream(tokio_stream::StreamExt::chain(tokio_stream::once(Ok::<_, std::io::Error>(first)), rest));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Json => "application/json; charset=utf-8",
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}.{}\"", published.dataset.id, format.extension()))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    let modified = published.view.as_ref().and_then(|v| v.freshness.as_ref()).and_then(|f| f.max_loaded_at);
    if let Some(t) = modified
        && let Ok(v) = HeaderValue::from_str(&t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string())
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    Ok(response)
}
