//! Walking a listing: JSON pointers into raw bodies, `Link: rel="next"`, `Retry-After`, backoff,
//! and the [`Pager`] that yields each page's request. Pure: no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use serde_json::value::RawValue;

use super::*;

/// Unescapes one RFC 6901 pointer segment.
fn pointer_segments(ptr: &str) -> impl Iterator<Item = String> + '_ {
    ptr.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~"))
}

/// The value at JSON pointer `ptr` inside `root`, without parsing numbers (pure).
pub fn raw_pointer<'a>(root: &'a RawValue, ptr: &str) -> Option<&'a RawValue> {
    let mut cur = root;
    if ptr.is_empty() {
        return Some(cur);
    }
    for seg in pointer_segments(ptr) {
        let text = cur.get().trim_start();
        cur = if text.starts_with('{') {
            let map: BTreeMap<String, &RawValue> = serde_json::from_str(cur.get()).ok()?;
            map.get(&seg).copied()?
        } else if text.starts_with('[') {
            let list: Vec<&RawValue> = serde_json::from_str(cur.get()).ok()?;
            list.get(seg.parse::<usize>().ok()?).copied()?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// A string or number at `ptr` as text; None when absent, null or empty.
pub(super) fn raw_text(root: &RawValue, ptr: &str) -> Option<String> {
    let v = raw_pointer(root, ptr)?;
    let t = v.get().trim();
    if t == "null" {
        return None;
    }
    let s = if t.starts_with('"') { serde_json::from_str::<String>(t).ok()? } else { t.to_string() };
    (!s.is_empty()).then_some(s)
}

/// The `rel="next"` URL of an HTTP `Link` header (pure).
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().to_ascii_lowercase().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| url.to_string())
    })
}

/// Seconds of a `Retry-After` header (delta-seconds form; an HTTP date falls back to backoff).
pub fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Exponential backoff before retry `attempt` (0-based): 0.5 s, 1 s, 2 s, … capped at 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1u64 << attempt.min(6))).min(Duration::from_secs(30))
}

/// Walks the pages of a listing (pure: URLs in, URLs out).
#[derive(Debug)]
pub struct Pager {
    pagination: Pagination,
    base: Url,
    page: u64,
    offset: u64,
}

impl Pager {
    /// `base` already carries the configured query and the cursor parameter.
    pub fn new(pagination: Pagination, base: Url) -> Pager {
        let page = match &pagination {
            Pagination::Page { first, .. } => *first,
            _ => 0,
        };
        Pager { pagination, base, page, offset: 0 }
    }

    fn with(&self, params: &[(&str, String)]) -> Url {
        let mut u = self.base.clone();
        {
            let drop: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| !drop.contains(&k.as_ref()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut q = u.query_pairs_mut();
            q.clear();
            for (k, v) in &kept {
                q.append_pair(k, v);
            }
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        if u.query() == Some("") {
            u.set_query(None);
        }
        u
    }

    /// The first page's URL.
    pub fn first(&self) -> Url {
        match &self.pagination {
            Pagination::Page { param, size_param, size, .. } => {
                let mut ps = vec![(param.as_str(), self.page.to_string())];
                if let (Some(sp), Some(s)) = (size_param, size) {
                    ps.push((sp.as_str(), s.to_string()));
                }
                self.with(&ps)
            }
            Pagination::Offset { offset_param, limit_param, limit } => {
                self.with(&[(offset_param.as_str(), "0".into()), (limit_param.as_str(), limit.to_string())])
            }
            _ => self.base.clone(),
        }
    }

    /// The next page's URL after `current` returned `records` records, `body` and `link`
    /// (the Link header); None when the listing is complete.
    pub fn next(&mut self, current: &Url, records: usize, body: &RawValue, link: Option<&str>) -> Option<Url> {
        match self.pagination.clone() {
            Pagination::None => None,
            Pagination::Page { param, size_param, size, .. } => {
                if records == 0 || size.is_some_and(|s| (records as u64) < s) {
                    return None;
                }
                self.page += 1;
                let mut ps = vec![(param.as_str(), self.page.to_string())];
                if let (Some(sp), Some(s)) = (&size_param, size) {
                    ps.push((sp.as_str(), s.to_string()));
                }
                Some(self.with(&ps))
            }
            Pagination::Offset { offset_param, limit_param, limit } => {
                if (records as u64) < limit {
                    return None;
                }
                self.offset += records as u64;
                Some(self.with(&[
                    (offset_param.as_str(), self.offset.to_string()),
                    (limit_param.as_str(), limit.to_string()),
                ]))
            }
            Pagination::NextLink { pointer } => {
                let next = match pointer {
                    Some(ptr) => raw_text(body, &ptr),
                    None => link.and_then(link_next),
                }?;
                current.join(&next).ok()
            }
            Pagination::Cursor { pointer, param } => {
                let token = raw_text(body, &pointer)?;
                if records == 0 {
                    return None;
                }
                Some(self.with(&[(param.as_str(), token)]))
            }
        }
    }
}
