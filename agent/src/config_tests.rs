#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;

const VALID: &str = r#"
[agent]
id = "so-y-te-01"
data_dir = "data"

[hub]
url = "https://127.0.0.1:8443"
token = "secret"
ca_cert = "ca.pem"
request_timeout = "30s"
heartbeat_interval = "10s"

[outbox]
max_changes = 5000000

[forward]
batch_max_changes = 5000
batch_max_bytes = 8388608
linger = "200ms"

[[dataset]]
name = "ho_so"
table = "ho_so"
key = ["id"]
mode = "cursor"
cursor_column = "updated_at"
poll_interval = "2s"
[dataset.source]
kind = "sqlite"
path = "so_y_te.sqlite"

[[dataset]]
name = "don_vi"
query = "SELECT ma, ten FROM don_vi"
key = ["ma"]
mode = "snapshot"
[dataset.source]
kind = "sqlite"
path = "/abs/so_y_te.sqlite"
"#;

fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
    AgentConfig::from_toml_str(text, Path::new("/etc/kho"), "agent.toml")
}

fn fields(e: &ConfigError) -> Vec<String> {
    e.problems().iter().map(|p| p.field.clone()).collect()
}

#[test]
fn valid_example_parses_and_resolves_paths() {
    let c = parse(VALID).unwrap();
    assert_eq!(c.agent.id, "so-y-te-01");
    assert_eq!(c.agent.data_dir, Path::new("/etc/kho/data"));
    assert_eq!(c.outbox_path(), Path::new("/etc/kho/data/outbox.sqlite"));
    assert_eq!(c.hub.ca_cert.as_deref(), Some(Path::new("/etc/kho/ca.pem")));
    assert_eq!(c.forward.linger, Duration::from_millis(200));
    assert_eq!(c.datasets.len(), 2);
    assert_eq!(c.datasets[0].mode, Mode::Cursor);
    assert_eq!(c.datasets[0].poll_interval, Duration::from_secs(2));
    assert_eq!(c.datasets[0].source, SourceConfig::Sqlite { path: "/etc/kho/so_y_te.sqlite".into() });
    assert_eq!(c.datasets[1].source, SourceConfig::Sqlite { path: "/abs/so_y_te.sqlite".into() });
    assert_eq!(c.datasets[1].poll_interval, DEFAULT_POLL_INTERVAL);
    assert_eq!(c.bearer_token().unwrap(), "secret");
}

#[test]
fn defaults_apply_to_optional_sections() {
    let text = VALID
        .replace("[outbox]\nmax_changes = 5000000\n", "")
        .replace("[forward]\nbatch_max_changes = 5000\nbatch_max_bytes = 8388608\nlinger = \"200ms\"\n", "");
    let c = parse(&text).unwrap();
    assert_eq!(c.outbox.max_changes, DEFAULT_MAX_CHANGES);
    assert_eq!(c.forward.batch_max_changes, DEFAULT_BATCH_MAX_CHANGES);
}

#[test]
fn missing_field_is_named() {
    let e = parse(&VALID.replace("id = \"so-y-te-01\"\n", "")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("agent.toml") && msg.contains("`id`"), "{msg}");
}

#[test]
fn wrong_type_is_named() {
    let e = parse(&VALID.replace("max_changes = 5000000", "max_changes = \"lots\"")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("max_changes"), "{msg}");
    let e = parse(&VALID.replace("linger = \"200ms\"", "linger = \"soon\"")).unwrap_err();
    assert!(e.to_string().contains("linger"), "{e}");
}

#[test]
fn unknown_field_is_named() {
    let e = parse(&VALID.replace("insecure_dev", "x").replace("token = \"secret\"", "token = \"secret\"\ntokn = 1"))
        .unwrap_err();
    assert!(e.to_string().contains("tokn"), "{e}");
    let e = parse(
        &VALID.replace("kind = \"sqlite\"\npath = \"so_y_te.sqlite\"", "kind = \"sqlite\"\npath = \"a\"\nfile = \"b\""),
    )
    .unwrap_err();
    assert!(e.to_string().contains("file"), "{e}");
    let e = parse(&VALID.replace("kind = \"sqlite\"\npath = \"so_y_te.sqlite\"", "kind = \"oracle\"\npath = \"a\""))
        .unwrap_err();
    assert!(e.to_string().contains("oracle"), "{e}");
}

