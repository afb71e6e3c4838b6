//! Who is calling, and what they may write.
//!
//! Two kinds of agents: those declared in the hub config (this module's [`AgentRegistry`]) and
//! those enrolled through the registry ([`crate::registry`], checked by
//! [`crate::ingest::gate`]). Config agents authenticate with a bearer token from the config. The
//! hub keeps only each token's sha256 and finds the presented token's sha256 in a hash map, as the
//! registry finds an enrolled agent's by an index lookup: what the lookup's timing could reveal is
//! about the *digest* of the presented token, which does not help to guess a token (that would take
//! a sha256 preimage). It used to compare against every agent in constant time, which cost one
//! comparison per configured agent on every request: with 5,000 agents that linear scan was a large
//! share of the hub's CPU under load (issue 11). Permissions are deny by default: an agent writes
//! exactly the datasets listed for it.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::config::AgentSection;

/// An authenticated agent and its permissions.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub id: String,
    datasets: HashSet<String>,
    /// Enrolled agents: the Ed25519 public key every batch must be signed with.
    pub public_key: Option<Vec<u8>>,
}

impl AgentIdentity {
    /// An enrolled agent with its grants and public key.
    pub fn enrolled(id: &str, datasets: &[String], public_key: Vec<u8>) -> AgentIdentity {
        AgentIdentity { id: id.to_string(), datasets: datasets.iter().cloned().collect(), public_key: Some(public_key) }
    }

    /// Whether this agent may write `dataset`.
    pub fn may_write(&self, dataset: &str) -> bool {
        self.datasets.contains(dataset)
    }

    /// The datasets the hub config grants (the catalogue may grant more).
    pub fn datasets(&self) -> impl Iterator<Item = &str> {
        self.datasets.iter().map(String::as_str)
    }
}

/// The configured agents, by token digest.
#[derive(Debug, Default)]
pub struct AgentRegistry {
    entries: HashMap<[u8; 32], AgentIdentity>,
}

impl AgentRegistry {
    /// Builds the registry from validated config (agents without a token are skipped; validation
    /// has already refused them).
    pub fn new(agents: &[AgentSection]) -> AgentRegistry {
        let entries = agents
            .iter()
            .filter_map(|a| {
                let token = a.token.as_deref()?;
                let identity = AgentIdentity {
                    id: a.id.clone(),
                    datasets: a.datasets.iter().cloned().collect(),
                    public_key: None,
                };
                Some((digest(token), identity))
            })
            .collect();
        AgentRegistry { entries }
    }

    /// The agent holding `token`, if any.
    pub fn authenticate(&self, token: &str) -> Option<&AgentIdentity> {
        self.entries.get(&digest(token))
    }

    /// The agent from an `Authorization: Bearer <token>` header value.
    pub fn authenticate_header(&self, header: Option<&str>) -> Option<&AgentIdentity> {
        self.authenticate(bearer(header)?)
    }

    /// Whether `id` is declared in the config.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.values().any(|a| a.id == id)
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, token: &str, datasets: &[&str]) -> AgentSection {
        AgentSection {
            id: id.into(),
            token: Some(token.into()),
            token_file: None,
            token_from_file: false,
            datasets: datasets.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn tokens_map_to_agents_and_permissions() {
        let reg = AgentRegistry::new(&[agent("a", "tok-a", &["ho_so"]), agent("b", "tok-b", &[])]);
        let a = reg.authenticate_header(Some("Bearer tok-a")).expect("a");
        assert_eq!(a.id, "a");
        assert!(a.may_write("ho_so") && !a.may_write("other"));
        assert_eq!(reg.authenticate_header(Some("bearer  tok-b")).map(|i| i.id.as_str()), Some("b"));
        assert!(reg.authenticate_header(Some("Bearer nope")).is_none());
        assert!(reg.authenticate_header(Some("Basic tok-a")).is_none());
        assert!(reg.authenticate_header(None).is_none());
    }
}
