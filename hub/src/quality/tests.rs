use std::collections::HashSet;

use jiff::civil::date;
use kho_shared::protocol::{Change, Op};
use serde_json::{Map, Value, json};

use super::eval::{Checker, Lookup, NoLookup, change_share_exceeded, row_count_problem};
use super::{Policy, Rule, validate_rules};

fn rules(toml_text: &str) -> Vec<Rule> {
    #[derive(serde::Deserialize)]
    struct R {
        rule: Vec<Rule>,
    }
    toml::from_str::<R>(toml_text).expect("rules parse").rule
}

fn up(seq: u64, row: Value) -> Change {
    Change { seq, dataset: "ho_so".into(), op: Op::Upsert, key: None, row: row.as_object().cloned() }
}

const TODAY: jiff::civil::Date = date(2026, 11, 25);

/// The keys of the rows failing `rule` when `rows` (with key `ma`) are checked.
fn failing(rules_text: &str, rows: &[Value], lookup: &mut dyn Lookup) -> Vec<String> {
    let checker = Checker::new("ho_so", &rules(rules_text));
    let changes: Vec<Change> = rows.iter().enumerate().map(|(i, r)| up(i as u64 + 1, r.clone())).collect();
    checker
        .check(&changes, &["ma".to_string()], TODAY, lookup)
        .into_iter()
        .filter(|v| !v.failures.is_empty())
        .map(|v| v.key)
        .collect()
}

fn k(ma: &str) -> String {
    json!({ "ma": ma }).to_string()
}

#[test]
fn not_null_catches_missing_null_and_blank() {
    let rows =
        [json!({"ma":"a","ten":"An"}), json!({"ma":"b"}), json!({"ma":"c","ten":null}), json!({"ma":"d","ten":"  "})];
    let got = failing("[[rule]]\ncheck='not_null'\ncolumn='ten'", &rows, &mut NoLookup);
    assert_eq!(got, [k("b"), k("c"), k("d")]);
}

#[test]
fn range_on_numbers_and_dates_including_not_in_the_future() {
    let r = "[[rule]]\ncheck='range'\ncolumn='tuoi'\nmin=0\nmax=120";
    let rows = [
        json!({"ma":"a","tuoi":30}),
        json!({"ma":"b","tuoi":-1}),
        json!({"ma":"c","tuoi":"121"}),
        json!({"ma":"d","tuoi":"x"}),
        json!({"ma":"e"}),
    ];
    assert_eq!(failing(r, &rows, &mut NoLookup), [k("b"), k("c"), k("d")], "missing is not_null's job");
    let r = "[[rule]]\ncheck='range'\ncolumn='ngay'\nmin='2000-01-01'\nmax='today'";
    let rows = [
        json!({"ma":"a","ngay":"2026-11-25"}),
        json!({"ma":"b","ngay":"2026-11-26"}),
        json!({"ma":"c","ngay":"1999-12-31T23:00:00Z"}),
        json!({"ma":"d","ngay":"hôm qua"}),
    ];
    assert_eq!(failing(r, &rows, &mut NoLookup), [k("b"), k("c"), k("d")]);
}

#[test]
fn pattern_must_match_the_whole_value() {
    let r = "[[rule]]\ncheck='pattern'\ncolumn='cccd'\npattern='[0-9]{12}'\npolicy='reject'";
    let rows = [
        json!({"ma":"a","cccd":"012345678901"}),
        json!({"ma":"b","cccd":"0123456789012"}),
        json!({"ma":"c","cccd":"12a"}),
    ];
    assert_eq!(failing(r, &rows, &mut NoLookup), [k("b"), k("c")]);
    let checker = Checker::new("ho_so", &rules(r));
    let v = checker.check(&[up(1, rows[2].clone())], &["ma".into()], TODAY, &mut NoLookup);
    assert!(v[0].rejected());
    assert_eq!(v[0].reason(), "pattern:cccd=\"12a\"");
}

#[test]
fn allowed_values_is_a_code_list() {
    let r = "[[rule]]\ncheck='allowed_values'\ncolumn='tt'\nvalues=['moi','xong']";
    let rows = [json!({"ma":"a","tt":"moi"}), json!({"ma":"b","tt":"Moi"}), json!({"ma":"c","tt":"xong"})];
    assert_eq!(failing(r, &rows, &mut NoLookup), [k("b")]);
}

/// Values the warehouse "holds", as a lookup would find them: `(dataset, column, value)` and, for
/// `unique`, `("column=value", key of the row holding it)` (such a value exists too).
struct Held(HashSet<(String, String, String)>, Vec<(String, String)>);

impl Lookup for Held {
    fn exists(&mut self, d: &str, c: &str, v: &str) -> bool {
        self.0.contains(&(d.into(), c.into(), v.into())) || self.1.iter().any(|(cv, _)| cv == &format!("{c}={v}"))
    }
    fn taken_by_other(&mut self, _: &str, c: &str, v: &str, key: &Map<String, Value>) -> bool {
        let me = key.get("ma").and_then(Value::as_str).unwrap_or_default();
        self.1.iter().any(|(col_val, owner)| col_val == &format!("{c}={v}") && owner != me)
    }
}

