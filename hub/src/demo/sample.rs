//! A sample Department of Health database: the `ho_so` table of administrative-procedure files
//! ("hồ sơ thủ tục hành chính") that a Sở Y tế receives and processes.
//!
//! The generator is deterministic (fixed seed), so every demo starts from the same data, and the
//! simulated clerk ([`clerk_step`]) changes rows the way a one-stop-shop officer does: moving a
//! file to its next status or receiving a new one, always touching `updated_at` (the agent's
//! cursor column), with millisecond precision.

use std::path::Path;

use jiff::ToSpan;
use rusqlite::{Connection, params};

/// Same seed, same rows: demo output is reproducible.
const SEED: u64 = 0x4b48_4f5f_5359_5445;

/// Procedures of the health sector (lĩnh vực).
const PROCEDURES: &[&str] = &[
    "Cấp giấy phép hoạt động khám bệnh, chữa bệnh",
    "Cấp chứng chỉ hành nghề khám bệnh, chữa bệnh",
    "Cấp giấy chứng nhận đủ điều kiện kinh doanh dược",
    "Cấp chứng chỉ hành nghề dược",
    "Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm",
    "Cấp giấy xác nhận nội dung quảng cáo thực phẩm",
    "Công bố cơ sở đủ điều kiện sản xuất mỹ phẩm",
    "Công bố đủ điều kiện thực hiện khám sức khỏe",
];

/// Units that submit or handle the files (đơn vị).
const UNITS: &[&str] = &[
    "Bệnh viện Đa khoa tỉnh Sơn La",
    "Bệnh viện Phổi tỉnh Sơn La",
    "Bệnh viện Y dược cổ truyền tỉnh Sơn La",
    "Trung tâm Y tế thành phố Sơn La",
    "Trung tâm Y tế huyện Mộc Châu",
    "Trung tâm Y tế huyện Mai Sơn",
    "Trung tâm Y tế huyện Thuận Châu",
    "Trung tâm Y tế huyện Sông Mã",
    "Trung tâm Y tế huyện Yên Châu",
    "Trung tâm Y tế huyện Phù Yên",
    "Trung tâm Y tế huyện Bắc Yên",
    "Trung tâm Y tế huyện Quỳnh Nhai",
    "Phòng khám Đa khoa Hoàng Anh",
    "Nhà thuốc Minh Châu",
];

/// Statuses, in processing order.
pub const STATUSES: &[&str] = &["Đã tiếp nhận", "Đang xử lý", "Đã trả kết quả", "Quá hạn"];

const NOTES: &[&str] = &[
    "Hồ sơ nộp trực tuyến qua Cổng Dịch vụ công quốc gia",
    "Bổ sung bản sao văn bằng chuyên môn",
    "Chờ thẩm định thực tế tại cơ sở",
    "Đã thu phí thẩm định",
    "Trả kết quả qua dịch vụ bưu chính công ích",
];

const FEES: &[&str] = &["0", "500000", "1000000", "1500000", "2500000.50", "3000000"];

/// The sample table's DDL.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS ho_so (
    id INTEGER PRIMARY KEY,
    ma_ho_so TEXT NOT NULL,
    linh_vuc TEXT NOT NULL,
    don_vi TEXT NOT NULL,
    trang_thai TEXT NOT NULL,
    ngay_nhan DATE NOT NULL,
    ngay_hen_tra DATE NOT NULL,
    so_tien NUMERIC,
    ghi_chu TEXT,
    updated_at TEXT NOT NULL
)";

/// Creates `path` with `rows` deterministic rows (the file must not exist yet).
pub fn generate(path: &Path, rows: u64) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    conn.execute_batch(CREATE_TABLE)?;
    let mut rng = fastrand::Rng::with_seed(SEED);
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO ho_so (id, ma_ho_so, linh_vuc, don_vi, trang_thai, ngay_nhan, ngay_hen_tra, so_tien, ghi_chu, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for id in 1..=rows {
            let r = row(&mut rng, id as i64);
            stmt.execute(params![
                id as i64,
                r.code,
                r.procedure,
                r.unit,
                r.status,
                r.received,
                r.due,
                r.fee,
                r.note,
                r.updated_at
            ])?;
        }
    }
    tx.commit()
}

