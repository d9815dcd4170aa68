//! Strict bencode checking, run on outside bytes before librqbit-bencode decodes them.
//!
//! librqbit-bencode reads integers and string lengths with `atoi` into the field's own type and
//! does not check for overflow: with overflow checks on a long number panics, and in a release
//! build it wraps (`i4294983680e` read into a `u32` piece length is 16 KiB; `i259e` read into a
//! `u8` extension id is 3). The walker here refuses, before any decoding, every integer outside
//! `i64`, every string length that does not fit what follows it, and nesting deeper than
//! [`MAX_DEPTH`]; the decoders that read narrower fields (a `.torrent`'s `piece length`, the ids
//! of a BEP 10 handshake) check those fields' ranges themselves on a [`Value`] read from bytes
//! this walker accepted. It allocates nothing and does not recurse.

use librqbit_bencode::{BencodeValue, ByteBuf};

/// Deepest nesting of lists and dictionaries accepted. A `.torrent` peaks around 5 (top
/// dictionary, info, files list, file dictionary, path list); peer wire dictionaries at 2.
pub const MAX_DEPTH: usize = 32;

/// A decoded value of checked bytes: integers are `i64`, strings borrow the input.
pub type Value<'a> = BencodeValue<ByteBuf<'a>>;

/// Why bytes are not one well-formed bencoded value. `at` is the byte offset of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    #[error("bencode ends early (at byte {at})")]
    Eof { at: usize },
    #[error("bencode has an unexpected byte {byte:#04x} at byte {at}")]
    Unexpected { at: usize, byte: u8 },
    #[error("bencode integer at byte {at} is not a whole number within 64 bits")]
    BadInteger { at: usize },
    #[error("bencode string length at byte {at} is longer than the input")]
    BadLength { at: usize },
    #[error("bencode nests deeper than {MAX_DEPTH} (at byte {at})")]
    TooDeep { at: usize },
    #[error("bencode dictionary key at byte {at} is not a string")]
    KeyNotString { at: usize },
    #[error("{extra} byte(s) after the bencoded value")]
    Trailing { extra: usize },
    #[error("bencode checked but not decodable: {0}")]
    Decode(String),
}

/// Length of the one well-formed bencoded value at the start of `b` (bytes may follow it, as
/// piece data follows the dictionary of a ut_metadata data message).
pub fn value_len(b: &[u8]) -> Result<usize, BencodeError> {
    // One entry per open container: is it a dictionary, and does a key come next.
    let mut open: [(bool, bool); MAX_DEPTH] = [(false, false); MAX_DEPTH];
    let mut depth = 0usize;
    let mut at = 0usize;
    loop {
        let c = *b.get(at).ok_or(BencodeError::Eof { at })?;
        if depth > 0 && c == b'e' {
            if open[depth - 1] == (true, false) {
                // A dictionary key without its value.
                return Err(BencodeError::Unexpected { at, byte: c });
            }
            at += 1;
            depth -= 1;
            if depth == 0 {
                return Ok(at);
            }
            continue;
        }
        if depth > 0 {
            let (is_dict, key_next) = &mut open[depth - 1];
            if *is_dict {
                if *key_next && !c.is_ascii_digit() {
                    return Err(BencodeError::KeyNotString { at });
                }
                *key_next = !*key_next;
            }
        }
        match c {
            b'i' => at = integer_end(b, at)?,
            b'0'..=b'9' => at = string_end(b, at)?,
            b'l' | b'd' => {
                if depth == MAX_DEPTH {
                    return Err(BencodeError::TooDeep { at });
                }
                open[depth] = (c == b'd', true);
                depth += 1;
                at += 1;
                continue;
            }
            byte => return Err(BencodeError::Unexpected { at, byte }),
        }
        if depth == 0 {
            return Ok(at);
        }
    }
}

/// Checks that `b` is exactly one well-formed bencoded value.
pub fn check_whole(b: &[u8]) -> Result<(), BencodeError> {
    let n = value_len(b)?;
    match b.len() - n {
        0 => Ok(()),
        extra => Err(BencodeError::Trailing { extra }),
    }
}

/// Decodes the value at the start of `b` after [`value_len`] accepted it; returns it and its
/// length.
pub fn decode_prefix(b: &[u8]) -> Result<(Value<'_>, usize), BencodeError> {
    let n = value_len(b)?;
    let v = librqbit_bencode::dyn_from_bytes::<ByteBuf>(&b[..n]).map_err(|e| BencodeError::Decode(e.to_string()))?;
    Ok((v, n))
}

/// The entry `key` of a dictionary value.
pub fn dict_get<'v, 'a>(v: &'v Value<'a>, key: &[u8]) -> Option<&'v Value<'a>> {
    match v {
        BencodeValue::Dict(d) => d.get(key),
        _ => None,
    }
}

/// The integer `v`, if it is one.
pub fn as_int(v: &Value<'_>) -> Option<i64> {
    match v {
        BencodeValue::Integer(i) => Some(*i),
        _ => None,
    }
}

/// The byte string `v`, if it is one.
pub fn as_bytes<'a>(v: &Value<'a>) -> Option<&'a [u8]> {
    match v {
        BencodeValue::Bytes(b) => Some(b.0),
        _ => None,
    }
}

/// The items of the list `v`, if it is one.
pub fn as_list<'v, 'a>(v: &'v Value<'a>) -> Option<&'v [Value<'a>]> {
    match v {
        BencodeValue::List(l) => Some(l),
        _ => None,
    }
}

