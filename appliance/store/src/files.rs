//! A release's data files on disk, in the release's own layout (what a BitTorrent client would
//! write with this directory as its save path): created at full length, written with pwrite at
//! each piece's offsets (blocks reserved with fallocate first), made durable with fdatasync,
//! read with pread.
//!
//! Large piece writes whose buffer and file offset are both aligned to [`DIRECT_ALIGN`] go
//! through a second, O_DIRECT handle: the device reads the bytes straight from the caller's
//! buffer, so the CPU does not copy them into the page cache first (that copy was the biggest
//! cost after hashing when filling). The unaligned head and tail of a write, small writes, and
//! filesystems that refuse O_DIRECT (tmpfs on older kernels) use the ordinary handle.
//! Durability is the same either way: nothing counts until [`DataFiles::sync`].

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::{fallocate, FallocateFlags, OFlag};
use popseed_release::{Layout, Segment, VerifiedRelease};

use crate::error::{Result, StoreError};

/// Buffer address, file offset and length alignment of O_DIRECT writes (a page: enough for
/// 512-byte and 4 KiB logical blocks).
pub const DIRECT_ALIGN: usize = 4096;

/// Writes shorter than this stay buffered (each O_DIRECT write waits for the device).
const DIRECT_MIN: usize = 256 << 10;

pub struct DataFiles {
    paths: Vec<PathBuf>,
    handles: Vec<OnceLock<File>>,
    /// O_DIRECT write handles (None: the filesystem refused O_DIRECT).
    direct: Vec<OnceLock<Option<File>>>,
}

/// How to split a write of `len` bytes from memory address `addr` to file offset `offset`:
/// `(head, middle)` where `middle` bytes after the first `head` can go through O_DIRECT (the
/// rest is buffered), or None when no part of it can.
pub fn direct_split(addr: usize, offset: u64, len: usize) -> Option<(usize, usize)> {
    let a = DIRECT_ALIGN as u64;
    if !(addr as u64).wrapping_sub(offset).is_multiple_of(a) {
        return None; // memory and file cannot be aligned at the same point
    }
    let head = ((a - offset % a) % a) as usize;
    let middle = len.checked_sub(head)? / DIRECT_ALIGN * DIRECT_ALIGN;
    (middle >= DIRECT_MIN).then_some((head, middle))
}

/// Path of file `i` of `release` below `root`.
fn file_path(root: &Path, release: &VerifiedRelease, i: usize) -> PathBuf {
    let mut p = root.to_path_buf();
    let f = &release.layout().files[i];
    if !release.metainfo.single_file {
        p.push(&release.metainfo.name);
    }
    p.extend(&f.components);
    p
}

