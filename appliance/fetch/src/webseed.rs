//! BEP 19 web seed fallback: a piece fetched with plain HTTP Range requests against the release's
//! files on any static file server (`url-list` entries of the .torrent).

use popseed_release::VerifiedRelease;

use crate::error::FetchError;

/// URL of file `i` under web seed `base` (BEP 19: multi-file torrents add `<name>/<path>`;
/// a single-file torrent uses `base` itself unless it ends with `/`).
pub fn file_url(base: &str, release: &VerifiedRelease, i: usize) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const PATH: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'?').add(b'`').add(b'{').add(b'}').add(b'/');
    let enc = |s: &str| utf8_percent_encode(s, PATH).to_string();
    let name = &release.metainfo.name;
    if release.metainfo.single_file {
        if base.ends_with('/') {
            format!("{base}{}", enc(name))
        } else {
            base.to_owned()
        }
    } else {
        let mut url = base.to_owned();
        if !url.ends_with('/') {
            url.push('/');
        }
        url.push_str(&enc(name));
        for c in &release.layout().files[i].components {
            url.push('/');
            url.push_str(&enc(c));
        }
        url
    }
}

/// Fetches piece `index` from web seed `base`.
pub async fn fetch_piece(client: &reqwest::Client, base: &str, release: &VerifiedRelease, index: u32) -> Result<Vec<u8>, FetchError> {
    let layout = release.layout();
    let size = layout.piece_size(index).ok_or_else(|| FetchError::WebSeed(format!("no piece {index}")))?;
    let mut out = Vec::with_capacity(size as usize);
    for seg in layout.piece_segments(index) {
        let url = file_url(base, release, seg.file);
        let last = seg.file_offset + seg.len - 1;
        let resp = client
            .get(&url)
            .header(reqwest::header::RANGE, format!("bytes={}-{}", seg.file_offset, last))
            .send()
            .await
            .map_err(|e| FetchError::WebSeed(format!("{url}: {e}")))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| FetchError::WebSeed(format!("{url}: {e}")))?;
        let data = match status.as_u16() {
            206 if body.len() as u64 == seg.len => &body[..],
            // a server that ignores Range sends the whole file
            200 if body.len() as u64 > last => &body[seg.file_offset as usize..=last as usize],
            _ => return Err(FetchError::WebSeed(format!("{url}: HTTP {status} with {} bytes", body.len()))),
        };
        out.extend_from_slice(data);
    }
    Ok(out)
}
