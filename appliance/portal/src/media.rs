//! What a stored file is served as: its media type by extension and whether the browser may show
//! it in place (`inline`: video, audio, HLS playlists and segments, images, PDF, plain text) or
//! must save it (`attachment`: everything else, and every file asked for with `?download=1`).
//! Types a browser would run on the portal's origin (HTML, SVG, XML, JavaScript) are never
//! inline; `nosniff` keeps browsers from guessing otherwise.

/// Media types the portal serves inline, by lower-case extension.
const INLINE: &[(&str, &str)] = &[
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("mov", "video/quicktime"),
    ("webm", "video/webm"),
    ("ogv", "video/ogg"),
    ("mkv", "video/x-matroska"),
    ("ts", "video/mp2t"),
    ("m3u8", "application/vnd.apple.mpegurl"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("flac", "audio/flac"),
    ("wav", "audio/wav"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/plain; charset=utf-8"),
    ("vtt", "text/vtt; charset=utf-8"),
    ("srt", "text/plain; charset=utf-8"),
];

/// What kind of player the catalog page puts next to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Player {
    Video,
    Audio,
}

fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// The inline media type of a file name, if it has one.
pub fn inline_type(name: &str) -> Option<&'static str> {
    let ext = extension(name)?;
    INLINE.iter().find(|(e, _)| *e == ext).map(|(_, t)| *t)
}

/// The `<video>`/`<audio>` element the catalog shows for a file, if any (formats browsers play:
/// MP4, WebM, Ogg, MP3, AAC, FLAC, WAV; HLS plays natively on Safari).
pub fn player(name: &str) -> Option<Player> {
    match inline_type(name)? {
        t if t.starts_with("video/") && t != "video/x-matroska" && t != "video/mp2t" => Some(Player::Video),
        "application/vnd.apple.mpegurl" => Some(Player::Video),
        t if t.starts_with("audio/") => Some(Player::Audio),
        _ => None,
    }
}

/// `Content-Type` and `Content-Disposition` for a file: inline with its media type when it has
/// one and `download` was not asked for, else `application/octet-stream` as an attachment.
pub fn content_headers(name: &str, download: bool) -> (&'static str, String) {
    match inline_type(name).filter(|_| !download) {
        Some(t) => (t, disposition("inline", name)),
        None => ("application/octet-stream", disposition("attachment", name)),
    }
}

/// `inline` or `attachment` with an ASCII fallback name and the RFC 8187 UTF-8 one.
pub fn disposition(kind: &str, name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let enc = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{enc}")
}

/// Whether a query string asks for the file as a download (`download=1`, `download=true` or
/// just `download`).
pub fn wants_download(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv.split_once('=').map_or((kv, "1"), |(k, v)| (k, v)), ("download", "1" | "true")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_plays_inline_everything_else_is_saved() {
        assert_eq!(content_headers("Keynote.MP4", false).0, "video/mp4");
        assert!(content_headers("Keynote.MP4", false).1.starts_with("inline; filename=\"Keynote.MP4\""));
        assert_eq!(content_headers("live.m3u8", false).0, "application/vnd.apple.mpegurl");
        assert_eq!(content_headers("seg001.ts", false).0, "video/mp2t");
        assert_eq!(content_headers("set.mp3", false).0, "audio/mpeg");
        assert_eq!(content_headers("slides.pdf", false).0, "application/pdf");
        for saved in ["setup.exe", "page.html", "logo.svg", "feed.xml", "app.js", "noext", ".mp4"] {
            let (t, d) = content_headers(saved, false);
            assert_eq!(t, "application/octet-stream", "{saved}");
            assert!(d.starts_with("attachment;"), "{saved}");
        }
        let (t, d) = content_headers("Keynote.mp4", true);
        assert_eq!((t, d.starts_with("attachment;")), ("application/octet-stream", true), "?download=1 saves");
    }

    #[test]
    fn players_for_what_browsers_play() {
        assert_eq!(player("a.webm"), Some(Player::Video));
        assert_eq!(player("a.m3u8"), Some(Player::Video));
        assert_eq!(player("a.flac"), Some(Player::Audio));
        assert_eq!(player("a.mkv"), None);
        assert_eq!(player("a.pdf"), None);
    }

    #[test]
    fn download_query() {
        assert!(wants_download(Some("download=1")));
        assert!(wants_download(Some("x=2&download")));
        assert!(wants_download(Some("download=true")));
        assert!(!wants_download(Some("download=0")));
        assert!(!wants_download(Some("downloads=1")));
        assert!(!wants_download(None));
    }

    #[test]
    fn disposition_is_safe() {
        assert_eq!(disposition("attachment", "a.iso"), "attachment; filename=\"a.iso\"; filename*=UTF-8''a%2Eiso");
        let d = disposition("inline", "x\"y\r\nz é.bin");
        assert!(!d.contains('\r') && !d.contains('\n'));
        assert!(d.starts_with("inline; filename=\"x_y__z _.bin\""));
    }
}
