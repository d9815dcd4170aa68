//! Release files mapped into memory for serving. A piece that lies in one file goes to quinn as
//! a slice of the file's mapping, so the origin does not copy it into a buffer first (quinn
//! copies it once, into packets, as it does any stream data).
//!
//! A file truncated while it is mapped would make a read past its new end raise SIGBUS and
//! kill the origin. Two guards keep it serving:
//! - before a piece is handed out, its pages are populated (`MADV_POPULATE_READ`, on a blocking
//!   thread, which also keeps disk reads off the connection tasks); a range past the file's end
//!   fails there, and the piece is read with `pread` instead (which reports the short file);
//! - a truncation between that check and quinn's copy is caught by a process-wide SIGBUS handler
//!   that maps a zero page over the faulting page of one of our mappings: the piece goes out as
//!   zeros, which the box's hash check rejects, and the next piece asked for finds the file
//!   changed and stops using its mapping.
//!
//! Pieces that span files, files that cannot be mapped, and more than [`SLOTS`] mapped files use
//! the `pread` path.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use nix::libc;
use popseed_release::DataDir;

/// Most files mapped at once (the SIGBUS handler scans this many ranges without locking).
pub const SLOTS: usize = 1024;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot { start: AtomicUsize::new(0), len: AtomicUsize::new(0) };
static RANGES: [Slot; SLOTS] = [FREE; SLOTS];
static TAKEN: Mutex<[bool; SLOTS]> = Mutex::new([false; SLOTS]);
/// Pages the SIGBUS handler replaced with zeros since the process started.
static ZEROED_PAGES: AtomicU64 = AtomicU64::new(0);
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);
/// The SIGBUS action before ours (Rust's runtime or nothing), for faults that are not ours.
static PREVIOUS: OnceLock<nix::sys::signal::SigAction> = OnceLock::new();

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // Only async-signal-safe work here: atomics and mmap.
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    for slot in &RANGES {
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if start != 0 && addr >= start && addr - start < len {
            let at = addr & !(page - 1);
            // SAFETY: the page lies inside one of our read-only file mappings; replacing it with
            // an anonymous zero page changes what the faulting read sees, nothing else.
            let r = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r != libc::MAP_FAILED {
                ZEROED_PAGES.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    // Not one of ours: put the previous action back; the faulting access repeats and meets it,
    // as it would have without this handler.
    // SAFETY: sigaction() is async-signal-safe; OnceLock::get is an atomic load.
    unsafe {
        match PREVIOUS.get() {
            Some(prev) => {
                let _ = nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGBUS, prev);
            }
            None => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
            }
        }
    }
}

fn install_handler() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE_SIZE.store(page as usize, Ordering::Relaxed);
        }
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::SigAction(on_sigbus),
            nix::sys::signal::SaFlags::SA_SIGINFO | nix::sys::signal::SaFlags::SA_NODEFER,
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only touches atomics and calls mmap/sigaction.
        match unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGBUS, &action) } {
            Ok(prev) => {
                let _ = PREVIOUS.set(prev);
                true
            }
            Err(e) => {
                tracing::warn!(error = %popseed_core::chain(&e), "cannot install the SIGBUS handler; serving pieces with pread");
                false
            }
        }
    })
}

/// Pages replaced with zeros because a mapped file shrank (see the module docs).
pub fn zeroed_pages() -> u64 {
    ZEROED_PAGES.load(Ordering::Relaxed)
}

/// One mapped file, registered with the SIGBUS handler while it lives.
struct Mapping {
    map: memmap2::Mmap,
    slot: usize,
}

