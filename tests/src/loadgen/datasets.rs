//! The datasets simulated agents send: shapes taken from the demo catalogue (Sơn La's district
//! and commune units report dossiers, medical visits, monitoring readings, vaccinations, budget
//! lines), each with a cadence. Rows are a pure function of `(agent, seq)`, so a resent batch is
//! byte-for-byte the batch first sent and the verifier can recompute what was sent.

use kho_shared::protocol::{Change, Column, DatasetSchema, Op};
use kho_shared::types::ColumnType;
use serde_json::{Map, Value, json};

/// Which datasets the simulated agents write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// Each agent its own datasets (`ho_so_tthc_<agent>`), as in the province, where every dataset
    /// has one owning agent (../shared/demo-catalogue.md). The default.
    #[default]
    Own,
    /// All agents of a shape share one dataset (`ho_so_tthc`): the contention case, where every
    /// batch of those agents updates the same metadata rows.
    Shared,
}

/// The dataset agent `agent` writes with `shape`.
pub fn dataset_name(shape: &Shape, agent: &str, ownership: Ownership) -> String {
    match ownership {
        Ownership::Shared => shape.dataset.to_string(),
        // Dataset names are `[a-z][a-z0-9_]*`; agent ids are `<prefix>-<n>`.
        Ownership::Own => {
            let suffix: String =
                agent.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
            format!("{}_{suffix}", shape.dataset)
        }
    }
}

/// One simulated dataset shape.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub dataset: &'static str,
    /// How often a unit of this kind sends a batch in production (informational; the load
    /// generator compresses it with `--interval`).
    pub cadence: &'static str,
    /// Typical changes per batch in production.
    pub typical_changes: usize,
}

/// The shapes, in the order agents are given them (agent `i` sends `SHAPES[i % len]`).
pub const SHAPES: &[Shape] = &[
    Shape { dataset: "ho_so_tthc", cadence: "every 5 min (one-stop-shop DB)", typical_changes: 40 },
    Shape { dataset: "kham_chua_benh", cadence: "every 15 min (hospital system)", typical_changes: 120 },
    Shape { dataset: "quan_trac_moi_truong", cadence: "every 5 min (station API)", typical_changes: 12 },
    Shape { dataset: "tiem_chung", cadence: "hourly (immunisation API)", typical_changes: 200 },
    Shape { dataset: "thu_chi_ngan_sach", cadence: "daily (budget DB)", typical_changes: 500 },
];

/// The shape agent number `i` sends.
pub fn shape_of(i: usize) -> &'static Shape {
    &SHAPES[i % SHAPES.len()]
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), ty }
}

/// The schema of `dataset` (of `shape`): a text key unique per agent and sequence, then typed
/// business columns.
pub fn schema(shape: &Shape, dataset: &str) -> DatasetSchema {
    let columns = match shape.dataset {
        "ho_so_tthc" => vec![
            col("ma_ho_so", ColumnType::Text),
            col("don_vi", ColumnType::Text),
            col("thu_tuc", ColumnType::Text),
            col("ngay_nhan", ColumnType::Date),
            col("trang_thai", ColumnType::Text),
        ],
        "kham_chua_benh" => vec![
            col("ma_luot", ColumnType::Text),
            col("co_so", ColumnType::Text),
            col("ngay", ColumnType::Date),
            col("so_luot", ColumnType::Int),
            col("bhyt", ColumnType::Bool),
        ],
        "quan_trac_moi_truong" => vec![
            col("ma_do", ColumnType::Text),
            col("tram", ColumnType::Text),
            col("thoi_diem", ColumnType::Timestamp),
            col("pm25", ColumnType::Float),
            col("aqi", ColumnType::Int),
        ],
        "tiem_chung" => vec![
            col("ma_mui", ColumnType::Text),
            col("xa", ColumnType::Text),
            col("vac_xin", ColumnType::Text),
            col("ngay_tiem", ColumnType::Date),
        ],
        _ => vec![
            col("ma_dong", ColumnType::Text),
            col("don_vi", ColumnType::Text),
            col("muc", ColumnType::Text),
            col("so_tien", ColumnType::Decimal),
            col("ky", ColumnType::Date),
        ],
    };
    let key = vec![columns[0].name.clone()];
    DatasetSchema { dataset: dataset.into(), key, columns, privacy: Default::default() }
}

const DISTRICTS: &[&str] = &["Mường La", "Thuận Châu", "Mộc Châu", "Sông Mã", "Yên Châu", "Bắc Yên", "Phù Yên"];

/// The key value of `agent`'s change `seq` (unique per agent and sequence).
pub fn key_of(agent: &str, seq: u64) -> String {
    format!("{agent}:{seq}")
}

/// `agent`'s change number `seq` to `dataset` (of `shape`): an upsert of a new row.
pub fn change(shape: &Shape, dataset: &str, agent: &str, seq: u64) -> Change {
    let district = DISTRICTS[(seq as usize) % DISTRICTS.len()];
    let day = format!("2026-{:02}-{:02}", 1 + seq % 12, 1 + seq % 28);
    let key = key_of(agent, seq);
    let state = ["Đã tiếp nhận", "Đang xử lý", "Đã trả kết quả"][(seq % 3) as usize];
    let row = match shape.dataset {
        "ho_so_tthc" => json!({"ma_ho_so": key, "don_vi": format!("UBND huyện {district}"),
            "thu_tuc": "Cấp giấy khai sinh", "ngay_nhan": day, "trang_thai": state}),
        "kham_chua_benh" => json!({"ma_luot": key, "co_so": format!("Trung tâm Y tế {district}"), "ngay": day,
            "so_luot": 20 + seq % 300, "bhyt": !seq.is_multiple_of(4)}),
        "quan_trac_moi_truong" => json!({"ma_do": key, "tram": format!("Trạm {district}"),
            "thoi_diem": format!("{day}T{:02}:00:00Z", seq % 24), "pm25": 8.5 + (seq % 90) as f64 / 3.0, "aqi": 20 + seq % 150}),
        "tiem_chung" => {
            json!({"ma_mui": key, "xa": format!("Xã {district}"), "vac_xin": "Sởi - Rubella", "ngay_tiem": day})
        }
        _ => json!({"ma_dong": key, "don_vi": format!("Phòng Tài chính {district}"), "muc": "Chi thường xuyên",
            "so_tien": format!("{}.{:02}", 1_000_000 + seq * 137 % 900_000, seq % 100), "ky": day}),
    };
    let row: Map<String, Value> = row.as_object().cloned().unwrap_or_default();
    Change { seq, dataset: dataset.into(), op: Op::Upsert, key: None, row: Some(row) }
}

/// The table column that holds a dataset's key.
pub fn key_column(shape: &Shape) -> String {
    schema(shape, shape.dataset).key[0].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_datasets_are_valid_names_one_per_agent() {
        let shape = shape_of(0);
        let (a, b) = (dataset_name(shape, "lg-00001", Ownership::Own), dataset_name(shape, "lg-00002", Ownership::Own));
        assert_eq!(a, "ho_so_tthc_lg_00001");
        assert_ne!(a, b);
        for name in [&a, &b] {
            kho_shared::ident::check_dataset_name(name).expect("valid dataset name");
        }
        assert_eq!(dataset_name(shape, "lg-00001", Ownership::Shared), "ho_so_tthc");
    }
}
