//! Checks a PostgreSQL warehouse against what the simulated agents sent: per agent, the ledger,
//! the rows of its dataset (keys `<agent>:<seq>`) and the change log (each sequence once).

use super::datasets::{self, Shape};

/// One agent's expectation: it sent changes `1..=sent` of `shape` to `dataset`.
pub struct Expect<'a> {
    pub agent: &'a str,
    pub shape: &'static Shape,
    pub dataset: &'a str,
    pub sent: u64,
}

/// What the warehouse holds compared with what was sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub agents: usize,
    pub changes_expected: u64,
    /// Changes sent (and acknowledged) that the dataset table does not hold.
    pub lost: u64,
    /// Changes the change log holds more than once.
    pub duplicated: u64,
    /// Agents whose ledger is not at the last sequence sent.
    pub ledger_mismatches: Vec<String>,
}

impl Verdict {
    pub fn is_exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.ledger_mismatches.is_empty()
    }
}

/// Compares `expect` with the warehouse at `url` (tables in `schema`, `public` when no catalogue).
pub fn check(url: &str, schema: &str, expect: &[Expect<'_>]) -> Result<Verdict, postgres::Error> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    let mut v = Verdict { agents: expect.len(), ..Verdict::default() };
    let ledger: std::collections::HashMap<String, i64> =
        c.query("SELECT agent, applied_seq FROM kho.ledger", &[])?.into_iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut per_table: std::collections::HashMap<(&str, String), std::collections::HashMap<String, i64>> =
        Default::default();
    for e in expect {
        v.changes_expected += e.sent;
        if ledger.get(e.agent).copied().unwrap_or(0) != i64::try_from(e.sent).unwrap_or(i64::MAX) {
            v.ledger_mismatches.push(format!("{}: ledger {:?}, sent {}", e.agent, ledger.get(e.agent), e.sent));
        }
        let table = (e.dataset, datasets::key_column(e.shape));
        if !per_table.contains_key(&table) {
            // Live rows per agent whose key is one this agent sent (`<agent>:<seq>`, seq ≥ 1).
            let sql = format!(
                "SELECT _kho_agent, count(*) FROM \"{schema}\".\"{}\" WHERE NOT _kho_deleted \
                 AND \"{}\" = _kho_agent || ':' || split_part(\"{}\", ':', 2) GROUP BY _kho_agent",
                table.0, table.1, table.1
            );
            let counts = c.query(&sql, &[])?.into_iter().map(|r| (r.get(0), r.get(1))).collect();
            per_table.insert(table.clone(), counts);
        }
        let held = per_table.get(&table).and_then(|m| m.get(e.agent)).copied().unwrap_or(0);
        v.lost += e.sent.saturating_sub(u64::try_from(held).unwrap_or(0));
    }
    for r in c.query(
        "SELECT agent, count(*) - count(DISTINCT seq) FROM kho.change_log GROUP BY agent HAVING count(*) > count(DISTINCT seq)",
        &[],
    )? {
        let extra: i64 = r.get(1);
        v.duplicated += u64::try_from(extra).unwrap_or(0);
    }
    Ok(v)
}
