//! The store itself: ties the sled index, the data files and the capacity policy together and
//! keeps the invariant that a piece is reported present only after its bytes matched the signed
//! release and are durable.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use popseed_core::{Clock, InfoHash, PieceIndex, SystemClock};
use popseed_release::hashing::piece_hash;
use popseed_release::sha1_many::sha1_many;
use popseed_release::VerifiedRelease;

use crate::bitfield::Bitfield;
use crate::capacity::{choose_victim, free_bytes, Candidate, Capacity};
use crate::error::{Result, StoreError};
use crate::files::DataFiles;
use crate::index::{Index, ReleaseRecord};
use crate::records::RecordTable;
use crate::stats::StoreStats;

const RELEASES_DIR: &str = "releases";
const INDEX_DIR: &str = "index";
const DATA_DIR: &str = "data";
/// Last-access times are persisted when they moved by more than this many seconds.
const ACCESS_PERSIST_SECS: u64 = 60;
/// Batches at least this large hash on a second thread while their bytes are written.
const OVERLAP_MIN_BYTES: u64 = 256 << 10;

/// Where the store lives and how much it may hold.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub capacity: Capacity,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig { dir: dir.into(), capacity: Capacity::default() }
    }
}

/// Options when adding a release.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddOptions {
    pub pin: bool,
    /// Overrides the manifest's ttl (seconds).
    pub ttl_seconds: Option<u64>,
}

/// Result of a successful put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Stored,
    AlreadyPresent,
    /// Another put is storing this piece right now; it becomes present if that one succeeds.
    InProgress,
}

/// A summary of one stored release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub infohash: InfoHash,
    pub name: String,
    pub version: String,
    pub total_size: u64,
    pub piece_count: u32,
    pub pieces_present: u32,
    pub bytes_present: u64,
    pub pinned: bool,
    pub added_at: u64,
    pub expires_at: Option<u64>,
    pub last_access: u64,
}

/// What changed in the store, for components that advertise or wait for pieces
/// (the swarm sends `have`, the portal resumes a waiting download).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEvent {
    PieceStored { infohash: InfoHash, index: PieceIndex },
    ReleaseAdded { infohash: InfoHash },
    ReleaseRemoved { infohash: InfoHash },
}

/// Store-wide usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    pub budget: Option<u64>,
    pub free_on_disk: u64,
    pub min_free: u64,
}

struct State {
    bitfield: Bitfield,
    bytes_present: u64,
    record: ReleaseRecord,
    removed: bool,
    /// Pieces some put is writing right now (bytes may be on disk before their hash is checked).
    writing: HashSet<u32>,
}

struct Entry {
    release: Arc<VerifiedRelease>,
    files: DataFiles,
    dir: PathBuf,
    state: Mutex<State>,
    last_access: AtomicU64,
    persisted_access: AtomicU64,
}

impl Entry {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The appliance's piece store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    dir: PathBuf,
    index: Index,
    capacity: Capacity,
    /// Wall-clock time for added/expiry/last-access dates (tests move it by hand).
    clock: Arc<dyn Clock>,
    entries: RwLock<HashMap<InfoHash, Arc<Entry>>>,
    /// Serializes capacity decisions and evictions.
    space: Mutex<()>,
    /// Bytes of puts that passed the capacity check but are not yet counted as present.
    reserved: AtomicU64,
    events: tokio::sync::broadcast::Sender<StoreEvent>,
    stats: StoreStats,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| StoreError::io(&tmp, e))?;
    f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

fn sync_dir(path: &Path) -> Result<()> {
    fs::File::open(path).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(path, e))
}

