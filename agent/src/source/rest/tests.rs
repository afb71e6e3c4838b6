#![allow(clippy::unwrap_used)]

use super::config::Secret;
use super::paging::raw_text;
use super::*;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_string()).unwrap()
}

#[test]
fn pointers_find_records_without_touching_numbers() {
    let body = raw(r#"{"data":{"items":[{"so_tien":12345678901234567890.123456789}]},"next":"/p?page=2"}"#);
    let items = raw_pointer(&body, "/data/items").unwrap();
    let list: Vec<Record> = serde_json::from_str(items.get()).unwrap();
    assert_eq!(list[0]["so_tien"].get(), "12345678901234567890.123456789");
    assert_eq!(raw_text(&body, "/next").unwrap(), "/p?page=2");
    assert!(raw_pointer(&body, "/nope").is_none());
    assert_eq!(raw_pointer(&raw("[1,2]"), "/1").unwrap().get(), "2");
}

#[test]
fn link_headers_and_retry_after() {
    let h = r#"<https://api.example/x?page=1>; rel="prev", <https://api.example/x?page=3>; rel="next""#;
    assert_eq!(link_next(h).unwrap(), "https://api.example/x?page=3");
    assert!(link_next(r#"<a>; rel="last""#).is_none());
    assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
    assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(backoff(0), Duration::from_millis(500));
    assert_eq!(backoff(20), Duration::from_secs(30));
}

#[test]
fn pagers_walk_each_style() {
    let base = Url::parse("http://h/api?x=1").unwrap();
    let empty = raw("{}");
    let mut p = Pager::new(
        Pagination::Page { param: "page".into(), first: 1, size_param: Some("size".into()), size: Some(2) },
        base.clone(),
    );
    let u1 = p.first();
    assert_eq!(u1.as_str(), "http://h/api?x=1&page=1&size=2");
    let u2 = p.next(&u1, 2, &empty, None).unwrap();
    assert_eq!(u2.as_str(), "http://h/api?x=1&page=2&size=2");
    assert!(p.next(&u2, 1, &empty, None).is_none(), "a short page ends the listing");

    let mut p = Pager::new(
        Pagination::Offset { offset_param: "offset".into(), limit_param: "limit".into(), limit: 2 },
        base.clone(),
    );
    let u1 = p.first();
    assert_eq!(u1.as_str(), "http://h/api?x=1&offset=0&limit=2");
    assert_eq!(p.next(&u1, 2, &empty, None).unwrap().as_str(), "http://h/api?x=1&offset=2&limit=2");
    assert!(p.next(&u1, 0, &empty, None).is_none());

    let mut p = Pager::new(Pagination::NextLink { pointer: Some("/links/next".into()) }, base.clone());
    let body = raw(r#"{"links":{"next":"/api?after=9"}}"#);
    assert_eq!(p.next(&base, 5, &body, None).unwrap().as_str(), "http://h/api?after=9");
    assert!(p.next(&base, 5, &raw(r#"{"links":{"next":null}}"#), None).is_none());
    let mut p = Pager::new(Pagination::NextLink { pointer: None }, base.clone());
    assert_eq!(
        p.next(&base, 5, &empty, Some("<http://h/api?p=2>; rel=\"next\"")).unwrap().as_str(),
        "http://h/api?p=2"
    );

    let mut p = Pager::new(Pagination::Cursor { pointer: "/meta/next".into(), param: "cursor".into() }, base.clone());
    let body = raw(r#"{"meta":{"next":"abc"}}"#);
    assert_eq!(p.next(&base, 5, &body, None).unwrap().as_str(), "http://h/api?x=1&cursor=abc");
    assert!(p.next(&base, 5, &raw(r#"{"meta":{}}"#), None).is_none());
}

#[test]
fn json_values_are_typed_exactly() {
    let vals = ["1", "2.50", "\"Bản đồ\"", "true", "{\"a\":1}", "null"];
    let classes: Vec<Option<Class>> = vals.iter().map(|v| classify_raw(&raw(v))).collect();
    assert_eq!(
        classes,
        [Some(Class::Int), Some(Class::Decimal), Some(Class::Text), Some(Class::Bool), Some(Class::Json), None]
    );
    let mut r = RowBuf::default();
    push_raw(&mut r, ColumnType::Decimal, Some(&raw("12345678901234567890.10"))).unwrap();
    push_raw(&mut r, ColumnType::Json, Some(&raw("{\"a\": [1, 2]}"))).unwrap();
    push_raw(&mut r, ColumnType::Text, Some(&raw("\"Sơn La\""))).unwrap();
    push_raw(&mut r, ColumnType::Bool, Some(&raw("false"))).unwrap();
    push_raw(&mut r, ColumnType::Int, None).unwrap();
    assert_eq!(r.cell(0).unwrap(), Cell::Text(b"12345678901234567890.10"));
    assert_eq!(r.cell(1).unwrap(), Cell::Text(b"{\"a\": [1, 2]}"));
    assert_eq!(r.cell(2).unwrap(), Cell::Text("Sơn La".as_bytes()));
    assert_eq!(r.cell(3).unwrap(), Cell::Int(0));
    assert_eq!(r.cell(4).unwrap(), Cell::Null);
    assert!(push_raw(&mut r, ColumnType::Int, Some(&raw("\"abc\""))).is_err());
}

#[test]
fn cursor_scans_filter_and_sort_on_the_agent() {
    let config = RestSourceConfig {
        url: "http://127.0.0.1:9/x".into(),
        headers: BTreeMap::new(),
        auth: None,
        records: String::new(),
        pagination: Pagination::None,
        max_pages: 1,
        rate_limit: None,
        retries: 0,
        max_retry_wait: Duration::ZERO,
        timeout: Duration::from_secs(1),
        cursor_param: None,
        types: BTreeMap::new(),
    };
    let mut src = RestSource::open("d", &config, None).unwrap();
    // An API that ignores updated_since and returns records unordered.
    for (id, at) in [(1, "2026-01-03"), (2, "2026-01-01"), (3, "2026-01-02"), (4, "2026-01-05")] {
        let mut r = RowBuf::default();
        r.push_int(id);
        r.push_text(at.as_bytes());
        src.rows.push(r);
    }
    src.columns = vec!["id".into(), "updated_at".into()];
    let schema = DatasetSchema {
        privacy: Default::default(),
        dataset: "d".into(),
        key: vec!["id".into()],
        columns: vec![
            Column { name: "id".into(), ty: ColumnType::Int },
            Column { name: "updated_at".into(), ty: ColumnType::Date },
        ],
    };
    let from = CursorValue::Text("2026-01-02".into());
    let mut seen = Vec::new();
    src.scan(&schema, ScanRange::CursorFrom { column: "updated_at", from: Some(&from) }, &mut |r| {
        if let Ok(Cell::Int(i)) = r.cell(0) {
            seen.push(i);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, [3, 1, 4], "rows >= the stored cursor, in cursor order");
    assert_eq!(src.count_null("updated_at").unwrap(), 0);
}

#[test]
fn secrets_never_show_in_debug() {
    let s = Secret("hunter2".into());
    assert!(!format!("{s:?}").contains("hunter2"));
    let auth = RestAuth {
        kind: AuthKind::Bearer,
        username: None,
        header: None,
        secret_env: Some("KHO_TEST_REST_SECRET_UNSET_123".into()),
        secret_file: None,
    };
    let err = auth.header().unwrap_err();
    assert!(err.contains("KHO_TEST_REST_SECRET_UNSET_123"));
}
