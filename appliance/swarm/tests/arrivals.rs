//! End to end through the tokio shell with a real store: a raw TCP peer sees exactly the
//! present pieces, gets `have` when a piece is stored while it is connected, and a request for
//! a missing piece is handed to the read-through port (a stand-in fetcher that stores the
//! piece shortly after) and served once the piece arrives.

use std::sync::{Arc, Weak};
use std::time::Duration;

use popseed_core::{InfoHash, PieceIndex, ReadThrough};
use popseed_release::{publish, PublishOptions, SecretKey};
use popseed_store::{AddOptions, Capacity, Store, StoreConfig};
use popseed_swarm::{Shutdown, Swarm, SwarmConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const PIECE: usize = 16384;

/// A stand-in fetcher: stores requested pieces 50 ms later (from another thread, as the real
/// fetcher does).
struct StandIn {
    store: Weak<Store>,
    data: Vec<u8>,
}

impl ReadThrough for StandIn {
    fn request(&self, release: &InfoHash, pieces: &[PieceIndex]) -> bool {
        let (weak, d, ih, pieces) = (self.store.clone(), self.data.clone(), *release, pieces.to_vec());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(s) = weak.upgrade() {
                for p in pieces {
                    let _ = s.put_piece(&ih, p, piece(&d, p.as_usize()));
                }
            }
        });
        true
    }
}
const PIECES: usize = 11;

fn data() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..PIECE * (PIECES - 1) + 100)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn piece(d: &[u8], i: usize) -> &[u8] {
    &d[i * PIECE..((i + 1) * PIECE).min(d.len())]
}

async fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
    loop {
        let mut len = [0u8; 4];
        timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.expect("timed out").expect("read");
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 {
            continue; // keep-alive
        }
        let mut body = vec![0u8; n];
        timeout(Duration::from_secs(5), s.read_exact(&mut body)).await.expect("timed out").expect("read");
        return (body[0], body[1..].to_vec());
    }
}

async fn expect(s: &mut TcpStream, id: u8) -> Vec<u8> {
    for _ in 0..20 {
        let (m, body) = read_msg(s).await;
        if m == id {
            return body;
        }
    }
    panic!("no message {id}");
}

fn request(index: u32, begin: u32, length: u32) -> Vec<u8> {
    let mut m = 13u32.to_be_bytes().to_vec();
    m.push(6);
    for v in [index, begin, length] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn present_pieces_haves_and_read_through() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").join("rel");
    std::fs::create_dir_all(&src).unwrap();
    let d = data();
    std::fs::write(src.join("data.bin"), &d).unwrap();
    let opts = PublishOptions { piece_size: Some(PIECE as u64), ..Default::default() };
    let rel = publish(&src, &SecretKey::generate(), &dir.path().join("release"), &opts).unwrap();
    let ih = rel.infohash();
    let store = Arc::new(
        Store::open(StoreConfig { dir: dir.path().join("store"), capacity: Capacity { budget: None, min_free: 0 } })
            .unwrap(),
    );
    store.add_release(&rel, AddOptions::default()).unwrap();
    for i in 0..5 {
        store.put_piece(&ih, PieceIndex(i as u32), piece(&d, i)).unwrap();
    }
    let fetcher = Arc::new(StandIn { store: Arc::downgrade(&store), data: d.clone() });
    let cfg = SwarmConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tracker_listen: None,
        lsd: false,
        utp_reset: false,
        ..Default::default()
    };
    let shutdown = Shutdown::new();
    let ports = popseed_swarm::SwarmPorts { read_through: fetcher, fill: Arc::new(popseed_core::NoPeerFill) };
    let swarm = Swarm::start(store.clone(), ports, cfg, shutdown.clone()).await.unwrap();

    let mut s = TcpStream::connect(swarm.peer_addr()).await.unwrap();
    let mut hs = b"\x13BitTorrent protocol\0\0\0\0\0\x10\0\0".to_vec();
    hs.extend_from_slice(ih.as_bytes());
    hs.extend_from_slice(b"-TS0001-000000000000");
    s.write_all(&hs).await.unwrap();
    let mut theirs = [0u8; 68];
    timeout(Duration::from_secs(5), s.read_exact(&mut theirs)).await.unwrap().unwrap();
    assert_eq!(&theirs[28..48], ih.as_bytes());
    let bitfield = expect(&mut s, 5).await;
    assert_eq!(bitfield, vec![0b1111_1000, 0], "pieces 0-4 present");

    // A piece stored while connected is announced.
    store.put_piece(&ih, PieceIndex(7), piece(&d, 7)).unwrap();
    assert_eq!(expect(&mut s, 4).await, 7u32.to_be_bytes());

    s.write_all(&[0, 0, 0, 1, 2]).await.unwrap(); // interested
    expect(&mut s, 1).await; // unchoke

    // Present piece: served.
    s.write_all(&request(1, 0, PIECE as u32)).await.unwrap();
    let body = expect(&mut s, 7).await;
    assert_eq!(&body[..8], &[0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(&body[8..], piece(&d, 1));

    // Missing piece (the last, 100 bytes): demanded, stored by the "fetcher", then served.
    s.write_all(&request(10, 0, 100)).await.unwrap();
    assert_eq!(expect(&mut s, 4).await, 10u32.to_be_bytes(), "have for the fetched piece");
    let body = expect(&mut s, 7).await;
    assert_eq!(&body[..8], &[0, 0, 0, 10, 0, 0, 0, 0]);
    assert_eq!(&body[8..], piece(&d, 10));

    let stats = swarm.stats().snapshot();
    assert_eq!(stats.bytes_uploaded, PIECE as u64 + 100);
    assert_eq!(stats.peers_connected, 1);
    drop(s);
    swarm.shutdown().await;
}
