#![allow(clippy::unwrap_used)]
use std::path::Path;

use super::*;
use crate::config::{AgentConfig, ConfigError};

const BASE: &str = r#"
[agent]
id = "so-y-te-01"
data_dir = "data"

[hub]
url = "https://127.0.0.1:8443"
token_file = "token"
signing_key = "keys/agent.key"

[[dataset]]
name = "cong_dan"
table = "cong_dan"
key = ["so_cccd"]
mode = "cursor"
cursor_column = "cap_nhat"
[dataset.source]
kind = "sqlite"
path = "dan_cu.sqlite"
"#;

fn parse(extra: &str) -> Result<AgentConfig, ConfigError> {
    AgentConfig::from_toml_str(&format!("{BASE}{extra}"), Path::new("/etc/kho"), "agent.toml")
}

fn problems(extra: &str) -> Vec<String> {
    parse(extra).unwrap_err().problems().iter().map(|p| p.to_string()).collect()
}

#[test]
fn declarations_parse_and_the_key_defaults_beside_the_signing_key() {
    let c = parse(
        r#"
[dataset.columns.so_cccd]
class = "personal"
action = "pseudonymise"
[dataset.columns.ngay_sinh]
class = "personal"
action = "generalise"
to = "year"
[dataset.columns.dia_chi]
class = "personal"
action = "generalise"
to = "address"
parts = 2
[dataset.columns.so_dien_thoai]
class = "personal"
action = "mask"
keep_last = 3
[dataset.columns.thu_nhap]
class = "personal"
action = "generalise"
to = "range"
bounds = [0, 5000000, 10000000]
[dataset.columns.benh_an]
class = "sensitive"
action = "drop"
[dataset.columns.xa]
class = "public"
"#,
    )
    .unwrap();
    let cols = &c.datasets[0].columns;
    assert_eq!(cols.policies.len(), 7);
    assert_eq!(cols.policies["xa"].action, Action::Keep, "keep is the default action");
    assert_eq!(cols.policies["so_dien_thoai"].keep_last, Some(3));
    assert_eq!(cols.key_source, Some(KeySource::File("/etc/kho/keys/pseudonym.key".into())));
}

#[test]
fn explicit_key_sources_win() {
    let c = parse("[privacy]\nkey_env = \"KHO_PSEUDONYM_KEY\"\n").unwrap();
    assert_eq!(c.datasets[0].columns.key_source, Some(KeySource::Env("KHO_PSEUDONYM_KEY".into())));
    let c = parse("[privacy]\nkey_file = \"p.key\"\n").unwrap();
    assert_eq!(c.datasets[0].columns.key_source, Some(KeySource::File("/etc/kho/p.key".into())));
    let both = problems("[privacy]\nkey_file = \"p.key\"\nkey_env = \"X\"\n");
    assert!(both.iter().any(|p| p.starts_with("privacy.key_file:")), "{both:?}");
}

#[test]
fn bad_declarations_name_their_field() {
    let p = problems(
        r#"
[dataset.columns.so_cccd]
class = "personal"
action = "mask"
keep_last = 4
[dataset.columns.cap_nhat]
class = "internal"
action = "generalise"
to = "month"
[dataset.columns.ngay_sinh]
class = "personal"
action = "generalise"
[dataset.columns.dia_chi]
class = "personal"
action = "generalise"
to = "address"
[dataset.columns.thu_nhap]
class = "personal"
action = "generalise"
to = "range"
bounds = [10, 5]
[dataset.columns.sdt]
class = "personal"
action = "mask"
[dataset.columns.ten]
class = "personal"
keep_last = 2
"#,
    );
    let has = |prefix: &str| p.iter().any(|x| x.starts_with(prefix));
    assert!(has("dataset[cong_dan].column[so_cccd].action: mask on a key column"), "{p:#?}");
    assert!(has("dataset[cong_dan].column[cap_nhat].action: generalise on the cursor column"), "{p:#?}");
    assert!(has("dataset[cong_dan].column[ngay_sinh].to: generalise needs"), "{p:#?}");
    assert!(has("dataset[cong_dan].column[dia_chi].parts: required"), "{p:#?}");
    assert!(has("dataset[cong_dan].column[thu_nhap].bounds: must be finite numbers in increasing order"), "{p:#?}");
    assert!(has("dataset[cong_dan].column[sdt].keep_last: required"), "{p:#?}");
    assert!(has("dataset[cong_dan].column[ten].keep_last: only used with action = \"mask\""), "{p:#?}");

    let unknown = parse("[dataset.columns.x]\nclass = \"secret\"\n").unwrap_err();
    assert!(unknown.to_string().contains("secret"), "{unknown}");
}

#[test]
fn pseudonymise_without_a_key_is_refused() {
    let text = BASE.replace("signing_key = \"keys/agent.key\"\n", "")
        + "[dataset.columns.so_cccd]\nclass = \"personal\"\naction = \"pseudonymise\"\n";
    let e = AgentConfig::from_toml_str(&text, Path::new("/etc/kho"), "agent.toml").unwrap_err();
    let p: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert!(p.iter().any(|x| x.starts_with("dataset[cong_dan].column[so_cccd].action: pseudonymise needs")), "{p:?}");
}
