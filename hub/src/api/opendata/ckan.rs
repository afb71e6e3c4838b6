//! CKAN Action API documents (pure): packages built from the catalogue and the freshness
//! snapshot, the response envelope `{help, success, result}` and the error envelope
//! `{help, success: false, error: {__type, message}}`, and request parameter parsing.
//!
//! One open catalogue dataset is one CKAN *package* with two *resources*: `<id>-csv` and
//! `<id>-json`, downloads of the dataset's current rows; both are `datastore_active`, and
//! `datastore_search` accepts either. The owning department is the package's *organization*;
//! its contact is the maintainer. The update frequency is DCAT's `accrualPeriodicity` (EU
//! frequency vocabulary) from the cadence, published in `extras` both under that name and under
//! `frequency` (the key ckanext-dcat maps to `dct:accrualPeriodicity`). `metadata_modified` and a
//! resource's `last_modified` are the last time a change to the dataset was applied, from the
//! freshness evidence; `metadata_created` is when the hub first received it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kho_shared::protocol::Column;
use kho_shared::schedule::Cadence;
use kho_shared::types::ColumnType;
use serde_json::{Value, json};

use crate::catalog::{Dataset, Department};
use crate::freshness::DatasetView;

/// Largest `limit` of `datastore_search` (CKAN's `ckan.datastore.search.rows_max`; a larger one
/// is lowered to it, as CKAN does). Downloads have no limit.
pub const DATASTORE_MAX_LIMIT: u64 = 1_000;
/// `datastore_search`'s default `limit`, as in CKAN.
pub const DATASTORE_DEFAULT_LIMIT: u64 = 100;
/// `package_search`'s default and largest `rows`, as in CKAN.
pub const SEARCH_DEFAULT_ROWS: u64 = 10;
pub const SEARCH_MAX_ROWS: u64 = 1_000;

/// The two download formats, which are also the two resources of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    pub fn mimetype(self) -> &'static str {
        match self {
            Format::Csv => "text/csv",
            Format::Json => "application/json",
        }
    }
}

/// A refused CKAN request, in CKAN's error vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CkanError {
    /// HTTP 404, `"Not Found Error"`: also every non-open dataset, so none is ever revealed.
    #[error("Not found: {0}")]
    NotFound(String),
    /// HTTP 409, `"Validation Error"`, with the bad parameters by name.
    #[error("invalid parameters")]
    Validation(BTreeMap<String, Vec<String>>),
    /// HTTP 403, `"Authorization Error"`: a dataset the catalogue opens but that holds personal
    /// data kept unprotected (issue 14).
    #[error("{0}")]
    Forbidden(String),
    /// HTTP 503: too many open-data reads at once.
    #[error("{0}")]
    Busy(String),
    /// HTTP 500: the warehouse failed (logged).
    #[error("{0}")]
    Internal(String),
}

impl CkanError {
    pub fn invalid(param: &str, message: impl Into<String>) -> CkanError {
        CkanError::Validation(BTreeMap::from([(param.to_string(), vec![message.into()])]))
    }

    pub fn http_status(&self) -> u16 {
        match self {
            CkanError::NotFound(_) => 404,
            CkanError::Validation(_) => 409,
            CkanError::Forbidden(_) => 403,
            CkanError::Busy(_) => 503,
            CkanError::Internal(_) => 500,
        }
    }

    /// The `error` object of the envelope.
    pub fn body(&self) -> Value {
        match self {
            CkanError::NotFound(what) => json!({"__type": "Not Found Error", "message": format!("Not found: {what}")}),
            CkanError::Validation(fields) => {
                let mut obj = serde_json::Map::new();
                obj.insert("__type".into(), Value::from("Validation Error"));
                for (k, v) in fields {
                    obj.insert(k.clone(), json!(v));
                }
                Value::Object(obj)
            }
            CkanError::Busy(m) => json!({"__type": "Service Unavailable", "message": m}),
            CkanError::Forbidden(m) => json!({"__type": "Authorization Error", "message": m}),
            CkanError::Internal(m) => json!({"__type": "Internal Server Error", "message": m}),
        }
    }
}

/// `{help, success: true, result}`.
pub fn success(help: &str, result: Value) -> Value {
    json!({"help": help, "success": true, "result": result})
}

/// `{help, success: false, error}`.
pub fn failure(help: &str, error: &CkanError) -> Value {
    json!({"help": help, "success": false, "error": error.body()})
}

/// The `help` URL CKAN puts in every response.
pub fn help_url(base: &str, action: &str) -> String {
    format!("{base}/api/3/action/help_show?name={action}")
}

/// A request's parameters by name, from the query string or a JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub BTreeMap<String, String>);

impl Params {
    /// Refuses any parameter not in `allowed`, naming each (CKAN: "The input field … was not
    /// expected.").
    pub fn only(&self, allowed: &[&str]) -> Result<(), CkanError> {
        let unknown: BTreeMap<String, Vec<String>> = self
            .0
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| (k.clone(), vec![format!("The input field {k} was not expected.")]))
            .collect();
        if unknown.is_empty() { Ok(()) } else { Err(CkanError::Validation(unknown)) }
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, CkanError> {
        self.text(name).filter(|v| !v.is_empty()).ok_or_else(|| CkanError::invalid(name, "Missing value"))
    }

    /// A non-negative integer parameter, `default` when absent.
    pub fn count(&self, name: &str, default: u64) -> Result<u64, CkanError> {
        match self.text(name) {
            None | Some("") => Ok(default),
            Some(v) => v.trim().parse::<u64>().map_err(|_| CkanError::invalid(name, "Must be a natural number")),
        }
    }

