//! An ordinary SQL session beside the replication stream: publication, slot state, lag, and the
//! prerequisites `kho-agent check` verifies.

use ::postgres::Client;

use super::CdcError;
use crate::source::remote::RemoteSourceConfig;
use crate::source::{SourceError, quote_ident, table_parts};

/// What the server knows about a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub plugin: Option<String>,
    pub confirmed_flush: Option<u64>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL 13+).
    pub wal_status: Option<String>,
    pub active: bool,
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// One finding of [`Admin::check`]: what is wrong and what the DBA must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
    /// For a failed check: exactly what to change.
    pub fix: Option<String>,
}

/// The SQL session.
pub struct Admin {
    client: Client,
    dataset: String,
    server: String,
}

impl Admin {
    pub fn connect(dataset: &str, remote: &RemoteSourceConfig) -> Result<Admin, SourceError> {
        let (client, server) = crate::source::postgres::connect(dataset, remote)?;
        Ok(Admin { client, dataset: dataset.to_string(), server })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn err(&self, problem: String) -> CdcError {
        CdcError::Setup { dataset: self.dataset.clone(), server: self.server.clone(), problem }
    }

    /// `(schema, table)` of the configured table, resolved by the server's search path.
    pub fn resolve_table(&mut self, table: &str) -> Result<Option<(String, String)>, CdcError> {
        let quoted = table_parts(table).into_iter().map(quote_ident).collect::<Vec<_>>().join(".");
        let row = self
            .client
            .query_opt(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = to_regclass($1)",
                &[&quoted],
            )
            .map_err(|e| self.err(format!("cannot look up table {table}: {e}")))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Whether `publication` exists, and whether it publishes `schema.table`.
    pub fn publication(&mut self, publication: &str, schema: &str, table: &str) -> Result<(bool, bool), CdcError> {
        let exists = self
            .client
            .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&publication])
            .map_err(|e| self.err(format!("cannot read publications: {e}")))?
            .is_some();
        let covers = exists
            && self
                .client
                .query_opt(
                    "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                    &[&publication, &schema, &table],
                )
                .map_err(|e| self.err(format!("cannot read publication tables: {e}")))?
                .is_some();
        Ok((exists, covers))
    }

    /// Makes sure `publication` publishes the table, creating it when allowed.
    pub fn ensure_publication(&mut self, publication: &str, table: &str, create: bool) -> Result<(), CdcError> {
        let (schema, name) =
            self.resolve_table(table)?.ok_or_else(|| self.err(format!("table {table} does not exist")))?;
        match self.publication(publication, &schema, &name)? {
            (_, true) => Ok(()),
            (false, false) if create => {
                let sql = format!(
                    "CREATE PUBLICATION {} FOR TABLE {}.{}",
                    quote_ident(publication),
                    quote_ident(&schema),
                    quote_ident(&name)
                );
                self.client.batch_execute(&sql).map_err(|e| {
                    self.err(format!(
                        "cannot create publication {publication} ({e}); ask the DBA to run: {sql}; \
                         or set create_publication = false and name an existing one"
                    ))
                })
            }
            (exists, _) => Err(self.err(format!(
                "publication {publication} {} table {schema}.{name}; the DBA must run: {}",
                if exists { "does not publish" } else { "does not exist for" },
                publication_fix(publication, &schema, &name, exists)
            ))),
        }
    }

