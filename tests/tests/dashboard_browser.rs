//! The operator dashboard in a real headless Chromium (WebDriver): log in, watch an overdue
//! dataset turn on time after its agent syncs a new report, switch to English, log out.
//! Screenshots of each step are saved under `target/screenshots/dashboard/` as artifacts.
//!
//! The dataset is daily with `freshness_field = "ngay"`: a first sync of old reports makes it
//! overdue at once (its oldest unreported day is long past its deadline), and a report dated
//! today makes it on time, so no clock has to be moved in the real hub.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use kho_tests::bin_path;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, HubProc, wait_for};
use kho_tests::webdriver::Browser;

const CATALOG: &str = "[[department]]\ncode = \"so_tai_chinh\"\nname = \"Sở Tài chính\"\n\
    contact = { name = \"Phòng Ngân sách\", phone = \"0212 385 1234\" }\n\n\
    [[dataset]]\nid = \"bao_cao\"\ntitle = \"Báo cáo thu ngân sách\"\ndepartment = \"so_tai_chinh\"\n\
    cadence = \"daily\"\nupdate_kind = \"sync\"\nfreshness_field = \"ngay\"\n\n\
    [[scenario]]\nid = \"kb_ngan_sach\"\ntitle = \"Điều hành ngân sách\"\noffice = \"so_tai_chinh\"\n\
    inputs = [{ dataset = \"bao_cao\", max_staleness = \"2 days\" }]\n";