#[test]
fn unique_within_the_batch_and_against_loaded_rows() {
    let r = "[[rule]]\ncheck='unique'\ncolumn='so'";
    let mut held = Held(HashSet::new(), vec![("so=7".into(), "z".into()), ("so=8".into(), "a".into())]);
    let rows = [
        json!({"ma":"a","so":8}), // its own value: fine
        json!({"ma":"b","so":1}),
        json!({"ma":"c","so":1}), // same as b in this batch
        json!({"ma":"d","so":7}), // held by z
        json!({"ma":"b","so":1}), // b again, same value: fine
    ];
    assert_eq!(failing(r, &rows, &mut held), [k("c"), k("d")]);
}

#[test]
fn reference_looks_in_the_warehouse_and_the_batch() {
    let r = "[[rule]]\ncheck='reference'\ncolumn='don_vi'\ndataset='don_vi'\nref_column='ma_dv'";
    let mut held = Held([("don_vi".into(), "ma_dv".into(), "UB".into())].into(), vec![]);
    let mut changes = vec![
        up(1, json!({"ma":"a","don_vi":"UB"})),
        up(2, json!({"ma":"b","don_vi":"SYT"})),
        up(3, json!({"ma":"c","don_vi":"XX"})),
    ];
    changes.push(Change {
        seq: 4,
        dataset: "don_vi".into(),
        op: Op::Upsert,
        key: None,
        row: json!({"ma_dv":"SYT"}).as_object().cloned(),
    });
    let v = Checker::new("ho_so", &rules(r)).check(&changes, &["ma".into()], TODAY, &mut held);
    assert_eq!(v.len(), 3, "only ho_so's changes get verdicts");
    let bad: Vec<_> = v.iter().filter(|v| !v.failures.is_empty()).map(|v| v.key.clone()).collect();
    assert_eq!(bad, [k("c")]);
    assert_eq!(v[2].failures[0].policy, Policy::Warn);
}

#[test]
fn deletes_get_an_empty_verdict_so_their_violations_clear() {
    let checker = Checker::new("ho_so", &rules("[[rule]]\ncheck='not_null'\ncolumn='ten'"));
    let del = Change {
        seq: 9,
        dataset: "ho_so".into(),
        op: Op::Delete,
        key: json!({"ma":"a"}).as_object().cloned(),
        row: None,
    };
    let v = checker.check(&[del], &["ma".into()], TODAY, &mut NoLookup);
    assert!(v[0].delete && v[0].failures.is_empty());
    assert_eq!(v[0].key, k("a"));
}

#[test]
fn dataset_level_rules() {
    assert_eq!(change_share_exceeded(50, 100, 30.0), Some(50.0));
    assert_eq!(change_share_exceeded(30, 100, 30.0), None);
    assert_eq!(change_share_exceeded(1000, 0, 30.0), None, "a first load is not flagged");
    assert_eq!(row_count_problem(0, Some(1), None).as_deref(), Some("0 rows, fewer than 1"));
    assert_eq!(row_count_problem(11, None, Some(10)).as_deref(), Some("11 rows, more than 10"));
    assert_eq!(row_count_problem(5, Some(1), Some(10)), None);
}

#[test]
fn validation_names_every_bad_field() {
    let bad = rules(
        "[[rule]]\ncheck='not_null'\n\
         [[rule]]\ncheck='pattern'\ncolumn='cccd'\npattern='[0-9'\n\
         [[rule]]\ncheck='range'\ncolumn='tuoi'\nmin=10\nmax=5\n\
         [[rule]]\ncheck='range'\ncolumn='ngay'\nmax='ngày mai'\n\
         [[rule]]\ncheck='allowed_values'\ncolumn='tt'\n\
         [[rule]]\ncheck='reference'\ncolumn='dv'\ndataset='khong_co'\n\
         [[rule]]\ncheck='row_count'\nmin_rows=1\npolicy='reject'\n\
         [[rule]]\ncheck='max_change_share'\nmax_percent=150.0\n\
         [[rule]]\ncheck='not_null'\ncolumn='ten'\npattern='x'\n\
         [[rule]]\ncheck='not_null'\ncolumn='ten'\n",
    );
    let problems = validate_rules("dataset[ho_so]", &bad, &|d| d == "don_vi");
    let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "dataset[ho_so].rule[0].column",
            "dataset[ho_so].rule[1].pattern",
            "dataset[ho_so].rule[2].max",
            "dataset[ho_so].rule[3].max",
            "dataset[ho_so].rule[4].values",
            "dataset[ho_so].rule[5].dataset",
            "dataset[ho_so].rule[6].period",
            "dataset[ho_so].rule[6].policy",
            "dataset[ho_so].rule[7].max_percent",
            "dataset[ho_so].rule[8].pattern",
            "dataset[ho_so].rule[9].check",
        ],
        "{problems:#?}"
    );
    let good = rules(
        "[[rule]]\ncheck='reference'\ncolumn='dv'\ndataset='don_vi'\n[[rule]]\ncheck='range'\ncolumn='n'\nmax='today'",
    );
    assert!(validate_rules("dataset[ho_so]", &good, &|d| d == "don_vi").is_empty());
}

