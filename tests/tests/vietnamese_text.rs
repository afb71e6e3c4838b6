//! Field realities end to end (issue 13): the real `kho-agent` reads a TCVN3 CSV export with
//! dd/mm/yyyy dates and Vietnamese numbers, a UTF-8 export typed in decomposed Unicode (NFD) with
//! one column pasted from a VNI program, and a PostgreSQL table holding NFD text and TCVN3 text
//! that the server stored as Windows-1252 characters; the real `kho-hub` must hold exact,
//! NFC-normalised values. A file with a value that does not parse is refused whole, naming line
//! and column, and `kho-agent check` warns about an undeclared column that holds mojibake.
//!
//! The legacy bytes are written here from the published tables (TCVN 5712:1993, VNI-Windows),
//! not with the agent's own encoder, so the test checks the agent against the standard.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, HubProc, wait_for};
use kho_tests::warehouse_text_rows;

const CONVERGE: Duration = Duration::from_secs(60);

type Rows = BTreeMap<String, Vec<Option<String>>>;

/// TCVN3 bytes of `s` (only the letters this test uses; anything else must be ASCII).
fn tcvn3(s: &str) -> Vec<u8> {
    let table: &[(char, u8)] = &[
        ('ò', 0xDF),
        ('ị', 0xDE),
        ('ồ', 0xE5),
        ('Đ', 0xA7),
        ('ệ', 0xD6),
        ('ê', 0xAA),
        ('ủ', 0xF1),
        ('ư', 0xAD),
        ('ờ', 0xEA),
        ('ơ', 0xAC),
        ('à', 0xB5),
        ('ố', 0xE8),
        ('ề', 0xD2),
    ];
    s.chars()
        .map(|c| match table.iter().find(|(t, _)| *t == c) {
            Some((_, b)) => *b,
            None if c.is_ascii() => c as u8,
            None => panic!("no TCVN3 byte for {c:?} in this test's table"),
        })
        .collect()
}

fn row(vals: &[&str]) -> (String, Vec<Option<String>>) {
    (vals[0].to_string(), vals.iter().map(|v| Some(v.to_string())).collect())
}

fn folder(name: &str, dir: &Path, extra: &str) -> String {
    format!(
        "\n[[dataset]]\nname = \"{name}\"\nkey = [\"ma\"]\nmode = \"snapshot\"\npoll_interval = \"200ms\"\n\
         [dataset.source]\nkind = \"folder\"\npath = \"{}\"\npattern = \"*.csv\"\nsettle = \"1s\"\ndelimiter = \";\"\n{extra}",
        dir.display()
    )
}

fn wait_rows(hub: &HubProc, agent: &AgentProc, table: &str, cols: &[&str], want: &Rows) {
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        CONVERGE,
        &format!("warehouse table {table} to hold the exact values"),
        || format!("{}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || match warehouse_text_rows(&hub.warehouse(), table, cols) {
            Ok(got) => {
                *last.borrow_mut() = format!("got {got:?}");
                &got == want
            }
            Err(e) => {
                *last.borrow_mut() = format!("warehouse not readable yet: {e}");
                false
            }
        },
    );
}

