//! Small formatting helpers for terminal output.

/// Human size, binary units: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// Parses a size with an optional binary suffix (`256KiB`, `1MiB`, `4096`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new().with_binary().parse_size(s).map_err(|e| format!("{s:?} is not a size: {e}"))
}

/// Parses a 40-hex-digit infohash.
pub fn parse_infohash(s: &str) -> Result<[u8; 20], String> {
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{s:?} is not an infohash (40 hex digits)"))
}
