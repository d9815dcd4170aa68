//! Streams a release's files once, computing the SHA-1 of every piece (for the .torrent) and the
//! SHA-256 of every file (for the manifest) in the same pass. Piece hashing is on every hot path
//! (publish, store put, fetch), so SHA-1 comes from aws-lc (assembly, ~1.8x the portable crate
//! on these machines); it is the same crypto provider rustls uses.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use aws_lc_rs::digest::{self, SHA1_FOR_LEGACY_USE_ONLY};
use sha2::{Digest, Sha256};

use crate::error::{ReleaseError, Result};

/// Output of one hashing pass.
pub struct Hashes {
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<[u8; 32]>,
}

const CHUNK: usize = 1 << 20;

/// Hashes `files` (disk path, expected size) laid end to end. A file whose size differs from
/// the expected one (it changed under us, or the data is not this release's) is an error.
pub fn hash_files(files: &[(PathBuf, u64)], piece_length: u32) -> Result<Hashes> {
    let pl = piece_length as u64;
    let mut pieces = Vec::new();
    let mut file_hashes = Vec::with_capacity(files.len());
    let new_piece = || digest::Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    let mut piece = new_piece();
    let mut in_piece = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for (path, expected) in files {
        let mut f = File::open(path).map_err(|e| ReleaseError::io(path, e))?;
        let mut fh = Sha256::new();
        let mut seen = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| ReleaseError::io(path, e))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            if seen > *expected {
                break;
            }
            let mut data = &buf[..n];
            fh.update(data);
            while !data.is_empty() {
                let take = ((pl - in_piece) as usize).min(data.len());
                piece.update(&data[..take]);
                in_piece += take as u64;
                data = &data[take..];
                if in_piece == pl {
                    pieces.push(to20(std::mem::replace(&mut piece, new_piece()).finish()));
                    in_piece = 0;
                }
            }
        }
        if seen != *expected {
            let actual = std::fs::metadata(path).map(|m| m.len()).unwrap_or(seen);
            return Err(ReleaseError::SourceChanged { path: path.clone(), expected: *expected, actual });
        }
        file_hashes.push(fh.finalize().into());
    }
    if in_piece > 0 {
        pieces.push(to20(piece.finish()));
    }
    Ok(Hashes { pieces, files: file_hashes })
}

/// SHA-1 of one piece's bytes.
pub fn piece_hash(data: &[u8]) -> [u8; 20] {
    to20(digest::digest(&SHA1_FOR_LEGACY_USE_ONLY, data))
}

fn to20(d: digest::Digest) -> [u8; 20] {
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_span_files() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::write(&a, vec![1u8; 20000]).unwrap();
        std::fs::write(&b, vec![2u8; 15000]).unwrap();
        let h = hash_files(&[(a.clone(), 20000), (b.clone(), 15000)], 16384).unwrap();
        let mut all = vec![1u8; 20000];
        all.extend(vec![2u8; 15000]);
        let expect: Vec<[u8; 20]> = all.chunks(16384).map(piece_hash).collect();
        assert_eq!(h.pieces, expect);
        assert_eq!(h.files[1], <[u8; 32]>::from(Sha256::digest(vec![2u8; 15000])));
        assert!(matches!(hash_files(&[(a, 19999)], 16384), Err(ReleaseError::SourceChanged { .. })));
    }
}
