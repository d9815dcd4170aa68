//! A release's data files on disk, in the release's own layout (what a BitTorrent client would
//! write with this directory as its save path): created at full length, written with pwrite at
//! each piece's offsets (blocks reserved with fallocate first), made durable with fdatasync,
//! read with pread.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::{fallocate, FallocateFlags};
use popseed_release::{Layout, Segment, VerifiedRelease};

use crate::error::{Result, StoreError};

pub struct DataFiles {
    paths: Vec<PathBuf>,
    handles: Vec<OnceLock<File>>,
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
        }
    }

    /// Creates every file at its full length (sparse until pieces arrive) and syncs the tree.
    pub fn create_all(&self, layout: &Layout) -> Result<()> {
        for (p, f) in self.paths.iter().zip(&layout.files) {
            if let Some(dir) = p.parent() {
                fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            }
            let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(p).map_err(|e| StoreError::io(p, e))?;
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

    /// Writes `data` (the bytes of the given segments, in order). Not durable until [`DataFiles::sync`].
    pub fn write(&self, segments: &[Segment], data: &[u8]) -> Result<()> {
        let mut at = 0usize;
        for s in segments {
            let f = self.handle(s.file)?;
            let p = &self.paths[s.file];
            let len = s.len as usize;
            // Reserve the blocks first so a full disk fails before any byte is written.
            fallocate(f, FallocateFlags::empty(), s.file_offset as i64, s.len as i64)
                .map_err(|e| StoreError::io(p, e.into()))?;
            f.write_all_at(&data[at..at + len], s.file_offset).map_err(|e| StoreError::io(p, e))?;
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
            f.read_exact_at(&mut buf[at..at + len], s.file_offset).map_err(|e| StoreError::io(&self.paths[s.file], e))?;
            at += len;
        }
        Ok(())
    }
}
