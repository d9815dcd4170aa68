//! One validation problem of the provisioning file, with its position (1-based line and column).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    /// Key path, e.g. `wifi.passphrase` or `origins[1].fingerprint`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    /// A problem at byte `offset` of `text` (`None`: the start of the file).
    pub fn at(text: &str, offset: Option<usize>, key: impl Into<String>, message: impl Into<String>) -> Self {
        let (line, column) = line_col(text, offset.unwrap_or(0));
        Diagnostic { line, column, key: key.into(), message: message.into() }
    }

    /// `popseed.toml:LINE:COL: key: message` (the file name is given by the caller).
    pub fn render(&self, file: &str) -> String {
        if self.key.is_empty() {
            format!("{file}:{}:{}: {}", self.line, self.column, self.message)
        } else {
            format!("{file}:{}:{}: {}: {}", self.line, self.column, self.key, self.message)
        }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        // after "bé " (é is 2 bytes): column counts characters
        assert_eq!(line_col(t, 10), (2, 4));
        assert_eq!(line_col(t, 1000), (3, 1));
        let d = Diagnostic::at(t, Some(6), "wifi.ssid", "too long");
        assert_eq!(d.render("popseed.toml"), "popseed.toml:2:1: wifi.ssid: too long");
    }
}
