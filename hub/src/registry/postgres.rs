//! The registry and audit log in the PostgreSQL warehouse: `kho.agent_registry` and `kho.audit`,
//! on one connection of their own.
//!
//! Several hub instances (and `kho-hub agent` commands) may append to the audit log at once; each
//! append takes a transaction-scoped advisory lock first, so the read-last / insert-next pair is
//! serialised and the chain never forks. The detail is stored as `text`, not `jsonb`, because
//! the hash covers the exact text (jsonb would reorder keys).

use postgres::Client;

use super::{AgentStore, NewAgent, RegisteredAgent, RegistryError};
use crate::audit;
use crate::warehouse::postgres::Settings;
use crate::warehouse::postgres::connect::connect;

/// Advisory lock key serialising audit appends ("KHOAUDIT" as ASCII).
const AUDIT_LOCK: i64 = 0x4b48_4f41_5544_4954;

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS kho;
CREATE TABLE IF NOT EXISTS kho.agent_registry (
    agent text PRIMARY KEY,
    department text NOT NULL,
    datasets_json text NOT NULL,
    added_at_ms bigint NOT NULL,
    enroll_token_sha256 text NOT NULL UNIQUE,
    token_expires_at_ms bigint NOT NULL,
    enrolled_at_ms bigint,
    public_key text,
    access_token_sha256 text UNIQUE,
    revoked_at_ms bigint
);
CREATE TABLE IF NOT EXISTS kho.agents (
    agent text PRIMARY KEY,
    last_seen_at timestamptz NOT NULL,
    version text,
    outbox_depth bigint,
    acked_through bigint,
    report_json jsonb
);
ALTER TABLE kho.agents ADD COLUMN IF NOT EXISTS transport text;
";

const SELECT: &str = "SELECT r.agent, r.department, r.datasets_json, r.added_at_ms, r.token_expires_at_ms, \
     r.enrolled_at_ms, r.revoked_at_ms, r.public_key, \
     to_char(h.last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), h.version, h.outbox_depth, h.report_json::text, \
     h.transport FROM kho.agent_registry r LEFT JOIN kho.agents h ON h.agent = r.agent";

/// The audit table alone, for the warehouse writers (which append applied-batch entries).
pub(crate) const AUDIT_SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS kho;
CREATE TABLE IF NOT EXISTS kho.audit (
    seq bigint PRIMARY KEY,
    at_ms bigint NOT NULL,
    kind text NOT NULL,
    agent text,
    detail text NOT NULL,
    prev_sha256 text NOT NULL,
    sha256 text NOT NULL
);
";

/// Appends `entry` inside the caller's open transaction: takes the transaction-scoped advisory
/// lock (held until that transaction ends, so every other appender — registry, `kho-hub agent`,
/// the other warehouse writers — waits for its commit and then reads the new head), reads the
/// last entry and inserts the next. Under `READ COMMITTED` each statement sees what committed
/// before it, so the head read after the lock is always the true head.
pub(crate) fn append_audit_in(
    c: &mut impl postgres::GenericClient,
    entry: &audit::Entry,
) -> Result<audit::Stored, postgres::Error> {
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
    let last = c.query_opt("SELECT seq, sha256 FROM kho.audit ORDER BY seq DESC LIMIT 1", &[])?;
    let last: Option<(i64, String)> = last.map(|r| (r.get(0), r.get(1)));
    let stored = audit::Stored::chain(entry, last.as_ref().map(|(s, h)| (*s, h.as_str())));
    c.execute(
        "INSERT INTO kho.audit (seq, at_ms, kind, agent, detail, prev_sha256, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &stored.seq,
            &stored.at_ms,
            &stored.kind,
            &stored.agent,
            &stored.detail,
            &stored.prev_sha256,
            &stored.sha256,
        ],
    )?;
    Ok(stored)
}

/// The PostgreSQL registry store. The client is an `Option` only so that [`Drop`] can move it to
/// a thread.
pub struct PostgresAgentStore {
    client: Option<Client>,
}

impl Drop for PostgresAgentStore {
    /// The synchronous client blocks on its own runtime when it closes, which must not happen on
    /// an async worker (the hub's last handle is dropped there at shutdown): close it on a thread.
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && let Ok(closer) =
                std::thread::Builder::new().name("kho-pg-registry-close".into()).spawn(move || drop(client))
        {
            let _ = closer.join();
        }
    }
}

fn db(context: &'static str) -> impl FnOnce(postgres::Error) -> RegistryError {
    move |e| RegistryError::database(context, e)
}

fn row(r: &postgres::Row) -> RegisteredAgent {
    let datasets: String = r.get(2);
    RegisteredAgent {
        id: r.get(0),
        department: r.get(1),
        datasets: serde_json::from_str(&datasets).unwrap_or_default(),
        added_at_ms: r.get(3),
        token_expires_at_ms: r.get(4),
        enrolled_at_ms: r.get(5),
        revoked_at_ms: r.get(6),
        public_key: r.get(7),
        last_seen_at: r.get(8),
        version: r.get(9),
        outbox_depth: r.get(10),
        transport: r.get(12),
        last_error: super::first_error(r.get::<_, Option<String>>(11).as_deref()),
    }
}

