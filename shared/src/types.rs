//! The portable column type set.
//!
//! Every source maps its native column types onto this small set, and every warehouse maps the set
//! onto its own types. Values travel as JSON values whose meaning is fixed by the column type:
//!
//! | type        | JSON value                                             |
//! |-------------|--------------------------------------------------------|
//! | `bool`      | `true` / `false`                                       |
//! | `int`       | integer (i64)                                          |
//! | `float`     | number, or `"NaN"`, `"Infinity"`, `"-Infinity"`        |
//! | `decimal`   | string, exact digits (never rounded through f64)       |
//! | `text`      | string                                                 |
//! | `bytes`     | string, standard base64                                |
//! | `date`      | string `YYYY-MM-DD`                                    |
//! | `timestamp` | string, as the source wrote it (ISO 8601 preferred)    |
//! | `json`      | any JSON value                                         |
//!
//! `null` is valid for every type.

use serde::{Deserialize, Serialize};

/// A column's portable type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Bool,
    Int,
    Float,
    Decimal,
    Text,
    Bytes,
    Date,
    Timestamp,
    Json,
}

impl ColumnType {
    /// Maps an SQL declared type (as SQLite, PostgreSQL or MySQL report it) to the portable set.
    ///
    /// Follows SQLite's affinity rules first (a declared type containing `INT` is an integer, and so
    /// on) and then recognises the common date, time, boolean and decimal spellings. Anything
    /// unrecognised, including an empty declaration (an expression in a query), is `text`: text
    /// can hold every value losslessly.
    pub fn from_sql_decl(decl: &str) -> ColumnType {
        let d = decl.trim().to_ascii_uppercase();
        let base = d.split('(').next().unwrap_or("").trim();
        match base {
            "BOOL" | "BOOLEAN" | "BIT" => return ColumnType::Bool,
            "DATE" => return ColumnType::Date,
            "DATETIME"
            | "TIMESTAMP"
            | "TIMESTAMPTZ"
            | "TIMESTAMP WITH TIME ZONE"
            | "TIMESTAMP WITHOUT TIME ZONE"
            | "DATETIME2"
            | "DATETIMEOFFSET"
            | "SMALLDATETIME" => {
                return ColumnType::Timestamp;
            }
            "JSON" | "JSONB" => return ColumnType::Json,
            "DECIMAL" | "NUMERIC" | "NUMBER" | "MONEY" => return ColumnType::Decimal,
            _ => {}
        }
        if d.contains("INT") {
            ColumnType::Int
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            ColumnType::Text
        } else if d.contains("BLOB") || d.contains("BINARY") || d == "BYTEA" {
            ColumnType::Bytes
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            ColumnType::Float
        } else {
            ColumnType::Text
        }
    }

    /// Name used on the wire and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Bool => "bool",
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Decimal => "decimal",
            ColumnType::Text => "text",
            ColumnType::Bytes => "bytes",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnType::{self, *};

    #[test]
    fn sql_declared_types_map_to_portable_types() {
        let cases = [
            ("INTEGER", Int),
            ("bigint", Int),
            ("TINYINT(1)", Int),
            ("VARCHAR(255)", Text),
            ("nvarchar(max)", Text),
            ("TEXT", Text),
            ("REAL", Float),
            ("double precision", Float),
            ("NUMERIC(18,2)", Decimal),
            ("decimal", Decimal),
            ("DATE", Date),
            ("DATETIME", Timestamp),
            ("timestamp with time zone", Timestamp),
            ("BLOB", Bytes),
            ("bytea", Bytes),
            ("BOOLEAN", Bool),
            ("jsonb", Json),
            ("", Text),
            ("WHATEVER", Text),
        ];
        for (decl, want) in cases {
            assert_eq!(ColumnType::from_sql_decl(decl), want, "declared type {decl:?}");
        }
    }
}