impl DataFiles {
    pub fn new(root: &Path, release: &VerifiedRelease) -> Self {
        let n = release.layout().files.len();
        DataFiles {
            paths: (0..n).map(|i| file_path(root, release, i)).collect(),
            handles: (0..n).map(|_| OnceLock::new()).collect(),
            direct: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Creates every file at its full length (sparse until pieces arrive) and syncs the tree.
    pub fn create_all(&self, layout: &Layout) -> Result<()> {
        for (p, f) in self.paths.iter().zip(&layout.files) {
            if let Some(dir) = p.parent() {
                fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(p)
                .map_err(|e| StoreError::io(p, e))?;
            file.set_len(f.length).map_err(|e| StoreError::io(p, e))?;
        }
        Ok(())
    }

    pub fn path(&self, file: usize) -> Option<&Path> {
        self.paths.get(file).map(PathBuf::as_path)
    }

    /// An open read-write handle of file `i` (opened once, then shared).
    pub fn handle(&self, i: usize) -> Result<&File> {
        let cell = self.handles.get(i).ok_or(StoreError::BadRange { file: i })?;
        if let Some(f) = cell.get() {
            return Ok(f);
        }
        let p = &self.paths[i];
        let f = OpenOptions::new().read(true).write(true).open(p).map_err(|e| StoreError::io(p, e))?;
        Ok(cell.get_or_init(|| f))
    }

    /// The O_DIRECT write handle of file `i`, if its filesystem takes O_DIRECT.
    fn direct_handle(&self, i: usize) -> Option<&File> {
        self.direct
            .get(i)?
            .get_or_init(|| {
                let p = &self.paths[i];
                match OpenOptions::new().write(true).custom_flags(OFlag::O_DIRECT.bits()).open(p) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::debug!(path = %p.display(), error = %popseed_core::chain(&e), "no O_DIRECT here; buffered writes only");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Writes `data` (the bytes of the given segments, in order). Not durable until [`DataFiles::sync`].
    pub fn write(&self, segments: &[Segment], data: &[u8]) -> Result<()> {
        let mut at = 0usize;
        for s in segments {
            let f = self.handle(s.file)?;
            let p = &self.paths[s.file];
            let len = s.len as usize;
            let bytes = &data[at..at + len];
            // Reserve the blocks first so a full disk fails before any byte is written.
            fallocate(f, FallocateFlags::empty(), s.file_offset as i64, s.len as i64)
                .map_err(|e| StoreError::io(p, e.into()))?;
            let direct = direct_split(bytes.as_ptr() as usize, s.file_offset, len)
                .and_then(|split| Some((split, self.direct_handle(s.file)?)));
            match direct {
                Some(((head, middle), d)) => {
                    let mid_off = s.file_offset + head as u64;
                    f.write_all_at(&bytes[..head], s.file_offset).map_err(|e| StoreError::io(p, e))?;
                    if let Err(e) = d.write_all_at(&bytes[head..head + middle], mid_off) {
                        // a device with stricter alignment than ours: fall back for this write
                        tracing::debug!(path = %p.display(), error = %popseed_core::chain(&e), "O_DIRECT write refused; buffered instead");
                        f.write_all_at(&bytes[head..head + middle], mid_off).map_err(|e| StoreError::io(p, e))?;
                    }
                    f.write_all_at(&bytes[head + middle..], mid_off + middle as u64)
                        .map_err(|e| StoreError::io(p, e))?;
                }
                None => f.write_all_at(bytes, s.file_offset).map_err(|e| StoreError::io(p, e))?,
            }
            at += len;
        }
        Ok(())
    }

    /// fdatasyncs the given files.
    pub fn sync(&self, files: &[usize]) -> Result<()> {
        for &i in files {
            let f = self.handle(i)?;
            nix::unistd::fdatasync(f).map_err(|e| StoreError::io(&self.paths[i], e.into()))?;
        }
        Ok(())
    }

    /// Reads the bytes of `segments` into `buf` (whose length is their total).
    pub fn read(&self, segments: &[Segment], buf: &mut [u8]) -> Result<()> {
        let mut at = 0usize;
        for s in segments {
            let f = self.handle(s.file)?;
            let len = s.len as usize;
            f.read_exact_at(&mut buf[at..at + len], s.file_offset)
                .map_err(|e| StoreError::io(&self.paths[s.file], e))?;
            at += len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_split_aligns_memory_and_file_together() {
        const A: usize = DIRECT_ALIGN;
        // both aligned: all of it, but a ragged tail
        assert_eq!(direct_split(8 * A, 0, 1 << 20), Some((0, 1 << 20)));
        assert_eq!(direct_split(8 * A, 0, (1 << 20) + 5), Some((0, 1 << 20)));
        // offsets off by the same amount: the head goes buffered
        assert_eq!(direct_split(8 * A + 100, 100, 1 << 20), Some((A - 100, (1 << 20) - A)));
        // memory and file cannot meet an alignment point together
        assert_eq!(direct_split(8 * A + 1, 0, 1 << 20), None);
        // too short to be worth it, or shorter than the head
        assert_eq!(direct_split(0, 0, DIRECT_MIN - A), None);
        assert_eq!(direct_split(10, 10, 100), None);
    }
}
