//! Source benchmark: a 1,000,000-row department table (9 columns, Vietnamese text, numeric,
//! date, timestamp) on the local PostgreSQL and MariaDB servers, synced by a real `kho-agent`
//! into a real `kho-hub` (SQLite warehouse), in snapshot mode:
//!
//! 1. initial sync (every row is new): wall time until the hub's ledger holds every change;
//! 2. a snapshot-diff pass after 1 % of the rows changed: wall time from the update's commit until
//!    the hub holds those changes (the agent reads all rows again and hashes them);
//!
//! each against the baseline of the server's own client dumping the same table to /dev/null
//! (`psql \copy … TO '/dev/null'`, `mariadb --quick -e 'SELECT …'`): the fastest the rows can
//! leave the server, with no change detection, network protocol to a hub or warehouse write.
//! Prints rows/s, the ratios and the agent's and hub's peak RSS. Run it with
//! `tests/bench-sources.sh` (release build).

use std::process::Command;
use std::time::{Duration, Instant};

use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, rss_kib, wait_for};
use kho_tests::remote::{Kind, RemoteDb};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: i64 = arg(&args, "--rows").map_or(Ok(1_000_000), |v| v.parse())?;
    let kinds = match arg(&args, "--source").unwrap_or("both") {
        "postgres" => vec![Kind::Postgres],
        "mysql" | "mariadb" => vec![Kind::Mysql],
        "both" => vec![Kind::Postgres, Kind::Mysql],
        other => anyhow::bail!("--source {other}: expected postgres, mysql or both"),
    };
    for kind in kinds {
        bench(kind, rows)?;
    }
    Ok(())
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn bench(kind: Kind, rows: i64) -> anyhow::Result<()> {
    let name = match kind {
        Kind::Postgres => "PostgreSQL",
        Kind::Mysql => "MariaDB",
    };
    let mut db = RemoteDb::create(kind);
    let t = Instant::now();
    fill(&mut db, rows);
    println!("\n== {name}: {rows} rows in {} (generated in {:.1} s)", db.table, t.elapsed().as_secs_f64());

    let baseline = dump_to_null(&db)?;
    println!("baseline  {name} client dump to /dev/null: {baseline:.2} s ({:.0} rows/s)", rows as f64 / baseline);

    let keep = tempfile::Builder::new().prefix("kho-bench-src-").tempdir()?;
    let dir = keep.path();
    let spec = AgentSpec { id: "bench".into(), token: "bench-token".into(), datasets: vec!["ho_so".into()] };
    let hub = HubProc::start(&dir.join("hub"), std::slice::from_ref(&spec));
    let source = match kind {
        Kind::Postgres => format!("kind = \"postgres\"\nurl = \"{}\"\n", db.url),
        Kind::Mysql => format!("kind = \"mysql\"\nurl = \"{}\"\n", db.url),
    };
    let opts = AgentOptions { poll_interval: "1s", ..AgentOptions::default() };
    let ds = DatasetSpec { name: "ho_so".into(), table: db.table.clone(), key: vec!["id".into()], cursor: None };
    let t = Instant::now();
    let agent =
        AgentProc::start_with(&dir.join("agent"), &spec, &hub.url(), &hub.ca_path(), &ds.toml(&source, &opts), &opts);
    let (hub_pid, agent_pid) = (hub.pid().unwrap_or(0), agent.pid().unwrap_or(0));
    let mut peak = (0u64, 0u64);
    let sample = |peak: &mut (u64, u64)| {
        if let (Some(h), Some(a)) = (rss_kib(hub_pid), rss_kib(agent_pid)) {
            *peak = (peak.0.max(h.1), peak.1.max(a.1));
        }
    };
    let target = rows as u64;
    wait_for(
        Duration::from_secs(1_800),
        "the initial sync",
        || agent.log_tail(),
        || {
            sample(&mut peak);
            hub.ledger("bench") >= target
        },
    );
    let initial = t.elapsed().as_secs_f64();
    println!(
        "kho       initial sync (snapshot mode):  {initial:.2} s ({:.0} rows/s) = {:.1}x the baseline time",
        rows as f64 / initial,
        initial / baseline
    );

    // 1 % of the rows change; the next pass reads everything and finds exactly those.
    let changed = rows / 100;
    let t = Instant::now();
    db.exec("UPDATE {t} SET trang_thai = 'Đã trả kết quả (bench)' WHERE id % 100 = 7");
    let target = target + changed as u64;
    wait_for(
        Duration::from_secs(1_800),
        "the 1 % diff pass",
        || agent.log_tail(),
        || {
            sample(&mut peak);
            hub.ledger("bench") >= target
        },
    );
    let diff = t.elapsed().as_secs_f64();
    println!(
        "kho       1 % changed, snapshot diff:   {diff:.2} s ({:.0} rows read/s, {changed} changes) = {:.1}x the baseline time",
        rows as f64 / diff,
        diff / baseline
    );
    println!("peak RSS  agent {:.1} MiB, hub {:.1} MiB", peak.1 as f64 / 1024.0, peak.0 as f64 / 1024.0);
    Ok(())
}

