//! BitTorrent v1 metainfo (.torrent) files: building them from a layout with librqbit's bencode
//! types, parsing them back into a [`Layout`], and magnet links.

use crate::bencode;
use bytes::Bytes;
use librqbit_bencode::raw_value::RawValue;
use librqbit_bencode::{BencodeValue, ByteBufOwned};
use librqbit_core::torrent_metainfo::{torrent_from_bytes, TorrentMetaV1File, TorrentMetaV1Info};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use popseed_core::InfoHash;
use serde::Serialize;

use crate::error::{ReleaseError, Result};
use crate::layout::{check_component, Layout};

/// What goes into a .torrent besides the layout.
#[derive(Debug, Clone, Default)]
pub struct TorrentOptions {
    /// Top-level name: the file name (single-file) or the folder clients create (multi-file).
    pub name: String,
    /// Single-file torrent (the layout must then hold exactly one file whose path is `[name]`).
    pub single_file: bool,
    /// Tracker tiers, first tier first (BEP 12).
    pub trackers: Vec<Vec<String>>,
    /// BEP 19 web seeds (`url-list`).
    pub web_seeds: Vec<String>,
    pub comment: Option<String>,
    pub creation_date: Option<u64>,
}

/// A parsed .torrent: its infohash, the raw info dictionary and the layout it describes.
#[derive(Debug, Clone)]
pub struct Metainfo {
    pub infohash: InfoHash,
    pub info_bytes: Vec<u8>,
    pub name: String,
    pub single_file: bool,
    pub layout: Layout,
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
}

#[derive(Serialize)]
struct TorrentFileOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<&'a str>,
    #[serde(rename = "announce-list", skip_serializing_if = "Vec::is_empty")]
    announce_list: &'a Vec<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(rename = "created by")]
    created_by: &'a str,
    #[serde(rename = "creation date", skip_serializing_if = "Option::is_none")]
    creation_date: Option<u64>,
    info: RawValue<&'a [u8]>,
    #[serde(rename = "url-list", skip_serializing_if = "Vec::is_empty")]
    url_list: &'a Vec<String>,
}

fn buf(s: &str) -> ByteBufOwned {
    ByteBufOwned(Bytes::copy_from_slice(s.as_bytes()))
}

/// Bencodes the info dictionary of `layout` and returns (info bytes, infohash).
pub fn build_info(layout: &Layout, name: &str, single_file: bool) -> Result<(Vec<u8>, InfoHash)> {
    check_component(name)?;
    let mut pieces = Vec::with_capacity(layout.piece_hashes.len() * 20);
    for h in &layout.piece_hashes {
        pieces.extend_from_slice(h);
    }
    let mut info = TorrentMetaV1Info::<ByteBufOwned> {
        name: Some(buf(name)),
        pieces: ByteBufOwned(Bytes::from(pieces)),
        piece_length: layout.piece_length,
        ..Default::default()
    };
    if single_file {
        if layout.files.len() != 1 || layout.files[0].components != [name.to_owned()] {
            return Err(ReleaseError::BadTorrent(
                "single-file torrent needs exactly one file named like the torrent".into(),
            ));
        }
        info.length = Some(layout.total_length);
    } else {
        info.files = Some(
            layout
                .files
                .iter()
                .map(|f| TorrentMetaV1File {
                    length: f.length,
                    path: f.components.iter().map(|c| buf(c)).collect(),
                    attr: None,
                    sha1: None,
                    symlink_path: None,
                })
                .collect(),
        );
    }
    let mut out = Vec::new();
    librqbit_bencode::bencode_serialize_to_writer(&info, &mut out).map_err(ReleaseError::TorrentEncode)?;
    let hash = InfoHash(crate::hashing::piece_hash(&out));
    Ok((out, hash))
}

/// Builds the whole .torrent file. Returns (torrent bytes, infohash).
pub fn build_torrent(layout: &Layout, opts: &TorrentOptions) -> Result<(Vec<u8>, InfoHash)> {
    for ws in &opts.web_seeds {
        if !(ws.starts_with("http://") || ws.starts_with("https://")) {
            return Err(ReleaseError::BadWebSeed(ws.clone()));
        }
    }
    let (info, hash) = build_info(layout, &opts.name, opts.single_file)?;
    let out = TorrentFileOut {
        announce: opts.trackers.iter().flatten().next().map(|s| s.as_str()),
        announce_list: &opts.trackers,
        comment: opts.comment.as_deref(),
        created_by: concat!("popseed/", env!("CARGO_PKG_VERSION")),
        creation_date: opts.creation_date,
        info: RawValue(&info),
        url_list: &opts.web_seeds,
    };
    let mut bytes = Vec::new();
    librqbit_bencode::bencode_serialize_to_writer(&out, &mut bytes).map_err(ReleaseError::TorrentEncode)?;
    Ok((bytes, hash))
}

