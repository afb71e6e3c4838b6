//! A generated department database: the Department of Health's administrative dossiers (`ho_so`)
//! and its list of units (`don_vi`), with Vietnamese text, in a SQLite file the agent reads.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

const LINH_VUC: &[&str] = &[
    "Cấp giấy phép hoạt động khám bệnh, chữa bệnh",
    "Cấp chứng chỉ hành nghề dược",
    "Công bố cơ sở đủ điều kiện sản xuất mỹ phẩm",
    "Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm",
    "Khám sức khoẻ định kỳ cho người lái xe",
];
const DON_VI: &[&str] = &[
    "Bệnh viện Đa khoa tỉnh Sơn La",
    "Trung tâm Y tế huyện Mộc Châu",
    "Trung tâm Y tế thành phố Sơn La",
    "Trung tâm Y tế huyện Mường La",
    "Chi cục An toàn vệ sinh thực phẩm",
];
const TRANG_THAI: &[&str] = &["Đã tiếp nhận", "Đang xử lý", "Đã trả kết quả", "Quá hạn"];

/// The `updated_at` value for logical clock tick `tick`: one millisecond per tick from
/// 2026-01-01T00:00:00.000Z, so later writes always sort after earlier ones.
fn stamp(tick: u64) -> String {
    let ms = tick;
    let secs = ms / 1000;
    format!(
        "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        1 + secs / (86_400 * 28),
        1 + (secs / 86_400) % 28,
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}

/// The sample source database.
pub struct SourceDb {
    pub path: PathBuf,
    conn: Connection,
    clock: u64,
}

impl SourceDb {
    /// Creates `path` with `rows` dossiers and five units.
    pub fn create(path: &Path, rows: u64) -> rusqlite::Result<SourceDb> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE ho_so (
                id INTEGER PRIMARY KEY, ma_ho_so TEXT NOT NULL, linh_vuc TEXT, don_vi TEXT,
                trang_thai TEXT, ngay_nhan DATE, ngay_hen_tra DATE, so_tien NUMERIC, ghi_chu TEXT,
                updated_at TEXT NOT NULL);
             CREATE INDEX ho_so_updated_at ON ho_so(updated_at);
             CREATE TABLE don_vi (ma TEXT PRIMARY KEY, ten TEXT NOT NULL, huyen TEXT);",
        )?;
        for (i, ten) in DON_VI.iter().enumerate() {
            conn.execute("INSERT INTO don_vi VALUES (?1, ?2, ?3)", params![format!("DV{i:02}"), ten, "Sơn La"])?;
        }
        let mut db = SourceDb { path: path.to_path_buf(), conn, clock: 0 };
        db.insert_range(1, rows)?;
        Ok(db)
    }

    /// A strictly increasing ISO timestamp with milliseconds, so cursor mode sees every write.
    fn next_ts(&mut self) -> String {
        self.clock += 1;
        stamp(self.clock)
    }

    /// Inserts dossiers with ids `from..=to` in one transaction.
    pub fn insert_range(&mut self, from: u64, to: u64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO ho_so (id, ma_ho_so, linh_vuc, don_vi, trang_thai, ngay_nhan, ngay_hen_tra, so_tien, ghi_chu, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for id in from..=to {
                self.clock += 1;
                let ts = stamp(self.clock);
                let i = id as usize;
                stmt.execute(params![
                    id as i64,
                    format!("000.00.{:02}.H52-260101-{id:07}", i % 17),
                    LINH_VUC[i % LINH_VUC.len()],
                    DON_VI[(i / 3) % DON_VI.len()],
                    TRANG_THAI[(i / 7) % TRANG_THAI.len()],
                    format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
                    format!("2026-{:02}-{:02}", 1 + (i + 1) % 12, 1 + (i + 9) % 28),
                    ((i % 500) * 10_000) as i64,
                    format!("Hồ sơ số {id} — công dân nộp trực tuyến, đã kiểm tra đủ thành phần “hợp lệ”"),
                    ts,
                ])?;
            }
        }
        tx.commit()
    }

    /// Changes the status of dossiers `ids` and bumps their `updated_at`.
    pub fn update(&mut self, ids: impl IntoIterator<Item = u64>, trang_thai: &str) -> rusqlite::Result<()> {
        let ids: Vec<u64> = ids.into_iter().collect();
        let stamps: Vec<String> = ids.iter().map(|_| self.next_ts()).collect();
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("UPDATE ho_so SET trang_thai = ?1, updated_at = ?2 WHERE id = ?3")?;
            for (id, ts) in ids.iter().zip(stamps) {
                stmt.execute(params![trang_thai, ts, *id as i64])?;
            }
        }
        tx.commit()
    }

    /// Hard-deletes dossiers `ids` (only snapshot mode can see this).
    pub fn delete(&mut self, ids: impl IntoIterator<Item = u64>) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM ho_so WHERE id = ?1")?;
            for id in ids {
                stmt.execute(params![id as i64])?;
            }
        }
        tx.commit()
    }

    /// Runs arbitrary SQL against the source (tests that need a special shape).
    pub fn execute(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.execute_batch(sql)
    }

    /// Number of dossiers.
    pub fn count(&self) -> rusqlite::Result<u64> {
        self.conn.query_row("SELECT count(*) FROM ho_so", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
    }
}
