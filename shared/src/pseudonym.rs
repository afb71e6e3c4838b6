//! Pseudonymisation keys and tokens (issue 14), pure.
//!
//! A province holds one secret per *version*. Its text form, in the hub's key file, an agent's
//! key file or environment variable and the enrollment answer, is `v<version>:<secret>`, e.g.
//! `v2:9f3c…`; the secret is at least [`MIN_SECRET_LEN`] bytes of printable text. A token is
//! `v<version>:` followed by the lowercase hex of the first [`TOKEN_BYTES`] bytes of
//! HMAC-SHA256(secret, value): deterministic (the same citizen ID becomes the same token in every
//! department, so datasets still join, and updates/deletes of a pseudonymised key still match),
//! not reversible without the secret, and carrying its version, so tokens made before and after a
//! rotation are told apart.
//!
//! [`PseudonymKey`]'s `Debug` never shows the secret: a key can sit in a struct that is logged.

use std::fmt;

use ring::hmac;

/// Shortest accepted secret (bytes): 128 bits of a random hex or base64 string and more.
pub const MIN_SECRET_LEN: usize = 32;
/// Bytes of the HMAC kept in a token (128 bits: collisions are out of reach for any province).
pub const TOKEN_BYTES: usize = 16;

/// Why a key text is unusable (never quotes the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a pseudonymisation key is written v<version>:<secret> (e.g. v1:…); this one has no v<version>: prefix")]
    Format,
    #[error("the key version must be a whole number from 1 up")]
    Version,
    #[error("the secret is {0} bytes; at least {MIN_SECRET_LEN} are required (e.g. `openssl rand -hex 32`)")]
    Short(usize),
    #[error("the secret must be printable text without spaces (e.g. hex from `openssl rand -hex 32`)")]
    Characters,
    #[error("no key in the file (one v<version>:<secret> per line)")]
    Empty,
    #[error("key version {0} appears twice")]
    Duplicate(u32),
}

/// One version of the province's pseudonymisation secret.
#[derive(Clone)]
pub struct PseudonymKey {
    version: u32,
    secret: String,
    key: hmac::Key,
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PseudonymKey(v{}, secret redacted)", self.version)
    }
}

impl PartialEq for PseudonymKey {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.secret == other.secret
    }
}

impl PseudonymKey {
    /// Parses `v<version>:<secret>` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<PseudonymKey, KeyError> {
        let text = text.trim();
        let (version, secret) = text.split_once(':').ok_or(KeyError::Format)?;
        let version = version.strip_prefix('v').ok_or(KeyError::Format)?;
        let version: u32 = version.parse().map_err(|_| KeyError::Version)?;
        if version == 0 {
            return Err(KeyError::Version);
        }
        if secret.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(KeyError::Characters);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::Short(secret.len()));
        }
        Ok(PseudonymKey {
            version,
            secret: secret.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key's text form `v<version>:<secret>`: only for writing it to a 0600 file or sending it
    /// to an enrolled agent over TLS.
    pub fn expose(&self) -> String {
        format!("v{}:{}", self.version, self.secret)
    }

    /// Appends the token of `value` (`v<version>:<hex>`) to `out`.
    pub fn write_token(&self, value: &[u8], out: &mut Vec<u8>) {
        let tag = hmac::sign(&self.key, value);
        use std::io::Write;
        write!(out, "v{}:", self.version).ok();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in &tag.as_ref()[..TOKEN_BYTES] {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        }
    }

    /// The token of `value` as a string.
    pub fn token(&self, value: &str) -> String {
        let mut out = Vec::with_capacity(8 + 2 * TOKEN_BYTES);
        self.write_token(value.as_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The version a token was made with, if it is a token.
pub fn token_version(token: &str) -> Option<u32> {
    let (v, hex) = token.split_once(':')?;
    let v: u32 = v.strip_prefix('v')?.parse().ok()?;
    (hex.len() == 2 * TOKEN_BYTES && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
}

/// Parses a key file: one `v<version>:<secret>` per line, blank lines and `#` comments ignored.
/// Returns the keys sorted by version; the last one is the current key.
pub fn parse_keys(text: &str) -> Result<Vec<PseudonymKey>, (usize, KeyError)> {
    let mut keys: Vec<PseudonymKey> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = PseudonymKey::parse(line).map_err(|e| (n + 1, e))?;
        if keys.iter().any(|k| k.version == key.version) {
            return Err((n + 1, KeyError::Duplicate(key.version)));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err((0, KeyError::Empty));
    }
    keys.sort_by_key(|k| k.version);
    Ok(keys)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const S1: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_are_deterministic_versioned_and_keyed() {
        let k1 = PseudonymKey::parse(&format!("v1:{S1}")).unwrap();
        let t = k1.token("001090012345");
        assert_eq!(t, k1.token("001090012345"));
        assert!(t.starts_with("v1:"));
        assert_eq!(t.len(), 3 + 2 * TOKEN_BYTES);
        assert_eq!(token_version(&t), Some(1));
        assert_ne!(t, k1.token("001090012346"));
        // RFC 2104 HMAC-SHA256 through ring: a known answer pins the construction.
        let expected = hex_hmac(S1, "001090012345");
        assert_eq!(&t[3..], &expected[..2 * TOKEN_BYTES]);
        let k2 = PseudonymKey::parse(&format!("v2:{S1}x")).unwrap();
        let t2 = k2.token("001090012345");
        assert!(t2.starts_with("v2:"));
        assert_ne!(t[3..], t2[3..]);
        assert!(!t.contains("001090012345"));
    }

    fn hex_hmac(secret: &str, value: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        hmac::sign(&key, value.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn bad_keys_are_refused_without_quoting_the_secret() {
        assert_eq!(PseudonymKey::parse(S1), Err(KeyError::Format));
        assert_eq!(PseudonymKey::parse(&format!("x1:{S1}")), Err(KeyError::Format));
        assert_eq!(PseudonymKey::parse(&format!("v0:{S1}")), Err(KeyError::Version));
        assert_eq!(PseudonymKey::parse("v1:short"), Err(KeyError::Short(5)));
        assert_eq!(PseudonymKey::parse(&format!("v1:{S1} x")), Err(KeyError::Characters));
        let k = PseudonymKey::parse(&format!("  v3:{S1}\n")).unwrap();
        assert_eq!(k.version(), 3);
        assert!(!format!("{k:?}").contains(S1));
        assert_eq!(k.expose(), format!("v3:{S1}"));
    }

    #[test]
    fn key_files_list_versions_and_the_last_is_current() {
        let keys = parse_keys(&format!("# province keys\nv2:{S1}y\n\nv1:{S1}\n")).unwrap();
        assert_eq!(keys.iter().map(|k| k.version()).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(parse_keys(&format!("v1:{S1}\nv1:{S1}z")).err(), Some((2, KeyError::Duplicate(1))));
        assert_eq!(parse_keys("# nothing\n").err(), Some((0, KeyError::Empty)));
        assert_eq!(parse_keys("v1:short").err(), Some((1, KeyError::Short(5))));
        assert_eq!(token_version("v7:0011"), None);
        assert_eq!(token_version("hello"), None);
    }
}