/// Replaces the harness's small table with a realistic 9-column one, filled on the server.
fn fill(db: &mut RemoteDb, rows: i64) {
    db.exec("DROP TABLE {t}");
    match db.kind {
        Kind::Postgres => {
            db.exec(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, ma_ho_so text NOT NULL, linh_vuc text, don_vi text, \
                 trang_thai text, ngay_nhan date, so_tien numeric(18,2), ghi_chu text, sua_luc timestamp(6))",
            );
            db.exec(&format!(
                "INSERT INTO {{t}} SELECT g, 'HS-2026-' || lpad(g::text, 8, '0'), \
                 (ARRAY['Cấp giấy phép hoạt động khám bệnh, chữa bệnh','Cấp chứng chỉ hành nghề dược','Khám sức khoẻ định kỳ cho người lái xe'])[1 + g % 3], \
                 (ARRAY['Bệnh viện Đa khoa tỉnh Sơn La','Trung tâm Y tế huyện Mộc Châu','Trung tâm Y tế thành phố Sơn La'])[1 + g % 3], \
                 (ARRAY['Đã tiếp nhận','Đang xử lý','Đã trả kết quả','Quá hạn'])[1 + g % 4], \
                 date '2026-01-01' + (g % 300), (g % 100000) * 1000.50, \
                 'Công dân nộp trực tuyến, hồ sơ số ' || g, timestamp '2026-01-01' + g * interval '1 second' \
                 FROM generate_series(1, {rows}) g"
            ));
            db.exec("ANALYZE {t}");
        }
        Kind::Mysql => {
            db.exec(
                "CREATE TABLE {t} (id BIGINT PRIMARY KEY, ma_ho_so VARCHAR(32) NOT NULL, linh_vuc VARCHAR(200), \
                 don_vi VARCHAR(200), trang_thai VARCHAR(64), ngay_nhan DATE, so_tien DECIMAL(18,2), ghi_chu TEXT, \
                 sua_luc DATETIME(6)) CHARACTER SET utf8mb4",
            );
            // MariaDB's sequence engine generates the ids on the server.
            db.exec(&format!(
                "INSERT INTO {{t}} SELECT seq, CONCAT('HS-2026-', LPAD(seq, 8, '0')), \
                 ELT(1 + seq % 3, 'Cấp giấy phép hoạt động khám bệnh, chữa bệnh','Cấp chứng chỉ hành nghề dược','Khám sức khoẻ định kỳ cho người lái xe'), \
                 ELT(1 + seq % 3, 'Bệnh viện Đa khoa tỉnh Sơn La','Trung tâm Y tế huyện Mộc Châu','Trung tâm Y tế thành phố Sơn La'), \
                 ELT(1 + seq % 4, 'Đã tiếp nhận','Đang xử lý','Đã trả kết quả','Quá hạn'), \
                 DATE_ADD('2026-01-01', INTERVAL seq % 300 DAY), (seq % 100000) * 1000.50, \
                 CONCAT('Công dân nộp trực tuyến, hồ sơ số ', seq), TIMESTAMPADD(SECOND, seq, '2026-01-01') \
                 FROM seq_1_to_{rows}"
            ));
        }
    }
}

/// The server's own client reading the whole table into /dev/null; returns seconds.
fn dump_to_null(db: &RemoteDb) -> anyhow::Result<f64> {
    let t = Instant::now();
    let status = match db.kind {
        Kind::Postgres => Command::new("psql")
            .args([&db.url, "-q", "-c", &format!("\\copy (SELECT * FROM {}) TO '/dev/null'", db.table)])
            .status()?,
        Kind::Mysql => Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "--quick",
                "--batch",
                "test",
                "-e",
                &format!("SELECT * FROM {}", db.table),
            ])
            .stdout(std::process::Stdio::null())
            .status()?,
    };
    anyhow::ensure!(status.success(), "baseline client failed: {status}");
    Ok(t.elapsed().as_secs_f64())
}
