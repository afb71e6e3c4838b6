//! The registry and audit log in the SQLite warehouse file: `_kho_agent_registry` and
//! `_kho_audit`, on their own connection (WAL lets it read beside the applier; writes wait for
//! the applier's short transactions through the busy timeout).
//!
//! An audit append is one `BEGIN IMMEDIATE` transaction (read the last entry, insert the next),
//! so two writers — the hub and a `kho-hub agent` command — can never fork the chain.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{AgentStore, NewAgent, RegisteredAgent, RegistryError};
use crate::audit;

/// Waits for the applier's or another command's transaction rather than failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _kho_agent_registry (
    agent TEXT PRIMARY KEY,
    department TEXT NOT NULL,
    datasets_json TEXT NOT NULL,
    added_at_ms INTEGER NOT NULL,
    enroll_token_sha256 TEXT NOT NULL UNIQUE,
    token_expires_at_ms INTEGER NOT NULL,
    enrolled_at_ms INTEGER,
    public_key TEXT,
    access_token_sha256 TEXT UNIQUE,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS _kho_agents (
    agent TEXT PRIMARY KEY,
    last_seen_at TEXT NOT NULL,
    version TEXT,
    outbox_depth INTEGER,
    acked_through INTEGER,
    report_json TEXT
);
";

const SELECT: &str = "SELECT r.agent, r.department, r.datasets_json, r.added_at_ms, r.token_expires_at_ms, \
     r.enrolled_at_ms, r.revoked_at_ms, r.public_key, h.last_seen_at, h.version, h.outbox_depth, h.report_json, \
     h.transport FROM _kho_agent_registry r LEFT JOIN _kho_agents h ON h.agent = r.agent";

