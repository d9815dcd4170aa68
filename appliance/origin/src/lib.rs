//! popseed-origin: the origin protocol, popseed/1 over QUIC (TLS 1.3, ALPN `popseed/1`).
//!
//! - [`proto`]: the wire format and an incremental response parser, with no I/O.
//! - [`server`]: the origin seed server's async shell (`popseed origin`).
//! - [`connect`]: dialling an origin ([`OriginSpec`], [`OriginConnector`]), for the fetcher and
//!   the device link alike, and what a deliberate refusal looks like.
//! - [`client`]: one appliance-side popseed/1 connection to an origin.
//! - [`bufpool`]: reusable piece buffers for the server's reads.
//! - [`mapped`]: release files mapped into memory, served without a copy (and a SIGBUS guard).
//! - [`tls`]: certificates, fingerprints, pinned-certificate trust.
//!
//! The protocol is specified in docs/protocol.md.

pub mod bufpool;
pub mod client;
pub mod connect;
pub mod error;
pub mod mapped;
pub mod proto;
pub mod server;
pub mod tls;

pub use client::OriginClient;
pub use connect::{connect, OriginConnector, OriginSpec, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SERVER_NAME};
pub use error::OriginError;
pub use server::{ClientGate, ControlAcceptor, OriginConfig, OriginServer, ServedRelease};
pub use tls::{Identity, Trust};