/// Re-issues a .torrent with other trackers and web seeds (the box hands out torrents that list
/// its own tracker first and itself as a web seed). The info dictionary is copied byte-for-byte,
/// so the infohash is unchanged.
pub fn with_trackers(torrent: &[u8], trackers: &[Vec<String>], web_seeds: &[String]) -> Result<Vec<u8>> {
    let m = parse_torrent(torrent)?;
    let out = TorrentFileOut {
        announce: trackers.iter().flatten().next().map(|s| s.as_str()),
        announce_list: &trackers.to_vec(),
        comment: None,
        created_by: concat!("popseed/", env!("CARGO_PKG_VERSION")),
        creation_date: None,
        info: RawValue(&m.info_bytes),
        url_list: &web_seeds.to_vec(),
    };
    let mut bytes = Vec::new();
    librqbit_bencode::bencode_serialize_to_writer(&out, &mut bytes).map_err(ReleaseError::TorrentEncode)?;
    Ok(bytes)
}

fn utf8(b: &[u8], what: &str) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| ReleaseError::BadTorrent(format!("{what} is not UTF-8")))
}

/// Parses a .torrent file. Refuses unsafe paths, non-UTF-8 names and inconsistent piece counts.
pub fn parse_torrent(bytes: &[u8]) -> Result<Metainfo> {
    // librqbit-bencode does not check numbers for overflow: the bytes are checked first, and the
    // one field it reads narrower than 64 bits (`piece length`, a u32) is range-checked here.
    bencode::check_whole(bytes).map_err(ReleaseError::TorrentBencode)?;
    let (top, _) = bencode::decode_prefix(bytes).map_err(ReleaseError::TorrentBencode)?;
    let piece_length = bencode::dict_get(&top, b"info").and_then(|i| bencode::dict_get(i, b"piece length"));
    if let Some(n) = piece_length.and_then(bencode::as_int) {
        if !(1..=i64::from(u32::MAX)).contains(&n) {
            return Err(ReleaseError::BadTorrent(format!("piece length {n} is out of range")));
        }
    }
    let t = torrent_from_bytes(bytes).map_err(ReleaseError::TorrentDecode)?;
    let info = &t.info.data;
    let name = utf8(info.name.as_ref().map(|n| n.0).unwrap_or_default(), "name")?;
    check_component(&name).map_err(|e| ReleaseError::BadTorrent(e.to_string()))?;
    if info.pieces.0.len() % 20 != 0 {
        return Err(ReleaseError::BadTorrent("pieces length is not a multiple of 20".into()));
    }
    let hashes: Vec<[u8; 20]> =
        info.pieces.0.chunks_exact(20).map(|c| c.try_into().expect("chunks_exact(20) yields 20 bytes")).collect();
    let (single_file, files) = match (&info.length, &info.files) {
        (Some(len), None) => (true, vec![(vec![name.clone()], *len)]),
        (None, Some(files)) => {
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                let comps = f.path.iter().map(|c| utf8(c.0, "file path")).collect::<Result<Vec<_>>>()?;
                out.push((comps, f.length));
            }
            (false, out)
        }
        _ => return Err(ReleaseError::BadTorrent("needs exactly one of 'length' and 'files'".into())),
    };
    let layout = Layout::new(info.piece_length, files, hashes).map_err(|e| match e {
        ReleaseError::UnsafePath(p) => ReleaseError::BadTorrent(format!("unsafe file path {p:?}")),
        other => other,
    })?;
    let trackers = t
        .announce_list
        .iter()
        .map(|tier| tier.iter().map(|u| utf8(u.0, "tracker URL")).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    let trackers = if trackers.is_empty() {
        t.announce.iter().map(|a| utf8(a.0, "announce").map(|s| vec![s])).collect::<Result<Vec<_>>>()?
    } else {
        trackers
    };
    Ok(Metainfo {
        infohash: InfoHash(t.info_hash.0),
        info_bytes: t.info.raw_bytes.0.to_vec(),
        name,
        single_file,
        layout,
        trackers,
        web_seeds: url_list(&top),
    })
}

