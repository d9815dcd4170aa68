//! The secrets of `popseed.toml` (the staff token, Wi-Fi passphrases) and how the setup page
//! keeps them off the open setup network: [`redact`] replaces every secret value with
//! `"unchanged"` before the file is shown, and [`restore`] puts the old values back where a
//! submitted file still says `"unchanged"`. Works line by line, so it also redacts a file that
//! does not parse as TOML (the usual reason the setup page is up).

/// Keys whose values are secret, in any table (matched as whole key names).
pub const SECRET_KEYS: &[&str] = &["staff_token", "passphrase", "password", "psk", "secret"];

/// What a redacted secret reads as on the page, and what a form leaves to keep the old value.
pub const UNCHANGED: &str = "unchanged";

/// One secret value in a file: where it is and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// `table.key` (or just `key` before any table header).
    path: String,
    /// Byte range of the value literal within its line.
    start: usize,
    end: usize,
    /// The literal as written (quotes included).
    literal: String,
}

/// The secret values of one line (`table` is the current `[table]` header).
fn scan_line(line: &str, table: &str) -> Vec<Found> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // a comment ends what can hold keys
        if bytes[i] == b'#' {
            break;
        }
        // skip strings so keys inside them do not count
        if bytes[i] == b'"' || bytes[i] == b'\'' {
            i = literal_end(bytes, i);
            continue;
        }
        let Some(key) = SECRET_KEYS.iter().find(|k| bytes[i..].starts_with(k.as_bytes())) else {
            i += 1;
            continue;
        };
        let before_ok = i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'{' | b',' | b'.');
        let mut j = i + key.len();
        let after_ok = j == bytes.len() || matches!(bytes[j], b' ' | b'\t' | b'=');
        if !(before_ok && after_ok) {
            i += 1;
            continue;
        }
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'=' {
            i += key.len();
            continue;
        }
        j += 1;
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t') {
            j += 1;
        }
        let start = j;
        let end = if j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'') {
            literal_end(bytes, j)
        } else {
            // a bare value (not valid TOML for a string, but still what the person typed)
            let mut e = j;
            while e < bytes.len() && !matches!(bytes[e], b' ' | b'\t' | b',' | b'}' | b'#') {
                e += 1;
            }
            e
        };
        if end > start {
            let path = if table.is_empty() { (*key).to_owned() } else { format!("{table}.{key}") };
            out.push(Found { path, start, end, literal: line[start..end].to_owned() });
        }
        i = end.max(i + 1);
    }
    out
}

/// Index just past the string literal starting at `i` (or the end of the line if unclosed).
fn literal_end(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if q == b'"' && b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q {
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// The table a `[header]` or `[[header]]` line opens, if it is one.
fn header(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t
        .strip_prefix("[[")
        .and_then(|r| r.split("]]").next())
        .or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()))?;
    Some(inner.trim().to_owned())
}

/// Every secret of `text`, with the line it is on.
fn scan(text: &str) -> Vec<(usize, Found)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        if let Some(h) = header(line) {
            table = h;
            continue;
        }
        out.extend(scan_line(line, &table).into_iter().map(|f| (n, f)));
    }
    out
}

fn replace_all(text: &str, mut with: impl FnMut(&Found) -> Option<String>) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let found = scan(text);
    // right to left within a line, so earlier ranges stay valid
    for (n, f) in found.iter().rev() {
        if let Some(new) = with(f) {
            lines[*n].replace_range(f.start..f.end, &new);
        }
    }
    lines.join("\n")
}

/// `text` with every secret value shown as `"unchanged"`.
pub fn redact(text: &str) -> String {
    replace_all(text, |_| Some(format!("\"{UNCHANGED}\"")))
}

/// `submitted` with each secret that still says `"unchanged"` set back to its value in `old`
/// (same `table.key`). Returns the keys that said `"unchanged"` but had no old value: the form
/// must not turn the word "unchanged" into a passphrase.
pub fn restore(submitted: &str, old: &str) -> (String, Vec<String>) {
    let olds = scan(old);
    let mut missing = Vec::new();
    let text = replace_all(submitted, |f| {
        let says_unchanged = f.literal.trim_matches(|c| c == '"' || c == '\'') == UNCHANGED;
        if !says_unchanged {
            return None;
        }
        match olds.iter().find(|(_, o)| o.path == f.path) {
            Some((_, o)) => Some(o.literal.clone()),
            None => {
                missing.push(f.path.clone());
                None
            }
        }
    });
    (text, missing)
}

/// The secret values of `text` as written (without quotes), to keep them out of messages.
pub fn values(text: &str) -> Vec<String> {
    scan(text)
        .into_iter()
        .map(|(_, f)| f.literal.trim_matches(|c| c == '"' || c == '\'').to_owned())
        .filter(|v| !v.is_empty() && v != UNCHANGED)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "venue = \"Hall B\"\n[wifi]\nssid = \"Fest\"\npassphrase = \"correct horse\"  # wpa2\n\
        [management]\nlisten = \"0.0.0.0:8080\"\nstaff_token='0123456789abcdef0123'\n";

    #[test]
    fn redacts_every_secret_and_nothing_else() {
        let r = redact(FILE);
        assert!(!r.contains("correct horse") && !r.contains("0123456789abcdef0123"), "{r}");
        assert!(r.contains("passphrase = \"unchanged\"  # wpa2"), "{r}");
        assert!(r.contains("staff_token=\"unchanged\""), "{r}");
        assert!(r.contains("ssid = \"Fest\"") && r.contains("listen = \"0.0.0.0:8080\""), "{r}");
    }

    #[test]
    fn redacts_what_does_not_parse_too() {
        let broken = "[wifi\npassphrase = \"oops no end\nstaff_token = bare-token-value,x\nx = { psk = \"k\\\"q\" }\n";
        let r = redact(broken);
        for secret in ["oops no end", "bare-token-value", "k\\\"q"] {
            assert!(!r.contains(secret), "{secret} leaked: {r}");
        }
        // keys inside strings or comments are not keys
        let r = redact("note = \"passphrase = x\"  # staff_token = y\n");
        assert_eq!(r, "note = \"passphrase = x\"  # staff_token = y\n");
        // a longer key that merely starts like a secret one is not secret
        assert_eq!(redact("passphrase_hint = \"blue\"\n"), "passphrase_hint = \"blue\"\n");
    }

    #[test]
    fn restore_keeps_old_values_and_takes_new_ones() {
        let shown = redact(FILE).replace("ssid = \"Fest\"", "ssid = \"Fest 2\"");
        let (back, missing) = restore(&shown, FILE);
        assert!(missing.is_empty());
        assert_eq!(back, FILE.replace("ssid = \"Fest\"", "ssid = \"Fest 2\""));
        let changed = shown.replace("passphrase = \"unchanged\"", "passphrase = \"new one here\"");
        let (back, _) = restore(&changed, FILE);
        assert!(back.contains("passphrase = \"new one here\"") && back.contains("staff_token='0123456789abcdef0123'"));
    }

    #[test]
    fn unchanged_without_an_old_value_is_reported() {
        let (back, missing) = restore("[wifi]\npassphrase = \"unchanged\"\n", "[wifi]\nssid = \"x\"\n");
        assert_eq!(missing, vec!["wifi.passphrase".to_owned()]);
        assert!(back.contains("unchanged"));
        assert_eq!(values(FILE), vec!["correct horse".to_owned(), "0123456789abcdef0123".to_owned()]);
    }
}
