//! Staff authentication for the dashboard, `/api/status` and the staff API: `Authorization:
//! Bearer T`, or a session cookie (HttpOnly, SameSite=Strict) set by the login form or by
//! opening the dashboard once with `?token=T`. Tokens are compared as SHA-256 digests in
//! constant time; the cookie holds a digest derived from the token, never the token itself.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "popseed_session";
/// How long the browser keeps the session cookie.
pub const COOKIE_MAX_AGE_SECS: u64 = 12 * 3600;

/// The configured token, kept as the digests requests are compared against.
#[derive(Clone)]
pub struct Auth {
    token: Option<[u8; 32]>,
    session: Option<String>,
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
            session: token.map(|t| hex::encode(Sha256::digest(format!("popseed dashboard session\0{t}").as_bytes()))),
        }
    }

    pub fn configured(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a presented token.
    pub fn token_ok(&self, presented: &str) -> bool {
        match &self.token {
            Some(want) => bool::from(digest(presented).ct_eq(want)),
            None => false,
        }
    }

    fn session_ok(&self, presented: &str) -> bool {
        match &self.session {
            Some(want) => bool::from(digest(presented).ct_eq(&digest(want))),
            None => false,
        }
    }

    /// Checks the `Authorization` header and the `Cookie` header of a request.
    pub fn check(&self, authorization: Option<&str>, cookie: Option<&str>) -> Verdict {
        if !self.configured() {
            return Verdict::NotConfigured;
        }
        if let Some(t) = authorization.and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer "))) {
            return if self.token_ok(t.trim()) { Verdict::Allowed } else { Verdict::Denied };
        }
        if let Some(v) = cookie.and_then(cookie_value) {
            if self.session_ok(v) {
                return Verdict::Allowed;
            }
        }
        Verdict::Denied
    }

    /// `Set-Cookie` value that logs a browser in.
    pub fn login_cookie(&self) -> Option<String> {
        self.session
            .as_ref()
            .map(|s| format!("{COOKIE}={s}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}"))
    }
}

/// `Set-Cookie` value that logs a browser out.
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

    #[test]
    fn bearer_and_cookie() {
        let a = Auth::new(Some(T));
        assert_eq!(a.check(Some(&format!("Bearer {T}")), None), Verdict::Allowed);
        assert_eq!(a.check(Some("Bearer correct-horse-battery-staple"), None), Verdict::Denied);
        assert_eq!(a.check(Some("Basic Zm9vOmJhcg=="), None), Verdict::Denied);
        assert_eq!(a.check(None, None), Verdict::Denied);
        let set = a.login_cookie().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        assert!(!set.contains(T), "the cookie never holds the token");
        let pair = set.split(';').next().unwrap();
        assert_eq!(a.check(None, Some(&format!("other=1; {pair}"))), Verdict::Allowed);
        assert_eq!(a.check(None, Some(&format!("{COOKIE}={T}"))), Verdict::Denied, "the raw token is no session");
        assert_eq!(a.check(None, Some(&format!("{COOKIE}="))), Verdict::Denied);
        // a wrong bearer is not rescued by a good cookie
        assert_eq!(a.check(Some("Bearer nope"), Some(pair)), Verdict::Denied);
    }

    #[test]
    fn no_token_configured_means_no_access() {
        let a = Auth::new(None);
        assert_eq!(a.check(Some("Bearer anything"), None), Verdict::NotConfigured);
        assert!(!a.token_ok(""));
        assert!(a.login_cookie().is_none());
    }

    #[test]
    fn sessions_differ_per_token() {
        let a = Auth::new(Some(T)).login_cookie().unwrap();
        let b = Auth::new(Some("another-token-of-16")).login_cookie().unwrap();
        assert_ne!(a, b);
    }
}