impl Store {
    /// Opens (or creates) a store. Finishes interrupted removals, drops half-added releases and
    /// rebuilds the in-memory bitfields from the index (one key per present piece).
    pub fn open(config: StoreConfig) -> Result<Store> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Like [`Store::open`], with the wall clock that dates additions, accesses and expiry.
    pub fn open_with_clock(config: StoreConfig, clock: Arc<dyn Clock>) -> Result<Store> {
        let dir = config.dir;
        let rel_dir = dir.join(RELEASES_DIR);
        fs::create_dir_all(&rel_dir).map_err(|e| StoreError::io(&rel_dir, e))?;
        let index = Index::open(&dir.join(INDEX_DIR))?;
        let store = Store {
            dir,
            index,
            capacity: config.capacity,
            clock,
            entries: RwLock::new(HashMap::new()),
            space: Mutex::new(()),
            reserved: AtomicU64::new(0),
            events: tokio::sync::broadcast::channel(4096).0,
            stats: StoreStats::default(),
        };
        let mut entries = HashMap::new();
        for (ih, rec) in store.index.records()? {
            if rec.removing {
                tracing::info!(release = %ih, "finishing an interrupted removal");
                store.purge(&ih)?;
                continue;
            }
            match store.load_entry(&ih, rec) {
                Ok(e) => {
                    entries.insert(ih, Arc::new(e));
                }
                Err(err) => {
                    tracing::warn!(release = %ih, error = %popseed_core::chain(&err), "stored release is unreadable; dropping it");
                    store.purge(&ih)?;
                }
            }
        }
        // Directories without a record are releases whose add never completed.
        for d in fs::read_dir(&rel_dir).map_err(|e| StoreError::io(&rel_dir, e))? {
            let d = d.map_err(|e| StoreError::io(&rel_dir, e))?;
            let name = d.file_name();
            let known =
                name.to_str().and_then(|n| n.parse::<InfoHash>().ok()).is_some_and(|ih| entries.contains_key(&ih));
            if !known {
                tracing::info!(dir = ?d.path(), "removing leftovers of an unfinished add");
                fs::remove_dir_all(d.path()).map_err(|e| StoreError::io(d.path(), e))?;
            }
        }
        *store.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
        Ok(store)
    }

    fn release_dir(&self, ih: &InfoHash) -> PathBuf {
        self.dir.join(RELEASES_DIR).join(ih.to_string())
    }

    fn load_entry(&self, ih: &InfoHash, record: ReleaseRecord) -> Result<Entry> {
        let dir = self.release_dir(ih);
        let release = VerifiedRelease::load(&dir, None)?;
        if &release.infohash() != ih {
            return Err(StoreError::WrongRelease { dir, expected: *ih, found: release.infohash() });
        }
        let layout = release.layout();
        let mut bitfield = Bitfield::new(layout.piece_count());
        let mut bytes = 0u64;
        for idx in self.index.present_pieces(ih) {
            let idx = idx?;
            if bitfield.set(idx) {
                bytes += layout.piece_size(idx).unwrap_or(0) as u64;
            }
        }
        let access = self.index.last_access(ih)?.unwrap_or(record.added_at);
        Ok(Entry {
            files: DataFiles::new(&dir.join(DATA_DIR), &release),
            release: Arc::new(release),
            dir,
            state: Mutex::new(State {
                bitfield,
                bytes_present: bytes,
                record,
                removed: false,
                writing: HashSet::new(),
            }),
            last_access: AtomicU64::new(access),
            persisted_access: AtomicU64::new(access),
        })
    }

