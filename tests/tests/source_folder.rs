//! End to end from CSV/XLSX drop folders: the real `kho-agent` reads files dropped into folders
//! (snapshot and cursor mode, CSV and XLSX, a malformed file in a third folder), the real
//! `kho-hub` applies the changes, and the warehouse is compared with the files' content —
//! Vietnamese text byte for byte.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kho_tests::compare::seq_stats;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, HubProc, wait_for};
use kho_tests::warehouse_text_rows;

const CONVERGE: Duration = Duration::from_secs(60);

type Rows = BTreeMap<String, Vec<Option<String>>>;

/// Rows `ma → [ma, ten, so_tien]` of the generated CSV content.
fn rows(ids: impl IntoIterator<Item = u32>, suffix: &str) -> Rows {
    ids.into_iter()
        .map(|i| {
            let v = vec![
                Some(i.to_string()),
                Some(format!("Hồ sơ số {i} – Mường La, Sơn La{suffix}")),
                Some(format!("{i}.50")),
            ];
            (i.to_string(), v)
        })
        .collect()
}

fn csv(rows: &Rows) -> String {
    let mut s = String::from("\u{feff}ma,ten,so_tien\n");
    for v in rows.values() {
        let f: Vec<String> = v.iter().map(|x| format!("\"{}\"", x.clone().unwrap_or_default())).collect();
        s.push_str(&f.join(","));
        s.push('\n');
    }
    s
}

fn dataset(name: &str, dir: &Path, pattern: &str, mode: &str) -> String {
    format!(
        "\n[[dataset]]\nname = \"{name}\"\nkey = [\"ma\"]\nmode = \"{mode}\"\npoll_interval = \"200ms\"\n[dataset.source]\nkind = \"folder\"\npath = \"{}\"\npattern = \"{pattern}\"\nsettle = \"1s\"\n",
        dir.display()
    )
}

fn wait_rows(hub: &HubProc, agent: &AgentProc, table: &str, cols: &[&str], want: &Rows) {
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        CONVERGE,
        &format!("warehouse table {table} to equal the dropped file"),
        || format!("{}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || match warehouse_text_rows(&hub.warehouse(), table, cols) {
            Ok(got) => {
                let ok = &got == want;
                if !ok {
                    let ex = want.iter().find(|(k, v)| got.get(*k) != Some(v));
                    *last.borrow_mut() = format!(
                        "want {} rows, got {}; first difference {ex:?} vs {:?}",
                        want.len(),
                        got.len(),
                        ex.map(|(k, _)| got.get(k))
                    );
                }
                ok
            }
            Err(e) => {
                *last.borrow_mut() = format!("warehouse not readable yet: {e}");
                false
            }
        },
    );
}