/// End (exclusive) of the integer `i<digits>e` starting at `start`.
fn integer_end(b: &[u8], start: usize) -> Result<usize, BencodeError> {
    let body = start + 1;
    let e = b[body..].iter().position(|&c| c == b'e').ok_or(BencodeError::Eof { at: b.len() })? + body;
    let text = &b[body..e];
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(BencodeError::BadInteger { at: start });
    }
    // ASCII digits with an optional sign: valid UTF-8; `parse` checks the i64 range.
    let ok = std::str::from_utf8(text).ok().and_then(|t| t.parse::<i64>().ok()).is_some();
    if !ok {
        return Err(BencodeError::BadInteger { at: start });
    }
    Ok(e + 1)
}

/// End (exclusive) of the string `<len>:<bytes>` starting at `start`.
fn string_end(b: &[u8], start: usize) -> Result<usize, BencodeError> {
    let colon = b[start..]
        .iter()
        .position(|&c| !c.is_ascii_digit())
        .map(|i| i + start)
        .ok_or(BencodeError::Eof { at: b.len() })?;
    if b[colon] != b':' {
        return Err(BencodeError::Unexpected { at: colon, byte: b[colon] });
    }
    let len = std::str::from_utf8(&b[start..colon])
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .ok_or(BencodeError::BadLength { at: start })?;
    let end =
        (colon + 1).checked_add(len).filter(|&end| end <= b.len()).ok_or(BencodeError::BadLength { at: start })?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_values() {
        for (b, n) in [
            (&b"i0e"[..], 3),
            (b"i-42e", 5),
            (b"i9223372036854775807e", 21),
            (b"i-9223372036854775808e", 22),
            (b"4:spam", 6),
            (b"0:", 2),
            (b"le", 2),
            (b"de", 2),
            (b"d3:cow3:moo4:spaml1:a1:bee", 26),
            (b"d1:md11:ut_metadatai3eee", 24),
        ] {
            assert_eq!(value_len(b), Ok(n), "{}", String::from_utf8_lossy(b));
            assert_eq!(check_whole(b), Ok(()));
        }
        // A prefix: piece data after a ut_metadata data message's dictionary.
        assert_eq!(value_len(b"d8:msg_typei1eeRAW"), Ok(15));
        assert_eq!(check_whole(b"d8:msg_typei1eeRAW"), Err(BencodeError::Trailing { extra: 3 }));
    }

    #[test]
    fn refuses_numbers_librqbit_would_overflow() {
        assert_eq!(value_len(b"i9223372036854775808e"), Err(BencodeError::BadInteger { at: 0 }));
        assert_eq!(value_len(b"i-9223372036854775809e"), Err(BencodeError::BadInteger { at: 0 }));
        assert_eq!(value_len(b"d1:ai99999999999999999999999ee"), Err(BencodeError::BadInteger { at: 4 }));
        assert_eq!(value_len(b"99999999999999999999999:x"), Err(BencodeError::BadLength { at: 0 }));
        assert_eq!(value_len(b"18446744073709551615:x"), Err(BencodeError::BadLength { at: 0 }));
        assert_eq!(value_len(b"5:abc"), Err(BencodeError::BadLength { at: 0 }));
    }

    #[test]
    fn refuses_malformed_values() {
        assert_eq!(value_len(b""), Err(BencodeError::Eof { at: 0 }));
        assert_eq!(value_len(b"ie"), Err(BencodeError::BadInteger { at: 0 }));
        assert_eq!(value_len(b"i-e"), Err(BencodeError::BadInteger { at: 0 }));
        assert_eq!(value_len(b"i1x2e"), Err(BencodeError::BadInteger { at: 0 }));
        assert_eq!(value_len(b"i12"), Err(BencodeError::Eof { at: 3 }));
        assert_eq!(value_len(b"l"), Err(BencodeError::Eof { at: 1 }));
        assert_eq!(value_len(b"4x"), Err(BencodeError::Unexpected { at: 1, byte: b'x' }));
        assert_eq!(value_len(b"x"), Err(BencodeError::Unexpected { at: 0, byte: b'x' }));
        assert_eq!(value_len(b"e"), Err(BencodeError::Unexpected { at: 0, byte: b'e' }));
        assert_eq!(value_len(b"di1e1:ae"), Err(BencodeError::KeyNotString { at: 1 }));
        assert_eq!(value_len(b"d1:ai1ei2e1:be"), Err(BencodeError::KeyNotString { at: 7 }));
        assert_eq!(value_len(b"d1:ae"), Err(BencodeError::Unexpected { at: 4, byte: b'e' }));
    }

    #[test]
    fn nesting_is_limited_without_recursion() {
        let ok: Vec<u8> = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert_eq!(value_len(&ok), Ok(2 * MAX_DEPTH));
        let deep: Vec<u8> = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert_eq!(value_len(&deep), Err(BencodeError::TooDeep { at: MAX_DEPTH }));
        let huge = vec![b'l'; 1 << 20];
        assert_eq!(value_len(&huge), Err(BencodeError::TooDeep { at: MAX_DEPTH }));
    }

    #[test]
    fn decodes_checked_values() {
        let (v, n) = decode_prefix(b"d1:md11:ut_metadatai3ee1:pi6881eeTAIL").expect("checked");
        assert_eq!(n, 33);
        let m = dict_get(&v, b"m").expect("m");
        assert_eq!(dict_get(m, b"ut_metadata").and_then(as_int), Some(3));
        assert_eq!(dict_get(&v, b"p").and_then(as_int), Some(6881));
        assert!(dict_get(&v, b"q").is_none());
        assert!(decode_prefix(b"d1:ai4294967296999999999999999ee").is_err());
    }
}
