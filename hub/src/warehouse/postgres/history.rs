//! `kho.change_log`: every applied change, append-only, so consumers can see what changed when
//! (`SELECT * FROM kho.change_log WHERE dataset = 'ho_so' AND applied_at > …`).
//!
//! Rows are `COPY`ed in the batch's own transaction, so the log holds exactly the committed
//! changes — including every intermediate change of a key, which the dataset table does not keep.
//! `key` is the change's key as JSON (`{"id": 7}`); `row` the full row of an upsert as sent (NULL
//! for a delete); `op` is `upsert` or `delete`. Rows older than `warehouse.history_retention` are
//! deleted by [`prune`]; the BRIN index on `applied_at` keeps that cheap on an append-only table.

use std::io::Write as _;
use std::time::Duration;

use kho_shared::protocol::{Change, DatasetSchema, Op};
use postgres::Client;
use serde_json::{Map, Value};

use super::values::{escape_into, json_text};
use super::{COPY_CHUNK, db};
use crate::warehouse::WarehouseError;

/// Appends `changes` (applied by `agent` at `now`) to the change log.
pub(super) fn append(
    client: &mut Client,
    agent: &str,
    schemas: &[DatasetSchema],
    changes: &[Change],
    now: &str,
) -> Result<(), WarehouseError> {
    if changes.is_empty() {
        return Ok(());
    }
    let io = |e: std::io::Error| WarehouseError::database("copy to kho.change_log", e);
    let mut writer = client
        .copy_in("COPY kho.change_log (dataset, key, op, row, agent, seq, applied_at) FROM STDIN")
        .map_err(db("copy to kho.change_log"))?;
    let mut buf = String::with_capacity(COPY_CHUNK + 4096);
    let mut agent_esc = String::new();
    escape_into(&mut agent_esc, agent);
    for c in changes {
        escape_into(&mut buf, &c.dataset);
        buf.push('\t');
        let key = match c.op {
            Op::Delete => c.key.clone().map(Value::Object).unwrap_or(Value::Null),
            Op::Upsert => {
                let key_cols = schemas.iter().find(|s| s.dataset == c.dataset).map(|s| s.key.as_slice()).unwrap_or(&[]);
                let mut map = Map::new();
                for k in key_cols {
                    map.insert(k.clone(), c.row.as_ref().and_then(|r| r.get(k)).cloned().unwrap_or(Value::Null));
                }
                Value::Object(map)
            }
        };
        escape_into(&mut buf, &json_text(&key));
        buf.push('\t');
        buf.push_str(match c.op {
            Op::Upsert => "upsert\t",
            Op::Delete => "delete\t",
        });
        match (&c.op, &c.row) {
            (Op::Upsert, Some(row)) => {
                let text = serde_json::to_string(row).unwrap_or_default();
                let text = if text.contains("\\u0000") { json_text(&Value::Object(row.clone())) } else { text };
                escape_into(&mut buf, &text);
            }
            _ => buf.push_str("\\N"),
        }
        buf.push('\t');
        buf.push_str(&agent_esc);
        std::fmt::Write::write_fmt(&mut buf, format_args!("\t{}\t{now}\n", c.seq)).ok();
        if buf.len() >= COPY_CHUNK {
            writer.write_all(buf.as_bytes()).map_err(io)?;
            buf.clear();
        }
    }
    writer.write_all(buf.as_bytes()).map_err(io)?;
    writer.finish().map_err(db("copy to kho.change_log"))?;
    Ok(())
}

/// Deletes change-log rows applied more than `retention` ago; returns how many.
pub(super) fn prune(client: &mut Client, retention: Duration) -> Result<u64, WarehouseError> {
    let seconds = retention.as_secs_f64();
    client
        .execute("DELETE FROM kho.change_log WHERE applied_at < now() - make_interval(secs => $1)", &[&seconds])
        .map_err(db("prune kho.change_log"))
}
