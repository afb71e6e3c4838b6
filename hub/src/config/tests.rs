//! Config parsing and validation: defaults, paths, sizes, and every bad field named.

use super::*;

fn parse(text: &str) -> Result<HubConfig, ConfigError> {
    HubConfig::from_toml_str(text, Path::new("/etc/kho"), "hub.toml")
}

#[test]
fn minimal_config_gets_defaults_and_resolved_paths() {
    let c =
        parse("[hub]\ndata_dir = \"data\"\n[[agent]]\nid = \"so-y-te-01\"\ntoken = \"t\"\ndatasets = [\"ho_so\"]\n")
            .expect("valid");
    assert_eq!(c.hub.data_dir, PathBuf::from("/etc/kho/data"));
    assert_eq!(c.warehouse.path, PathBuf::from("/etc/kho/data/warehouse.sqlite"));
    assert_eq!(c.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert!(c.tls.self_signed);
    assert_eq!(c.listen_addr(), Some("127.0.0.1:8443".parse().expect("addr")));
}

#[test]
fn sizes_accept_numbers_and_units() {
    assert_eq!(parse_byte_size("16 MiB"), Ok(16 << 20));
    assert_eq!(parse_byte_size("1000"), Ok(1000));
    assert_eq!(parse_byte_size("2GB"), Ok(2_000_000_000));
    assert!(parse_byte_size("lots").is_err());
    assert!(parse_byte_size("5 parsecs").is_err());
}

#[test]
fn every_bad_field_is_named() {
    let text = r#"
        [hub]
        listen = "nowhere"
        insecure_dev_http = true
        [tls]
        self_signed = false
        cert = "missing.pem"
        require_client_cert = true
        [limits]
        max_concurrent_requests = 0
        max_connections = 0
        request_timeout = "0s"
        [[agent]]
        id = "A B"
        datasets = ["Ho-So"]
        [[agent]]
        id = "x"
        token = "t"
        token_file = "f"
        [[agent]]
        id = "x"
        token = "u"
    "#;
    let Err(ConfigError::Invalid { problems, .. }) = parse(text) else { panic!("expected Invalid") };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for want in [
        "hub.listen",
        "tls.key",
        "limits.request_timeout",
        "limits.max_concurrent_requests",
        "limits.max_connections",
        "tls.require_client_cert",
        "agent[0].id",
        "agent[0].token",
        "agent[0].datasets[0]",
        "agent[1].token",
        "agent[2].id",
    ] {
        assert!(fields.contains(&want), "{want} not reported in {fields:?}");
    }
}

#[test]
fn unknown_fields_and_duplicate_tokens_are_refused() {
    let err = parse("[hub]\nlisten_on = \"x\"\n").expect_err("unknown field");
    assert!(err.to_string().contains("listen_on"), "{err}");
    let text = "[hub]\n[[agent]]\nid = \"a\"\ntoken = \"same\"\n[[agent]]\nid = \"b\"\ntoken = \"same\"\n";
    let err = parse(text).expect_err("duplicate token");
    assert!(err.to_string().contains("agent[1].token"), "{err}");
}

#[test]
fn token_files_are_read_and_the_result_validates_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.token"), "s3cret\n").expect("write");
    let text = "[[agent]]\nid = \"a\"\ntoken_file = \"a.token\"\n[[agent]]\nid = \"b\"\ntoken_file = \"missing\"\n";
    let err = HubConfig::from_toml_str(text, dir.path(), "t").expect_err("missing file");
    assert!(err.to_string().contains("agent[1].token_file"), "{err}");
    let c = HubConfig::from_toml_str(&text[..text.find("[[agent]]\nid = \"b").unwrap_or(0)], dir.path(), "t")
        .expect("valid");
    assert_eq!(c.agents[0].token.as_deref(), Some("s3cret"));
    assert!(c.validate().is_empty(), "{:?}", c.validate());
}

#[test]
fn debug_output_hides_tokens() {
    let c = parse("[hub]\n[[agent]]\nid = \"a\"\ntoken = \"hunter2\"\n").expect("valid");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn mqtt_section_is_optional_and_validated_by_field() {
    let base = "[hub]\ndata_dir = \"data\"\n[[agent]]\nid = \"a\"\ntoken = \"t\"\n";
    assert!(parse(base).expect("valid").mqtt.is_none());

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), "pem").expect("write");
    let good = format!("{base}[mqtt]\nurl = \"mqtts://broker:8883\"\nca_cert = \"ca.pem\"\n");
    let c = HubConfig::from_toml_str(&good, dir.path(), "hub.toml").expect("valid");
    let m = c.mqtt.expect("mqtt section");
    assert_eq!(m.ca_cert, Some(dir.path().join("ca.pem")));
    assert_eq!((m.share_group.as_str(), m.max_in_flight), (DEFAULT_SHARE_GROUP, DEFAULT_MQTT_MAX_IN_FLIGHT));

    let bad = format!(
        "{base}[mqtt]\nurl = \"mqtt://broker\"\nclient_cert = \"c.pem\"\nshare_group = \"a/b\"\nmax_in_flight = 0\n"
    );
    let err = HubConfig::from_toml_str(&bad, dir.path(), "hub.toml").expect_err("invalid");
    let ConfigError::Invalid { problems, .. } = err else { panic!("not a validation error: {err}") };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["mqtt.url", "mqtt.ca_cert", "mqtt.client_cert", "mqtt.share_group", "mqtt.max_in_flight"]);
    let typo = format!("{base}[mqtt]\nurl = \"mqtts://b\"\nca_cert = \"ca.pem\"\nshare_grup = \"x\"\n");
    assert!(parse(&typo).expect_err("unknown field").to_string().contains("share_grup"));
}

#[test]
fn the_pseudonymisation_key_file_is_checked_without_showing_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[privacy]\nkey_file = \"keys\"\n";
    let e = HubConfig::from_toml_str(text, dir.path(), "t").expect_err("missing file");
    assert!(e.to_string().contains("privacy.key_file"), "{e}");
    std::fs::write(dir.path().join("keys"), "v1:tooshort-secret-text\n").expect("write");
    let e = HubConfig::from_toml_str(text, dir.path(), "t").expect_err("short secret");
    assert!(e.to_string().contains("privacy.key_file") && !e.to_string().contains("tooshort-secret-text"), "{e}");
    std::fs::write(dir.path().join("keys"), "v1:0123456789abcdef0123456789abcdef\n").expect("write");
    let c = HubConfig::from_toml_str(text, dir.path(), "t").expect("valid");
    assert_eq!(c.privacy.key_file, Some(dir.path().join("keys")));
}
