//! CKAN documents: the package shape CKAN documents, the frequency vocabulary, parameters.

use std::time::Duration;

use super::*;
use crate::catalog::Catalog;

const EXAMPLE: &str = include_str!("../../../../../deploy/examples/catalog.toml");

#[test]
fn a_package_has_ckans_documented_shape() {
    let c = Catalog::from_toml_str(EXAMPLE, "example").expect("example");
    let d = c.datasets.iter().find(|d| d.open_data).expect("an open dataset");
    let input = PackageInput { dataset: d, department: c.department(&d.department), view: None };
    let p = package(&input, "https://kho.example");
    for key in [
        "id",
        "name",
        "title",
        "type",
        "state",
        "private",
        "notes",
        "license_id",
        "owner_org",
        "organization",
        "metadata_created",
        "metadata_modified",
        "extras",
        "tags",
        "resources",
        "num_resources",
    ] {
        assert!(p.get(key).is_some(), "package lacks {key}: {p}");
    }
    assert_eq!(p["name"], d.id.as_str());
    assert_eq!(p["organization"]["name"], d.department.as_str());
    let resources = p["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 2);
    assert_eq!(resources[0]["id"], format!("{}-csv", d.id));
    assert_eq!(resources[0]["url"], format!("https://kho.example/opendata/{}.csv", d.id));
    assert_eq!(resources[1]["format"], "JSON");
    assert!(resources.iter().all(|r| r["datastore_active"] == true && r["package_id"] == d.id.as_str()));
    let extras = p["extras"].as_array().expect("extras");
    assert!(extras.iter().any(|e| {
        e["key"] == "accrualPeriodicity"
            && e["value"]
                .as_str()
                .is_some_and(|v| v.starts_with("http://publications.europa.eu/resource/authority/frequency/"))
    }));
    assert!(p["metadata_modified"].is_null(), "never received: no modification time");
}

#[test]
fn cadences_map_to_the_eu_frequency_vocabulary() {
    let code = |c: Cadence| accrual_periodicity(&c).rsplit('/').next().unwrap_or_default().to_string();
    assert_eq!(code(Cadence::Daily), "DAILY");
    assert_eq!(code(Cadence::Weekly), "WEEKLY");
    assert_eq!(code(Cadence::Monthly), "MONTHLY");
    assert_eq!(code(Cadence::Quarterly), "QUARTERLY");
    assert_eq!(code(Cadence::Yearly), "ANNUAL");
    assert_eq!(code(Cadence::Every(Duration::from_secs(3_600))), "HOURLY");
    assert_eq!(code(Cadence::Every(Duration::from_secs(600))), "CONT");
    assert_eq!(code(Cadence::Every(Duration::from_secs(5 * 86_400))), "OTHER");
}

#[test]
fn parameters_are_checked_by_name() {
    let p = Params([("id".to_string(), "x".to_string()), ("bogus".to_string(), "1".to_string())].into());
    let e = p.only(&["id"]).expect_err("bogus");
    assert_eq!(e.http_status(), 409);
    assert_eq!(e.body()["__type"], "Validation Error");
    assert!(e.body()["bogus"][0].as_str().is_some_and(|m| m.contains("not expected")));
    assert_eq!(p.required("id").expect("id"), "x");
    assert!(p.required("q").is_err());
    let n = Params([("limit".to_string(), "-1".to_string())].into());
    assert!(n.count("limit", 5).is_err());
    assert_eq!(Params::default().count("limit", 5).expect("default"), 5);
    let j = Params::from_json(br#"{"resource_id": "a-csv", "limit": 5, "q": null}"#).expect("json");
    assert_eq!(j.text("limit"), Some("5"));
    assert_eq!(j.text("q"), None);
    assert!(Params::from_json(b"[1]").is_err());
    assert_eq!(Params::from_json(b"  ").expect("empty"), Params::default());
}

#[test]
fn errors_use_ckans_envelope() {
    let e = CkanError::NotFound("dataset".into());
    let body = failure("https://h/api/3/action/help_show?name=package_show", &e);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["__type"], "Not Found Error");
    assert_eq!(e.http_status(), 404);
    assert_eq!(success("h", serde_json::json!([]))["success"], true);
}

#[test]
fn resource_ids_name_dataset_and_format() {
    assert_eq!(parse_resource_id("ho_so-csv"), Some(("ho_so", Format::Csv)));
    assert_eq!(parse_resource_id("ho_so-json"), Some(("ho_so", Format::Json)));
    assert_eq!(parse_resource_id("ho_so"), None);
}

#[test]
fn ckan_times_are_naive_utc_with_microseconds() {
    let t: Timestamp = "2026-04-01T03:04:05.5Z".parse().expect("ts");
    assert_eq!(ckan_time(t), "2026-04-01T03:04:05.500000");
}