impl PostgresAgentStore {
    /// Connects and creates the tables if needed.
    pub fn open(settings: &Settings) -> Result<PostgresAgentStore, RegistryError> {
        let mut client = connect(settings, "registry").map_err(|e| RegistryError::database("connect", e))?;
        let mut tx = client.transaction().map_err(db("create registry tables"))?;
        // The warehouse's DDL lock (see warehouse/postgres): hubs starting together do not race.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&crate::warehouse::postgres::DDL_LOCK])
            .map_err(db("create registry tables"))?;
        tx.batch_execute(SCHEMA).map_err(db("create registry tables"))?;
        tx.batch_execute(AUDIT_SCHEMA).map_err(db("create the audit table"))?;
        tx.commit().map_err(db("create registry tables"))?;
        Ok(PostgresAgentStore { client: Some(client) })
    }

    fn client(&mut self) -> Result<&mut Client, RegistryError> {
        self.client.as_mut().ok_or_else(|| RegistryError::database("registry", std::io::Error::other("closed")))
    }

    fn one(&mut self, filter: &str, value: &str) -> Result<Option<RegisteredAgent>, RegistryError> {
        let found = self
            .client()?
            .query_opt(&format!("{SELECT} WHERE {filter} = $1"), &[&value])
            .map_err(db("read the registry"))?;
        Ok(found.as_ref().map(row))
    }
}

impl AgentStore for PostgresAgentStore {
    fn add(&mut self, agent: &NewAgent, now_ms: i64) -> Result<(), RegistryError> {
        let mut tx = self.client()?.transaction().map_err(db("add agent"))?;
        let existing = tx
            .query_opt(
                "SELECT enrolled_at_ms, revoked_at_ms FROM kho.agent_registry WHERE agent = $1 FOR UPDATE",
                &[&agent.id],
            )
            .map_err(db("add agent"))?;
        if let Some(r) = existing {
            let (enrolled, revoked): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
            if enrolled.is_some() && revoked.is_none() {
                return Err(RegistryError::AlreadyEnrolled(agent.id.clone()));
            }
        }
        let datasets = serde_json::to_string(&agent.datasets).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO kho.agent_registry (agent, department, datasets_json, added_at_ms, enroll_token_sha256, \
             token_expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (agent) DO UPDATE SET \
             department = EXCLUDED.department, datasets_json = EXCLUDED.datasets_json, added_at_ms = EXCLUDED.added_at_ms, \
             enroll_token_sha256 = EXCLUDED.enroll_token_sha256, token_expires_at_ms = EXCLUDED.token_expires_at_ms, \
             enrolled_at_ms = NULL, public_key = NULL, access_token_sha256 = NULL, revoked_at_ms = NULL",
            &[&agent.id, &agent.department, &datasets, &now_ms, &agent.token_sha256, &agent.token_expires_at_ms],
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
            .client()?
            .execute(
                "UPDATE kho.agent_registry SET enrolled_at_ms = $2, public_key = $3, access_token_sha256 = $4 \
                 WHERE agent = $1 AND enrolled_at_ms IS NULL AND revoked_at_ms IS NULL AND token_expires_at_ms > $2",
                &[&id, &now_ms, &public_key, &access_sha256],
            )
            .map_err(db("enroll"))?;
        Ok(n == 1)
    }

    fn by_access_token(&mut self, access_sha256: &str) -> Result<Option<RegisteredAgent>, RegistryError> {
        self.one("r.access_token_sha256", access_sha256)
    }

    fn list(&mut self) -> Result<Vec<RegisteredAgent>, RegistryError> {
        let rows = self.client()?.query(&format!("{SELECT} ORDER BY r.agent"), &[]).map_err(db("list agents"))?;
        Ok(rows.iter().map(row).collect())
    }

    fn rotate_key(&mut self, id: &str, old: &str, new: &str) -> Result<bool, RegistryError> {
        let n = self
            .client()?
            .execute(
                "UPDATE kho.agent_registry SET public_key = $3 WHERE agent = $1 AND public_key = $2 AND revoked_at_ms IS NULL",
                &[&id, &old, &new],
            )
            .map_err(db("rotate key"))?;
        Ok(n == 1)
    }

    fn revoke(&mut self, id: &str, now_ms: i64) -> Result<bool, RegistryError> {
        let found = self
            .client()?
            .query_opt("SELECT revoked_at_ms FROM kho.agent_registry WHERE agent = $1", &[&id])
            .map_err(db("revoke"))?;
        let Some(found) = found else { return Err(RegistryError::Unknown(id.to_string())) };
        if found.get::<_, Option<i64>>(0).is_some() {
            return Ok(false);
        }
        let n = self
            .client()?
            .execute(
                "UPDATE kho.agent_registry SET revoked_at_ms = $2 WHERE agent = $1 AND revoked_at_ms IS NULL",
                &[&id, &now_ms],
            )
            .map_err(db("revoke"))?;
        Ok(n == 1)
    }

    fn append_audit(&mut self, entry: &audit::Entry) -> Result<audit::Stored, RegistryError> {
        let mut tx = self.client()?.transaction().map_err(db("audit"))?;
        let stored = append_audit_in(&mut tx, entry).map_err(db("audit"))?;
        tx.commit().map_err(db("audit"))?;
        Ok(stored)
    }

    fn audit_log(&mut self) -> Result<Vec<audit::Stored>, RegistryError> {
        let rows = self
            .client()?
            .query("SELECT seq, at_ms, kind, agent, detail, prev_sha256, sha256 FROM kho.audit ORDER BY seq", &[])
            .map_err(db("read audit log"))?;
        Ok(rows
            .iter()
            .map(|r| audit::Stored {
                seq: r.get(0),
                at_ms: r.get(1),
                kind: r.get(2),
                agent: r.get(3),
                detail: r.get(4),
                prev_sha256: r.get(5),
                sha256: r.get(6),
            })
            .collect())
    }
}
