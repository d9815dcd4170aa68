//! BEP 19 web seed fallback: a piece fetched with plain HTTP Range requests against the release's
//! files on any static file server (`url-list` entries of the .torrent), over `http://` or
//! `https://` (rustls with the aws-lc provider, as QUIC uses; the Mozilla roots built in, so it
//! works without the system's CA store, plus an optional publisher CA).

use std::path::Path;
use std::time::Duration;

use popseed_core::PieceIndex;
use popseed_release::VerifiedRelease;

use crate::error::FetchError;

/// Time to open a connection to a web seed, and the most a piece's requests may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client for web seeds: TLS 1.2/1.3 through rustls and aws-lc, trusting the built-in
/// roots and, when given, the CA certificates in `extra_ca` (PEM).
pub fn client(extra_ca: Option<&Path>) -> Result<reqwest::Client, FetchError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|source| FetchError::WebSeedCa { path: path.to_path_buf(), source })?;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|source| FetchError::WebSeedCa { path: path.to_path_buf(), source })?;
            roots.add(cert).map_err(FetchError::Tls)?;
        }
    }
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(FetchError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(FetchError::WebSeedClient)
}

/// URL of file `i` under web seed `base` (BEP 19: multi-file torrents add `<name>/<path>`;
/// a single-file torrent uses `base` itself unless it ends with `/`).
pub fn file_url(base: &str, release: &VerifiedRelease, i: usize) -> String {
    let enc = popseed_release::metainfo::path_segment;
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
pub async fn fetch_piece(
    client: &reqwest::Client,
    base: &str,
    release: &VerifiedRelease,
    index: u32,
) -> Result<Vec<u8>, FetchError> {
    let layout = release.layout();
    let size = layout.piece_size(index).ok_or(FetchError::NoSuchPiece(PieceIndex(index)))?;
    let mut out = Vec::with_capacity(size as usize);
    for seg in layout.piece_segments(index) {
        let url = file_url(base, release, seg.file);
        let last = seg.file_offset + seg.len - 1;
        let mut resp = client
            .get(&url)
            .header(reqwest::header::RANGE, format!("bytes={}-{}", seg.file_offset, last))
            .send()
            .await
            .map_err(|source| FetchError::WebSeedRequest { url: url.clone(), source })?;
        let status = resp.status().as_u16();
        if status != 206 && status != 200 {
            return Err(FetchError::WebSeedStatus { url, status });
        }
        // 206: exactly the range. 200 (a server that ignores Range, like python's http.server):
        // skip to the range and stop reading once it is complete.
        let (skip, want) = if status == 206 { (0, seg.len) } else { (seg.file_offset, seg.len) };
        let mut seen = 0u64;
        let mut got = Vec::with_capacity(want as usize);
        while (got.len() as u64) < want {
            let Some(chunk) =
                resp.chunk().await.map_err(|source| FetchError::WebSeedRequest { url: url.clone(), source })?
            else {
                break;
            };
            let start = skip.saturating_sub(seen).min(chunk.len() as u64) as usize;
            seen += chunk.len() as u64;
            let take = ((want - got.len() as u64) as usize).min(chunk.len() - start);
            got.extend_from_slice(&chunk[start..start + take]);
        }
        if got.len() as u64 != want || (status == 206 && resp.chunk().await.ok().flatten().is_some()) {
            return Err(FetchError::WebSeedLength { url, first: seg.file_offset, last });
        }
        let data = &got[..];
        out.extend_from_slice(data);
    }
    Ok(out)
}