#[test]
fn cursor_mode_needs_cursor_column() {
    let e = parse(&VALID.replace("cursor_column = \"updated_at\"\n", "")).unwrap_err();
    assert_eq!(fields(&e), ["dataset[0].cursor_column"]);
    assert!(e.to_string().contains("dataset[0].cursor_column: required"), "{e}");
}

#[test]
fn snapshot_mode_forbids_cursor_column() {
    let e = parse(&VALID.replace("mode = \"snapshot\"", "mode = \"snapshot\"\ncursor_column = \"x\"")).unwrap_err();
    assert_eq!(fields(&e), ["dataset[1].cursor_column"]);
}

#[test]
fn table_and_query_are_exclusive() {
    let e = parse(&VALID.replace("table = \"ho_so\"", "table = \"ho_so\"\nquery = \"SELECT 1\"")).unwrap_err();
    assert_eq!(fields(&e), ["dataset[0].table"]);
}

#[test]
fn bad_and_duplicate_dataset_names() {
    let e = parse(&VALID.replace("name = \"ho_so\"", "name = \"Hồ sơ\"")).unwrap_err();
    assert_eq!(fields(&e), ["dataset[0].name"]);
    let e = parse(&VALID.replace("name = \"don_vi\"", "name = \"ho_so\"")).unwrap_err();
    assert_eq!(fields(&e), ["dataset[1].name"]);
    assert!(e.to_string().contains("twice"), "{e}");
}

#[test]
fn http_needs_insecure_dev() {
    let text = VALID.replace("https://127.0.0.1:8443", "http://127.0.0.1:8443");
    let e = parse(&text).unwrap_err();
    assert_eq!(fields(&e), ["hub.url"]);
    let ok = parse(&text.replace("token = \"secret\"", "token = \"secret\"\ninsecure_dev = true")).unwrap();
    assert!(ok.hub.insecure_dev);
    let e = parse(&VALID.replace("https://127.0.0.1:8443", "ftp://x")).unwrap_err();
    assert_eq!(fields(&e), ["hub.url"]);
}

#[test]
fn token_and_token_file_are_exclusive() {
    let e = parse(&VALID.replace("token = \"secret\"", "token = \"secret\"\ntoken_file = \"t\"")).unwrap_err();
    assert_eq!(fields(&e), ["hub.token"]);
    let e = parse(&VALID.replace("token = \"secret\"", "")).unwrap_err();
    assert_eq!(fields(&e), ["hub.token"]);
}

#[test]
fn token_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let text = VALID.replace("token = \"secret\"", "token_file = \"token\"");
    let c = AgentConfig::from_toml_str(&text, dir.path(), "x.toml").unwrap();
    assert_eq!(c.bearer_token().unwrap(), "s3cret");
    std::fs::remove_file(dir.path().join("token")).unwrap();
    assert!(c.bearer_token().unwrap_err().to_string().contains("hub.token_file"));
}

#[test]
fn all_problems_are_reported_together() {
    let text = VALID
        .replace("https://127.0.0.1:8443", "http://127.0.0.1:8443")
        .replace("cursor_column = \"updated_at\"\n", "")
        .replace("name = \"don_vi\"", "name = \"Don-Vi\"")
        .replace("key = [\"ma\"]", "key = []");
    let e = parse(&text).unwrap_err();
    assert_eq!(fields(&e), ["hub.url", "dataset[0].cursor_column", "dataset[1].name", "dataset[1].key"]);
    let msg = e.to_string();
    assert!(msg.contains("4 problem(s)"), "{msg}");
}

