//! Staff authentication for the dashboard, `/api/status` and the staff API: `Authorization:
//! Bearer T`, or a session cookie (HttpOnly, SameSite=Strict) set by the login form or by
//! opening the dashboard once with `?token=T`. Tokens are compared as SHA-256 digests in
//! constant time. A session is a random id the box remembers (as a digest) until it expires
//! ([`SESSION_TTL`]), the browser logs out (revoked at once), or the agent restarts; the cookie
//! never holds the token or anything derived from it. Wrong tokens are counted per client:
//! past [`ATTEMPT_BURST`] a client waits ([`ATTEMPT_EVERY`] per further try).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use popseed_core::PerKey;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "popseed_session";
/// How long a session lasts (the browser keeps the cookie as long).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions remembered at once; a new login past this ends the oldest.
pub const MAX_SESSIONS: usize = 64;
/// Token attempts per client: a burst of this many, then one per [`ATTEMPT_EVERY`].
pub const ATTEMPT_BURST: f64 = 10.0;
pub const ATTEMPT_EVERY: Duration = Duration::from_secs(6);
/// Clients whose attempts are remembered at once.
const ATTEMPT_CLIENTS: usize = 4096;

/// The configured token (as its digest), the live sessions and the per-client attempt limits.
pub struct Auth {
    token: Option<[u8; 32]>,
    /// digest of a session id -> when it expires
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    attempts: Mutex<PerKey<IpAddr>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("configured", &self.token.is_some()).finish()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The result of checking a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No or a wrong credential.
    Denied,
    /// The box has no staff token: protected pages are off.
    NotConfigured,
}

impl Auth {
    pub fn new(token: Option<&str>) -> Self {
        Auth {
            token: token.map(digest),
            sessions: Mutex::new(HashMap::new()),
            attempts: Mutex::new(PerKey::new(1.0 / ATTEMPT_EVERY.as_secs_f64(), ATTEMPT_BURST, ATTEMPT_CLIENTS)),
        }
    }

    pub fn configured(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `client` may present a token now: false once its wrong tries ran out, even for
    /// the right token (a guesser must not learn that a guess was right).
    pub fn may_try(&self, client: IpAddr, now: Instant) -> bool {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).has_token(&client, now)
    }

    /// Counts a wrong token from `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).allow(client, now);
    }

    /// Checks a presented token.
    pub fn token_ok(&self, presented: &str) -> bool {
        match &self.token {
            Some(want) => bool::from(digest(presented).ct_eq(want)),
            None => false,
        }
    }

    fn session_ok(&self, presented: &str, now: Instant) -> bool {
        let key = digest(presented);
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, exp| *exp > now);
        // the map is keyed by the digest, so a lookup compares no secret byte by byte
        s.contains_key(&key)
    }

    /// Checks the `Authorization` header and the `Cookie` header of a request.
    pub fn check(&self, authorization: Option<&str>, cookie: Option<&str>, now: Instant) -> Verdict {
        if !self.configured() {
            return Verdict::NotConfigured;
        }
        if let Some(t) = authorization.and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer "))) {
            return if self.token_ok(t.trim()) { Verdict::Allowed } else { Verdict::Denied };
        }
        if let Some(v) = cookie.and_then(cookie_value) {
            if self.session_ok(v, now) {
                return Verdict::Allowed;
            }
        }
        Verdict::Denied
    }

    /// Starts a session; the `Set-Cookie` value that logs a browser in.
    pub fn login(&self, now: Instant) -> Option<String> {
        self.token?;
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id = hex::encode(raw);
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, exp| *exp > now);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s.iter().min_by_key(|(_, exp)| **exp).map(|(k, _)| *k) {
                s.remove(&oldest);
            }
        }
        s.insert(digest(&id), now + SESSION_TTL);
        Some(format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs()))
    }

    /// Ends the session the `Cookie` header names (it stops working at once).
    pub fn logout(&self, cookie: Option<&str>) {
        if let Some(v) = cookie.and_then(cookie_value) {
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest(v));
        }
    }
}