    /// Builds parameters from a JSON object body (strings, numbers and booleans as their text).
    pub fn from_json(body: &[u8]) -> Result<Params, CkanError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params::default());
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| CkanError::invalid("__body", format!("request body is not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(CkanError::invalid("__body", "request body must be a JSON object"));
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => continue,
                other => return Err(CkanError::invalid(&k, format!("must be a string or number, not {other}"))),
            };
            out.insert(k, text);
        }
        Ok(Params(out))
    }
}

/// DCAT `accrualPeriodicity` (EU Publications Office frequency vocabulary) for a cadence.
pub fn accrual_periodicity(cadence: &Cadence) -> String {
    let code = match cadence {
        Cadence::Daily => "DAILY",
        Cadence::Weekly => "WEEKLY",
        Cadence::Monthly => "MONTHLY",
        Cadence::Quarterly => "QUARTERLY",
        Cadence::Yearly => "ANNUAL",
        Cadence::Every(d) => match d.as_secs() {
            3_600 => "HOURLY",
            7_200 => "BIHOURLY",
            10_800 => "TRIHOURLY",
            43_200 => "DAILY_2",
            86_400 => "DAILY",
            604_800 => "WEEKLY",
            s if s < 3_600 => "CONT",
            _ => "OTHER",
        },
    };
    format!("http://publications.europa.eu/resource/authority/frequency/{code}")
}

/// CKAN's timestamp form: UTC without offset, microseconds.
pub fn ckan_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The datastore type name of a portable column type.
pub fn datastore_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "bool",
        ColumnType::Int => "int8",
        ColumnType::Float => "float8",
        ColumnType::Decimal => "numeric",
        ColumnType::Text => "text",
        ColumnType::Bytes => "bytea",
        ColumnType::Date => "date",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Json => "json",
    }
}

/// `fields` of a datastore answer or a JSON download.
pub fn fields(columns: &[Column]) -> Value {
    Value::Array(columns.iter().map(|c| json!({"id": c.name, "type": datastore_type(c.ty)})).collect())
}

/// A resource id → its dataset id and format (`ho_so-csv` → `ho_so`, CSV).
pub fn parse_resource_id(id: &str) -> Option<(&str, Format)> {
    if let Some(d) = id.strip_suffix("-csv") {
        Some((d, Format::Csv))
    } else {
        id.strip_suffix("-json").map(|d| (d, Format::Json))
    }
}

/// What a package (CKAN dataset dict) is built from: an open dataset, its department and freshness.
#[derive(Debug, Clone, Copy)]
pub struct PackageInput<'a> {
    pub dataset: &'a Dataset,
    pub department: Option<&'a Department>,
    pub view: Option<&'a DatasetView>,
}

/// The CKAN package dict; `base` is the hub's public URL (downloads are `{base}/opendata/…`).
pub fn package(p: &PackageInput<'_>, base: &str) -> Value {
    let d = p.dataset;
    let last_change = p.view.and_then(|v| v.freshness.as_ref()).and_then(|f| f.max_loaded_at);
    let created = p.view.and_then(|v| v.first_received_at);
    let modified = last_change.map(ckan_time);
    let frequency = accrual_periodicity(&d.cadence);
    let org = p.department.map(|dep| {
        json!({
            "id": dep.code, "name": dep.code, "title": dep.name, "type": "organization",
            "is_organization": true, "state": "active", "description": "", "image_url": ""
        })
    });
    let resources: Vec<Value> = [Format::Csv, Format::Json]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "id": format!("{}-{}", d.id, f.extension()),
                "package_id": d.id,
                "name": format!("{} ({})", d.title, f.extension().to_uppercase()),
                "description": "",
                "format": f.extension().to_uppercase(),
                "mimetype": f.mimetype(),
                "url": format!("{base}/opendata/{}.{}", d.id, f.extension()),
                "url_type": Value::Null,
                "datastore_active": true,
                "state": "active",
                "position": i,
                "created": created.map(ckan_time),
                "last_modified": modified,
            })
        })
        .collect();
    json!({
        "id": d.id,
        "name": d.id,
        "title": d.title,
        "type": "dataset",
        "state": "active",
        "private": false,
        "notes": p.department.map_or_else(|| d.title.clone(), |dep| format!("{} — {}", d.title, dep.name)),
        "license_id": d.licence,
        "license_title": d.licence,
        "owner_org": d.department,
        "organization": org,
        "maintainer": p.department.map(|dep| dep.contact.name.clone()),
        "maintainer_email": p.department.and_then(|dep| dep.contact.email.clone()),
        "metadata_created": created.map(ckan_time),
        "metadata_modified": modified,
        "frequency": frequency,
        "extras": [
            {"key": "accrualPeriodicity", "value": frequency},
            {"key": "frequency", "value": frequency},
        ],
        "tags": [],
        "num_tags": 0,
        "groups": [],
        "resources": resources,
        "num_resources": 2,
    })
}

/// Whether a package matches `package_search`'s `q` (case-insensitive substring of its id,
/// title or department name; empty matches all).
pub fn matches(p: &PackageInput<'_>, q: &str) -> bool {
    let q = q.trim().to_lowercase();
    if q.is_empty() || q == "*:*" {
        return true;
    }
    [Some(p.dataset.id.as_str()), Some(p.dataset.title.as_str()), p.department.map(|d| d.name.as_str())]
        .into_iter()
        .flatten()
        .any(|text| text.to_lowercase().contains(&q))
}

/// The `_links` of a datastore answer.
pub fn links(resource_id: &str, limit: u64, offset: u64) -> Value {
    json!({
        "start": format!("/api/3/action/datastore_search?resource_id={resource_id}&limit={limit}"),
        "next": format!("/api/3/action/datastore_search?resource_id={resource_id}&limit={limit}&offset={}", offset + limit),
    })
}

#[cfg(test)]
mod tests;
