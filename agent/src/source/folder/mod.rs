//! A drop folder of CSV or XLSX files as a source.
//!
//! A department's application exports a file into a folder on a schedule; the agent reads each
//! new or changed file. Config: `path`, `pattern` (`*.csv`, `ho_so_*.xlsx`; `*` and `?`), `sheet`
//! (XLSX; first sheet by default), `delimiter` (CSV; `,` by default), `settle`, `types`
//! (declared column types, replacing inference for those columns) and `formats` (how a declared
//! column's dates or numbers are written: `%d/%m/%Y`, `excel`, `vi`; see [`super::formats`]).
//! Text is decoded with the dataset's `[dataset.text]` encodings (CSV bytes as bytes, XLSX strings
//! as Unicode that Excel may have read from a legacy font) and normalised to NFC ([`super::text`]).
//!
//! Invariants:
//! - **Half-written files are never read.** Temporary names (`~$*`, `*.tmp`, `*.part`,
//!   `*.crdownload`, dotfiles) are ignored, and capture reads a file only after its size and
//!   modification time were seen unchanged for `settle` (observed across polls; `check`, which has
//!   no history, uses the modification time's age). After reading, size and mtime are checked
//!   again; a file that changed meanwhile is not marked processed and is read again.
//! - **A file is applied whole or not at all.** Before any row is emitted the whole file is
//!   validated ([`FolderSource::discover`]): header (non-empty, unique names, declared key
//!   present), text encoding (UTF-8 unless declared otherwise; a BOM is accepted and dropped),
//!   field count of every line, every value
//!   against its column type, and the key of every row (no NULL, no duplicate). The first problem
//!   refuses the file with an error naming dataset, file and line; the refusal is remembered by
//!   the file's sha256 and reported on every poll until the file changes (new hash) or is removed.
//!   Other datasets are unaffected.
//! - **Processed files are remembered by content sha256** in the outbox (`source_files`), written
//!   in the same transaction as the file's last chunk of changes, so a file is never applied twice
//!   (a copy dropped again under another name too) and a crash mid-file re-reads it.
//! - **Text is kept exactly**: fields are decoded from their declared encoding and normalised to
//!   NFC (unless `nfc = false`), nothing else; an empty field is NULL (CSV cannot tell an empty
//!   string from a missing value).
//!
//! Detection modes:
//! - `snapshot`: the newest settled file is the dataset's full current state. Its rows are diffed
//!   against the stored row hashes; rows missing from it become deletes. Older unprocessed files
//!   are superseded and skipped; a newest file older than the last applied one is ignored.
//! - `cursor`: each file holds new or changed rows; every row of every new file is upserted, files
//!   in modification-time order (then name). No cursor column is used (a file is the unit of
//!   progress). Deletes cannot be expressed. A refused file stops the dataset at that file, so
//!   later files are never applied before it; fix or remove it.
//!
//! Memory: CSV is streamed (twice: validation, then capture) and the duplicate-key check keeps
//! 16 bytes per row; an XLSX sheet is loaded whole by `calamine` (department exports are small),
//! so prefer CSV for very large exports.

mod config;
mod files;

pub use config::*;
pub use files::*;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use calamine::{Data, Reader};
use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;
use sha2::{Digest, Sha256};

use super::formats::{self, ValueFormat};
use super::row::RowBuf;
use super::text::{self, Encoding, Origin, TextConfig};
use super::values::{self, Class, Infer};
use super::{RowView, ScanRange, Source, SourceError};

/// One file of a drop folder, validated by `discover` and then streamed by `scan`.
pub struct FolderSource {
    dataset: String,
    path: PathBuf,
    format: Format,
    delimiter: u8,
    sheet: Option<String>,
    declared: BTreeMap<String, ColumnType>,
    formats: BTreeMap<String, ValueFormat>,
    text: TextConfig,
    /// How each column is read, from the header (`discover`).
    specs: Vec<ColumnSpec>,
    /// Size and mtime when opened, to notice a file changing while it is read.
    stamp: (u64, SystemTime),
    /// The loaded worksheet (XLSX only), from `discover`.
    sheet_data: Option<calamine::Range<Data>>,
    row: RowBuf,
}

