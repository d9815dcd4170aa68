//! Printing errors for people. Typed errors keep their cause as `source()` instead of copying
//! its text, so a log line or a reason shown to staff prints the whole chain with [`chain`]:
//! `job store: store index: IO error: disk full`.

use std::fmt;

/// Displays an error and every `source()` under it, joined by `": "`.
pub struct Chain<'a, E: ?Sized>(pub &'a E);

impl<E: std::error::Error + ?Sized> fmt::Display for Chain<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

/// `e` and its sources as one line.
pub fn chain<E: std::error::Error + ?Sized>(e: &E) -> Chain<'_, E> {
    Chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer {0}")]
    struct Outer(u8, #[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn prints_every_source_once() {
        let e = Outer(1, Inner(std::io::Error::other("disk full")));
        assert_eq!(chain(&e).to_string(), "outer 1: inner: disk full");
        let plain = std::io::Error::other("alone");
        assert_eq!(chain(&plain).to_string(), "alone");
    }
}