/// The audit table alone, also created by the warehouse (whose writer appends applied-batch entries).
pub(crate) const AUDIT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _kho_audit (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    agent TEXT,
    detail TEXT NOT NULL,
    prev_sha256 TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
";

/// Appends `entry` inside the caller's write transaction (`BEGIN IMMEDIATE`: SQLite has one
/// writer at a time, so the head read here is still the head at commit and the chain never forks).
pub(crate) fn append_audit_in(conn: &Connection, entry: &audit::Entry) -> Result<audit::Stored, rusqlite::Error> {
    let last: Option<(i64, String)> = conn
        .query_row("SELECT seq, sha256 FROM _kho_audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let stored = audit::Stored::chain(entry, last.as_ref().map(|(s, h)| (*s, h.as_str())));
    conn.execute(
        "INSERT INTO _kho_audit (seq, at_ms, kind, agent, detail, prev_sha256, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![stored.seq, stored.at_ms, stored.kind, stored.agent, stored.detail, stored.prev_sha256, stored.sha256],
    )?;
    Ok(stored)
}

/// The SQLite registry store.
pub struct SqliteAgentStore {
    conn: Connection,
}

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> RegistryError {
    move |e| RegistryError::database(context, e)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegisteredAgent> {
    let datasets: String = r.get(2)?;
    Ok(RegisteredAgent {
        id: r.get(0)?,
        department: r.get(1)?,
        datasets: serde_json::from_str(&datasets).unwrap_or_default(),
        added_at_ms: r.get(3)?,
        token_expires_at_ms: r.get(4)?,
        enrolled_at_ms: r.get(5)?,
        revoked_at_ms: r.get(6)?,
        public_key: r.get(7)?,
        last_seen_at: r.get(8)?,
        version: r.get(9)?,
        outbox_depth: r.get(10)?,
        transport: r.get(12)?,
        last_error: super::first_error(r.get::<_, Option<String>>(11)?.as_deref()),
    })
}

impl SqliteAgentStore {
    /// Opens the warehouse file (creating it and the tables if needed).
    pub fn open(path: &Path) -> Result<SqliteAgentStore, RegistryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RegistryError::database("create the data directory", e))?;
        }
        let conn = Connection::open(path).map_err(db("open the warehouse file"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db("busy_timeout"))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").map_err(db("pragmas"))?;
        conn.execute_batch(SCHEMA).map_err(db("create registry tables"))?;
        conn.execute_batch(AUDIT_SCHEMA).map_err(db("create the audit table"))?;
        crate::warehouse::sqlite::add_transport_column(&conn).map_err(db("add _kho_agents.transport"))?;
        Ok(SqliteAgentStore { conn })
    }

    fn one(&self, filter: &str, value: &str) -> Result<Option<RegisteredAgent>, RegistryError> {
        self.conn
            .prepare_cached(&format!("{SELECT} WHERE {filter} = ?1"))
            .and_then(|mut s| s.query_row([value], row).optional())
            .map_err(db("read the registry"))
    }
}

impl AgentStore for SqliteAgentStore {
    fn add(&mut self, agent: &NewAgent, now_ms: i64) -> Result<(), RegistryError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("add agent"))?;
        let enrolled: Option<(Option<i64>, Option<i64>)> = tx
            .query_row(
                "SELECT enrolled_at_ms, revoked_at_ms FROM _kho_agent_registry WHERE agent = ?1",
                [&agent.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db("add agent"))?;
        if let Some((Some(_), None)) = enrolled {
            return Err(RegistryError::AlreadyEnrolled(agent.id.clone()));
        }
        let datasets = serde_json::to_string(&agent.datasets).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO _kho_agent_registry (agent, department, datasets_json, added_at_ms, enroll_token_sha256, \
             token_expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (agent) DO UPDATE SET \
             department = excluded.department, datasets_json = excluded.datasets_json, added_at_ms = excluded.added_at_ms, \
             enroll_token_sha256 = excluded.enroll_token_sha256, token_expires_at_ms = excluded.token_expires_at_ms, \
             enrolled_at_ms = NULL, public_key = NULL, access_token_sha256 = NULL, revoked_at_ms = NULL",
            params![agent.id, agent.department, datasets, now_ms, agent.token_sha256, agent.token_expires_at_ms],
        )
        .map_err(db("add agent"))?;
        tx.commit().map_err(db("add agent"))
    }

    fn by_enroll_token(&mut self, token_sha256: &str) -> Result<Option<RegisteredAgent>, RegistryError> {
        self.one("r.enroll_token_sha256", token_sha256)
    }

    fn complete_enrollment(
        &mut self,
        id: &str,
        public_key: &str,
        access_sha256: &str,
        now_ms: i64,
    ) -> Result<bool, RegistryError> {
        let n = self
            .conn
            .execute(
                "UPDATE _kho_agent_registry SET enrolled_at_ms = ?2, public_key = ?3, access_token_sha256 = ?4 \
                 WHERE agent = ?1 AND enrolled_at_ms IS NULL AND revoked_at_ms IS NULL AND token_expires_at_ms > ?2",
                params![id, now_ms, public_key, access_sha256],
            )
            .map_err(db("enroll"))?;
        Ok(n == 1)
    }

    fn by_access_token(&mut self, access_sha256: &str) -> Result<Option<RegisteredAgent>, RegistryError> {
        self.one("r.access_token_sha256", access_sha256)
    }

    fn list(&mut self) -> Result<Vec<RegisteredAgent>, RegistryError> {
        let mut stmt = self.conn.prepare(&format!("{SELECT} ORDER BY r.agent")).map_err(db("list agents"))?;
        let rows = stmt.query_map([], row).map_err(db("list agents"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db("list agents"))
    }

    fn rotate_key(&mut self, id: &str, old: &str, new: &str) -> Result<bool, RegistryError> {
        let n = self
            .conn
            .execute(
                "UPDATE _kho_agent_registry SET public_key = ?3 WHERE agent = ?1 AND public_key = ?2 AND revoked_at_ms IS NULL",
                params![id, old, new],
            )
            .map_err(db("rotate key"))?;
        Ok(n == 1)
    }

    fn revoke(&mut self, id: &str, now_ms: i64) -> Result<bool, RegistryError> {
        let exists: Option<Option<i64>> = self
            .conn
            .query_row("SELECT revoked_at_ms FROM _kho_agent_registry WHERE agent = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(db("revoke"))?;
        match exists {
            None => Err(RegistryError::Unknown(id.to_string())),
            Some(Some(_)) => Ok(false),
            Some(None) => {
                let n = self
                    .conn
                    .execute(
                        "UPDATE _kho_agent_registry SET revoked_at_ms = ?2 WHERE agent = ?1 AND revoked_at_ms IS NULL",
                        params![id, now_ms],
                    )
                    .map_err(db("revoke"))?;
                Ok(n == 1)
            }
        }
    }

    fn append_audit(&mut self, entry: &audit::Entry) -> Result<audit::Stored, RegistryError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("audit"))?;
        let stored = append_audit_in(&tx, entry).map_err(db("audit"))?;
        tx.commit().map_err(db("audit"))?;
        Ok(stored)
    }

    fn audit_log(&mut self) -> Result<Vec<audit::Stored>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at_ms, kind, agent, detail, prev_sha256, sha256 FROM _kho_audit ORDER BY seq")
            .map_err(db("read audit log"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(audit::Stored {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: r.get(2)?,
                    agent: r.get(3)?,
                    detail: r.get(4)?,
                    prev_sha256: r.get(5)?,
                    sha256: r.get(6)?,
                })
            })
            .map_err(db("read audit log"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db("read audit log"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::{Entry, Kind};
    use crate::registry::{AgentState, token_sha256};

    fn new_agent(id: &str, token: &str, expires: i64) -> NewAgent {
        NewAgent {
            id: id.into(),
            department: "so_y_te".into(),
            datasets: vec!["ho_so".into()],
            token_sha256: token_sha256(token),
            token_expires_at_ms: expires,
        }
    }

    #[test]
    fn add_enroll_revoke_and_audit_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteAgentStore::open(&dir.path().join("w.sqlite")).unwrap();
        store.add(&new_agent("a", "tok", 10_000), 1).unwrap();
        let found = store.by_enroll_token(&token_sha256("tok")).unwrap().unwrap();
        assert_eq!((found.id.as_str(), found.state()), ("a", AgentState::Pending));
        assert!(store.complete_enrollment("a", "pk", "acc", 5).unwrap());
        assert!(!store.complete_enrollment("a", "pk2", "acc2", 6).unwrap(), "a token works once");
        assert!(matches!(store.add(&new_agent("a", "tok2", 10_000), 7), Err(RegistryError::AlreadyEnrolled(_))));
        let a = store.by_access_token("acc").unwrap().unwrap();
        assert_eq!((a.state(), a.public_key.as_deref()), (AgentState::Enrolled, Some("pk")));
        assert!(store.revoke("a", 8).unwrap());
        assert!(!store.revoke("a", 9).unwrap());
        assert!(matches!(store.revoke("zz", 9), Err(RegistryError::Unknown(_))));
        assert_eq!(store.by_access_token("acc").unwrap().unwrap().state(), AgentState::Revoked);
        // A revoked agent can be re-added with a new token (e.g. a lost key).
        store.add(&new_agent("a", "tok3", 10_000), 10).unwrap();
        assert_eq!(store.list().unwrap()[0].state(), AgentState::Pending);
        assert!(store.by_access_token("acc").unwrap().is_none());

        for i in 0..3 {
            let e = Entry { at_ms: i, kind: Kind::Refused, agent: None, detail: serde_json::json!({"i": i}) };
            store.append_audit(&e).unwrap();
        }
        let log = store.audit_log().unwrap();
        assert_eq!(audit::verify(&log).unwrap().count, 3);
    }
}
