//! Writes the checked-in seed corpus (fuzz/corpus/<target>/) and fixtures (fuzz/fixtures/)
//! with the project's own code: a real release published with `popseed_release::publish`,
//! real requests, frames, replies, queries and config files. It is built like the targets
//! (one instrumented build serves both), so it is run through libFuzzer:
//!
//!     cargo fuzz run --sanitizer none gen_corpus /tmp/empty -- -runs=1
//!
//! Existing files of the same name are overwritten; other corpus files are left alone.
#![no_main]

use std::path::Path;

use popseed_control::job::{JobReport, JobSpec, JobState, ReleaseSource};
use popseed_control::link::{encode, DeviceMsg, OriginMsg, Reply};
use popseed_core::InfoHash;
use popseed_fuzz::{bt_handshake, bt_msg, fixed_key, publish_fixture};
use popseed_origin::proto::{list_header, piece_header, release_header, CatalogEntry, Request, Status};
use popseed_release::metainfo::{build_torrent, TorrentOptions};
use popseed_release::Layout;

/// The fuzz/ directory (this file's crate).
fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = here().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("mkdir corpus");
    std::fs::write(dir.join(name), bytes).expect("write corpus file");
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn dns_query(id: u16, flags: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.').filter(|l| !l.is_empty()) {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

fn pct(b: &[u8]) -> String {
    b.iter().map(|c| format!("%{c:02X}")).collect()
}

fn u16_len(b: &[u8]) -> Vec<u8> {
    cat(&[&(b.len() as u16).to_be_bytes(), b])
}

libfuzzer_sys::fuzz_target!(|_data: &[u8]| {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(generate);
});

fn generate() {
    let tmp = std::env::temp_dir().join(format!("popseed-gen-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (release, _) = publish_fixture(&tmp);
    let ih = release.infohash();
    let fixtures = here().join("fixtures");
    std::fs::create_dir_all(&fixtures).expect("mkdir fixtures");
    std::fs::write(fixtures.join("release.torrent"), &release.torrent_bytes).expect("write fixture");
    std::fs::write(fixtures.join("manifest.json"), &release.manifest_bytes).expect("write fixture");

    // ---------------------------------------------------------------- metainfo, manifest
    put("metainfo", "release.torrent", &release.torrent_bytes);
    let single = Layout::new(16384, vec![(vec!["f.iso".into()], 40000)], vec![[7; 20]; 3]).expect("layout");
    let opts = TorrentOptions {
        name: "f.iso".into(),
        single_file: true,
        trackers: vec![vec!["http://t/a".into()], vec!["udp://u/b".into()]],
        web_seeds: vec!["https://ws/".into()],
        comment: Some("c".into()),
        creation_date: Some(1_700_000_000),
    };
    put("metainfo", "single-file.torrent", &build_torrent(&single, &opts).expect("torrent").0);
    put(
        "metainfo",
        "dotdot-path.torrent",
        b"d4:infod5:filesld6:lengthi1e4:pathl2:..1:xeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
    );
    put(
        "metainfo",
        "url-list-string.torrent",
        b"d8:announce10:http://t/a4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae8:url-list10:http://ws/e",
    );
    // ---------------------------------------------------------------- bencode
    put("bencode", "release.torrent", &release.torrent_bytes);
    put("bencode", "ext-handshake", b"d1:md11:ut_metadatai3e6:ut_pexi2ee1:pi6881e4:reqqi250e1:v8:popseed0e");
    put("bencode", "metadata-data", b"d8:msg_typei1e5:piecei0e10:total_sizei5eeRAW..");
    put("bencode", "extremes", b"li9223372036854775807ei-9223372036854775808e0:lleldeee");
    put("manifest", "manifest.json", &release.manifest_bytes);
    let compact: serde_json::Value = serde_json::from_slice(&release.manifest_bytes).expect("json");
    put("manifest", "compact.json", &serde_json::to_vec(&compact).expect("json"));
    let mut extra = compact.clone();
    extra["manifest"]["critical"] = serde_json::json!([{"spec": "@0-", "path": null, "offset": 0, "length": 18446744073709551615u64},
                           {"spec": "d/b c.bin", "path": "d/b c.bin", "offset": 4000, "length": 9000}]);
    put("manifest", "wide-critical.json", &serde_json::to_vec(&extra).expect("json"));
    put("manifest", "unsigned.json", br#"{"manifest":{"format":"popseed-manifest/1"}}"#);

    // ---------------------------------------------------------------- origin (popseed/1)
    let reqs = [
        ("get-pieces", Request::GetPieces { infohash: ih, priority: -3, indices: vec![0, 1, 2] }),
        ("get-release", Request::GetRelease { infohash: ih }),
        ("list", Request::List),
    ];
    for (name, r) in &reqs {
        put("origin_request", name, &r.encode());
    }
    let stream = cat(&[
        &piece_header(Status::Ok, 3, 5),
        b"hello",
        &piece_header(Status::NoSuchPiece, 4, 0),
        &piece_header(Status::Ok, 5, 2),
        b"xy",
    ]);
    put("origin_reply", "pieces", &cat(&[&[0, 2, 3, 0, 15, 5, 0, 1, 9], &stream]));
    put("origin_reply", "pieces-whole", &cat(&[&[0, 2, 3, 0, 15, 0, 0, 0, 0], &stream]));
    let (m, t) = (&release.manifest_bytes, &release.torrent_bytes);
    put("origin_reply", "release", &cat(&[&[1], &release_header(Status::Ok, m.len() as u32, t.len() as u32), m, t]));
    put("origin_reply", "release-unknown", &cat(&[&[1], &release_header(Status::UnknownRelease, 0, 0)]));
    let entry = CatalogEntry { infohash: ih, name: "rel".into(), version: "1".into(), total_size: 45_000 };
    let json = serde_json::to_vec(&vec![entry]).expect("json");
    put("origin_reply", "list", &cat(&[&[2], &list_header(Status::Ok, json.len() as u32), &json]));

    // ---------------------------------------------------------------- control link
    let hello = DeviceMsg::Hello { name: "box".into(), version: "0.1.0".into() };
    let reports = DeviceMsg::Reports {
        jobs: vec![JobReport {
            id: "j1".into(),
            name: "rel".into(),
            state: JobState::Filling,
            reason: None,
            bytes_done: 1,
            bytes_total: 45_000,
            eta_secs: Some(1.5),
            at_risk: false,
        }],
    };
    put("control_link", "device-stream", &cat(&[&[0, 3, 7, 0], &encode(&hello), &encode(&reports)]));
    let push = OriginMsg::Push {
        job: JobSpec {
            id: Some("j1".into()),
            name: Some("rel".into()),
            release: ReleaseSource::Origin { infohash: ih },
            deadline: Some(1_800_000_000),
            priority: 5,
            pin: true,
            ttl_seconds: Some(86_400),
        },
    };
    put("control_link", "origin-push", &cat(&[&[1, 0, 0, 0], &encode(&push)]));
    let inline = OriginMsg::Push {
        job: JobSpec {
            id: None,
            name: None,
            release: ReleaseSource::Inline { manifest_b64: "e30=".into(), torrent_b64: "ZGU=".into() },
            deadline: None,
            priority: 0,
            pin: false,
            ttl_seconds: None,
        },
    };
    put("control_link", "origin-push-inline", &cat(&[&[1, 0, 0, 0], &encode(&inline)]));
    put("control_link", "origin-cancel", &cat(&[&[1, 0, 0, 0], &encode(&OriginMsg::Cancel { id: "j1".into() })]));
    for (name, r) in [
        ("reply-accepted", Reply::Accepted { id: "j1".into() }),
        ("reply-refused", Reply::Refused { id: "j1".into(), reason: "unknown publisher key".into() }),
        ("reply-error", Reply::Error { reason: "busy".into() }),
    ] {
        put("control_link", name, &cat(&[&[2, 0, 0, 0], &encode(&r)]));
    }

    // ---------------------------------------------------------------- DNS
    put("dns", "a-example.com", &cat(&[&[0], &dns_query(0x1234, 0x0100, "example.com", 1)]));
    put("dns", "aaaa-box-v6", &cat(&[&[1], &dns_query(7, 0x0100, "PopSeed.LAN", 28)]));
    put("dns", "any-box", &cat(&[&[0], &dns_query(8, 0x0000, "popseed.lan", 255)]));
    put("dns", "nxdomain-canary", &cat(&[&[0], &dns_query(9, 0x0100, "use-application-dns.net", 1)]));
    put("dns", "ncsi", &cat(&[&[0], &dns_query(10, 0x0100, "dns.msftncsi.com", 1)]));
    put("dns", "https-type", &cat(&[&[0], &dns_query(11, 0x0100, "captive.apple.com", 65)]));
    put("dns", "opcode-status", &cat(&[&[0], &dns_query(12, 0x1000, "example.com", 1)]));

    // ---------------------------------------------------------------- tracker
    let held = pct(&[0x11; 20]);
    let partial = pct(&[0x22; 20]);
    let q = |sel: u8, s: String| cat(&[&[sel], s.as_bytes()]);
    put("tracker", "announce-started", &q(0, format!("info_hash={held}&peer_id=-lt0000-aaaaaaaaaaaa&port=6881&uploaded=0&downloaded=0&left=45000&compact=1&event=started")));
    put(
        "tracker",
        "announce-completed-v6",
        &q(4, format!("info_hash={held}&peer_id=-qB4000-bbbbbbbbbbbb&port=51413&left=0&event=completed&numwant=500")),
    );
    put("tracker", "announce-noncompact", &q(1, format!("info_hash={partial}&port=6882&compact=0&left=1")));
    put("tracker", "announce-stopped-mapped", &q(8, format!("info_hash={held}&port=6881&event=stopped")));
    put("tracker", "announce-unknown", &q(0, format!("info_hash={}&port=1", pct(&[0x33; 20]))));
    put("tracker", "scrape", &q(2, format!("info_hash={held}&info_hash={partial}")));
    put("tracker", "scrape-all", &q(2, String::new()));

    // ---------------------------------------------------------------- HTTP validators
    let len = |n: u64| n.to_be_bytes();
    put("http_range", "range", &cat(&[&len(40_000), &[0], b"bytes=0-9"]));
    put("http_range", "range-suffix", &cat(&[&len(40_000), &[0], b"bytes=-500"]));
    put("http_range", "range-open", &cat(&[&len(100), &[0], b" Bytes = 90 - "]));
    put("http_range", "if-range-etag", &cat(&[&len(10), &[1], format!("\"{}-0\"", InfoHash([0xab; 20])).as_bytes()]));
    put("http_range", "if-range-date", &cat(&[&len(10), &[1], b"Tue, 14 Nov 2023 22:13:20 GMT"]));
    put("http_range", "if-none-match", &cat(&[&len(10), &[2], b"\"x\", W/\"y\", *"]));

    // ---------------------------------------------------------------- portal HTTP
    let file = format!("/files/{ih}/rel/a.bin");
    let reqs: Vec<(&str, String)> = vec![
        ("page", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".into()),
        ("download-range", format!("GET {file} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=0-99\r\n\r\n")),
        ("download-missing", format!("GET {file} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=20000-20010\r\n\r\n")),
        ("download-nested", format!("GET /files/{ih}/rel/d/b%20c.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")),
        ("head-if-range", format!("HEAD {file} HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-Range: \"{ih}-0\"\r\nRange: bytes=-10\r\n\r\n")),
        ("if-none-match", format!("GET {file} HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: \"{ih}-0\"\r\n\r\n")),
        ("torrent", format!("GET /torrent/{ih}.torrent HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")),
        ("ack", "POST /ack HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 7\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nok=true".into()),
        ("captive-api", "GET /api/captive HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/captive+json\r\n\r\n".into()),
        ("probe-apple", "GET /hotspot-detect.html HTTP/1.1\r\nHost: captive.apple.com\r\n\r\n".into()),
        ("probe-android", "GET /generate_204 HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n".into()),
        ("foreign-host", "GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n".into()),
        ("pipelined", format!("GET / HTTP/1.1\r\nHost: localhost\r\n\r\nHEAD {file} HTTP/1.1\r\nHost: localhost\r\n\r\nGET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")),
        ("absolute-form", "GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".into()),
        ("chunked", "POST /ack HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into()),
    ];
    for (name, r) in &reqs {
        put("portal_http", name, r.as_bytes());
    }

    // ---------------------------------------------------------------- peer wire
    let mut req = Vec::new();
    for (i, b, l) in [(0u32, 0u32, 16384u32), (0, 16384, 16384), (2, 0, 16384), (9, 0, 1000)] {
        req.extend(bt_msg(6, &cat(&[&i.to_be_bytes(), &b.to_be_bytes(), &l.to_be_bytes()])));
    }
    let msgs = cat(&[
        &bt_msg(20, b"\x00d1:md11:ut_metadatai2eee"),
        &bt_msg(2, &[]),
        &bt_msg(4, &3u32.to_be_bytes()),
        &bt_msg(5, &[0xff, 0xc0]),
        &req,
        &bt_msg(20, b"\x03d8:msg_typei0e5:piecei1ee"),
        &bt_msg(8, &cat(&[&0u32.to_be_bytes(), &0u32.to_be_bytes(), &16384u32.to_be_bytes()])),
        &[0, 0, 0, 0],
        &bt_msg(9, &[0x1a, 0xe1]),
        &bt_msg(3, &[]),
    ]);
    // flags: prelude | ext | which pieces; cuts; actions (unchoke, store, refuse, keep-alive)
    put("peer_wire", "plaintext", &cat(&[&[0x01 | 0x04 | 0xf8, 0, 0, 1, 0x14, 0, 0], &msgs]));
    put("peer_wire", "plaintext-cut", &cat(&[&[0x01 | 0x04 | 0x58, 9, 31, 1, 0x24, 0x33, 0x0a], &msgs]));
    put("peer_wire", "mse-plaintext", &cat(&[&[0x02 | 0x04 | 0xf8, 17, 0, 1, 0, 0, 0], &msgs]));
    put("peer_wire", "mse-rc4", &cat(&[&[0x03 | 0x04 | 0xf8, 5, 40, 1, 0x54, 0, 2], &msgs]));
    put(
        "peer_wire",
        "raw-handshake",
        &cat(&[&[0x04 | 0xf8, 0, 0, 1, 0, 0, 0], &bt_handshake(&InfoHash([7; 20]), true), &msgs]),
    );
    put(
        "peer_wire",
        "raw-unknown-infohash",
        &cat(&[&[0xf8, 0, 0, 0, 0, 0, 0], &bt_handshake(&InfoHash([8; 20]), false)]),
    );

    // ---------------------------------------------------------------- MSE
    let ia = bt_handshake(&InfoHash([7; 20]), true);
    let script = |flags: u8, pad_a: usize, pad_c: usize, tail: &[u8]| {
        cat(&[
            &[flags, 7, 0, 3, 1, 2, 3, 4],
            &u16_len(&vec![0xAA; pad_a]),
            &u16_len(&vec![0x00; pad_c]),
            &u16_len(&ia),
            tail,
        ])
    };
    put("mse", "plaintext", &script(0x01, 0, 3, b"\0\0\0\x01\x02"));
    put("mse", "rc4-only", &script(0x01 | (2 << 3), 300, 0, b"\0\0\0\x01\x02"));
    put("mse", "wrong-infohash", &script(0x01 | 0x02, 10, 0, b""));
    put("mse", "bad-vc", &script(0x01 | 0x04, 10, 0, b""));
    put("mse", "no-common-crypto", &script(0x01 | (3 << 3), 0, 0, b""));
    put("mse", "raw-junk", &cat(&[&[0, 50, 0, 0, 0, 0, 0, 0], &[0x8c; 96], &[0x55; 600]]));

    // ---------------------------------------------------------------- popseed.toml, agent.toml
    let key = fixed_key().public().to_text();
    let good = format!(
        r#"venue = "Hall B, FooConf 2026"
device_name = "hall-b"
trusted_keys = ["{key}"]

[wifi]
ssid = "FooConf Downloads"
passphrase = "correct horse battery"
security = "wpa2"
country = "DE"
channel = 6

[portal]
address = "10.42.0.1/24"
box_name = "downloads.fooconf"

[management]
listen = "0.0.0.0:8080"
staff_token = "0123456789abcdef0123"

[[origins]]
name = "fooconf-origin"
address = "203.0.113.10:4433"
fingerprint = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
server_name = "origin.fooconf"

[uplink]
interface = "eth0"
mode = "static"
address = "192.0.2.10/24"
gateway = "192.0.2.1"
dns = ["192.0.2.1", "2001:db8::1"]

[store]
budget = "400GiB"
"#
    );
    put("provision", "good-generic", &cat(&[&[0], good.as_bytes()]));
    let five = good.replace("channel = 6", "channel = 36\nband = \"5GHz\"").replace("wpa2\"", "wpa3\"");
    put("provision", "good-rpi5-5ghz", &cat(&[&[1], five.as_bytes()]));
    let open_net = "venue = \"x\"\ntrusted_keys = []\n[wifi]\nssid = \"x\"\nsecurity = \"open\"\ncountry = \"US\"\n[portal]\naddress = \"10.0.0.1/16\"\n[management]\nstaff_token = \"aaaaaaaaaaaaaaaaaaaa\"\n";
    put("provision", "open-network", &cat(&[&[0], open_net.as_bytes()]));
    let example =
        std::fs::read(here().join("../appliance/provision/popseed.example.toml")).expect("the example popseed.toml");
    put("provision", "example", &cat(&[&[0], &example]));
    put(
        "provision",
        "misspelt-keys",
        &cat(&[&[0], b"venu = \"x\"\n[wifi]\nsid = 3\nchannel = 300\n[portal]\naddress = \"10.0.0.1\"\n"]),
    );

    let device_key = popseed_release::PublicKey(ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key());
    let profile = popseed_provision::HwProfile::builtin_generic();
    let input = || popseed_provision::firstboot::RenderInput {
        profile: &profile,
        picked_by: "built-in",
        device_key: &device_key,
        state: Path::new("/var/lib/popseed"),
        out: Path::new("/run/popseed"),
        provision_path: Path::new("/boot/popseed.toml"),
        hw_dir: Path::new("/usr/share/popseed/hw"),
        warnings: vec![],
    };
    for (name, text) in [("rendered-normal", good.as_str()), ("rendered-setup", "garbage = ")] {
        let r = popseed_provision::firstboot::render_all(Ok(text), input()).expect("renders");
        let agent = r.files.iter().find(|(n, _)| *n == "agent.toml").expect("an agent.toml").1.clone();
        put("agent_config", name, agent.as_bytes());
    }
    put(
        "agent_config",
        "full",
        br#"trusted_keys = []
status_file = "status.json"
[store]
dir = "store"
budget = "2GiB"
min_free = 1048576
[fetch]
streams_per_origin = 4
request_bytes = "1MiB"
rate_limit = "10MiB"
connect_timeout = "3s"
backoff_max = "1m"
web_seed_after = "500ms"
[[origins]]
address = "127.0.0.1:4433"
fingerprint = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[[origins]]
name = "ca"
address = "[::1]:4433"
ca = "ca.pem"
server_name = "origin"
[[releases]]
dir = "rel"
pin = true
[swarm]
listen = "127.0.0.1:6881"
lsd = false
[portal]
portal_ip = "10.0.0.1"
box_name = "popseed.lan"
[control]
listen = "127.0.0.1:8080"
staff_token_file = "token"
device_key = "device.key"
"#,
    );

    // ---------------------------------------------------------------- small parsers
    put("core_parse", "infohash", &cat(&[&[0], ih.to_string().to_uppercase().as_bytes()]));
    put("core_parse", "size", &cat(&[&[1], b"400GiB"]));
    put("core_parse", "size-fraction", &cat(&[&[1], b" 1.5 MiB "]));
    put("core_parse", "size-human", &cat(&[&[1], &1.5e12f64.to_be_bytes()]));
    put(
        "core_parse",
        "fingerprint",
        &cat(&[
            &[2],
            b"sha256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
        ]),
    );
    put("core_parse", "publisher-key", &cat(&[&[3], key.as_bytes()]));

    let _ = std::fs::remove_dir_all(&tmp);
    println!("corpus and fixtures written (release {ih})");
}