impl Mapping {
    fn new(file: &std::fs::File, len: u64) -> Option<Mapping> {
        // (a file larger than the address space, on a 32-bit box, is read with pread)
        let len = usize::try_from(len).ok()?;
        if len == 0 || !install_handler() {
            return None;
        }
        let slot = {
            let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
            let i = taken.iter().position(|t| !t)?;
            taken[i] = true;
            i
        };
        // SAFETY: the mapping is read-only; a file changed under it is handled as the module
        // docs say (truncation by the SIGBUS guard, rewritten bytes by the box's hash check).
        let map = match unsafe { memmap2::MmapOptions::new().len(len).map(file) } {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %popseed_core::chain(&e), "cannot map a release file; reading it with pread");
                TAKEN.lock().unwrap_or_else(|p| p.into_inner())[slot] = false;
                return None;
            }
        };
        RANGES[slot].len.store(map.len(), Ordering::Release);
        RANGES[slot].start.store(map.as_ptr() as usize, Ordering::Release);
        Some(Mapping { map, slot })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // unregister before memmap2 unmaps it
        RANGES[self.slot].start.store(0, Ordering::Release);
        RANGES[self.slot].len.store(0, Ordering::Release);
        TAKEN.lock().unwrap_or_else(|p| p.into_inner())[self.slot] = false;
    }
}

struct Piece {
    map: Arc<Mapping>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.map.map[self.start..self.end]
    }
}

enum FileMap {
    Mapped(Arc<Mapping>),
    /// Not mapped (cannot be, or changed since): read with pread.
    Unmapped,
}

/// The mappings of one served release's files, made on first use.
pub struct MappedFiles {
    files: Vec<Mutex<Option<FileMap>>>,
    zeroed_seen: AtomicU64,
}

impl MappedFiles {
    pub fn new(data: &DataDir) -> Self {
        MappedFiles {
            files: data.layout().files.iter().map(|_| Mutex::new(None)).collect(),
            zeroed_seen: AtomicU64::new(zeroed_pages()),
        }
    }

    /// Piece `index` as a slice of its file's mapping, its pages resident; `None` when it has
    /// to be read with pread (it spans files, its file is not mapped, or the file is shorter
    /// than the release says). Blocks on disk reads: call it from a blocking thread.
    pub fn piece(&self, data: &DataDir, index: u32) -> Option<Bytes> {
        let layout = data.layout();
        let size = layout.piece_size(index)?;
        let segs = layout.segments(layout.piece_offset(index), size as u64);
        let [seg] = segs.as_slice() else { return None };
        let zeroed = zeroed_pages();
        if self.zeroed_seen.swap(zeroed, Ordering::Relaxed) != zeroed {
            self.drop_changed(data);
        }
        let map = self.mapping(data, seg.file)?;
        let (start, end) = (seg.file_offset as usize, (seg.file_offset + seg.len) as usize);
        if end > map.map.len() || !populate(&map.map[start..end]) {
            return None;
        }
        Some(Bytes::from_owner(Piece { map, start, end }))
    }

    fn mapping(&self, data: &DataDir, i: usize) -> Option<Arc<Mapping>> {
        let mut slot = self.files.get(i)?.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let len = data.layout().files[i].length;
            let m = data.file(i).ok().and_then(|f| Mapping::new(f, len));
            *slot = Some(m.map(|m| FileMap::Mapped(Arc::new(m))).unwrap_or(FileMap::Unmapped));
        }
        match slot.as_ref() {
            Some(FileMap::Mapped(m)) => Some(m.clone()),
            _ => None,
        }
    }

    /// After the SIGBUS guard fired somewhere: stop mapping files whose size changed.
    fn drop_changed(&self, data: &DataDir) {
        for (i, slot) in self.files.iter().enumerate() {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(FileMap::Mapped(m)) = slot.as_ref() {
                let now = data.file(i).ok().and_then(|f| f.metadata().ok()).map(|md| md.len());
                if now != Some(m.map.len() as u64) {
                    tracing::warn!(file = %data.path(i).display(), size = ?now, expected = m.map.len(), "a served file changed size; reading it with pread from now on");
                    *slot = Some(FileMap::Unmapped);
                }
            }
        }
    }
}

