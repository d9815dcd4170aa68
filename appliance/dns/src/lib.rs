//! popseed-dns: the captive DNS responder. Every name points at the box (with the few
//! exceptions captive clients need), under a per-source rate limit. The portal runs it for
//! attendees; the setup page of an unprovisioned box runs it too.
//!
//! - [`rules`]: the answers as a pure function from query bytes to reply bytes (or nothing),
//!   and the per-source rate limiter. No sockets; unit-tested, malformed packets included.
//! - [`server`]: the UDP and TCP (RFC 7766) listeners around it, and its counters.

pub mod rules;
pub mod server;

pub use rules::DnsRules;
pub use server::{serve_tcp, serve_udp, DnsStats, Responder};