#[test]
fn drop_folders_csv_and_xlsx_converge_and_bad_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (snap, delta, xlsx, bad) =
        (tmp.path().join("snap"), tmp.path().join("delta"), tmp.path().join("xlsx"), tmp.path().join("bad"));
    for d in [&snap, &delta, &xlsx, &bad] {
        std::fs::create_dir_all(d).unwrap();
    }
    let cols = ["ma", "ten", "so_tien"];

    // Initial files.
    let v1 = rows(1..=300, "");
    std::fs::write(snap.join("ho_so_01.csv"), csv(&v1)).unwrap();
    std::fs::write(delta.join("thay_doi_01.csv"), csv(&rows(1..=20, ""))).unwrap();
    std::fs::write(bad.join("hong.csv"), "ma,ten\n1,một\n2,hai,THỪA\n").unwrap();
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Báo cáo").unwrap();
    for (c, h) in cols.iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    let mut want_x = Rows::new();
    for i in 1..=25u32 {
        let ten = format!("Bản {i}: Điện Biên – Tuần Giáo");
        ws.write_number(i, 0, f64::from(i)).unwrap();
        ws.write_string(i, 1, &ten).unwrap();
        ws.write_number(i, 2, f64::from(i) + 0.25).unwrap();
        want_x.insert(i.to_string(), vec![Some(i.to_string()), Some(ten), Some(format!("{}.25", i))]);
    }
    wb.save(xlsx.join("bao_cao.xlsx")).unwrap();

    let a = AgentSpec {
        id: "so-tai-chinh".into(),
        token: format!("token-{}", fastrand::u64(..)),
        datasets: vec!["ho_so_csv".into(), "thay_doi".into(), "bao_cao".into(), "hong".into()],
    };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let toml = [
        dataset("ho_so_csv", &snap, "ho_so_*.csv", "snapshot"),
        dataset("thay_doi", &delta, "*.csv", "cursor"),
        format!("{}sheet = \"Báo cáo\"\n", dataset("bao_cao", &xlsx, "*.xlsx", "snapshot")),
        dataset("hong", &bad, "*.csv", "snapshot"),
    ]
    .concat();
    let mut agent = AgentProc::start_with(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &toml,
        &AgentOptions::default(),
    );

    wait_rows(&hub, &agent, "ho_so_csv", &cols, &v1);
    wait_rows(&hub, &agent, "bao_cao", &cols, &want_x);
    wait_rows(&hub, &agent, "thay_doi", &cols, &rows(1..=20, ""));

    // The malformed file is reported (dataset, file, line) while the others synced.
    let err = agent.wait_dataset_error("hong", CONVERGE);
    assert!(err.contains("dataset hong") && err.contains("hong.csv") && err.contains("line 3"), "{err}");
    assert!(warehouse_text_rows(&hub.warehouse(), "hong", &["ma"]).map(|r| r.is_empty()).unwrap_or(true));

    // A second snapshot file, written slowly: while it grows it must not be read (reading it
    // half-written would delete the rows not yet written).
    let mut v2 = rows((1..=300).filter(|i| i % 10 != 0), "");
    v2.extend(rows((1..=300).filter(|i| i % 7 == 0 && i % 10 != 0), " (đã sửa)"));
    v2.extend(rows(301..=320, ""));
    let full = csv(&v2);
    let path = snap.join("ho_so_02.csv");
    let bytes = full.as_bytes();
    let steps = 8;
    let started = Instant::now();
    for s in 1..=steps {
        std::fs::write(&path, &bytes[..bytes.len() * s / steps]).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let got = warehouse_text_rows(&hub.warehouse(), "ho_so_csv", &cols).unwrap();
        assert_eq!(got, v1, "a growing file was read after {:?}", started.elapsed());
    }
    wait_rows(&hub, &agent, "ho_so_csv", &cols, &v2);

    // The same content dropped again (cursor mode, where a re-read would re-send every row):
    // remembered by hash, read once.
    let d2 = rows(15..=30, " (cập nhật)");
    std::fs::write(delta.join("thay_doi_02.csv"), csv(&d2)).unwrap();
    let mut want_d = rows(1..=20, "");
    want_d.extend(d2.clone());
    wait_rows(&hub, &agent, "thay_doi", &cols, &want_d);
    let (_, _, seq_before) = seq_stats(&hub.warehouse(), "thay_doi").unwrap();
    std::fs::write(delta.join("thay_doi_02_copy.csv"), csv(&d2)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (_, _, seq_after) = seq_stats(&hub.warehouse(), "thay_doi").unwrap();
    assert_eq!(seq_before, seq_after, "a file dropped twice is read once\n{}", agent.log_tail());

    // The bad file fixed: read, and the error clears.
    std::fs::write(bad.join("hong.csv"), "ma,ten\n1,một\n2,hai\n").unwrap();
    let want_h: Rows = [("1", "một"), ("2", "hai")]
        .iter()
        .map(|(k, v)| (k.to_string(), vec![Some(k.to_string()), Some(v.to_string())]))
        .collect();
    wait_rows(&hub, &agent, "hong", &["ma", "ten"], &want_h);

    // A large third file with a new column; the agent is killed (-9) while reading it and
    // restarted: committed chunks stand, the file is not marked processed, and it is read again.
    let v3: Rows = rows(1..=30_000, " (bản 3)");
    let mut text = String::from("ma,ten,so_tien,ghi_chu\n");
    for v in v3.values() {
        text.push_str(&format!(
            "{},\"{}\",{},\"Ghi chú {}\"\n",
            v[0].clone().unwrap(),
            v[1].clone().unwrap(),
            v[2].clone().unwrap(),
            v[0].clone().unwrap()
        ));
    }
    let before = hub.ledger("so-tai-chinh");
    std::fs::write(snap.join("ho_so_03.csv"), text).unwrap();
    wait_for(
        CONVERGE,
        "the agent to start on the third file",
        || agent.log_tail(),
        || hub.ledger("so-tai-chinh") > before,
    );
    agent.kill9();
    agent.spawn();
    wait_rows(&hub, &agent, "ho_so_csv", &cols, &v3);
    let notes = warehouse_text_rows(&hub.warehouse(), "ho_so_csv", &["ma", "ghi_chu"]).unwrap();
    assert_eq!(notes["29999"][1].as_deref(), Some("Ghi chú 29999"), "the new column arrived");

    // `kho-agent check` reports file, columns, rows and key validity for folder datasets.
    let out = std::process::Command::new(kho_tests::bin_path("kho-agent"))
        .arg("--config")
        .arg(&agent.config)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ho_so_03.csv")
            && text.contains(&format!("rows: {}", v3.len()))
            && text.contains("so_tien")
            && text.contains("decimal"),
        "{text}"
    );
    assert!(text.contains("key unique and never NULL"), "{text}");
}
