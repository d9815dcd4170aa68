//! The device link over real QUIC on loopback, in one process: an origin with a hub, a box
//! with a store, fetcher, job manager and uplink. Covers what the CLI tests do not: the
//! allow-list, re-pushing after a reconnect without duplicating the job, and cancel from the
//! origin.

// Test code: an unwrap that fails is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use popseed_control::hub::{Delivery, HubAcceptor, Target};
use popseed_control::uplink::{self, DeviceHello};
use popseed_control::{ControlHub, DeviceIdentity, JobManager, JobSpec, JobState, ReleaseSource};
use popseed_fetch::{FetchConfig, Fetcher};
use popseed_origin::{Identity, OriginConfig, OriginServer, OriginSpec, ServedRelease, Trust};
use popseed_release::{publish, DataDir, PublishOptions, SecretKey, VerifiedRelease};
use popseed_store::{Capacity, Store, StoreConfig};
use tokio_util::sync::CancellationToken;

fn release(root: &std::path::Path, name: &str, size: usize) -> (VerifiedRelease, std::path::PathBuf, SecretKey) {
    let src = root.join("src").join(name);
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(src.join("file.bin"), data).unwrap();
    let key = SecretKey::generate();
    let r = publish(
        &src,
        &key,
        &root.join("rel").join(name),
        &PublishOptions { piece_size: Some(64 << 10), ..Default::default() },
    )
    .unwrap();
    (r, src, key)
}

fn spec(id: &str, r: &VerifiedRelease) -> JobSpec {
    let b = base64::engine::general_purpose::STANDARD;
    JobSpec {
        id: Some(id.into()),
        name: None,
        release: ReleaseSource::Inline {
            manifest_b64: b.encode(&r.manifest_bytes),
            torrent_b64: b.encode(&r.torrent_bytes),
        },
        deadline: None,
        priority: 0,
        pin: true,
        ttl_seconds: None,
    }
}

/// Polls `f` until it holds; fails after a minute (only a hung test waits that long).
async fn until<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..2400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reconnect_and_cancel() {
    let tmp = tempfile::tempdir().unwrap();
    let (good, src, key) = release(tmp.path(), "good", 1 << 20);
    let device = Arc::new(DeviceIdentity::load_or_create(&tmp.path().join("box/device.key")).unwrap());
    let stranger = Arc::new(DeviceIdentity::load_or_create(&tmp.path().join("other/device.key")).unwrap());
    let hub = ControlHub::new(BTreeMap::from([(device.fingerprint(), "box".to_owned())]));

    let id = Identity::self_signed(&["localhost".into()]).unwrap();
    let fp = id.fingerprint();
    let served = ServedRelease { data: DataDir::open(&good, &src).unwrap(), release: good.clone() };
    let cfg = OriginConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let server =
        OriginServer::bind_with_control(cfg, id, vec![served], Some(Arc::new(HubAcceptor(hub.clone())))).unwrap();
    let addr = server.local_addr().unwrap();
    let stop_origin = CancellationToken::new();
    let s = stop_origin.clone();
    tokio::spawn(server.run(async move { s.cancelled().await }));
    let origin = OriginSpec { name: "o".into(), addr, server_name: "localhost".into(), trust: Trust::Fingerprint(fp) };

    let store = Arc::new(
        Store::open(StoreConfig {
            dir: tmp.path().join("box/store"),
            capacity: Capacity { budget: None, min_free: 0 },
        })
        .unwrap(),
    );
    let fetcher = Fetcher::new(store.clone(), vec![origin.clone()], FetchConfig::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(fetcher.clone().run(shutdown.clone()));
    let jobs = JobManager::open(store.clone(), fetcher, vec![key.public()], vec![origin.clone()]).unwrap();
    tokio::spawn(jobs.clone().run(shutdown.clone()));

    // a device that is not on the allow-list is refused and listed as such
    let other_jobs = jobs.clone();
    let other = tokio::spawn(uplink::run(
        origin.clone(),
        stranger.clone(),
        DeviceHello { name: "intruder".into() },
        other_jobs,
        shutdown.child_token(),
    ));
    until("the stranger to be refused", || {
        hub.devices().iter().any(|d| d.fingerprint == stranger.fingerprint() && !d.allowed && d.refused.is_some())
    })
    .await;
    other.abort();

    // the allowed box links, takes the job and fills it
    let link = shutdown.child_token();
    tokio::spawn(uplink::run(
        origin.clone(),
        device.clone(),
        DeviceHello { name: "box".into() },
        jobs.clone(),
        link.clone(),
    ));
    hub.queue(Target::Device(device.fingerprint()), spec("j1", &good), "good".into()).unwrap();
    let report = |id: &str| hub.jobs().into_iter().find(|j| j.id == id).and_then(|j| j.devices[0].report.clone());
    until("j1 to be ready on the box and reported", || report("j1").is_some_and(|r| r.state == JobState::Ready)).await;
    assert_eq!(hub.jobs()[0].devices[0].delivery, Delivery::Accepted);
    assert_eq!(hub.devices().iter().find(|d| d.allowed).and_then(|d| d.name.clone()).as_deref(), Some("box"));

    // the link drops and comes back: the job is not taken twice
    link.cancel();
    until("the link to drop", || !hub.devices().iter().any(|d| d.allowed && d.connected)).await;
    let link = shutdown.child_token();
    tokio::spawn(uplink::run(
        origin.clone(),
        device.clone(),
        DeviceHello { name: "box".into() },
        jobs.clone(),
        link.clone(),
    ));
    until("the box to link again", || hub.devices().iter().any(|d| d.allowed && d.connected)).await;
    assert_eq!(jobs.list().len(), 1, "one job, however often it is pushed");

    // a release signed by a key the box does not trust: refused, the origin sees why
    let (other_rel, _, _) = release(tmp.path(), "unserved", 256 << 10);
    let s2 = spec("j2", &other_rel);
    hub.queue(Target::All, s2, "unserved".into()).unwrap();
    until("j2 to be refused (unknown publisher key)", || {
        hub.jobs().iter().any(|j| {
            j.id == "j2"
                && matches!(&j.devices[0].delivery, Delivery::Refused { reason } if reason.contains("signed by"))
        })
    })
    .await;
    assert_eq!(jobs.get("j2").map(|j| j.state), Some(JobState::Failed));
    // cancelled from the origin: the box cancels it and unpins its release
    hub.cancel("j1").unwrap();
    until("j1 cancelled on the box", || jobs.get("j1").is_some_and(|j| j.state == JobState::Cancelled)).await;
    assert!(!store.releases().iter().any(|r| r.pinned), "a cancelled job's release is unpinned");
    shutdown.cancel();
    stop_origin.cancel();
}
