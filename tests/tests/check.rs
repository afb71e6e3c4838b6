//! `kho-agent check` against a real hub: the token is accepted and every dataset may be written;
//! a dataset the hub does not grant, a token of another agent and a wrong token are each named.

#![allow(clippy::unwrap_used)]

use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc};
use kho_tests::source::SourceDb;

fn check(agent: &AgentProc) -> (bool, String) {
    let out = agent.command(&["check"]);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_asks_the_hub_who_the_agent_is_and_what_it_may_write() {
    let tmp = tempfile::tempdir().unwrap();
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 10).unwrap();
    let a = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("a-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into()],
    };
    let b = AgentSpec { id: "so-tai-chinh".into(), token: format!("b-{}", fastrand::u64(..)), datasets: vec![] };
    let hub = HubProc::start(&tmp.path().join("hub"), &[a.clone(), b.clone()]);
    let opts = AgentOptions::default();
    let source = format!("kind = \"sqlite\"\npath = \"{}\"\n", src.path.display());
    let ds = |name: &str, table: &str| DatasetSpec {
        name: name.into(),
        table: table.into(),
        key: vec!["ma".into()],
        cursor: None,
    };
    let ho_so = DatasetSpec { name: "ho_so".into(), table: "ho_so".into(), key: vec!["id".into()], cursor: None };

    let agent = AgentProc::configure(
        &tmp.path().join("ok"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &ho_so.toml(&source, &opts),
        &opts,
    );
    let (ok, text) = check(&agent);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("hub {}: reachable, token accepted for agent so-y-te-01", hub.url())), "{text}");
    assert!(text.contains("rows: 10, key unique and never NULL"), "{text}");

    // A second dataset the hub does not grant.
    let toml = format!("{}{}", ho_so.toml(&source, &opts), ds("don_vi", "don_vi").toml(&source, &opts));
    let agent = AgentProc::configure(&tmp.path().join("grant"), &a, &hub.url(), &hub.ca_path(), &toml, &opts);
    let (ok, text) = check(&agent);
    assert!(!ok, "{text}");
    assert!(
        text.contains("dataset don_vi: PROBLEM: the hub does not let agent so-y-te-01 write it (allowed: ho_so)"),
        "{text}"
    );

    // Another agent's token under this agent's id.
    let stolen = AgentSpec { id: "so-y-te-01".into(), token: b.token.clone(), datasets: vec![] };
    let agent = AgentProc::configure(
        &tmp.path().join("other"),
        &stolen,
        &hub.url(),
        &hub.ca_path(),
        &ho_so.toml(&source, &opts),
        &opts,
    );
    let (ok, text) = check(&agent);
    assert!(!ok, "{text}");
    assert!(text.contains("the token belongs to agent \"so-tai-chinh\" but agent.id is \"so-y-te-01\""), "{text}");

    // A key that repeats and one that is NULL: counted and named, not silently merged.
    let query = |name: &str, sql: &str| {
        format!(
            "\n[[dataset]]\nname = \"{name}\"\nquery = \"{sql}\"\nkey = [\"k\"]\nmode = \"snapshot\"\n[dataset.source]\n{source}"
        )
    };
    let toml = format!(
        "{}{}",
        query("nhom", "SELECT id % 4 AS k, ma_ho_so FROM ho_so"),
        query("thieu", "SELECT CASE WHEN id <= 2 THEN NULL ELSE id END AS k FROM ho_so")
    );
    let c = AgentSpec { id: "so-y-te-01".into(), token: a.token.clone(), datasets: vec![] };
    let agent = AgentProc::configure(&tmp.path().join("keys"), &c, &hub.url(), &hub.ca_path(), &toml, &opts);
    let (ok, text) = check(&agent);
    assert!(!ok, "{text}");
    assert!(
        text.contains("dataset nhom: PROBLEM: key [k] is not unique: 6 row(s) repeat an earlier key, e.g. {\"k\":"),
        "{text}"
    );
    assert!(text.contains("dataset thieu: PROBLEM: 2 row(s) have a NULL in key [k]"), "{text}");

    // A token the hub does not know.
    let wrong = AgentSpec { id: "so-y-te-01".into(), token: "not-a-token".into(), datasets: vec![] };
    let agent = AgentProc::configure(
        &tmp.path().join("wrong"),
        &wrong,
        &hub.url(),
        &hub.ca_path(),
        &ho_so.toml(&source, &opts),
        &opts,
    );
    let (ok, text) = check(&agent);
    assert!(!ok, "{text}");
    assert!(text.contains("PROBLEM") && text.contains("401"), "{text}");
}