/// Makes `range`'s pages resident and mapped; false if the kernel cannot (past the end of a
/// shrunk file, or a kernel without MADV_POPULATE_READ and a page it could not touch).
fn populate(range: &[u8]) -> bool {
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    let addr = range.as_ptr() as usize & !(page - 1);
    let len = range.as_ptr() as usize + range.len() - addr;
    // SAFETY: [addr, addr + len) lies within one live mapping (it covers `range`).
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_READ) };
    if r == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    // EINVAL: a kernel older than 5.14. Anything else (EFAULT past the end of the file, EIO,
    // ENOMEM): let pread report it.
    if err.raw_os_error() != Some(libc::EINVAL) {
        return false;
    }
    // SAFETY: as above; WILLNEED only starts readahead.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_WILLNEED) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use popseed_release::{publish, PublishOptions, SecretKey};

    const PIECE: usize = 16 << 10;

    /// A release of two files (a.bin: 6.5 pieces, b.bin: 3 pieces), its data directory opened
    /// and its files' mappings.
    fn release(dir: &std::path::Path) -> (popseed_release::VerifiedRelease, std::path::PathBuf, DataDir, MappedFiles) {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        let a: Vec<u8> = (0..PIECE * 13 / 2).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..PIECE * 3).map(|i| (i % 241) as u8).collect();
        std::fs::write(src.join("a.bin"), a).unwrap();
        std::fs::write(src.join("b.bin"), b).unwrap();
        let opts = PublishOptions { piece_size: Some(PIECE as u64), ..Default::default() };
        let r = publish(&src, &SecretKey::generate(), &dir.join("rel"), &opts).unwrap();
        let data = DataDir::open(&r, &src).unwrap();
        let mapped = MappedFiles::new(&data);
        (r, src, data, mapped)
    }

    #[test]
    fn mapped_pieces_match_pread_and_spanning_pieces_fall_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (r, _, data, mapped) = release(tmp.path());
        let count = r.layout().piece_count();
        let mut fell_back = Vec::new();
        for i in 0..count {
            let want = data.read_piece(i).unwrap();
            match mapped.piece(&data, i) {
                Some(b) => assert_eq!(&b[..], &want[..], "piece {i}"),
                None => fell_back.push(i),
            }
        }
        // only the piece across a.bin's end and b.bin's start is read with pread
        assert_eq!(fell_back.len(), 1, "{fell_back:?}");
        let seg_files: Vec<usize> =
            r.layout().segments(r.layout().piece_offset(fell_back[0]), PIECE as u64).iter().map(|s| s.file).collect();
        assert_eq!(seg_files, vec![0, 1]);
    }

    #[test]
    fn a_file_truncated_under_the_origin_gives_zeros_or_pread_never_a_crash() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, src, data, mapped) = release(tmp.path());
        // a piece handed to quinn before the truncation, read after it: the SIGBUS guard turns
        // the vanished pages into zeros (the box's hash check rejects them)
        let early = mapped.piece(&data, 4).unwrap();
        let before = zeroed_pages();
        std::fs::OpenOptions::new().write(true).open(src.join("a.bin")).unwrap().set_len(PIECE as u64 * 2).unwrap();
        assert!(early.iter().all(|&b| b == 0), "the truncated piece reads as zeros");
        assert!(zeroed_pages() > before);
        // a piece asked for after it: the mapping is given up and pread reports the short file
        assert!(mapped.piece(&data, 4).is_none());
        assert!(data.read_piece(4).is_err());
        // a piece still inside the file is served from pread now, and is still right
        assert!(mapped.piece(&data, 1).is_none());
        assert_eq!(
            data.read_piece(1).unwrap()[..10],
            (PIECE..PIECE + 10).map(|i| (i % 251) as u8).collect::<Vec<_>>()[..]
        );
        // the other file is still mapped
        let b = mapped.piece(&data, 7).unwrap();
        assert_eq!(&b[..], &data.read_piece(7).unwrap()[..]);
    }
}
