//! The catalog: what the box holds, gathered from the store ([`Catalog::gather`]) and rendered
//! as one small server-side HTML page (maud, compile-checked) with inline CSS, an inline SVG QR
//! code and no script or external resource, so it works offline, in captive mini-browsers and
//! with JavaScript off.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use popseed_core::{ByteSize, InfoHash};
use popseed_release::metainfo::path_segment;
use popseed_store::Store;

use crate::config::Urls;

/// One file of a release as shown on the page.
#[derive(Debug, Clone)]
pub struct CatalogFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Path-absolute download URL (also the BEP 19 web seed URL of this file).
    pub href: String,
    /// The player shown for it (media the browser plays in place).
    pub player: Option<crate::media::Player>,
}

/// One release as shown on the page.
#[derive(Debug, Clone)]
pub struct CatalogRelease {
    pub infohash: String,
    pub name: String,
    pub version: String,
    pub total_size: u64,
    pub bytes_present: u64,
    pub fingerprint: String,
    pub license: Option<String>,
    pub files: Vec<CatalogFile>,
    pub torrent_href: String,
    pub magnet: String,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub releases: Vec<CatalogRelease>,
}

/// `/files/<infohash>/<torrent name>[/<path>]` for file `i`: the web seed base plus what a BEP 19
/// client appends.
pub fn file_href(infohash: &InfoHash, torrent_name: &str, single_file: bool, components: &[String]) -> String {
    let mut s = format!("/files/{infohash}/{}", path_segment(torrent_name));
    if !single_file {
        for c in components {
            s.push('/');
            s.push_str(&path_segment(c));
        }
    }
    s
}

impl Catalog {
    /// Reads every release the store holds. Releases that vanish meanwhile are skipped.
    pub fn gather(store: &Store, urls: &Urls) -> Catalog {
        let mut releases = Vec::new();
        for info in store.releases() {
            let Ok(r) = store.release(&info.infohash) else { continue };
            let ih = info.infohash;
            let m = &r.manifest;
            let files = r
                .layout()
                .files
                .iter()
                .map(|f| {
                    let path = f.path();
                    let sha256 =
                        m.files.iter().find(|mf| mf.path == path).map(|mf| mf.sha256.clone()).unwrap_or_default();
                    CatalogFile {
                        href: file_href(&ih, &r.metainfo.name, r.metainfo.single_file, &f.components),
                        player: crate::media::player(&path),
                        path,
                        size: f.length,
                        sha256,
                    }
                })
                .collect();
            let magnet = popseed_release::metainfo::magnet(
                &ih,
                &r.metainfo.name,
                std::slice::from_ref(&urls.tracker),
                &[urls.web_seed(&ih)],
            );
            releases.push(CatalogRelease {
                infohash: ih.to_string(),
                name: m.name.clone(),
                version: m.version.clone(),
                total_size: info.total_size,
                bytes_present: info.bytes_present,
                fingerprint: r.publisher.fingerprint(),
                license: m.license.clone(),
                files,
                torrent_href: format!("/torrent/{ih}.torrent"),
                magnet,
            });
        }
        Catalog { releases }
    }
}

