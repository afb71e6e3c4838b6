//! Catalogue parsing and validation: the shipped example, unknown fields, every bad field named.

use super::*;

const EXAMPLE: &str = include_str!("../../../deploy/examples/catalog.toml");

fn problems(text: &str) -> Vec<String> {
    match Catalog::from_toml_str(text, "test") {
        Err(CatalogError::Invalid { problems, .. }) => problems.iter().map(|p| p.field.clone()).collect(),
        Err(e) => panic!("expected validation problems, got {e}"),
        Ok(_) => panic!("expected validation problems, got a valid catalogue"),
    }
}

const DEPT: &str = "[[department]]\ncode = \"so_tai_chinh\"\nname = \"Sở Tài chính\"\n\
                    contact = { name = \"Văn phòng Sở\", email = \"vp@stc.example\" }\n";

#[test]
fn the_example_catalogue_is_valid_and_complete() {
    let c = Catalog::from_toml_str(EXAMPLE, "example").expect("example catalogue");
    assert_eq!((c.departments.len(), c.datasets.len(), c.scenarios.len()), (9, 17, 5));
    let d = c.dataset("dvc_truc_tuyen").expect("dvc_truc_tuyen");
    assert_eq!(d.title, "Dịch vụ công trực tuyến");
    assert_eq!(d.cadence, Cadence::Monthly);
    assert_eq!(d.deadline.day, Some(5));
    assert!(d.open_data && d.licence.is_some());
    assert!(c.allows("so-khcn-01", "dvc_truc_tuyen"));
    assert!(!c.allows("so-y-te-01", "dvc_truc_tuyen"));
    assert_eq!(c.freshness_fields().get("dan_cu_tong_hop").map(String::as_str), Some("ky_bao_cao"));
    let kb = c.scenario("kb_y_te").expect("kb_y_te");
    assert_eq!(kb.inputs.len(), 3);
    assert_eq!(kb.inputs[0].max_staleness.to_string(), "1 day");
}

#[test]
fn unknown_fields_are_refused_with_their_name() {
    let text = format!(
        "{DEPT}[[dataset]]\nid = \"a\"\ntitle = \"A\"\ndepartment = \"so_tai_chinh\"\n\
                        cadence = \"daily\"\nupdate_kind = \"sync\"\ncolour = \"red\"\n"
    );
    let e = Catalog::from_toml_str(&text, "test").expect_err("unknown field");
    assert!(matches!(e, CatalogError::Parse { .. }), "{e}");
    assert!(e.to_string().contains("colour"), "{e}");
    let e = Catalog::from_toml_str("[[departments]]\ncode = \"x\"\n", "test").expect_err("unknown table");
    assert!(e.to_string().contains("departments"), "{e}");
    let e = Catalog::from_toml_str(&format!("{DEPT}[[scenario]]\nid = \"kb\"\ntitle = \"t\"\noffice = \"so_tai_chinh\"\ninputs = [{{ dataset = \"a\", max_staleness = \"1 fortnight\" }}]\n"), "test")
        .expect_err("bad staleness");
    assert!(e.to_string().contains("fortnight"), "{e}");
}

#[test]
fn every_bad_field_is_named_by_entry() {
    let text = format!(
        "{DEPT}\
         [[department]]\ncode = \"Bad Code\"\nname = \"\"\ncontact = {{ name = \"x\", email = \"not-an-email\" }}\n\
         [[dataset]]\nid = \"ho_so_tthc\"\ntitle = \"Hồ sơ\"\ndepartment = \"vp_ubnd\"\nagents = [\"Bad Agent\"]\n\
         cadence = \"monthly\"\ndeadline = {{ day = 32, weekday = \"monday\" }}\nupdate_kind = \"change\"\nopen_data = true\n\
         [[dataset]]\nid = \"ho_so_tthc\"\ntitle = \" \"\ndepartment = \"so_tai_chinh\"\ncadence = \"weekly\"\n\
         deadline = {{ days_after = 8 }}\nupdate_kind = \"sync\"\nfreshness_field = \"_kho_seq\"\n\
         [[scenario]]\nid = \"kb_x\"\ntitle = \"X\"\noffice = \"ubnd\"\n\
         inputs = [{{ dataset = \"nope\", max_staleness = \"1 day\" }}, {{ dataset = \"ho_so_tthc\", max_staleness = \"1 day\" }}, {{ dataset = \"ho_so_tthc\", max_staleness = \"1 week\" }}]\n\
         [[scenario]]\nid = \"kb_empty\"\ntitle = \"E\"\noffice = \"so_tai_chinh\"\ninputs = []\n"
    );
    let got = problems(&text);
    for field in [
        "department[Bad Code].code",
        "department[Bad Code].name",
        "department[Bad Code].contact.email",
        "dataset[ho_so_tthc].department",
        "dataset[ho_so_tthc].agents[0]",
        "dataset[ho_so_tthc].deadline.day",
        "dataset[ho_so_tthc].deadline.weekday",
        "dataset[ho_so_tthc].licence",
        "dataset[ho_so_tthc].id",
        "dataset[ho_so_tthc].title",
        "dataset[ho_so_tthc].deadline.days_after",
        "dataset[ho_so_tthc].freshness_field",
        "scenario[kb_x].office",
        "scenario[kb_x].inputs[0].dataset",
        "scenario[kb_x].inputs[2].dataset",
        "scenario[kb_empty].inputs",
    ] {
        assert!(got.iter().any(|g| g == field), "{field} not reported in {got:#?}");
    }
}

#[test]
fn catalogue_round_trips_through_json() {
    let c = Catalog::from_toml_str(EXAMPLE, "example").expect("example");
    let json = serde_json::to_value(&c).expect("json");
    assert_eq!(json["dataset"][0]["deadline"]["time"], "08:00:00");
    assert_eq!(json["scenario"][0]["inputs"][0]["max_staleness"], "1 month");
}