    fn entry(&self, ih: &InfoHash) -> Result<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ih)
            .cloned()
            .ok_or_else(|| StoreError::UnknownRelease(*ih))
    }

    fn touch(&self, ih: &InfoHash, e: &Entry) {
        let t = self.clock.unix_secs();
        e.last_access.store(t, Ordering::Relaxed);
        if t.saturating_sub(e.persisted_access.load(Ordering::Relaxed)) >= ACCESS_PERSIST_SECS {
            e.persisted_access.store(t, Ordering::Relaxed);
            if let Err(err) = self.index.set_last_access(ih, t) {
                tracing::warn!(error = %popseed_core::chain(&err), "could not record last access");
            }
        }
    }

    /// Adds a verified release (idempotent). Its files are created at full length; no piece is
    /// present until it is put.
    pub fn add_release(&self, release: &VerifiedRelease, opts: AddOptions) -> Result<()> {
        let ih = release.infohash();
        if let Ok(e) = self.entry(&ih) {
            if opts.pin && !e.state().record.pinned {
                self.set_pinned(&ih, true)?;
            }
            return Ok(());
        }
        let dir = self.release_dir(&ih);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        write_atomic(&dir.join(popseed_release::MANIFEST_FILE), &release.manifest_bytes)?;
        write_atomic(&dir.join(popseed_release::TORRENT_FILE), &release.torrent_bytes)?;
        let files = DataFiles::new(&dir.join(DATA_DIR), release);
        files.create_all(release.layout())?;
        sync_dir(&dir)?;
        let added_at = self.clock.unix_secs();
        let ttl = opts.ttl_seconds.or(release.manifest.ttl_seconds);
        let record = ReleaseRecord {
            name: release.manifest.name.clone(),
            version: release.manifest.version.clone(),
            piece_count: release.layout().piece_count(),
            total_size: release.layout().total_length,
            pinned: opts.pin,
            added_at,
            expires_at: ttl.map(|t| added_at.saturating_add(t)),
            removing: false,
        };
        self.index.put_record(&ih, &record)?;
        self.index.set_last_access(&ih, added_at)?;
        self.index.flush()?;
        let entry = Entry {
            files,
            release: Arc::new(release.clone()),
            dir,
            state: Mutex::new(State {
                bitfield: Bitfield::new(release.layout().piece_count()),
                bytes_present: 0,
                record,
                removed: false,
                writing: HashSet::new(),
            }),
            last_access: AtomicU64::new(added_at),
            persisted_access: AtomicU64::new(added_at),
        };
        self.entries.write().unwrap_or_else(|p| p.into_inner()).insert(ih, Arc::new(entry));
        tracing::info!(release = %ih, name = %release.manifest.name, "release added");
        let _ = self.events.send(StoreEvent::ReleaseAdded { infohash: ih });
        Ok(())
    }

    /// The verified release (manifest, .torrent, layout) of a stored release.
    pub fn release(&self, ih: &InfoHash) -> Result<Arc<VerifiedRelease>> {
        Ok(self.entry(ih)?.release.clone())
    }

    /// Verifies a piece against the signed release, makes its bytes durable, then marks it
    /// present. Evicts other releases when the budget or the disk floor requires it.
    pub fn put_piece(&self, ih: &InfoHash, index: PieceIndex, data: &[u8]) -> Result<Put> {
        Ok(self.put_pieces(ih, &[(index, data)])?[0])
    }

    /// Like [`Store::put_piece`] for several pieces of one release, with one fdatasync per file
    /// touched and one index flush for the whole batch. If any piece is invalid, that error is
    /// returned and none of the batch becomes present.
    ///
    /// When the pieces fit without evicting anything, hashing runs on a second thread while the
    /// bytes are written (a piece's range is claimed first, so no other put writes it meanwhile,
    /// and it is marked present only if its hash matched). When eviction would be needed, every
    /// hash is checked before anything is evicted or written, so bad data never costs a release.
    pub fn put_pieces(&self, ih: &InfoHash, pieces: &[(PieceIndex, &[u8])]) -> Result<Vec<Put>> {
        let e = self.entry(ih)?;
        let layout = e.release.layout();
        for &(index, data) in pieces {
            let size = layout
                .piece_size(index.get())
                .ok_or(StoreError::BadPieceIndex { index, count: layout.piece_count() })?;
            if data.len() != size as usize {
                return Err(StoreError::WrongLength { index, expected: size, got: data.len() });
            }
        }
        // Claim the pieces this call will write.
        let mut outcome = Vec::with_capacity(pieces.len());
        let mut todo: Vec<(u32, &[u8])> = Vec::new();
        {
            let mut st = e.state();
            for &(PieceIndex(index), data) in pieces {
                if st.bitfield.get(index) {
                    outcome.push(Put::AlreadyPresent);
                } else if !st.writing.insert(index) {
                    outcome.push(Put::InProgress);
                } else {
                    outcome.push(Put::Stored);
                    todo.push((index, data));
                }
            }
        }
        let _claim = Claim { entry: &e, pieces: todo.iter().map(|p| p.0).collect() };
        if todo.is_empty() {
            return Ok(outcome);
        }
        let need: u64 = todo.iter().map(|p| p.1.len() as u64).sum();
        let verify = || -> Result<()> {
            // A batch hashes its pieces side by side in SIMD lanes (sha1_many).
            let datas: Vec<&[u8]> = todo.iter().map(|p| p.1).collect();
            for (&(index, _), hash) in todo.iter().zip(sha1_many(&datas)) {
                if Some(&hash) != layout.piece_hash(index) {
                    return Err(StoreError::HashMismatch { index: PieceIndex(index) });
                }
            }
            Ok(())
        };
        let write = || -> Result<()> {
            let mut touched = Vec::new();
            for &(index, data) in &todo {
                let segs = layout.piece_segments(index);
                e.files.write(&segs, data)?;
                touched.extend(segs.iter().map(|s| s.file));
            }
            touched.sort_unstable();
            touched.dedup();
            e.files.sync(&touched)
        };
        let _reservation = match self.try_reserve(need)? {
            Some(r) if need >= OVERLAP_MIN_BYTES => {
                let (hashed, written) = std::thread::scope(|s| {
                    let h = s.spawn(verify);
                    let w = write();
                    (h.join().unwrap_or(Err(StoreError::HashingPanicked)), w)
                });
                hashed?;
                written?;
                r
            }
            Some(r) => {
                verify()?;
                write()?;
                r
            }
            None => {
                verify()?;
                let r = self.reserve(need, ih)?;
                write()?;
                r
            }
        };
        {
            let st = e.state();
            if st.removed {
                return Err(StoreError::UnknownRelease(*ih));
            }
            for &(index, _) in &todo {
                self.index.mark_present(ih, index)?;
            }
        }
        self.index.flush()?;
        let mut st = e.state();
        for &(index, _) in &todo {
            if !st.removed && st.bitfield.set(index) {
                st.bytes_present += layout.piece_size(index).unwrap_or(0) as u64;
            }
        }
        drop(st);
        self.stats.stored(todo.len() as u64, need);
        self.touch(ih, &e);
        for &(index, _) in &todo {
            let _ = self.events.send(StoreEvent::PieceStored { infohash: *ih, index: PieceIndex(index) });
        }
        Ok(outcome)
    }

    fn used(&self) -> u64 {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.values().map(|e| e.state().bytes_present).sum::<u64>() + self.reserved.load(Ordering::SeqCst)
    }

    /// Reserves `need` bytes if they fit without evicting anything.
    fn try_reserve(&self, need: u64) -> Result<Option<Reservation<'_>>> {
        let _g = self.space.lock().unwrap_or_else(|p| p.into_inner());
        self.reserve_locked(need)
    }

    fn reserve_locked(&self, need: u64) -> Result<Option<Reservation<'_>>> {
        let used = self.used();
        let budget_ok = self.capacity.budget.is_none_or(|b| used + need <= b);
        if budget_ok && free_bytes(&self.dir)? >= need.saturating_add(self.capacity.min_free) {
            self.reserved.fetch_add(need, Ordering::SeqCst);
            return Ok(Some(Reservation { store: self, bytes: need }));
        }
        Ok(None)
    }

    /// Makes room for `need` bytes, evicting as the policy says, and reserves them.
    fn reserve(&self, need: u64, protect: &InfoHash) -> Result<Reservation<'_>> {
        let _g = self.space.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = self.reserve_locked(need)? {
                return Ok(r);
            }
            let (used, free) = (self.used(), free_bytes(&self.dir)?);
            let cands: Vec<Candidate> = self
                .entries
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(ih, e)| {
                    let st = e.state();
                    Candidate {
                        infohash: *ih,
                        pinned: st.record.pinned,
                        expires_at: st.record.expires_at,
                        last_access: e.last_access.load(Ordering::Relaxed),
                        bytes: st.bytes_present,
                    }
                })
                .collect();
            match choose_victim(&cands, self.clock.unix_secs(), protect) {
                Some(victim) => {
                    tracing::info!(release = %victim, need, used, "evicting to make room");
                    let freed = cands.iter().find(|c| c.infohash == victim).map_or(0, |c| c.bytes);
                    self.remove_release(&victim)?;
                    self.stats.evicted(freed);
                }
                None => {
                    return Err(StoreError::Full {
                        need,
                        used,
                        budget: self.capacity.budget.unwrap_or(u64::MAX),
                        free,
                        floor: self.capacity.min_free,
                    })
                }
            }
        }
    }

    /// Removes a release: index first (so nothing is reported present), then its files.
    pub fn remove_release(&self, ih: &InfoHash) -> Result<()> {
        let e = self
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ih)
            .ok_or_else(|| StoreError::UnknownRelease(*ih))?;
        let mut rec = {
            let mut st = e.state();
            st.removed = true;
            st.record.clone()
        };
        rec.removing = true;
        self.index.put_record(ih, &rec)?;
        self.index.flush()?;
        self.purge(ih)?;
        tracing::info!(release = %ih, dir = ?e.dir, "release removed");
        let _ = self.events.send(StoreEvent::ReleaseRemoved { infohash: *ih });
        Ok(())
    }

    /// Deletes every trace of a release whose record is gone or marked removing.
    fn purge(&self, ih: &InfoHash) -> Result<()> {
        self.index.remove_pieces(ih)?;
        self.index.flush()?;
        let dir = self.release_dir(ih);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        self.index.remove_record(ih)?;
        self.index.flush()
    }

    pub fn set_pinned(&self, ih: &InfoHash, pinned: bool) -> Result<()> {
        let e = self.entry(ih)?;
        let mut st = e.state();
        st.record.pinned = pinned;
        self.index.put_record(ih, &st.record)?;
        drop(st);
        self.index.flush()
    }

    pub fn has_piece(&self, ih: &InfoHash, index: PieceIndex) -> bool {
        self.entry(ih).is_ok_and(|e| e.state().bitfield.get(index.get()))
    }

    pub fn bitfield(&self, ih: &InfoHash) -> Result<Bitfield> {
        Ok(self.entry(ih)?.state().bitfield.clone())
    }

    /// Pieces of `[offset, offset+len)` of file `file` that are not present yet.
    pub fn missing_for_file_range(&self, ih: &InfoHash, file: usize, offset: u64, len: u64) -> Result<Vec<PieceIndex>> {
        let e = self.entry(ih)?;
        let pieces = e.release.layout().pieces_for_file_range(file, offset, len);
        let st = e.state();
        Ok(pieces.filter(|&p| !st.bitfield.get(p)).map(PieceIndex).collect())
    }

    fn check_present(e: &Entry, pieces: std::ops::Range<u32>) -> Result<()> {
        let st = e.state();
        if st.removed {
            return Err(StoreError::UnknownRelease(e.release.infohash()));
        }
        match pieces.clone().find(|&p| !st.bitfield.get(p)) {
            Some(piece) => Err(StoreError::NotPresent { piece: PieceIndex(piece) }),
            None => Ok(()),
        }
    }

    /// Reads `buf.len()` bytes at `begin` within piece `index` (a BitTorrent block).
    pub fn read_piece_at(&self, ih: &InfoHash, piece: PieceIndex, begin: u32, buf: &mut [u8]) -> Result<()> {
        let e = self.entry(ih)?;
        let layout = e.release.layout();
        let index = piece.get();
        let size =
            layout.piece_size(index).ok_or(StoreError::BadPieceIndex { index: piece, count: layout.piece_count() })?;
        if begin as u64 + buf.len() as u64 > size as u64 {
            return Err(StoreError::WrongLength { index: piece, expected: size, got: begin as usize + buf.len() });
        }
        Self::check_present(&e, index..index + 1)?;
        let segs = layout.segments(layout.piece_offset(index) + begin as u64, buf.len() as u64);
        e.files.read(&segs, buf)?;
        self.touch(ih, &e);
        Ok(())
    }

    /// Reads a whole piece.
    pub fn read_piece(&self, ih: &InfoHash, index: PieceIndex) -> Result<Vec<u8>> {
        let e = self.entry(ih)?;
        let size = e
            .release
            .layout()
            .piece_size(index.get())
            .ok_or(StoreError::BadPieceIndex { index, count: e.release.layout().piece_count() })?;
        let mut buf = vec![0u8; size as usize];
        self.read_piece_at(ih, index, 0, &mut buf)?;
        Ok(buf)
    }

    /// Reads `buf.len()` bytes at `offset` of file `file`; every piece they touch must be present.
    pub fn read_file_at(&self, ih: &InfoHash, file: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let e = self.entry(ih)?;
        let layout = e.release.layout();
        let f = layout.files.get(file).ok_or(StoreError::BadRange { file })?;
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > f.length) {
            return Err(StoreError::BadRange { file });
        }
        if buf.is_empty() {
            return Ok(());
        }
        Self::check_present(&e, layout.pieces_for_file_range(file, offset, buf.len() as u64))?;
        let segs = layout.segments(f.offset + offset, buf.len() as u64);
        e.files.read(&segs, buf)?;
        self.touch(ih, &e);
        Ok(())
    }

    /// Path of a stored file (for sendfile); callers must check presence of the range first.
    pub fn file_path(&self, ih: &InfoHash, file: usize) -> Result<PathBuf> {
        let e = self.entry(ih)?;
        e.files.path(file).map(Path::to_path_buf).ok_or(StoreError::BadRange { file })
    }

    pub fn releases(&self) -> Vec<ReleaseInfo> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ReleaseInfo> = entries
            .iter()
            .map(|(ih, e)| {
                let st = e.state();
                ReleaseInfo {
                    infohash: *ih,
                    name: st.record.name.clone(),
                    version: st.record.version.clone(),
                    total_size: st.record.total_size,
                    piece_count: st.record.piece_count,
                    pieces_present: st.bitfield.count(),
                    bytes_present: st.bytes_present,
                    pinned: st.record.pinned,
                    added_at: st.record.added_at,
                    expires_at: st.record.expires_at,
                    last_access: e.last_access.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.infohash.cmp(&b.infohash)));
        out
    }

    pub fn usage(&self) -> Result<Usage> {
        Ok(Usage {
            used: self.used(),
            budget: self.capacity.budget,
            free_on_disk: free_bytes(&self.dir)?,
            min_free: self.capacity.min_free,
        })
    }

    /// Events from now on. A receiver that lags behind gets `RecvError::Lagged` and should
    /// re-read the bitfields it cares about.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters for status and metrics.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// A named table of another component's small durable records (the control crate keeps
    /// prewarm jobs in `jobs`). Never for piece bytes.
    pub fn records(&self, name: &str) -> Result<RecordTable> {
        Ok(RecordTable::new(self.index.record_tree(name)?))
    }
}

