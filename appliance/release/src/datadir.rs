//! Reading a release's pieces from a plain data directory laid out like the publisher's source
//! tree (what `publish` read, what an origin serves, what `store import` copies from).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{ReleaseError, Result};
use crate::release::VerifiedRelease;

/// Read-only access to a release's files under a data directory. Opens files lazily.
pub struct DataDir {
    paths: Vec<PathBuf>,
    files: Vec<OnceLock<File>>,
    layout: crate::Layout,
}

impl DataDir {
    /// Checks that every file exists with the release's size.
    pub fn open(release: &VerifiedRelease, dir: &Path) -> Result<Self> {
        let layout = release.layout().clone();
        let paths: Vec<PathBuf> = (0..layout.files.len()).map(|i| release.data_path(dir, i)).collect();
        for (p, f) in paths.iter().zip(&layout.files) {
            let len = std::fs::metadata(p).map_err(|e| ReleaseError::io(p, e))?.len();
            if len != f.length {
                return Err(ReleaseError::DataMismatch(format!(
                    "{}: size {len}, the release says {}",
                    p.display(),
                    f.length
                )));
            }
        }
        Ok(DataDir { files: paths.iter().map(|_| OnceLock::new()).collect(), paths, layout })
    }

    pub fn layout(&self) -> &crate::Layout {
        &self.layout
    }

    /// Where file `i` of the release lives.
    pub fn path(&self, i: usize) -> &Path {
        &self.paths[i]
    }

    /// File `i` of the release, opened read-only on first use.
    pub fn file(&self, i: usize) -> Result<&File> {
        if let Some(f) = self.files[i].get() {
            return Ok(f);
        }
        let f = File::open(&self.paths[i]).map_err(|e| ReleaseError::io(&self.paths[i], e))?;
        Ok(self.files[i].get_or_init(|| f))
    }

    /// Reads `buf.len()` bytes at `begin` within piece `index`. Does not check the hash.
    pub fn read_piece_at(&self, index: u32, begin: u32, buf: &mut [u8]) -> Result<()> {
        let size =
            self.layout.piece_size(index).ok_or_else(|| ReleaseError::DataMismatch(format!("no piece {index}")))?;
        if begin as u64 + buf.len() as u64 > size as u64 {
            return Err(ReleaseError::DataMismatch(format!("range past the end of piece {index}")));
        }
        let mut at = 0usize;
        for s in self.layout.segments(self.layout.piece_offset(index) + begin as u64, buf.len() as u64) {
            let len = s.len as usize;
            self.file(s.file)?
                .read_exact_at(&mut buf[at..at + len], s.file_offset)
                .map_err(|e| ReleaseError::io(&self.paths[s.file], e))?;
            at += len;
        }
        Ok(())
    }

    /// Reads a whole piece.
    pub fn read_piece(&self, index: u32) -> Result<Vec<u8>> {
        let size =
            self.layout.piece_size(index).ok_or_else(|| ReleaseError::DataMismatch(format!("no piece {index}")))?;
        let mut buf = vec![0u8; size as usize];
        self.read_piece_at(index, 0, &mut buf)?;
        Ok(buf)
    }
}