struct SampleRow {
    code: String,
    procedure: &'static str,
    unit: &'static str,
    status: &'static str,
    received: String,
    due: String,
    fee: &'static str,
    note: Option<&'static str>,
    updated_at: String,
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

fn row(rng: &mut fastrand::Rng, id: i64) -> SampleRow {
    let base = jiff::civil::date(2024, 1, 1);
    let received = base.checked_add(rng.i64(0..540).days()).unwrap_or(base);
    let due = received.checked_add(rng.i64(5..31).days()).unwrap_or(received);
    let status = match rng.u8(0..100) {
        0..25 => STATUSES[0],
        25..55 => STATUSES[1],
        55..92 => STATUSES[2],
        _ => STATUSES[3],
    };
    let updated = received
        .at(rng.i8(7..17), rng.i8(0..60), rng.i8(0..60), i32::from(rng.u16(0..1000)) * 1_000_000)
        .checked_add(rng.i64(0..72).hours())
        .unwrap_or_else(|_| received.at(8, 0, 0, 0));
    SampleRow {
        code: format!("000.00.17.H52-{}-{:04}", received.strftime("%y%m%d"), id % 10_000),
        procedure: pick(rng, PROCEDURES),
        unit: pick(rng, UNITS),
        status,
        received: received.to_string(),
        due: due.to_string(),
        fee: pick(rng, FEES),
        note: if rng.bool() { Some(pick(rng, NOTES)) } else { None },
        updated_at: format!("{}Z", updated.strftime("%Y-%m-%dT%H:%M:%S%.3f")),
    }
}

/// What the simulated clerk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClerkAction {
    Updated { id: i64, status: &'static str },
    Received { id: i64 },
}

/// One clerk action on the sample database: usually moves an open file to its next status,
/// sometimes receives a new file.
pub fn clerk_step(conn: &Connection, rng: &mut fastrand::Rng) -> rusqlite::Result<ClerkAction> {
    let now = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";
    let max_id: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM ho_so", [], |r| r.get(0))?;
    if max_id > 0 && rng.u8(0..100) < 70 {
        let id = rng.i64(1..=max_id);
        let status = pick(rng, &STATUSES[1..3]);
        conn.execute(
            &format!("UPDATE ho_so SET trang_thai = ?1, updated_at = {now} WHERE id = ?2"),
            params![status, id],
        )?;
        return Ok(ClerkAction::Updated { id, status });
    }
    let id = max_id + 1;
    let r = row(rng, id);
    let today = jiff::Zoned::now().date();
    conn.execute(
        &format!(
            "INSERT INTO ho_so (id, ma_ho_so, linh_vuc, don_vi, trang_thai, ngay_nhan, ngay_hen_tra, so_tien, ghi_chu, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {now})"
        ),
        params![id, r.code, r.procedure, r.unit, STATUSES[0], today.to_string(), today.checked_add(15.days()).unwrap_or(today).to_string(), r.fee, r.note],
    )?;
    Ok(ClerkAction::Received { id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_deterministic_and_realistic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.sqlite"), dir.path().join("b.sqlite"));
        generate(&a, 200).expect("a");
        generate(&b, 200).expect("b");
        let dump = |p: &Path| -> Vec<(i64, String, String)> {
            let c = Connection::open(p).expect("open");
            let mut s = c.prepare("SELECT id, ma_ho_so, updated_at FROM ho_so ORDER BY id").expect("prepare");
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        let rows = dump(&a);
        assert_eq!(rows, dump(&b));
        assert_eq!(rows.len(), 200);
        assert!(rows[0].2.ends_with('Z') && rows[0].2.len() == 24, "{}", rows[0].2);
        let conn = Connection::open(&a).expect("open");
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..10 {
            clerk_step(&conn, &mut rng).expect("clerk");
        }
    }
}