#[test]
fn load_names_the_file() {
    let e = AgentConfig::load(Path::new("/nonexistent/agent.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/agent.toml"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.toml");
    std::fs::write(&p, VALID).unwrap();
    let c = AgentConfig::load(&p).unwrap();
    assert_eq!(c.agent.data_dir, dir.path().join("data"));
}

const NETWORK_SOURCES: &str = r#"
[[dataset]]
name = "ho_so_pg"
table = "public.ho_so"
key = ["id"]
mode = "snapshot"
[dataset.source]
kind = "postgres"
url = "postgres://kho@db.so-y-te.local:5432/hanh_chinh"
password_file = "secrets/pg.txt"
sslmode = "require"
ssl_root_cert = "ca/db.pem"

[[dataset]]
name = "ho_so_my"
query = "SELECT id, ten FROM ho_so"
key = ["id"]
mode = "snapshot"
[dataset.source]
kind = "mysql"
url = "mysql://kho@127.0.0.1:3306/hanh_chinh"
password_env = "KHO_MYSQL_PASSWORD"
"#;

#[test]
fn postgres_and_mysql_sources_parse_and_resolve_paths() {
    let c = parse(&format!("{}{NETWORK_SOURCES}", VALID)).unwrap();
    let SourceConfig::Postgres(pg) = &c.datasets[2].source else { panic!("not postgres") };
    assert_eq!(pg.sslmode, crate::source::remote::SslMode::Require);
    assert_eq!(pg.password_file.as_deref(), Some(Path::new("/etc/kho/secrets/pg.txt")));
    assert_eq!(pg.ssl_root_cert.as_deref(), Some(Path::new("/etc/kho/ca/db.pem")));
    let SourceConfig::Mysql(my) = &c.datasets[3].source else { panic!("not mysql") };
    assert_eq!(my.password_env.as_deref(), Some("KHO_MYSQL_PASSWORD"));
}

#[test]
fn network_source_problems_are_named() {
    let text = format!("{VALID}{NETWORK_SOURCES}").replace("postgres://kho@db", "postgres://kho:hunter2@db").replace(
        "password_env = \"KHO_MYSQL_PASSWORD\"",
        "password_env = \"X\"\npassword_file = \"y\"\nsslmode = \"disable\"\nssl_root_cert = \"z\"",
    );
    let e = parse(&text).unwrap_err();
    let fields: Vec<&str> = e.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["dataset[2].source.url", "dataset[3].source.password_env", "dataset[3].source.ssl_root_cert"],
        "{e}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e =
        parse(&format!("{VALID}{NETWORK_SOURCES}").replace("sslmode = \"require\"", "sslmode = \"verify\"\nport = 1"))
            .unwrap_err();
    assert!(e.to_string().contains("sslmode") || e.to_string().contains("port"), "{e}");
}

const HEAD: &str = "[agent]\nid = \"a\"\ndata_dir = \"data\"\n[hub]\nurl = \"https://h\"\ntoken = \"t\"\n";

#[test]
fn folder_and_rest_sources_parse_with_defaults_and_resolve_paths() {
    let text = format!(
        "{HEAD}
[[dataset]]
name = \"ho_so_csv\"
key = [\"ma\"]
mode = \"snapshot\"
[dataset.source]
kind = \"folder\"
path = \"drop\"
pattern = \"*.csv\"
delimiter = \";\"
types = {{ so_tien = \"decimal\", ngay = \"date\" }}

[[dataset]]
name = \"api\"
key = [\"id\"]
mode = \"cursor\"
cursor_column = \"updated_at\"
[dataset.source]
kind = \"rest\"
url = \"https://api.example/v1/ho-so\"
records = \"/data\"
cursor_param = \"updated_since\"
headers = {{ Accept-Language = \"vi\" }}
[dataset.source.pagination]
style = \"offset\"
limit = 100
[dataset.source.auth]
kind = \"bearer\"
secret_file = \"api.token\"
"
    );
    let c = parse(&text).unwrap();
    let SourceConfig::Folder(f) = &c.datasets[0].source else { panic!("folder") };
    assert_eq!(f.path, Path::new("/etc/kho/drop"));
    assert_eq!(f.settle, crate::source::folder::DEFAULT_SETTLE);
    assert_eq!(f.types["so_tien"], kho_shared::types::ColumnType::Decimal);
    let SourceConfig::Rest(r) = &c.datasets[1].source else { panic!("rest") };
    assert_eq!(r.auth.as_ref().unwrap().secret_file.as_deref(), Some(Path::new("/etc/kho/api.token")));
    assert_eq!(r.max_pages, 1000);
    assert!(!format!("{c:?}").contains("secret_value"), "config Debug holds only where the secret is");
}

#[test]
fn folder_and_rest_problems_are_named() {
    let text = format!(
        "{HEAD}
[[dataset]]
name = \"a\"
table = \"t\"
key = [\"ma\"]
mode = \"cursor\"
cursor_column = \"x\"
[dataset.source]
kind = \"folder\"
path = \"drop\"
pattern = \"*.pdf\"
delimiter = \"ă\"

[[dataset]]
name = \"b\"
key = [\"id\"]
mode = \"snapshot\"
[dataset.source]
kind = \"rest\"
url = \"ftp://x\"
records = \"data\"
max_pages = 0
cursor_param = \"since\"
[dataset.source.auth]
kind = \"basic\"
secret_env = \"X\"
"
    );
    let e = parse(&text).unwrap_err();
    let f = fields(&e);
    for want in [
        "dataset[0].table",
        "dataset[0].cursor_column",
        "dataset[0].source.pattern",
        "dataset[0].source.delimiter",
        "dataset[1].source.url",
        "dataset[1].source.records",
        "dataset[1].source.max_pages",
        "dataset[1].source.cursor_param",
        "dataset[1].source.auth.username",
    ] {
        assert!(f.iter().any(|x| x == want), "{want} not in {f:?}");
    }
    // A folder in cursor mode needs no cursor column.
    let ok = format!(
        "{HEAD}[[dataset]]\nname = \"a\"\nkey = [\"ma\"]\nmode = \"cursor\"\n[dataset.source]\nkind = \"folder\"\npath = \"d\"\npattern = \"*.xlsx\"\nsheet = \"Sheet1\"\n"
    );
    parse(&ok).unwrap();
}

#[test]
fn the_deployment_example_is_valid() {
    let text = include_str!("../../deploy/examples/agent.toml");
    let c = parse(text).unwrap();
    assert!(c.datasets.iter().any(|d| matches!(d.source, SourceConfig::Folder(_))));
    assert!(c.datasets.iter().any(|d| matches!(d.source, SourceConfig::Rest(_))));
    // One example per source kind, so a department finds its own.
    for kind in ["sqlite", "postgres", "mysql", "folder", "rest", "odbc"] {
        let found = c.datasets.iter().any(|d| {
            matches!(
                (&d.source, kind),
                (SourceConfig::Sqlite { .. }, "sqlite")
                    | (SourceConfig::Postgres(_), "postgres")
                    | (SourceConfig::Mysql(_), "mysql")
                    | (SourceConfig::Folder(_), "folder")
                    | (SourceConfig::Rest(_), "rest")
                    | (SourceConfig::Odbc(_), "odbc")
            )
        });
        assert!(found, "deploy/examples/agent.toml has no {kind} dataset");
    }
    let cdc = c.datasets.iter().find(|d| d.mode == Mode::Cdc).expect("deploy/examples/agent.toml has no cdc dataset");
    assert_eq!(cdc.cdc.slot_name("x", "y"), format!("kho_{}_ho_so_tiep_nhan", c.agent.id.replace('-', "_")));
}

#[test]
fn cdc_datasets_are_validated() {
    let ds = |extra: &str| {
        format!(
            "{HEAD}[[dataset]]\nname = \"a\"\ntable = \"t\"\nkey = [\"id\"]\nmode = \"cdc\"\n{extra}[dataset.source]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\n"
        )
    };
    let c = parse(&ds("")).unwrap();
    assert_eq!(c.datasets[0].mode, Mode::Cdc);
    assert!(c.datasets[0].cdc.slot.as_deref().is_some_and(|s| s.starts_with("kho_") && s.ends_with("_a")));
    let fields = |text: &str| -> Vec<String> {
        parse(text).err().map(|e| e.problems().iter().map(|p| p.field.clone()).collect()).unwrap_or_default()
    };
    assert_eq!(fields(&ds("cursor_column = \"c\"\n")), vec!["dataset[0].cursor_column"]);
    assert_eq!(fields(&ds("schedule = \"0 2 * * *\"\n")), vec!["dataset[0].schedule"]);
    let sqlite = format!(
        "{HEAD}[[dataset]]\nname = \"a\"\ntable = \"t\"\nkey = [\"id\"]\nmode = \"cdc\"\n[dataset.source]\nkind = \"sqlite\"\npath = \"x.db\"\n"
    );
    assert_eq!(fields(&sqlite), vec!["dataset[0].mode"]);
    let tls = ds("").replace("url = \"postgres", "sslmode = \"require\"\nurl = \"postgres");
    assert_eq!(fields(&tls), vec!["dataset[0].source.sslmode"]);
    let bad_slot = ds("").replace("[dataset.source]", "[dataset.cdc]\nslot = \"Bad-Slot\"\n[dataset.source]");
    assert_eq!(fields(&bad_slot), vec!["dataset[0].cdc.slot"]);
    let snapshot_with_cdc = ds("")
        .replace("mode = \"cdc\"", "mode = \"snapshot\"")
        .replace("[dataset.source]", "[dataset.cdc]\nslot = \"s\"\n[dataset.source]");
    assert_eq!(fields(&snapshot_with_cdc), vec!["dataset[0].cdc"]);
}

#[test]
fn mqtt_transport_needs_mqtts_url_and_ca() {
    let mqtt = VALID.replace(
        "url = \"https://127.0.0.1:8443\"",
        "transport = \"mqtt\"\nurl = \"mqtts://broker.vnpt.vn:8883\"\nclient_cert = \"agent.pem\"\nclient_key = \"agent.key\"\nack_timeout = \"5s\"",
    );
    let c = parse(&mqtt).unwrap();
    assert_eq!(c.hub.transport, TransportKind::Mqtt);
    assert_eq!(c.hub.client_cert.as_deref(), Some(Path::new("/etc/kho/agent.pem")));
    assert_eq!(c.hub.ack_timeout, Duration::from_secs(5));
    assert_eq!(c.hub.keep_alive, DEFAULT_KEEP_ALIVE);

    let plain = mqtt.replace("mqtts://", "mqtt://");
    assert_eq!(fields(&parse(&plain).unwrap_err()), ["hub.url"]);
    let no_ca = mqtt.replace("ca_cert = \"ca.pem\"\n", "");
    assert_eq!(fields(&parse(&no_ca).unwrap_err()), ["hub.ca_cert"]);
    let half = mqtt.replace("client_key = \"agent.key\"\n", "");
    assert_eq!(fields(&parse(&half).unwrap_err()), ["hub.client_cert"]);
    // The hub-issued certificate goes with the signing key.
    let issued = half.replace("client_cert = ", "signing_key = \"agent.key\"\nclient_cert = ");
    assert_eq!(parse(&issued).unwrap().hub.client_key, None);
    let key_only = mqtt.replace("client_cert = \"agent.pem\"\n", "");
    assert_eq!(fields(&parse(&key_only).unwrap_err()), ["hub.client_cert"]);
    let https_with_cert = VALID.replace("token = \"secret\"", "token = \"secret\"\nclient_cert = \"a.pem\"");
    assert_eq!(fields(&parse(&https_with_cert).unwrap_err()), ["hub.client_cert"]);
    let bad_kind = VALID.replace("url = \"https", "transport = \"amqp\"\nurl = \"https");
    assert!(parse(&bad_kind).unwrap_err().to_string().contains("transport"));
}

#[test]
fn cron_schedule_replaces_the_interval_and_bad_ones_are_named() {
    let c = parse(&VALID.replace("poll_interval = \"2s\"", "schedule = \"0 2 * * mon-sat\"")).unwrap();
    assert!(matches!(c.datasets[0].poll_schedule(), crate::schedule::PollSchedule::Cron(_)));
    assert!(matches!(c.datasets[1].poll_schedule(), crate::schedule::PollSchedule::Every(_)));
    let e = parse(&VALID.replace("poll_interval = \"2s\"", "schedule = \"0 2 * * 1\"")).unwrap_err();
    assert_eq!(fields(&e), ["dataset[0].schedule"]);
    assert!(e.to_string().contains("names"), "{e}");
}

#[test]
fn secrets_readable_by_others_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "secret").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(super::warn_if_readable_by_others(&path, "test"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!super::warn_if_readable_by_others(&path, "test"));
    assert!(!super::warn_if_readable_by_others(&dir.path().join("missing"), "test"));
}