/// `Set-Cookie` value that drops the cookie from a browser.
pub fn logout_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Our cookie's value in a `Cookie` header.
fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == COOKIE).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "correct-horse-battery";

    fn pair(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[test]
    fn bearer_and_cookie() {
        let a = Auth::new(Some(T));
        let now = Instant::now();
        assert_eq!(a.check(Some(&format!("Bearer {T}")), None, now), Verdict::Allowed);
        assert_eq!(a.check(Some("Bearer correct-horse-battery-staple"), None, now), Verdict::Denied);
        assert_eq!(a.check(Some("Basic Zm9vOmJhcg=="), None, now), Verdict::Denied);
        assert_eq!(a.check(None, None, now), Verdict::Denied);
        let set = a.login(now).unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        assert!(!set.contains(T), "the cookie never holds the token");
        let pair = pair(&set);
        assert_eq!(a.check(None, Some(&format!("other=1; {pair}")), now), Verdict::Allowed);
        assert_eq!(a.check(None, Some(&format!("{COOKIE}={T}")), now), Verdict::Denied, "the raw token is no session");
        assert_eq!(a.check(None, Some(&format!("{COOKIE}=")), now), Verdict::Denied);
        // a wrong bearer is not rescued by a good cookie
        assert_eq!(a.check(Some("Bearer nope"), Some(&pair), now), Verdict::Denied);
    }

    #[test]
    fn sessions_are_random_expire_and_are_revoked_by_logout() {
        let a = Auth::new(Some(T));
        let now = Instant::now();
        let (s1, s2) = (pair(&a.login(now).unwrap()), pair(&a.login(now).unwrap()));
        assert_ne!(s1, s2, "each login gets its own random session");
        assert_ne!(s1, pair(&Auth::new(Some(T)).login(now).unwrap()), "not derived from the token");
        a.logout(Some(&s1));
        assert_eq!(a.check(None, Some(&s1), now), Verdict::Denied, "logged out: revoked at once");
        assert_eq!(a.check(None, Some(&s2), now), Verdict::Allowed, "other sessions go on");
        assert_eq!(a.check(None, Some(&s2), now + SESSION_TTL + Duration::from_secs(1)), Verdict::Denied, "expired");
    }

    #[test]
    fn sessions_are_bounded() {
        let a = Auth::new(Some(T));
        let t0 = Instant::now();
        let first = pair(&a.login(t0).unwrap());
        for i in 1..=MAX_SESSIONS as u64 {
            a.login(t0 + Duration::from_secs(i)).unwrap();
        }
        assert!(a.sessions.lock().unwrap().len() <= MAX_SESSIONS);
        assert_eq!(a.check(None, Some(&first), t0 + Duration::from_secs(100)), Verdict::Denied, "the oldest went");
    }

    #[test]
    fn token_attempts_are_limited_per_client() {
        let a = Auth::new(Some(T));
        let now = Instant::now();
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap());
        let mut allowed = 0;
        while a.may_try(x, now) && allowed < 100 {
            a.failed(x, now);
            allowed += 1;
        }
        assert_eq!(allowed, ATTEMPT_BURST as usize);
        assert!(!a.may_try(x, now), "locked out, whatever it presents next");
        assert!(a.may_try(y, now), "another client is not locked out");
        assert!(a.may_try(x, now + ATTEMPT_EVERY + Duration::from_millis(1)), "one more try after a wait");
    }

    #[test]
    fn no_token_configured_means_no_access() {
        let a = Auth::new(None);
        assert_eq!(a.check(Some("Bearer anything"), None, Instant::now()), Verdict::NotConfigured);
        assert!(!a.token_ok(""));
        assert!(a.login(Instant::now()).is_none());
    }
}