fn hash_password(password: &str) -> String {
    let mut child = Command::new(bin_path("kho-hub"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn screenshots_dir() -> std::path::PathBuf {
    // target/<profile>/deps/<test> → target/screenshots/dashboard
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("screenshots").join("dashboard")
}

fn today_local() -> String {
    let out = Command::new("date").env("TZ", "Asia/Ho_Chi_Minh").arg("+%Y-%m-%d").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn row_status(b: &Browser) -> Option<String> {
    b.attribute("tr[data-dataset=\"bao_cao\"]", "data-status")
}

#[test]
fn operator_sees_an_overdue_dataset_turn_on_time_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(browser) = Browser::start(&tmp.path().join("chromium"), &screenshots_dir()) else { return };

    let src_path = tmp.path().join("so_tai_chinh.sqlite");
    let src = rusqlite::Connection::open(&src_path).unwrap();
    src.execute_batch(
        "CREATE TABLE bao_cao (id INTEGER PRIMARY KEY, ngay DATE NOT NULL, so_thu INTEGER, ghi_chu TEXT);
         INSERT INTO bao_cao VALUES (1, '2026-01-05', 1200, 'Thu thuế tháng 1'), (2, '2026-02-05', 1350, 'Thu phí');",
    )
    .unwrap();
    let spec = AgentSpec {
        id: "so-tc-01".into(),
        token: format!("t-{}", fastrand::u64(..)),
        datasets: vec!["bao_cao".into()],
    };
    let hub_dir = tmp.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::write(hub_dir.join("catalog.toml"), CATALOG).unwrap();
    let extra = format!(
        "\n[catalog]\npath = \"catalog.toml\"\n\n[freshness]\nevaluate_interval = \"300ms\"\n\n\
         [dashboard]\n[[dashboard.operator]]\nname = \"ioc\"\npassword_hash = \"{}\"\n",
        hash_password("Mật-khẩu 2026")
    );
    let hub = HubProc::start_with(&hub_dir, std::slice::from_ref(&spec), &extra);
    let datasets = format!(
        "\n[[dataset]]\nname = \"bao_cao\"\ntable = \"bao_cao\"\nkey = [\"id\"]\nmode = \"snapshot\"\npoll_interval = \"200ms\"\n\
         [dataset.source]\nkind = \"sqlite\"\npath = \"{}\"\n",
        src_path.display()
    );
    let agent = AgentProc::start_with(
        &tmp.path().join("agent"),
        &spec,
        &hub.url(),
        &hub.ca_path(),
        &datasets,
        &AgentOptions::default(),
    );
    let ui = format!("{}/ui", hub.url());

    // Not logged in: the login page; a wrong password is refused with a message.
    browser.goto(&ui);
    assert!(browser.current_url().ends_with("/ui/login"), "{}", browser.current_url());
    browser.screenshot("01-login");
    assert_eq!(
        browser.attribute("html", "lang").as_deref(),
        Some("vi"),
        "Vietnamese by default: {}",
        browser.script("return document.documentElement.outerHTML")
    );
    browser.type_into("#name", "ioc");
    browser.type_into("#password", "sai mật khẩu");
    browser.click("#submit");
    browser.wait_text("#login-error", "Sai tên đăng nhập");
    browser.type_into("#name", "ioc");
    browser.type_into("#password", "Mật-khẩu 2026");
    browser.click("#submit");
    browser.wait_url("/ui");

    // The first sync carries only old reports: overdue.
    wait_for(
        Duration::from_secs(60),
        "bao_cao to show overdue",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || {
            browser.goto(&ui);
            row_status(&browser).as_deref() == Some("overdue")
        },
    );
    let row = browser.text("tr[data-dataset=\"bao_cao\"]");
    assert!(row.contains("Báo cáo thu ngân sách") && row.contains("Quá hạn"), "{row}");
    assert!(browser.text("body").contains("0212 385 1234"), "operators see the contact's phone");
    browser.screenshot("02-overdue");
    browser.goto(&format!("{ui}/scenarios"));
    assert!(browser.find("article.blocked[data-scenario=\"kb_ngan_sach\"]").is_some(), "{}", browser.text("body"));
    let blocked = browser.text("article.blocked");
    assert!(blocked.contains("Phòng Ngân sách") && blocked.contains("tối đa 2 ngày"), "{blocked}");
    browser.screenshot("03-scenario-blocked");

    // Today's report arrives: on time.
    src.execute("INSERT INTO bao_cao VALUES (3, ?1, 1500, 'Báo cáo hôm nay')", [today_local()]).unwrap();
    wait_for(
        Duration::from_secs(60),
        "bao_cao to turn on time",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || {
            browser.goto(&ui);
            row_status(&browser).as_deref() == Some("on_time")
        },
    );
    assert!(browser.text("tr[data-dataset=\"bao_cao\"]").contains("Đúng hạn"));
    browser.screenshot("04-on-time");

    // English, remembered on the next page.
    browser.click("#lang-switch");
    browser.wait_text("header", "Log out");
    assert_eq!(browser.attribute("html", "lang").as_deref(), Some("en"));
    assert!(browser.text("tr[data-dataset=\"bao_cao\"]").contains("On time"), "{}", browser.text("body"));
    browser.goto(&format!("{ui}/datasets/bao_cao"));
    assert_eq!(browser.attribute("html", "lang").as_deref(), Some("en"));
    assert!(browser.text("body").contains("Freshness history"), "{}", browser.text("body"));
    assert!(browser.text("table.schema").contains("ngay"));
    let recent = browser.text("table.recent");
    assert!(recent.lines().nth(1).is_some_and(|newest| newest.starts_with("3 ")), "newest change first: {recent}");
    browser.screenshot("05-dataset-en");
    browser.goto(&format!("{ui}/fleet"));
    let agent_row = browser.text("tr[data-agent=\"so-tc-01\"]");
    assert!(agent_row.contains("Online") && agent_row.contains("HTTPS"), "{agent_row}");
    browser.screenshot("06-fleet-en");
    // The page fits a 1366-pixel-wide laptop screen without horizontal scrolling.
    browser.goto(&ui);
    let width = browser.script("return document.documentElement.scrollWidth");
    assert!(width.as_u64().is_some_and(|w| w <= 1366), "page is {width} px wide");
    // And the IOC wall screen.
    browser.set_window(1920, 1080);
    browser.goto(&ui);
    let width = browser.script("return document.documentElement.scrollWidth");
    assert!(width.as_u64().is_some_and(|w| w <= 1920), "page is {width} px wide");
    browser.screenshot("07-wall-screen-en");

    // Log out (a CSRF-protected form): back to the login page, and the board is closed again.
    browser.click("#logout");
    browser.wait_url("/ui/login");
    browser.goto(&ui);
    assert!(browser.current_url().ends_with("/ui/login"));
    eprintln!("screenshots in {}", browser.screenshots.display());
}