#[test]
fn unknown_rule_fields_are_refused() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct R {
        rule: Vec<Rule>,
    }
    let err = toml::from_str::<R>("[[rule]]\ncheck='not_null'\ncolumn='a'\nsevere=true").expect_err("unknown field");
    assert!(err.to_string().contains("severe"), "{err}");
}

#[test]
fn the_commented_rules_of_the_example_catalogue_are_valid() {
    let example = include_str!("../../../deploy/examples/catalog.toml");
    let start = example.find("# [[dataset.rule]]").expect("example rules");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# "))
        .map(|l| format!("{l}\n"))
        .collect();
    let block = block.replace("[[dataset.rule]]", "[[rule]]");
    let parsed = rules(&block);
    assert_eq!(parsed.len(), 9, "{block}");
    let problems = validate_rules("dataset[ho_so_tthc]", &parsed, &|_| true);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_row_written_twice_in_a_batch_is_recorded_as_its_last_write() {
    let checker = Checker::new("ho_so", &rules("[[rule]]\ncheck='not_null'\ncolumn='ten'\npolicy='reject'"));
    let changes = [up(1, json!({"ma":"a"})), up(2, json!({"ma":"b","ten":"B"})), up(3, json!({"ma":"a","ten":"A"}))];
    let verdicts = checker.check(&changes, &["ma".into()], TODAY, &mut NoLookup);
    let checked = super::ingest::Checked { dataset: "ho_so".into(), verdicts, rejects: true };
    assert_eq!(super::ingest::rejected(std::slice::from_ref(&checked)), [0].into(), "the failing write is not loaded");
    let last: Vec<(u64, bool)> = checked.last_per_key().iter().map(|v| (v.seq, v.rejected())).collect();
    assert_eq!(last, [(2, false), (3, false)], "but a is recorded as its clean last write");
}

/// Records what the checker asks the warehouse; values in `held` exist.
#[derive(Default)]
struct Asked {
    held: Vec<&'static str>,
    batches: Vec<(String, Vec<String>)>,
    exact: Vec<String>,
}

impl Lookup for Asked {
    fn exists(&mut self, _: &str, _: &str, v: &str) -> bool {
        panic!("asked about {v:?} alone: lookups go per batch")
    }
    fn taken_by_other(&mut self, _: &str, _: &str, v: &str, _: &Map<String, Value>) -> bool {
        self.exact.push(v.into());
        false
    }
    fn existing(&mut self, d: &str, c: &str, values: &[&str]) -> Vec<bool> {
        let mut asked: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        asked.sort();
        self.batches.push((format!("{d}.{c}"), asked));
        values.iter().map(|v| self.held.contains(v)).collect()
    }
}

#[test]
fn lookups_are_asked_once_per_rule_and_batch_and_exactly_only_for_held_values() {
    let r = "[[rule]]\ncheck='unique'\ncolumn='so'\n\
             [[rule]]\ncheck='reference'\ncolumn='dv'\ndataset='don_vi'\nref_column='ma_dv'";
    let rows = [
        json!({"ma":"a","so":1,"dv":"UB"}),
        json!({"ma":"b","so":2,"dv":"UB"}),
        json!({"ma":"c","so":3,"dv":"UB"}),
        json!({"ma":"d","so":1,"dv":"XX"}), // a's number, and an unknown unit
        json!({"ma":"e","dv":"  "}),        // blank: nothing to look up
    ];
    let mut asked = Asked { held: vec!["2", "UB"], ..Asked::default() };
    assert_eq!(failing(r, &rows, &mut asked), [k("d")]);
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        asked.batches,
        [("ho_so.so".to_string(), strings(&["1", "2", "3"])), ("don_vi.ma_dv".to_string(), strings(&["UB", "XX"]))]
    );
    assert_eq!(asked.exact, ["2"], "only a value the warehouse holds may belong to another row");
}

#[test]
fn keys_are_written_as_json_objects_of_the_key_columns() {
    let checker = Checker::new("ho_so", &rules("[[rule]]\ncheck='not_null'\ncolumn='ten'"));
    let row = json!({"so": 7, "ma": "a\"b\\c ư\n", "ten": "x"});
    let key_columns = ["so".to_string(), "ma".to_string(), "thieu".to_string()];
    let v = checker.check(&[up(1, row)], &key_columns, TODAY, &mut NoLookup);
    let expected = json!({"so": 7, "ma": "a\"b\\c ư\n", "thieu": null}).to_string();
    assert_eq!(v[0].key, expected);
}
