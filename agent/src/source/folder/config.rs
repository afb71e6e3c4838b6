//! `[dataset.source]` of a drop-folder dataset, with validation naming the bad field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kho_shared::types::ColumnType;
use serde::Deserialize;

use crate::source::formats::ValueFormat;

/// Settle time when the config does not say: long enough for an export to finish writing over a
/// network share, short next to a typical export schedule.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);

/// `[dataset.source]` for `kind = "folder"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderSourceConfig {
    pub path: PathBuf,
    pub pattern: String,
    /// XLSX worksheet name; the first sheet when absent.
    #[serde(default)]
    pub sheet: Option<String>,
    /// CSV field delimiter (one ASCII character); `,` when absent.
    #[serde(default)]
    pub delimiter: Option<char>,
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Declared column types (`int`, `decimal`, `float`, `bool`, `date`, `timestamp`, `text`,
    /// `json`), replacing inference for those columns.
    #[serde(default)]
    pub types: BTreeMap<String, ColumnType>,
    /// How declared columns write their values: a date pattern (`"%d/%m/%Y"`), `"excel"` (serial
    /// day numbers), `"vi"` (`1.234.567,89`) or `"en"` (`1,234,567.89`).
    #[serde(default)]
    pub formats: BTreeMap<String, String>,
}

fn default_settle() -> Duration {
    DEFAULT_SETTLE
}

impl FolderSourceConfig {
    /// Problems as `(field, problem)`; `field` prefixes the names.
    pub fn validate(&self, field: &str) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let f = |name: &str| format!("{field}.{name}");
        if self.path.as_os_str().is_empty() {
            p.push((f("path"), "must not be empty".into()));
        }
        if self.pattern.trim().is_empty() || self.pattern.contains('/') || self.pattern.contains('\\') {
            p.push((f("pattern"), "must be a file name pattern such as \"*.csv\" (no directory)".into()));
        } else if Format::of(Path::new(&self.pattern)).is_none() {
            p.push((
                f("pattern"),
                "must end in .csv, .tsv, .txt or .xlsx (the file format is taken from the extension)".into(),
            ));
        }
        if let Some(d) = self.delimiter
            && (!d.is_ascii() || d == '"' || d == '\n' || d == '\r')
        {
            p.push((
                f("delimiter"),
                format!("{d:?} cannot be a delimiter: use one ASCII character such as ',' ';' or '\\t'"),
            ));
        }
        if self.sheet.is_some() && Format::of(Path::new(&self.pattern)) != Some(Format::Xlsx) {
            p.push((f("sheet"), "only for .xlsx patterns".into()));
        }
        if let Some((col, _)) = self.types.iter().find(|(_, t)| **t == ColumnType::Bytes) {
            p.push((f(&format!("types.{col}")), "bytes cannot be read from a text file; use text".into()));
        }
        for (col, spec) in &self.formats {
            if let Err(e) = ValueFormat::parse(spec, self.types.get(col).copied()) {
                p.push((f(&format!("formats.{col}")), e));
            }
        }
        p
    }
}

/// A file format, from the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" | "txt" => Some(Format::Csv),
            "xlsx" | "xlsm" => Some(Format::Xlsx),
            _ => None,
        }
    }
}