/// The QR code of `url` as an inline `<svg>` element (no XML declaration). `None` if the URL is
/// too long for a QR code.
pub fn qr_svg(url: &str) -> Option<String> {
    let code = qrcode::QrCode::new(url.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(168, 168)
        .dark_color(qrcode::render::svg::Color("#000"))
        .light_color(qrcode::render::svg::Color("#fff"))
        .build();
    let start = svg.find("<svg")?;
    Some(svg[start..].replacen("<svg", "<svg role=\"img\" aria-label=\"QR code of the portal address\"", 1))
}

const CSS: &str = "\
*{box-sizing:border-box}body{margin:0;font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
color:#1b1d21;background:#f3f4f6}header{background:#14532d;color:#fff;padding:14px 16px}\
header h1{margin:0;font-size:1.35rem}header p{margin:4px 0 0;opacity:.9}main{padding:12px;max-width:760px;margin:auto}\
.card{background:#fff;border-radius:10px;padding:14px;margin:0 0 12px;box-shadow:0 1px 3px rgba(0,0,0,.12)}\
.card h2{margin:0 0 4px;font-size:1.15rem}.meta{color:#4b5563;font-size:.9rem;margin:0 0 8px}\
.ok{color:#166534;font-weight:600}.file{border-top:1px solid #e5e7eb;padding:10px 0 2px}\
.fname{font-weight:600;word-break:break-all}code{font:12px/1.35 ui-monospace,Menlo,monospace;word-break:break-all;\
color:#374151}.btn{display:inline-block;background:#15803d;color:#fff;text-decoration:none;border:0;border-radius:8px;\
padding:9px 14px;font-size:1rem;margin:6px 6px 0 0}.btn.alt{background:#e5e7eb;color:#111827}\
video{display:block;width:100%;max-height:60vh;background:#000;border-radius:8px;margin:6px 0}\
audio{display:block;width:100%;margin:6px 0}\
.hint{background:#fef9c3;border:1px solid #facc15}.qr{display:flex;gap:14px;align-items:center;flex-wrap:wrap}\
.qr svg{width:168px;height:168px;flex:none}.url{font-size:1.2rem;font-weight:700;word-break:break-all}\
progress{width:100%;height:8px}small{color:#6b7280}";

/// Renders the portal page.
pub fn render(venue: &str, catalog: &Catalog, urls: &Urls, qr: Option<&str>, acknowledged: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (venue) " downloads" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { (venue) }
                    p { "Downloads available offline on this Wi-Fi" }
                }
                main {
                    @if acknowledged {
                        div.card #connected {
                            p.ok { "You are connected. Your device can stay on this Wi-Fi." }
                        }
                    } @else {
                        form.card method="post" action="/ack" {
                            p { "This Wi-Fi has no internet: it serves the files below. Press Continue to stay connected." }
                            button.btn type="submit" #continue { "Continue" }
                        }
                    }
                    div.card.hint {
                        p { strong { "Open this page in your browser" } " to download: the sign-in window cannot save files. Go to" }
                        div.qr {
                            @if let Some(svg) = qr { (PreEscaped(svg)) }
                            a.url href=(urls.portal) { (urls.portal) }
                        }
                    }
                    @if catalog.releases.is_empty() {
                        div.card { p { "Nothing is available yet. Check back soon." } }
                    }
                    @for r in &catalog.releases {
                        section.card.release id=(format!("r-{}", r.infohash)) {
                            h2 { (r.name) " " small { (r.version) } }
                            p.meta {
                                (ByteSize(r.total_size))
                                @if r.bytes_present >= r.total_size { " · all on this box" }
                                @else { " · " (ByteSize(r.bytes_present)) " on this box (the rest is fetched when you ask)" }
                                br;
                                span.ok { "✔ signature verified" } " · publisher " code.fp { (r.fingerprint) }
                                @if let Some(l) = &r.license { br; "License: " (l) }
                            }
                            @if r.total_size > 0 && r.bytes_present < r.total_size {
                                progress max=(r.total_size) value=(r.bytes_present) {}
                            }
                            @for f in &r.files {
                                div.file {
                                    div.fname { (f.path) " " small { (ByteSize(f.size)) } }
                                    div { small { "SHA-256 " } code.sha { (f.sha256) } }
                                    @match f.player {
                                        Some(crate::media::Player::Video) => {
                                            video controls preload="metadata" playsinline src=(f.href) {
                                                a href=(f.href) { "Play" }
                                            }
                                        }
                                        Some(crate::media::Player::Audio) => {
                                            audio controls preload="none" src=(f.href) { a href=(f.href) { "Play" } }
                                        }
                                        None => {}
                                    }
                                    a.btn.dl href=(format!("{}?download=1", f.href)) download=(f.path.rsplit('/').next().unwrap_or(&f.path)) { "Download" }
                                }
                            }
                            div {
                                a.btn.alt.torrent href=(r.torrent_href) { ".torrent" }
                                a.btn.alt.magnet href=(r.magnet) { "Magnet link" }
                            }
                        }
                    }
                    p { small { "Served by popseed. Nothing here needs the internet." } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Urls {
        let cfg = crate::PortalConfig::default();
        Urls::new(&cfg, 80)
    }

    fn sample(n_files: usize) -> Catalog {
        let files = (0..n_files)
            .map(|i| CatalogFile {
                path: format!("dir/file-{i}.bin"),
                size: 1 << 20,
                sha256: "ab".repeat(32),
                href: format!("/files/{}/rel/dir/file-{i}.bin", "00".repeat(20)),
                player: None,
            })
            .collect();
        Catalog {
            releases: vec![CatalogRelease {
                infohash: "00".repeat(20),
                name: "Talk <videos>".into(),
                version: "1.0".into(),
                total_size: 4 << 20,
                bytes_present: 1 << 20,
                fingerprint: "SHA256:abc".into(),
                license: Some("CC-BY-4.0".into()),
                files,
                torrent_href: "/torrent/x.torrent".into(),
                magnet: "magnet:?xt=urn:btih:00&tr=x".into(),
            }],
        }
    }

    #[test]
    fn page_has_everything_escaped_and_no_external_resources() {
        let u = urls();
        let qr = qr_svg(&u.portal);
        assert!(qr.as_deref().is_some_and(|s| s.starts_with("<svg")));
        let page = render("Venue & Co", &sample(3), &u, qr.as_deref(), false).into_string();
        assert!(page.contains("Venue &amp; Co"));
        assert!(page.contains("Talk &lt;videos&gt;"), "titles are escaped");
        assert!(page.contains("signature verified") && page.contains("SHA256:abc") && page.contains("CC-BY-4.0"));
        assert!(page.contains(&"ab".repeat(32)));
        assert!(page.contains("action=\"/ack\""));
        assert!(page.contains("magnet:?xt=urn:btih:00&amp;tr=x"));
        assert!(!page.contains("<script"), "works with JavaScript off");
        assert!(!page.contains("src=\"http") && !page.contains("href=\"https://"), "no external resources");
        assert!(page.len() < 50 * 1024, "first page under 50 KB: {}", page.len());
    }

    #[test]
    fn media_plays_in_place_and_downloads_stay_one_click_away() {
        let mut c = sample(2);
        c.releases[0].files[0].path = "keynote/talk.mp4".into();
        c.releases[0].files[0].href = "/files/00/rel/keynote/talk.mp4".into();
        c.releases[0].files[0].player = crate::media::player("talk.mp4");
        c.releases[0].files[1].player = crate::media::player("set.mp3");
        let page = render("V", &c, &urls(), None, false).into_string();
        assert!(
            page.contains("<video controls preload=\"metadata\" playsinline src=\"/files/00/rel/keynote/talk.mp4\">"),
            "{page}"
        );
        assert!(page.contains("<audio controls preload=\"none\" src="), "{page}");
        assert!(page.contains("href=\"/files/00/rel/keynote/talk.mp4?download=1\""), "{page}");
        assert!(!page.contains("<script"), "no script: the players are the browser's own");
    }

    #[test]
    fn acknowledged_page_has_no_continue_button() {
        let u = urls();
        let page = render("V", &sample(1), &u, None, true).into_string();
        assert!(page.contains("You are connected"));
        assert!(!page.contains("action=\"/ack\""));
    }

    #[test]
    fn hrefs_follow_bep19_layout_and_escape_segments() {
        let ih = InfoHash([0x11; 20]);
        assert_eq!(file_href(&ih, "one.iso", true, &["one.iso".into()]), format!("/files/{ih}/one.iso"));
        assert_eq!(
            file_href(&ih, "My Rel", false, &["a b".into(), "c#?.txt".into()]),
            format!("/files/{ih}/My%20Rel/a%20b/c%23%3F.txt")
        );
    }
}
