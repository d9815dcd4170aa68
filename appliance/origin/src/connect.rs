//! Dialling an origin: the one connect sequence (TLS settings that pin the origin's
//! certificate or trust a CA, a client endpoint for the address family, the QUIC handshake
//! under a timeout), shared by the fetcher (popseed/1) and the device link (popseed-control/1).
//! Also what a deliberate refusal looks like on the wire ([`refuse`], [`refusal`]).

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::OriginClient;
use crate::error::OriginError;
use crate::proto::{code, ALPN, CONTROL_ALPN};
use crate::tls::{self, Identity, Trust};

/// Server name sent in the TLS handshake when none is configured (pinned certificates do not
/// check it).
pub const DEFAULT_SERVER_NAME: &str = "popseed-origin";

/// How long a dial waits for the handshake unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An origin seed as a box knows it: a name for logs and status, where it is, and how to trust it.
#[derive(Debug, Clone)]
pub struct OriginSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub server_name: String,
    pub trust: Trust,
}

/// Dials one origin, as often as asked, with TLS settings built once.
pub struct OriginConnector {
    spec: OriginSpec,
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    timeout: Duration,
}

impl OriginConnector {
    /// For popseed/1: pieces, releases and the catalog.
    pub fn pieces(spec: OriginSpec, timeout: Duration) -> Result<Self, OriginError> {
        Self::pieces_as(spec, None, timeout)
    }

    /// For popseed/1, presenting the device's certificate when given (origins that serve
    /// allow-listed boxes only ask for it).
    pub fn pieces_as(spec: OriginSpec, device: Option<Identity>, timeout: Duration) -> Result<Self, OriginError> {
        let config = tls::client_config_for(&spec.trust, ALPN, device)?;
        Self::with_config(spec, config, timeout)
    }

    /// For the device link (popseed-control/1), presenting the device's certificate.
    pub fn device_link(spec: OriginSpec, device: Identity, timeout: Duration) -> Result<Self, OriginError> {
        let config = tls::client_config_for(&spec.trust, CONTROL_ALPN, Some(device))?;
        Self::with_config(spec, config, timeout)
    }

    fn with_config(spec: OriginSpec, config: quinn::ClientConfig, timeout: Duration) -> Result<Self, OriginError> {
        let endpoint = client_endpoint(spec.addr)?;
        Ok(OriginConnector { spec, endpoint, config, timeout })
    }

    pub fn spec(&self) -> &OriginSpec {
        &self.spec
    }

    /// Waits until every connection made here has sent its close (before a process exits).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }

    /// One popseed/1 connection.
    pub async fn connect(&self) -> Result<OriginClient, OriginError> {
        Ok(OriginClient::new(self.connect_raw().await?))
    }

    /// One QUIC connection with this connector's ALPN (the device link speaks its own framing).
    pub async fn connect_raw(&self) -> Result<quinn::Connection, OriginError> {
        let addr = self.spec.addr;
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), addr, &self.spec.server_name)
            .map_err(|source| OriginError::Dial { addr, source })?;
        tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| OriginError::ConnectTimeout { addr, timeout: self.timeout })?
            .map_err(|source| OriginError::Handshake { addr, source })
    }
}

/// Dials `spec` once for popseed/1 (a single request, e.g. fetching a release's metadata).
pub async fn connect(spec: &OriginSpec, timeout: Duration) -> Result<OriginClient, OriginError> {
    OriginConnector::pieces(spec.clone(), timeout)?.connect().await
}

/// A client endpoint for `addr`'s address family.
pub fn client_endpoint(addr: SocketAddr) -> Result<quinn::Endpoint, OriginError> {
    let bind = if addr.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    quinn::Endpoint::client(bind).map_err(|err| OriginError::Bind { addr: bind, err })
}

/// Closes `conn` as a deliberate refusal (not on the allow-list, no device links taken...).
pub fn refuse(conn: &quinn::Connection, why: &str) {
    conn.close(code::REFUSED.into(), why.as_bytes());
}

/// The reason, when the other side closed the connection with [`refuse`].
pub fn refusal(e: &quinn::ConnectionError) -> Option<String> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(code::REFUSED) => {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        _ => None,
    }
}