/// BEP 19 `url-list` of the top dictionary: a single string or a list of strings.
fn url_list(top: &bencode::Value<'_>) -> Vec<String> {
    let text = |v: &bencode::Value<'_>| match v {
        BencodeValue::Bytes(b) => std::str::from_utf8(b.0).ok().map(str::to_owned),
        _ => None,
    };
    match bencode::dict_get(top, b"url-list") {
        Some(BencodeValue::List(l)) => l.iter().filter_map(text).collect(),
        Some(v) => text(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Characters escaped in one URL path segment (the BEP 19 web seed layout: `<base>/<name>/<path>`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b'\'')
    .add(b';')
    .add(b'&')
    .add(b'+')
    .add(b'=');

/// One file name or directory name as a URL path segment, percent-encoded: how web seed URLs
/// (fetch) and the portal's `/files/` URLs name a release's files.
pub fn path_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// `magnet:?xt=urn:btih:<hex>&dn=<name>&tr=<tracker>...&ws=<web seed>...`
pub fn magnet(infohash: &InfoHash, name: &str, trackers: &[String], web_seeds: &[String]) -> String {
    let mut m = format!("magnet:?xt=urn:btih:{infohash}&dn={}", utf8_percent_encode(name, NON_ALPHANUMERIC));
    for t in trackers {
        m.push_str("&tr=");
        m.push_str(&utf8_percent_encode(t, NON_ALPHANUMERIC).to_string());
    }
    for w in web_seeds {
        m.push_str("&ws=");
        m.push_str(&utf8_percent_encode(w, NON_ALPHANUMERIC).to_string());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(files: Vec<(Vec<String>, u64)>) -> Layout {
        let total: u64 = files.iter().map(|f| f.1).sum();
        Layout::new(16384, files, vec![[7; 20]; total.div_ceil(16384) as usize]).unwrap()
    }

    #[test]
    fn multi_file_roundtrip_with_web_seeds() {
        let l = layout(vec![(vec!["a".into()], 20000), (vec!["d".into(), "b".into()], 5)]);
        let opts = TorrentOptions {
            name: "rel".into(),
            trackers: vec![vec!["http://t/announce".into()]],
            web_seeds: vec!["http://ws/".into()],
            ..Default::default()
        };
        let (bytes, hash) = build_torrent(&l, &opts).unwrap();
        let m = parse_torrent(&bytes).unwrap();
        assert_eq!(m.infohash, hash);
        assert_eq!(m.layout, l);
        assert_eq!(m.name, "rel");
        assert!(!m.single_file);
        assert_eq!(m.web_seeds, vec!["http://ws/".to_string()]);
        assert_eq!(m.trackers, opts.trackers);
        let mag = magnet(&hash, "rel x", &["http://t/a".into()], &[]);
        assert!(mag.starts_with(&format!("magnet:?xt=urn:btih:{}&dn=rel%20x&tr=http%3A%2F%2Ft%2Fa", hex::encode(hash))));
    }

    #[test]
    fn reissue_with_box_tracker_keeps_infohash() {
        let l = layout(vec![(vec!["a".into()], 20000)]);
        let (bytes, hash) = build_torrent(&l, &TorrentOptions { name: "r".into(), ..Default::default() }).unwrap();
        let t = vec![vec!["http://box/announce".to_string()], vec!["http://other/a".to_string()]];
        let re = with_trackers(&bytes, &t, &["http://box/ws/".into()]).unwrap();
        let m = parse_torrent(&re).unwrap();
        assert_eq!(m.infohash, hash);
        assert_eq!(m.trackers, t);
        assert_eq!(m.web_seeds, vec!["http://box/ws/".to_string()]);
    }

    #[test]
    fn single_file_roundtrip() {
        let l = layout(vec![(vec!["f.iso".into()], 40000)]);
        let opts = TorrentOptions { name: "f.iso".into(), single_file: true, ..Default::default() };
        let (bytes, _) = build_torrent(&l, &opts).unwrap();
        let m = parse_torrent(&bytes).unwrap();
        assert!(m.single_file);
        assert_eq!(m.layout, l);
    }

    #[test]
    fn hostile_torrents_are_errors() {
        assert!(parse_torrent(b"").is_err());
        assert!(parse_torrent(b"d4:infod4:name1:x6:pieces3:abce").is_err());
        // a path with '..'
        let evil = b"d4:infod5:filesld6:lengthi1e4:pathl2:..1:xeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        let err = parse_torrent(evil).unwrap_err();
        assert!(err.to_string().contains("unsafe"), "{err}");
    }

    /// librqbit-bencode reads numbers without an overflow check (a panic with overflow checks
    /// on, a wrapped value in release builds): such torrents are refused before it decodes them.
    #[test]
    fn numbers_librqbit_would_overflow_are_refused() {
        // 2^32 + 16 KiB: librqbit's u32 would read 16 KiB where every other client reads 4 GiB.
        let wraps = b"d4:infod6:lengthi5e4:name1:x12:piece lengthi4294983680e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        let err = parse_torrent(wraps).unwrap_err();
        assert!(err.to_string().contains("piece length 4294983680 is out of range"), "{err}");
        let zero = b"d4:infod6:lengthi5e4:name1:x12:piece lengthi0e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert!(matches!(parse_torrent(zero), Err(ReleaseError::BadTorrent(_))));
        for evil in [
            &b"d13:creation datei99999999999999999999e4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee"[..],
            b"d4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces80000000000000000000000:aee",
            b"d8:announce10:http://t/a4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaeeX",
        ] {
            let err = parse_torrent(evil).unwrap_err();
            assert!(matches!(err, ReleaseError::TorrentBencode(_)), "{err:?}");
        }
    }
}
