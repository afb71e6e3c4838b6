//! The audit log's `batch_applied` entries are written in the batch's own transaction (issue 7):
//! a batch whose entry cannot be written is not applied, and with several PostgreSQL writers,
//! registry appends and `kho-hub agent` commands all appending at once, the hash chain stays
//! intact and every applied batch has exactly one entry — through the real hub over HTTPS.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use kho_shared::codec;
use kho_tests::pgwh::PgWarehouse;
use kho_tests::procs::HubProc;
use kho_tests::security::*;
use serde_json::Value;

const AGENTS: usize = 5;
const BATCHES_PER_AGENT: u64 = 12;
const CHANGES_PER_BATCH: u64 = 3;

/// `(agent, first_seq, last_seq, rows, sha256)` of every `batch_applied` entry, in log order.
type BatchEntry = (String, u64, u64, u64, String);

fn batch_entries(rows: impl IntoIterator<Item = (Option<String>, String)>) -> Vec<BatchEntry> {
    rows.into_iter()
        .map(|(agent, detail)| {
            let d: Value = serde_json::from_str(&detail).unwrap();
            let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("{k} in {detail}"));
            (agent.unwrap(), n("first_seq"), n("last_seq"), n("rows"), d["sha256"].as_str().unwrap().to_string())
        })
        .collect()
}

fn pg_batch_entries(pg: &mut PgWarehouse) -> Vec<BatchEntry> {
    let rows = pg
        .client()
        .query("SELECT agent, detail FROM kho.audit WHERE kind = 'batch_applied' ORDER BY seq", &[])
        .unwrap();
    batch_entries(rows.iter().map(|r| (r.get(0), r.get(1))))
}

fn verify_passes(hub: &HubProc) -> String {
    let verify = hub.command(&["audit", "verify"]);
    let out = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success(), "audit verify failed: {out}");
    out
}

#[test]
fn postgres_batches_from_many_agents_and_writers_each_get_exactly_one_entry_in_an_intact_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = PgWarehouse::create();
    let mut hub = HubProc::start_with_warehouse(&tmp.path().join("hub"), &[], &pg.hub_toml(4));
    // The PostgreSQL client runs its own runtime, so this test is synchronous and drives HTTP here.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = client(&hub);
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let id = format!("so-{i}");
        let key = new_key(&id);
        let token = add_agent(&hub, &id, &format!("ho_so_{i}"), "1h");
        let (status, enrolled) = rt.block_on(enroll(&http, &hub, &id, &token, &key));
        assert_eq!(status, 200, "{enrolled}");
        agents.push((id, key, enrolled["access_token"].as_str().unwrap().to_string()));
    }

    // 1. Atomicity: while the audit table refuses batch entries, a batch is not applied at all
    //    (before, its rows and ledger were committed and only the entry was lost).
    pg.client()
        .batch_execute(
            "ALTER TABLE kho.audit ADD CONSTRAINT kho_test_no_batches CHECK (kind <> 'batch_applied') NOT VALID",
        )
        .unwrap();
    let (id0, key0, access0) = &agents[0];
    let first = codec::encode(&batch(id0, "ho_so_0", 1, CHANGES_PER_BATCH)).unwrap();
    let refused = rt.block_on(Post::signed(access0, &first, key0).send(&http, &hub));
    assert_refused(refused, 500, "internal", "append to the audit log");
    assert_eq!(pg.ledger(id0), 0, "the batch was applied although its audit entry was not written");
    assert!(pg_batch_entries(&mut pg).is_empty());
    pg.client().batch_execute("ALTER TABLE kho.audit DROP CONSTRAINT kho_test_no_batches").unwrap();

    // 2. Many batches from every agent at once (4 writers), with resent duplicates, refused
    //    requests (audited by the registry connection) and `kho-hub agent add` commands (another
    //    process) appending to the same chain concurrently.
    let mut sent: BTreeMap<(String, u64), String> = BTreeMap::new();
    let adds = std::thread::scope(|s| {
        let adder = s.spawn(|| {
            for k in 0..3 {
                add_agent(&hub, &format!("extra-{k}"), "ho_so_x", "1h");
            }
        });
        let tasks: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(i, (id, key, access))| {
                let (http, hub, rt) = (&http, &hub, &rt);
                // One thread per agent, each driving its requests on the shared runtime.
                s.spawn(move || {
                    rt.block_on(async move {
                        let mut digests = Vec::new();
                        for n in 0..BATCHES_PER_AGENT {
                            let (lo, hi) = (n * CHANGES_PER_BATCH + 1, (n + 1) * CHANGES_PER_BATCH);
                            let encoded = codec::encode(&batch(id, &format!("ho_so_{i}"), lo, hi)).unwrap();
                            let ok = Post::signed(access, &encoded, key).send(http, hub).await;
                            let got = (ok.0, ok.1["applied_through"].as_u64());
                            assert_eq!(got, (200, Some(hi)), "{id} {lo}..{hi}: {ok:?}");
                            if n % 4 == 3 {
                                // A resent batch is acknowledged again and audited no second time.
                                let again = Post::signed(access, &encoded, key).send(http, hub).await;
                                assert_eq!((again.0, again.1["applied_through"].as_u64()), (200, Some(hi)));
                                // A forged one is refused (and audited as such, by the registry).
                                let mut forged = Post::signed(access, &encoded, key);
                                forged.signature = Some(new_key(id).sign(&encoded.digest_hex).unwrap());
                                assert_eq!(forged.send(http, hub).await.0, 401);
                            }
                            digests.push((lo, encoded.digest_hex.clone()));
                        }
                        digests
                    })
                })
            })
            .collect();
        let results: Vec<Vec<(u64, String)>> = tasks.into_iter().map(|t| t.join().unwrap()).collect();
        adder.join().unwrap();
        results
    });
    for ((id, _, _), digests) in agents.iter().zip(adds) {
        for (lo, digest) in digests {
            sent.insert((id.clone(), lo), digest);
        }
    }

    let out = verify_passes(&hub);
    let entries = pg_batch_entries(&mut pg);
    assert_eq!(entries.len(), AGENTS * BATCHES_PER_AGENT as usize, "one entry per applied batch: {entries:?}");
    let mut seen = BTreeMap::new();
    for (agent, lo, hi, rows, sha) in &entries {
        assert_eq!((hi - lo + 1, *rows), (CHANGES_PER_BATCH, CHANGES_PER_BATCH));
        assert_eq!(sent.get(&(agent.clone(), *lo)), Some(sha), "entry for a batch never sent or wrong digest");
        assert!(seen.insert((agent.clone(), *lo), ()).is_none(), "two entries for {agent} {lo}");
    }
    for (id, _, _) in &agents {
        assert_eq!(pg.ledger(id), BATCHES_PER_AGENT * CHANGES_PER_BATCH);
    }
    let refused = pg.count("SELECT count(*) FROM kho.audit WHERE kind = 'refused'");
    // The one from step 1 is audited too (an internal error is not audited, so at least the forgeries).
    assert!(refused >= (AGENTS as i64) * (BATCHES_PER_AGENT as i64 / 4), "{refused} refusals audited");
    assert_eq!(pg.count("SELECT count(*) FROM kho.audit WHERE kind = 'agent_added'"), AGENTS as i64 + 3);
    let total = pg.count("SELECT count(*) FROM kho.audit");
    assert!(out.contains(&total.to_string()), "verify reports the head of {total} entries: {out}");
    assert!(hub.stop(), "the hub stops cleanly\n{}", hub.log_tail());
}

