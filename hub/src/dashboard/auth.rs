//! Operator login: argon2 password hashes from the config, server-side sessions behind an
//! `HttpOnly; SameSite=Strict` cookie, and a CSRF token on every form.
//!
//! - **Sessions** live in memory (a hub restart logs everyone out) for `dashboard.session_ttl`;
//!   the id is 32 random bytes from the OS. At most [`MAX_SESSIONS`] exist; expired ones are
//!   dropped first, then the oldest.
//! - **CSRF**: each session has its own token, put in a hidden field of every form and checked on
//!   every POST. The login form, which comes before any session, uses a double-submit token: a
//!   random value in a `SameSite=Strict` cookie that the form must repeat.
//! - **Password checks** run on the blocking pool, at most [`LOGIN_CHECKS`] at once (argon2 is
//!   deliberately slow), an unknown name costs the same check as a wrong password, and a refused
//!   login is answered only after [`FAILED_LOGIN_DELAY`]. There is no account lockout (it would
//!   let anyone lock the operators out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::http::HeaderMap;
use axum::http::header;

use crate::config::{DashboardSection, Operator};

pub const SESSION_COOKIE: &str = "kho_session";
pub const LOGIN_CSRF_COOKIE: &str = "kho_login_csrf";
/// Sessions kept at once; a province has tens of operators.
pub const MAX_SESSIONS: usize = 10_000;
/// Password checks at once.
pub const LOGIN_CHECKS: usize = 2;
/// A refused login answers only after this long.
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_secs(1);
/// Checked when the name is unknown, so that costs as much as a wrong password ("kho").
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0Wyu2a0mYnJ6oHnZBL4sFmvt0zNPsK0rX0sOaeXX3GM";

/// Who is looking at a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Operator {
        name: String,
        csrf: String,
    },
    /// The read-only public view (`dashboard.public_view = true`), not logged in.
    Public,
}

impl Viewer {
    pub fn is_operator(&self) -> bool {
        matches!(self, Viewer::Operator { .. })
    }

    /// The operator's login name (`public` for the public view).
    pub fn name(&self) -> &str {
        match self {
            Viewer::Operator { name, .. } => name,
            Viewer::Public => "public",
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    operator: String,
    csrf: String,
    created: Instant,
    expires: Instant,
}

/// Logins and sessions.
pub struct Auth {
    operators: Vec<Operator>,
    pub public_view: bool,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    pub checks: Arc<tokio::sync::Semaphore>,
    /// Cookies get `Secure` when the hub serves HTTPS.
    pub secure_cookies: bool,
}

/// 32 random bytes from the OS, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // Without OS randomness no token is safe to hand out; a login then simply fails.
        tracing::error!(error = %e, "no OS randomness for a session token");
        return String::new();
    }
    hex::encode(bytes)
}

/// A new argon2id hash (default parameters, random salt) of `password`, in PHC form.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::PasswordHasher;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Equal strings, compared in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && !a.is_empty() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Auth {
    pub fn new(section: &DashboardSection, secure_cookies: bool) -> Auth {
        Auth {
            operators: section.operators.clone(),
            public_view: section.public_view,
            ttl: section.session_ttl,
            sessions: Mutex::new(HashMap::new()),
            checks: Arc::new(tokio::sync::Semaphore::new(LOGIN_CHECKS)),
            secure_cookies,
        }
    }

    pub fn has_operators(&self) -> bool {
        !self.operators.is_empty()
    }

    /// The viewer of a request: its live session's operator, else the public view if allowed.
    pub fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let now = Instant::now();
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = sessions.get(id).filter(|s| s.expires > now) {
                return Some(Viewer::Operator { name: s.operator.clone(), csrf: s.csrf.clone() });
            }
        }
        self.public_view.then_some(Viewer::Public)
    }

    /// Checks a name and password (blocking: argon2). `true` only for a configured operator
    /// with that password.
    pub fn check_password(&self, name: &str, password: &str) -> bool {
        let op = self.operators.iter().find(|o| o.name == name);
        let hash = op.map_or(DUMMY_HASH, |o| o.password_hash.as_str());
        let Ok(parsed) = PasswordHash::new(hash) else { return false };
        let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        ok && op.is_some()
    }

    /// Starts a session; returns its id.
    pub fn start_session(&self, operator: &str) -> String {
        let now = Instant::now();
        let id = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone()) else { break };
            sessions.remove(&oldest);
        }
        let session =
            Session { operator: operator.into(), csrf: random_token(), created: now, expires: now + self.ttl };
        sessions.insert(id.clone(), session);
        id
    }

    pub fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        }
    }

    /// `Set-Cookie` value for `name=value` under `/`, HttpOnly, SameSite=Strict (and Secure over
    /// HTTPS); `max_age` 0 deletes it.
    pub fn set_cookie(&self, name: &str, value: &str, max_age: Option<Duration>) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={}", age.as_secs()));
        }
        if self.secure_cookies {
            c.push_str("; Secure");
        }
        c
    }

    pub fn session_cookie(&self, id: &str) -> String {
        self.set_cookie(SESSION_COOKIE, id, Some(self.ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(public_view: bool) -> Auth {
        let hash = hash_password("mat-khau").expect("hash");
        let section = DashboardSection {
            public_view,
            operators: vec![Operator { name: "ioc".into(), password_hash: hash }],
            ..DashboardSection::default()
        };
        Auth::new(&section, true)
    }

    fn with_cookie(c: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, c.parse().expect("cookie"));
        h
    }

    #[test]
    fn passwords_and_sessions() {
        let a = auth(false);
        assert!(a.check_password("ioc", "mat-khau"));
        assert!(!a.check_password("ioc", "sai"));
        assert!(!a.check_password("khach", "mat-khau"));
        assert_eq!(a.viewer(&HeaderMap::new()), None, "no session, no public view");
        let id = a.start_session("ioc");
        let h = with_cookie(&format!("kho_lang=en; {SESSION_COOKIE}={id}"));
        let Some(Viewer::Operator { name, csrf }) = a.viewer(&h) else { panic!("operator") };
        assert_eq!((name.as_str(), csrf.len()), ("ioc", 64));
        a.end_session(&h);
        assert_eq!(a.viewer(&h), None);
        assert_eq!(auth(true).viewer(&with_cookie("kho_session=forged")), Some(Viewer::Public));
    }

    #[test]
    fn cookies_are_locked_down() {
        let c = auth(false).session_cookie("abc");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"), "{c}");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("", ""));
    }
}
