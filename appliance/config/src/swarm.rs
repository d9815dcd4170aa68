//! `[swarm]`: the BitTorrent side's settings (see docs/swarm.md). Every key has a default, so
//! the agent's config file may name only what differs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;

/// Swarm settings (the agent's config section `swarm`; every key has a default).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmConfig {
    /// Where peers connect (TCP).
    pub listen: SocketAddr,
    /// Where the HTTP tracker listens; `None` disables it.
    pub tracker_listen: Option<SocketAddr>,
    /// The box's address as handed out in torrents, magnets and tracker replies. Default: the
    /// listen address when it is specific, else the address a client reached the tracker at
    /// (tracker replies) or the address of the default route's interface (links).
    pub announce_ip: Option<IpAddr>,
    /// Peer port handed out (e.g. behind a port forward). Default: the bound listen port.
    pub announce_port: Option<u16>,
    /// Tracker port handed out in links. Default: the bound tracker port.
    pub announce_tracker_port: Option<u16>,
    pub max_peers: usize,
    pub max_peers_per_ip: usize,
    /// Peers unchoked at once.
    pub upload_slots: usize,
    /// How often slots rotate among waiting peers, and how long a slot is held at least.
    pub rechoke_interval_secs: u64,
    /// Global upload cap in bytes per second; 0 = none.
    pub upload_rate: u64,
    /// Per-peer upload cap in bytes per second; 0 = none.
    pub peer_upload_rate: u64,
    /// Cap on what the box downloads from BitTorrent peers (the LAN), all connections together,
    /// in bytes per second; 0 = none. `[fetch] rate_limit` caps the uplink sources only.
    pub download_rate: u64,
    /// `reqq` advertised; a peer may queue up to twice this many requests before it is dropped.
    pub request_queue: u32,
    pub idle_timeout_secs: u64,
    pub handshake_timeout_secs: u64,
    pub keepalive_secs: u64,
    /// Tracker announce interval handed to clients.
    pub tracker_interval_secs: u64,
    /// BEP 14 local service discovery (multicast 239.192.152.143:6771).
    pub lsd: bool,
    pub lsd_interval_secs: u64,
    /// Speak uTP (BEP 29) on the peer port (UDP), besides TCP.
    pub utp: bool,
    /// With `utp` off: answer uTP connection attempts on the peer port with a reset, so clients
    /// that try uTP first (transmission) fall back to TCP at once instead of after a timeout.
    pub utp_reset: bool,
    /// Accept MSE/PE (encrypted) handshakes, choosing plaintext when the peer offers it.
    /// When false, an encrypted opening is dropped at once and the client retries in plaintext.
    pub mse: bool,
    /// Peers to download from whatever the trackers say (`[fetch] peers` of agent.toml, copied
    /// here by the agent: sites where multicast is blocked list their sibling boxes).
    #[serde(skip)]
    pub static_peers: Vec<SocketAddr>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6881),
            tracker_listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6969)),
            announce_ip: None,
            announce_port: None,
            announce_tracker_port: None,
            max_peers: 200,
            max_peers_per_ip: 8,
            upload_slots: 16,
            rechoke_interval_secs: 10,
            upload_rate: 0,
            peer_upload_rate: 0,
            download_rate: 0,
            request_queue: 2000,
            idle_timeout_secs: 120,
            handshake_timeout_secs: 10,
            keepalive_secs: 60,
            tracker_interval_secs: 60,
            lsd: true,
            lsd_interval_secs: 300,
            utp: true,
            utp_reset: true,
            mse: true,
            static_peers: Vec::new(),
        }
    }
}
