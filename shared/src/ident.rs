//! Names that become warehouse identifiers.
//!
//! Dataset names become table names and column names become column names in the hub's
//! warehouse, so both are restricted to a conservative alphabet here, on both ends of the wire.
//! Warehouses still quote every identifier; this rule is the second wall, and it also keeps
//! names portable between SQLite and PostgreSQL (which folds unquoted names to lower case).

/// Longest accepted dataset or column name (PostgreSQL truncates identifiers at 63 bytes).
pub const MAX_IDENT_LEN: usize = 63;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("name is empty")]
    Empty,
    #[error("name {0:?} is longer than {MAX_IDENT_LEN} bytes")]
    TooLong(String),
    #[error("name {0:?} must start with a lowercase letter and contain only a-z, 0-9 and _")]
    BadChar(String),
    #[error("name {0:?} contains a control character")]
    Control(String),
    #[error("name {0:?} starts with _kho_, which is reserved for Kho's own columns")]
    Reserved(String),
}

/// Checks a dataset name: `[a-z][a-z0-9_]*`, at most [`MAX_IDENT_LEN`] bytes.
pub fn check_dataset_name(name: &str) -> Result<(), IdentError> {
    check(name)
}

/// Checks a column name: not empty, at most [`MAX_IDENT_LEN`] bytes, no control characters
/// (NUL cannot be stored in any catalogue), and not starting with the reserved `_kho_`.
///
/// Unlike dataset names, column names are otherwise free: sources name columns `Họ tên`,
/// `Số CMND/CCCD` or worse, and refusing them would stall a department's whole outbox. Every
/// warehouse quotes them (the hub's `warehouse::quote_ident`), so quotes and semicolons are data.
pub fn check_column_name(name: &str) -> Result<(), IdentError> {
    if name.is_empty() {
        return Err(IdentError::Empty);
    }
    if name.len() > MAX_IDENT_LEN {
        return Err(IdentError::TooLong(name.to_string()));
    }
    if name.to_lowercase().starts_with("_kho_") {
        return Err(IdentError::Reserved(name.to_string()));
    }
    if name.chars().any(char::is_control) {
        return Err(IdentError::Control(name.to_string()));
    }
    Ok(())
}

fn check(name: &str) -> Result<(), IdentError> {
    if name.is_empty() {
        return Err(IdentError::Empty);
    }
    if name.len() > MAX_IDENT_LEN {
        return Err(IdentError::TooLong(name.to_string()));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(IdentError::BadChar(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names() {
        assert!(check_dataset_name("ho_so_tthc").is_ok());
        assert!(check_dataset_name("a1").is_ok());
        for bad in ["", "Ho_so", "1abc", "ho-so", "ho so", "x\"; drop table y; --", "hồ_sơ"] {
            assert!(check_dataset_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(check_dataset_name(&"a".repeat(64)), Err(IdentError::TooLong(_))));
    }

    #[test]
    fn column_names() {
        assert!(check_column_name("updated_at").is_ok());
        assert!(check_column_name("MaHoSo").is_ok());
        assert!(check_column_name("_rowid").is_ok());
        assert!(matches!(check_column_name("_kho_seq"), Err(IdentError::Reserved(_))));
        assert!(matches!(check_column_name("_KHO_seq"), Err(IdentError::Reserved(_))));
        for hostile in ["a\"b", "9x", "Họ tên", "x\"; DROP TABLE y; --", "số_tiền (đồng)"] {
            assert!(check_column_name(hostile).is_ok(), "{hostile:?} refused; warehouses quote it");
        }
        assert!(matches!(check_column_name("a\0b"), Err(IdentError::Control(_))));
        assert!(matches!(check_column_name("a\nb"), Err(IdentError::Control(_))));
    }
}