#[test]
fn legacy_encodings_nfd_and_local_formats_reach_the_warehouse_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (tcvn, nfd, bad) = (tmp.path().join("tcvn"), tmp.path().join("nfd"), tmp.path().join("bad"));
    for d in [&tcvn, &nfd, &bad] {
        std::fs::create_dir_all(d).unwrap();
    }

    // A TCVN3 export: dd/mm/yyyy dates, dd/mm/yyyy HH:MM times, 1.234.567,89 amounts, Excel serials.
    let mut file = b"ma;ten;ngay;luc;so_tien;so_luong;ngay_excel\n".to_vec();
    file.extend(tcvn3("1;Lò Thị Hồng;05/01/2026;31/12/2025 17:45;1.234.567,89;12.000;46023\n"));
    file.extend(tcvn3("2;Điện Biên Phủ;29/02/2024;01/01/2026 08:05;-0,50;7;45352\n"));
    file.extend(tcvn3("3;Mường La, Sơn La;31/12/1999;15/06/2026 23:59;0,01;1.000.000;36525\n"));
    std::fs::write(tcvn.join("ho_so.csv"), file).unwrap();
    let tcvn_cols = ["ma", "ten", "ngay", "luc", "so_tien", "so_luong", "ngay_excel"];
    let want_tcvn: Rows = [
        row(&["1", "Lò Thị Hồng", "2026-01-05", "2025-12-31T17:45:00", "1234567.89", "12000", "2026-01-01"]),
        row(&["2", "Điện Biên Phủ", "2024-02-29", "2026-01-01T08:05:00", "-0.50", "7", "2024-03-01"]),
        row(&["3", "Mường La, Sơn La", "1999-12-31", "2026-06-15T23:59:00", "0.01", "1000000", "1999-12-31"]),
    ]
    .into_iter()
    .collect();
    let formats = "types = { ngay = \"date\", luc = \"timestamp\", so_tien = \"decimal\", so_luong = \"int\", \
                   ngay_excel = \"date\" }\nformats = { ngay = \"%d/%m/%Y\", luc = \"%d/%m/%Y %H:%M\", \
                   so_tien = \"1.234.567,89\", so_luong = \"vi\", ngay_excel = \"excel\" }\n";

    // UTF-8 typed decomposed (NFD), with one column pasted from a VNI program.
    let mut file = "ma;ten;ten_cu\n1;So\u{31b}n La;".as_bytes().to_vec();
    file.extend(b"M\xf6\xf4\xf8ng Thanh\n");
    file.extend("2;Ngo\u{302}\u{300}i;".as_bytes());
    file.extend(b"Lo\xf8\n");
    std::fs::write(nfd.join("ds.csv"), file).unwrap();
    let want_nfd: Rows = [row(&["1", "Sơn La", "Mường Thanh"]), row(&["2", "Ngồi", "Lò"])].into_iter().collect();

    // A Vietnamese-number column with one value written the English way (line 3).
    std::fs::write(bad.join("sai.csv"), "ma;so_tien\n1;1.000,5\n2;1,000.5\n").unwrap();

    // PostgreSQL: NFD text, and TCVN3 text the server holds as Windows-1252 characters (how a
    // LATIN1 database or a legacy application stores it).
    let pg_url = std::env::var("KHO_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut pg = postgres::Client::connect(&pg_url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("the PostgreSQL test server at {pg_url} is required (.ci/run starts it): {e}"));
    let table = format!("kho_vn_{}_{}", std::process::id(), fastrand::u32(..));
    pg.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, ten text, ten_cu text, ghi_chu text);
         INSERT INTO {table} VALUES
           (1, 'Ho\u{302}\u{300} so\u{31b} ca\u{301}n bo\u{323}\u{302}', 'S¬n La', '§i\u{d6}n Bi\u{aa}n'),
           (2, 'Tha\u{300}nh pho\u{302}\u{301}', '§i\u{d6}n Bi\u{aa}n Ph\u{f1}', 'Lß Th\u{de} H\u{e5}ng')"
    ))
    .unwrap();
    let want_pg: Rows =
        [row(&["1", "Hồ sơ cán bộ", "Sơn La"]), row(&["2", "Thành phố", "Điện Biên Phủ"])].into_iter().collect();

    let a = AgentSpec {
        id: "so-noi-vu".into(),
        token: format!("token-{}", fastrand::u64(..)),
        datasets: vec!["tcvn".into(), "nfd".into(), "sai".into(), "pg_vn".into()],
    };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let toml = [
        folder("tcvn", &tcvn, formats) + "[dataset.text]\nencoding = \"tcvn3\"\n",
        folder("nfd", &nfd, "") + "[dataset.text]\ncolumns = { ten_cu = \"vni\" }\n",
        folder("sai", &bad, "types = { so_tien = \"decimal\" }\nformats = { so_tien = \"vi\" }\n"),
        format!(
            "\n[[dataset]]\nname = \"pg_vn\"\ntable = \"{table}\"\nkey = [\"id\"]\nmode = \"snapshot\"\npoll_interval = \"200ms\"\n\
             [dataset.source]\nkind = \"postgres\"\nurl = \"{pg_url}\"\n[dataset.text]\ncolumns = {{ ten_cu = \"tcvn3\" }}\n"
        ),
    ]
    .concat();
    let agent = AgentProc::start_with(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &toml,
        &AgentOptions::default(),
    );

    wait_rows(&hub, &agent, "tcvn", &tcvn_cols, &want_tcvn);
    wait_rows(&hub, &agent, "nfd", &["ma", "ten", "ten_cu"], &want_nfd);
    wait_rows(&hub, &agent, "pg_vn", &["id", "ten", "ten_cu"], &want_pg);

    // The bad file: refused with line and column, nothing of it applied.
    wait_for(
        CONVERGE,
        "the refused file to be reported",
        || agent.log_tail(),
        || {
            let err = agent.dataset_status("sai")["last_error"].as_str().unwrap_or_default().to_string();
            err.contains("sai.csv") && err.contains("line 3, column \"so_tien\"") && err.contains("1,000.5")
        },
    );
    assert!(warehouse_text_rows(&hub.warehouse(), "sai", &["ma"]).map(|r| r.is_empty()).unwrap_or(true));

    // `check` warns about the undeclared column holding TCVN3 mojibake and names the encoding.
    let out = std::process::Command::new(kho_tests::bin_path("kho-agent"))
        .arg("--config")
        .arg(&agent.config)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let warning = text.lines().find(|l| l.contains("WARNING") && l.contains("ghi_chu")).unwrap_or_default();
    assert!(warning.contains("dataset pg_vn") && warning.contains("tcvn3") && warning.contains("Điện Biên"), "{text}");
    assert!(
        !text.lines().any(|l| l.contains("WARNING") && l.contains("\"ten_cu\"")),
        "declared columns are fine\n{text}"
    );

    pg.batch_execute(&format!("DROP TABLE {table}")).unwrap();
}