    /// The slot's state, if it exists.
    pub fn slot(&mut self, slot: &str) -> Result<Option<SlotInfo>, CdcError> {
        let row = self
            .client
            .query_opt(
                "SELECT plugin::text, confirmed_flush_lsn::text, wal_status, active FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .map_err(|e| self.err(format!("cannot read replication slots: {e}")))?;
        Ok(row.map(|r| SlotInfo {
            plugin: r.get(0),
            confirmed_flush: r.get::<_, Option<String>>(1).as_deref().and_then(parse_lsn),
            wal_status: r.get(2),
            active: r.get(3),
        }))
    }

    /// Drops `slot` (a leftover of an interrupted initial snapshot, or `resnapshot`), waiting up
    /// to ~10 s for a previous session of this agent to release it.
    pub fn drop_slot(&mut self, slot: &str) -> Result<(), CdcError> {
        let mut last = String::new();
        for _ in 0..20 {
            match self.client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            if self.slot(slot)?.is_none() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Err(self.err(format!("cannot drop replication slot {slot}: {last}")))
    }

    /// The server's current WAL write position.
    pub fn current_lsn(&mut self) -> Result<u64, CdcError> {
        let text: String = self
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .map_err(|e| self.err(format!("cannot read the WAL position: {e}")))?
            .get(0);
        parse_lsn(&text).ok_or_else(|| self.err(format!("unexpected WAL position {text:?}")))
    }

    /// WAL the slot holds back: the server's current WAL position minus the slot's confirmed
    /// position, in bytes.
    pub fn lag_bytes(&mut self, slot: &str) -> Result<Option<u64>, CdcError> {
        let row = self
            .client
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .map_err(|e| self.err(format!("cannot read slot lag: {e}")))?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(|b| b.max(0) as u64))
    }

    /// Checks every prerequisite of CDC for `table` and says what the DBA must change.
    pub fn check(
        &mut self,
        table: &str,
        publication: &str,
        create_publication: bool,
    ) -> Result<Vec<Finding>, CdcError> {
        let mut out = Vec::new();
        let mut push = |ok: bool, what: String, fix: Option<String>| {
            out.push(Finding { ok, what, fix: (!ok).then_some(fix).flatten() })
        };
        let wal_level: String = self
            .client
            .query_one("SHOW wal_level", &[])
            .map_err(|e| self.err(format!("cannot read wal_level: {e}")))?
            .get(0);
        push(
            wal_level == "logical",
            format!("wal_level = {wal_level} (must be logical)"),
            Some("ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL".into()),
        );
        let row = self
            .client
            .query_one(
                "SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .map_err(|e| self.err(format!("cannot read the role: {e}")))?;
        let (user, can_replicate): (String, bool) = (row.get(0), row.get(1));
        push(
            can_replicate,
            format!("role {user} has the REPLICATION privilege"),
            Some(format!("ALTER ROLE {} WITH REPLICATION;", quote_ident(&user))),
        );
        let slots = self
            .client
            .query_one(
                "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int",
                &[],
            )
            .map_err(|e| self.err(format!("cannot read max_replication_slots: {e}")))?;
        let free: i32 = slots.get(0);
        push(
            free > 0,
            format!("{free} free replication slot(s) (max_replication_slots)"),
            Some("raise max_replication_slots (postgresql.conf) and restart PostgreSQL".into()),
        );
        let Some((schema, name)) = self.resolve_table(table)? else {
            push(false, format!("table {table} exists"), Some(format!("check the dataset's table name ({table})")));
            return Ok(out);
        };
        let ident: String = self
            .client
            .query_one(
                "SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1)",
                &[&format!("{}.{}", quote_ident(&schema), quote_ident(&name))],
            )
            .map_err(|e| self.err(format!("cannot read the replica identity: {e}")))?
            .get(0);
        let has_pk = self
            .client
            .query_opt(
                "SELECT 1 FROM pg_index WHERE indrelid = to_regclass($1) AND indisprimary",
                &[&format!("{}.{}", quote_ident(&schema), quote_ident(&name))],
            )
            .map_err(|e| self.err(format!("cannot read the primary key: {e}")))?
            .is_some();
        push(
            ident == "f" || (ident == "d" && has_pk) || ident == "i",
            format!("table {schema}.{name} identifies deleted rows (replica identity {ident}, primary key: {has_pk})"),
            Some(format!(
                "ALTER TABLE {}.{} REPLICA IDENTITY FULL; (or add a primary key)",
                quote_ident(&schema),
                quote_ident(&name)
            )),
        );
        let (exists, covers) = self.publication(publication, &schema, &name)?;
        push(
            covers || (!exists && create_publication),
            if !exists && create_publication {
                format!("publication {publication} (the agent creates it)")
            } else {
                format!("publication {publication} publishes {schema}.{name}")
            },
            Some(publication_fix(publication, &schema, &name, exists)),
        );
        Ok(out)
    }
}

fn publication_fix(publication: &str, schema: &str, table: &str, exists: bool) -> String {
    let t = format!("{}.{}", quote_ident(schema), quote_ident(table));
    if exists {
        format!("ALTER PUBLICATION {} ADD TABLE {t};", quote_ident(publication))
    } else {
        format!("CREATE PUBLICATION {} FOR TABLE {t};", quote_ident(publication))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_parses() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("xyz"), None);
        assert_eq!(crate::outbox::cdc::lsn_text(0x16_B374_D848), "16/B374D848");
    }

    #[test]
    fn publication_fixes_are_exact_sql() {
        assert_eq!(publication_fix("p", "public", "t", false), "CREATE PUBLICATION \"p\" FOR TABLE \"public\".\"t\";");
        assert_eq!(publication_fix("p", "public", "t", true), "ALTER PUBLICATION \"p\" ADD TABLE \"public\".\"t\";");
    }
}