/// Releases a put's claim on its pieces.
struct Claim<'a> {
    entry: &'a Entry,
    pieces: Vec<u32>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut st = self.entry.state();
        for p in &self.pieces {
            st.writing.remove(p);
        }
    }
}

struct Reservation<'a> {
    store: &'a Store,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.store.reserved.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// What [`Store::import_data`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub stored: u32,
    pub already_present: u32,
    /// Pieces whose bytes in the data directory did not match the release.
    pub bad: Vec<u32>,
}

impl Store {
    /// Copies every missing piece of a stored release from a plain data directory, verifying
    /// each one. Bad pieces are skipped and reported; I/O and capacity errors stop the import.
    pub fn import_data(&self, ih: &InfoHash, data: &popseed_release::DataDir) -> Result<ImportReport> {
        const BATCH_BYTES: u64 = 16 << 20;
        let layout = data.layout().clone();
        let have = self.bitfield(ih)?;
        let mut report = ImportReport::default();
        let mut batch: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0u64;
        let flush = |batch: &mut Vec<(u32, Vec<u8>)>, report: &mut ImportReport| -> Result<()> {
            let refs: Vec<(PieceIndex, &[u8])> = batch.iter().map(|(i, d)| (PieceIndex(*i), d.as_slice())).collect();
            for p in self.put_pieces(ih, &refs)? {
                match p {
                    Put::Stored => report.stored += 1,
                    Put::AlreadyPresent | Put::InProgress => report.already_present += 1,
                }
            }
            batch.clear();
            Ok(())
        };
        for i in 0..layout.piece_count() {
            if have.get(i) {
                report.already_present += 1;
                continue;
            }
            let bytes = data.read_piece(i)?;
            if Some(&piece_hash(&bytes)) != layout.piece_hash(i) {
                report.bad.push(i);
                continue;
            }
            batch_bytes += bytes.len() as u64;
            batch.push((i, bytes));
            if batch_bytes >= BATCH_BYTES {
                flush(&mut batch, &mut report)?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            flush(&mut batch, &mut report)?;
        }
        Ok(report)
    }
}