impl FolderSource {
    /// Opens `path` (a file of the folder `config` describes), decoding text as `text` says.
    pub fn open(
        dataset: &str,
        config: &FolderSourceConfig,
        text: &TextConfig,
        path: &Path,
    ) -> Result<FolderSource, SourceError> {
        let meta = std::fs::metadata(path).map_err(|source| SourceError::Io {
            dataset: dataset.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        let format = Format::of(path).ok_or_else(|| SourceError::File {
            dataset: dataset.to_string(),
            path: path.to_path_buf(),
            problem: "unknown extension (expected .csv, .tsv, .txt or .xlsx)".into(),
        })?;
        let tsv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
        let delimiter = config.delimiter.map(|c| c as u8).unwrap_or(if tsv { b'\t' } else { b',' });
        Ok(FolderSource {
            dataset: dataset.to_string(),
            path: path.to_path_buf(),
            format,
            delimiter,
            sheet: config.sheet.clone(),
            declared: config.types.clone(),
            // The config was validated: a format that does not parse cannot occur.
            formats: config
                .formats
                .iter()
                .filter_map(|(c, f)| Some((c.clone(), ValueFormat::parse(f, config.types.get(c).copied()).ok()?)))
                .collect(),
            text: text.clone(),
            specs: Vec::new(),
            stamp,
            sheet_data: None,
            row: RowBuf::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn refuse(&self, problem: String) -> SourceError {
        SourceError::File { dataset: self.dataset.clone(), path: self.path.clone(), problem }
    }

    fn io(&self, source: std::io::Error) -> SourceError {
        SourceError::Io { dataset: self.dataset.clone(), path: self.path.clone(), source }
    }

    /// Whether the file still has the size and mtime it had when opened.
    pub fn unchanged(&self) -> Result<bool, SourceError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.io(e))?;
        Ok((meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)) == self.stamp)
    }

    fn csv_reader(&self) -> Result<csv::Reader<BufReader<File>>, SourceError> {
        let mut file = BufReader::new(File::open(&self.path).map_err(|e| self.io(e))?);
        // Drop a UTF-8 byte order mark; otherwise start again from the first byte.
        let mut bom = [0u8; 3];
        let n = read_up_to(&mut file, &mut bom).map_err(|e| self.io(e))?;
        if !(n == 3 && bom == [0xEF, 0xBB, 0xBF]) {
            file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        }
        Ok(csv::ReaderBuilder::new().delimiter(self.delimiter).has_headers(false).flexible(true).from_reader(file))
    }

    /// Header names, checked: non-empty, unique, trimmed.
    fn header(&self, fields: Vec<String>) -> Result<Vec<String>, SourceError> {
        let mut names: Vec<String> = Vec::with_capacity(fields.len());
        for (i, f) in fields.into_iter().enumerate() {
            let name = f.trim().to_string();
            if name.is_empty() {
                return Err(self.refuse(format!("line 1 (header): column {} has no name", i + 1)));
            }
            if names.contains(&name) {
                return Err(self.refuse(format!("line 1 (header): column name {name:?} appears twice")));
            }
            names.push(name);
        }
        if names.is_empty() {
            return Err(self.refuse("the file is empty (no header row)".into()));
        }
        Ok(names)
    }

    /// Validates the whole file and returns its columns. `key` positions are checked for NULL and
    /// duplicates; declared types are checked value by value.
    fn validate(&mut self, key: &[String]) -> Result<Vec<Column>, SourceError> {
        match self.format {
            Format::Csv => self.validate_csv(key),
            Format::Xlsx => self.validate_xlsx(key),
        }
    }

    fn check_key_columns(&self, names: &[String], key: &[String]) -> Result<Vec<usize>, SourceError> {
        key.iter()
            .map(|k| {
                names.iter().position(|n| n == k).ok_or_else(|| SourceError::MissingColumn {
                    dataset: self.dataset.clone(),
                    role: "key",
                    column: k.clone(),
                    available: names.join(", "),
                })
            })
            .collect()
    }

    /// How each named column is read: its encoding, declared type and format.
    fn column_specs(&self, names: &[String]) -> Vec<ColumnSpec> {
        names
            .iter()
            .map(|n| ColumnSpec {
                encoding: self.text.encoding_of(n),
                declared: self.declared.get(n).copied(),
                format: self.formats.get(n).cloned(),
            })
            .collect()
    }

    fn validate_csv(&mut self, key: &[String]) -> Result<Vec<Column>, SourceError> {
        let mut rdr = self.csv_reader()?;
        let mut rec = csv::ByteRecord::new();
        let has = rdr.read_byte_record(&mut rec).map_err(|e| self.csv_err(e))?;
        if !has {
            return Err(self.refuse("the file is empty (no header row)".into()));
        }
        let mut fields = Vec::with_capacity(rec.len());
        for f in rec.iter() {
            let name = text::convert(self.text.encoding, Origin::Bytes, self.text.nfc, f)
                .map_err(|_| self.refuse(not_utf8(1, None, f)))?;
            fields.push(name.into_owned());
        }
        let names = self.header(fields)?;
        let key_idx = self.check_key_columns(&names, key)?;
        let specs = self.column_specs(&names);
        let declared: Vec<Option<ColumnType>> = specs.iter().map(|c| c.declared).collect();
        let mut infer = vec![Infer::default(); names.len()];
        let mut keys = KeySet::default();
        let mut scratch = RowBuf::default();
        let mut key_vals: Vec<String> = vec![String::new(); key_idx.len()];
        let mut line = 1u64;
        while rdr.read_byte_record(&mut rec).map_err(|e| self.csv_err(e))? {
            line = rec.position().map_or(line + 1, |p| p.line());
            if rec.len() == 1 && rec.get(0).is_some_and(<[u8]>::is_empty) {
                continue; // a blank line
            }
            if rec.len() != names.len() {
                return Err(self.refuse(format!("line {line}: {} fields, the header has {}", rec.len(), names.len())));
            }
            key_vals.iter_mut().for_each(String::clear);
            for (i, f) in rec.iter().enumerate() {
                let s = text::convert(specs[i].encoding, Origin::Bytes, self.text.nfc, f)
                    .map_err(|_| self.refuse(not_utf8(line, Some(&names[i]), f)))?;
                if let Some(k) = key_idx.iter().position(|&k| k == i) {
                    key_vals[k].push_str(&s);
                }
                if s.is_empty() {
                    continue;
                }
                match declared[i] {
                    Some(ty) => {
                        scratch.clear();
                        specs[i]
                            .push(&mut scratch, ty, &s)
                            .map_err(|e| self.refuse(format!("line {line}, column {:?}: {e}", names[i])))?;
                    }
                    None => infer[i].observe(values::classify_text(&s)),
                }
            }
            let refs: Vec<&[u8]> = key_vals.iter().map(String::as_bytes).collect();
            self.check_key(&mut keys, &names, &key_idx, &refs, ("line", line))?;
        }
        self.specs = specs;
        Ok(columns(names, &declared, &infer))
    }

    fn check_key(
        &self,
        keys: &mut KeySet,
        names: &[String],
        key_idx: &[usize],
        vals: &[&[u8]],
        at: (&str, u64),
    ) -> Result<(), SourceError> {
        let (what, n) = at;
        if let Some(i) = vals.iter().position(|v| v.is_empty()) {
            return Err(self.refuse(format!("{what} {n}: key column {:?} is empty", names[key_idx[i]])));
        }
        if !keys.insert(vals) {
            let shown: Vec<String> = vals.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
            return Err(self.refuse(format!("{what} {n}: duplicate key [{}]", shown.join(", "))));
        }
        Ok(())
    }

    fn csv_err(&self, e: csv::Error) -> SourceError {
        let line = e.position().map_or(0, |p| p.line());
        if e.is_io_error() {
            return match e.into_kind() {
                csv::ErrorKind::Io(io) => self.io(io),
                other => self.refuse(format!("line {line}: {other:?}")),
            };
        }
        // Byte records with flexible field counts: what is left is a malformed record.
        self.refuse(format!("line {line}: not a well-formed CSV record ({e})"))
    }

    fn load_sheet(&mut self) -> Result<calamine::Range<Data>, SourceError> {
        let mut wb = calamine::open_workbook_auto(&self.path)
            .map_err(|e| self.refuse(format!("not a readable workbook: {e}")))?;
        let name = match &self.sheet {
            Some(s) => s.clone(),
            None => wb.sheet_names().first().cloned().ok_or_else(|| self.refuse("the workbook has no sheet".into()))?,
        };
        wb.worksheet_range(&name).map_err(|e| self.refuse(format!("sheet {name:?}: {e}")))
    }

    fn validate_xlsx(&mut self, key: &[String]) -> Result<Vec<Column>, SourceError> {
        let range = self.load_sheet()?;
        let mut rows = range.rows();
        let Some(head) = rows.next() else {
            return Err(self.refuse("the sheet is empty (no header row)".into()));
        };
        let enc = self.text.encoding;
        let head: Vec<String> = head
            .iter()
            .map(|c| xlsx_text(c, enc, self.text.nfc).ok().flatten().map(|(s, _)| s).unwrap_or_default())
            .collect();
        // Trailing empty header cells are formatting, not columns.
        let used = head.iter().rposition(|h| !h.trim().is_empty()).map_or(0, |i| i + 1);
        let names = self.header(head[..used].to_vec())?;
        let key_idx = self.check_key_columns(&names, key)?;
        let specs = self.column_specs(&names);
        let declared: Vec<Option<ColumnType>> = specs.iter().map(|c| c.declared).collect();
        let mut infer = vec![Infer::default(); names.len()];
        let mut keys = KeySet::default();
        let mut scratch = RowBuf::default();
        let first_row = range.start().map_or(0, |(r, _)| r) + 1;
        for (n, row) in rows.enumerate() {
            let line = u64::from(first_row) + 1 + n as u64;
            if row.iter().all(|c| matches!(c, Data::Empty)) {
                continue;
            }
            if let Some(extra) = row.iter().skip(names.len()).position(|c| !matches!(c, Data::Empty)) {
                return Err(
                    self.refuse(format!("row {line}: a value in column {} has no header", names.len() + extra + 1))
                );
            }
            let mut key_vals: Vec<Vec<u8>> = Vec::with_capacity(key_idx.len());
            for (i, name) in names.iter().enumerate() {
                let cell = row.get(i).unwrap_or(&Data::Empty);
                let v = xlsx_text(cell, specs[i].encoding, self.text.nfc)
                    .map_err(|e| self.refuse(format!("row {line}, column {name:?}: {e}")))?;
                let Some((s, class)) = v else { continue };
                match declared[i] {
                    Some(ty) => {
                        scratch.clear();
                        specs[i]
                            .push(&mut scratch, ty, &s)
                            .map_err(|e| self.refuse(format!("row {line}, column {name:?}: {e}")))?;
                    }
                    None => infer[i].observe(class),
                }
            }
            for &k in &key_idx {
                let v = xlsx_text(row.get(k).unwrap_or(&Data::Empty), specs[k].encoding, self.text.nfc)
                    .ok()
                    .flatten()
                    .map(|(s, _)| s)
                    .unwrap_or_default();
                key_vals.push(v.into_bytes());
            }
            let refs: Vec<&[u8]> = key_vals.iter().map(Vec::as_slice).collect();
            self.check_key(&mut keys, &names, &key_idx, &refs, ("row", line))?;
        }
        self.sheet_data = Some(range);
        self.specs = specs;
        Ok(columns(names, &declared, &infer))
    }
}

/// The refusal of a field that is not UTF-8, suggesting the legacy encoding it reads as.
fn not_utf8(line: u64, column: Option<&str>, bytes: &[u8]) -> String {
    let at = match column {
        Some(c) => format!("line {line}, column {c:?}"),
        None => format!("line {line}"),
    };
    match text::mojibake::suggest_for_bytes(bytes) {
        Some(enc) => format!(
            "{at}: text is not UTF-8; it reads as Vietnamese in {0} (set encoding = \"{0}\" in [dataset.text], \
             or export the file as \"CSV UTF-8\")",
            enc.as_str()
        ),
        None => format!(
            "{at}: text is not UTF-8 (export the file as \"CSV UTF-8\", or declare its encoding in [dataset.text])"
        ),
    }
}

/// How one column of a file is read.
#[derive(Debug, Clone)]
struct ColumnSpec {
    encoding: Encoding,
    declared: Option<ColumnType>,
    format: Option<ValueFormat>,
}

impl ColumnSpec {
    /// Appends the non-empty (decoded) value `s` as a value of `ty`.
    fn push(&self, out: &mut RowBuf, ty: ColumnType, s: &str) -> Result<(), String> {
        match &self.format {
            Some(f) => formats::push_formatted(out, ty, f, s),
            None => values::push_typed(out, ty, s),
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn columns(names: Vec<String>, declared: &[Option<ColumnType>], infer: &[Infer]) -> Vec<Column> {
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Column { name, ty: declared[i].unwrap_or_else(|| infer[i].column_type()) })
        .collect()
}

/// Keys seen in a file: 16 bytes of the sha256 of each key (collisions are negligible).
#[derive(Default)]
struct KeySet(HashSet<[u8; 16]>);

impl KeySet {
    /// False if the key was seen before.
    fn insert(&mut self, vals: &[&[u8]]) -> bool {
        let mut h = Sha256::new();
        for v in vals {
            h.update((v.len() as u64).to_le_bytes());
            h.update(v);
        }
        let d: [u8; 32] = h.finalize().into();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        self.0.insert(k)
    }
}

/// An XLSX cell as text plus its class; None when empty. Errors for `#N/A`-style error cells.
/// Strings are decoded from `enc` (a legacy font's text that Excel holds as Windows-1252
/// characters) and normalised to NFC when `nfc`.
pub fn xlsx_text(cell: &Data, enc: Encoding, nfc: bool) -> Result<Option<(String, Class)>, String> {
    Ok(Some(match cell {
        Data::Empty => return Ok(None),
        Data::String(s) if s.is_empty() => return Ok(None),
        Data::String(s) => {
            let s = text::convert(enc, Origin::Unicode, nfc, s.as_bytes())
                .map_err(|_| "the cell's text is not valid Unicode".to_string())?
                .into_owned();
            let class = values::classify_text(&s);
            (s, class)
        }
        Data::Int(i) => (i.to_string(), Class::Int),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => (format!("{}", *f as i64), Class::Int),
        // Shortest digits that read back as the stored double: what Excel displays at full precision.
        Data::Float(f) if f.is_finite() => (format!("{f}"), Class::Decimal),
        Data::Float(f) => return Err(format!("{f} is not a finite number")),
        Data::Bool(b) => (b.to_string(), Class::Bool),
        Data::DateTime(dt) => {
            let s =
                values::excel_serial_to_iso(dt.as_f64()).ok_or_else(|| format!("date {} out of range", dt.as_f64()))?;
            let class = if s.len() == 10 { Class::Date } else { Class::Timestamp };
            (s, class)
        }
        Data::DateTimeIso(s) | Data::DurationIso(s) => (s.clone(), values::classify_text(s)),
        Data::Error(e) => return Err(format!("the cell holds an error ({e})")),
    }))
}

impl Source for FolderSource {
    fn discover(&mut self, key: &[String], cursor: Option<&str>) -> Result<DatasetSchema, SourceError> {
        let columns = self.validate(key)?;
        super::check_schema(&self.dataset, columns, key, cursor)
    }

    fn scan(
        &mut self,
        schema: &DatasetSchema,
        _range: ScanRange<'_>,
        visit: &mut dyn FnMut(&dyn RowView) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        // Files were validated whole by `discover`; any failure here means the file changed
        // under us, which is reported as transient I/O (the file is read again next poll).
        let types: Vec<ColumnType> = schema.columns.iter().map(|c| c.ty).collect();
        if self.specs.len() != types.len() {
            let names: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
            self.specs = self.column_specs(&names);
        }
        let specs = std::mem::take(&mut self.specs);
        let nfc = self.text.nfc;
        let (dataset, path) = (self.dataset.clone(), self.path.clone());
        let changed = |e: String| SourceError::Io {
            dataset: dataset.clone(),
            path: path.clone(),
            source: std::io::Error::other(format!("the file changed while it was read: {e}")),
        };
        match self.format {
            Format::Csv => {
                let mut rdr = self.csv_reader()?;
                let mut rec = csv::ByteRecord::new();
                let mut header = true;
                let mut row = std::mem::take(&mut self.row);
                loop {
                    let more = rdr.read_byte_record(&mut rec).map_err(|e| changed(e.to_string()))?;
                    if !more {
                        break;
                    }
                    if std::mem::take(&mut header) || (rec.len() == 1 && rec.get(0).is_some_and(<[u8]>::is_empty)) {
                        continue;
                    }
                    if rec.len() != types.len() {
                        return Err(changed("field count".into()));
                    }
                    row.clear();
                    for (i, f) in rec.iter().enumerate() {
                        if f.is_empty() {
                            row.push_null();
                            continue;
                        }
                        let s = text::convert(specs[i].encoding, Origin::Bytes, nfc, f)
                            .map_err(|_| changed("UTF-8".into()))?;
                        specs[i].push(&mut row, types[i], &s).map_err(changed)?;
                    }
                    if visit(&row).is_break() {
                        break;
                    }
                }
                self.row = row;
            }
            Format::Xlsx => {
                let range = match self.sheet_data.take() {
                    Some(r) => r,
                    None => self.load_sheet()?,
                };
                let mut row = std::mem::take(&mut self.row);
                for cells in range.rows().skip(1) {
                    if cells.iter().all(|c| matches!(c, Data::Empty)) {
                        continue;
                    }
                    row.clear();
                    for (i, ty) in types.iter().enumerate() {
                        match xlsx_text(cells.get(i).unwrap_or(&Data::Empty), specs[i].encoding, nfc)
                            .map_err(changed)?
                        {
                            None => row.push_null(),
                            Some((s, _)) => specs[i].push(&mut row, *ty, &s).map_err(changed)?,
                        }
                    }
                    if visit(&row).is_break() {
                        break;
                    }
                }
                self.row = row;
                self.sheet_data = Some(range);
            }
        }
        self.specs = specs;
        Ok(())
    }

    fn count_null(&mut self, _column: &str) -> Result<u64, SourceError> {
        // Folders have no cursor column (see the module doc).
        Ok(0)
    }

    fn describe(&self) -> Option<String> {
        Some(format!("file {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests;