#[test]
fn sqlite_a_batch_whose_audit_entry_cannot_be_written_is_not_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::start_with(&tmp.path().join("hub"), &[], "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = client(&hub);
    let a = "so-y-te";
    let key = new_key(a);
    let token = add_agent(&hub, a, "ho_so", "1h");
    let (status, enrolled) = rt.block_on(enroll(&http, &hub, a, &token, &key));
    assert_eq!(status, 200, "{enrolled}");
    let access = enrolled["access_token"].as_str().unwrap().to_string();

    let wh = rusqlite::Connection::open(hub.warehouse()).unwrap();
    wh.execute_batch(
        "CREATE TRIGGER kho_test_no_batches BEFORE INSERT ON _kho_audit WHEN NEW.kind = 'batch_applied' \
         BEGIN SELECT RAISE(ABORT, 'audit entries refused by the test'); END;",
    )
    .unwrap();
    let encoded = codec::encode(&batch(a, "ho_so", 1, 4)).unwrap();
    let refused = rt.block_on(Post::signed(&access, &encoded, &key).send(&http, &hub));
    assert_refused(refused, 500, "internal", "audit entries refused by the test");
    assert_eq!(warehouse_state(&hub, a), (Vec::new(), 0), "nothing applied without its audit entry");

    wh.execute_batch("DROP TRIGGER kho_test_no_batches").unwrap();
    let ok = rt.block_on(Post::signed(&access, &encoded, &key).send(&http, &hub));
    assert_eq!((ok.0, ok.1["applied_through"].as_u64()), (200, Some(4)), "{ok:?}");
    let again = rt.block_on(Post::signed(&access, &encoded, &key).send(&http, &hub));
    assert_eq!(again.0, 200);
    let applied: Vec<_> = audit_rows(&hub).into_iter().filter(|(kind, _, _)| kind == "batch_applied").collect();
    let entries = batch_entries(applied.into_iter().map(|(_, agent, detail)| (agent, detail)));
    assert_eq!(entries, vec![(a.to_string(), 1, 4, 4, encoded.digest_hex.clone())]);
    assert_eq!(warehouse_state(&hub, a).1, 4);
    verify_passes(&hub);
    assert!(hub.stop(), "the hub stops cleanly\n{}", hub.log_tail());
}
