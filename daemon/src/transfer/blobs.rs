//! The blob store under `<state_dir>/blobs/`: where document bytes live, and the blocking file
//! work on them (hashing, chunk scans, positioned reads and writes). Callers run all of it on
//! the blocking pool.
//!
//! Layout (every name derived here, none taken from a peer or a client):
//! - `uploads/<upload id>.part` + `.json`: bytes streaming in over the control socket.
//! - `staged/<upload id>` + `.json`: uploaded, hashed, ready to be named in a transfer.
//! - `outgoing/<transfer id>/<index>`: a hard link to the staged file (a copy where links fail).
//! - `incoming/<transfer id>/<index>-<sanitised stem>` and `.part` while arriving.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{ManifestDoc, chunk_count, chunk_range};

/// Longest stem kept in an on-disk name.
const MAX_STEM: usize = 64;
/// Read size when hashing a whole file: big enough to keep the hasher busy, small enough to be
/// nothing next to the memory bound.
const HASH_BUF: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

/// What an upload or staged document is, kept next to its bytes so it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub file_name: String,
    pub size: u64,
    pub mime_type: String,
    pub created_ms: u64,
    /// Set once staged: whole hash and chunk hashes (hex, concatenated) at `chunk_size`.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub chunk_size: u32,
    /// Per-chunk hashes (see `manifest::chunk_digest`), hex; empty in metas written before they
    /// were BLAKE3, which are hashed again when sent.
    #[serde(default)]
    pub chunk_hashes_hex: String,
}

fn io_err(path: &Path, action: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{action} {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| io_err(path, "creating directory", e))
}

impl Blobs {
    pub fn new(state_dir: &Path) -> Blobs {
        Blobs {
            root: state_dir.join("blobs"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directories (0700).
    pub fn prepare(&self) -> io::Result<()> {
        for sub in ["uploads", "staged", "outgoing", "incoming"] {
            mkdir(&self.root.join(sub))?;
        }
        Ok(())
    }

    pub fn upload_part(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{id}.part"))
    }
    pub fn upload_meta(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{id}.json"))
    }
    pub fn staged(&self, id: &str) -> PathBuf {
        self.root.join("staged").join(id)
    }
    pub fn staged_meta(&self, id: &str) -> PathBuf {
        self.root.join("staged").join(format!("{id}.json"))
    }
    pub fn outgoing_dir(&self, transfer: &str) -> PathBuf {
        self.root.join("outgoing").join(transfer)
    }
    pub fn outgoing_doc(&self, transfer: &str, index: usize) -> PathBuf {
        self.outgoing_dir(transfer).join(index.to_string())
    }
    pub fn incoming_dir(&self, transfer: &str) -> PathBuf {
        self.root.join("incoming").join(transfer)
    }
    /// Where incoming document `index` lives; `.part` while it is arriving.
    pub fn incoming_doc(&self, transfer: &str, index: usize, original: &str, part: bool) -> PathBuf {
        let mut name = safe_name(index, original);
        if part {
            name.push_str(".part");
        }
        self.incoming_dir(transfer).join(name)
    }

    /// Removes uploads that received nothing for `upload_idle` (abandoned by their client) and
    /// staged documents untouched for `staged_max_age`; returns how many files went. Transfers
    /// hold their own links, so this never takes bytes a transfer still needs.
    pub fn prune_idle(&self, upload_idle: Duration, staged_max_age: Duration) -> usize {
        let mut removed = 0;
        for id in self.upload_ids() {
            if self.upload_idle_for(&id).is_some_and(|idle| idle > upload_idle) {
                for path in [self.upload_part(&id), self.upload_meta(&id)] {
                    if fs::remove_file(path).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        // A part without its meta (a crash between the two writes of `upload_begin`) is never
        // resumable: it goes once idle like the others.
        removed += remove_older(&self.root.join("uploads"), upload_idle, |name| {
            name.strip_suffix(".part")
                .is_some_and(|id| !self.upload_meta(id).exists())
        });
        removed += remove_older(&self.root.join("staged"), staged_max_age, |_| true);
        removed
    }

    /// Ids of the uploads currently open.
    fn upload_ids(&self) -> Vec<String> {
        fs::read_dir(self.root.join("uploads"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How long upload `id` has received nothing (its part file's or meta's last change, the
    /// later one); `None` when it is gone.
    pub fn upload_idle_for(&self, id: &str) -> Option<Duration> {
        [self.upload_part(id), self.upload_meta(id)]
            .iter()
            .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
            .map(|t| t.elapsed().unwrap_or_default())
    }

    /// Uploads currently open (bounded by the caller).
    pub fn open_uploads(&self) -> usize {
        self.upload_ids().len()
    }

    /// Bytes the staging area holds or has promised: open uploads at their announced size, and
    /// staged documents that no transfer links to yet (a linked one shares its bytes with the
    /// transfer, so it costs the staging area nothing).
    pub fn staged_bytes(&self) -> u64 {
        let uploads: u64 = self
            .upload_ids()
            .iter()
            .filter_map(|id| read_meta(&self.upload_meta(id)).ok())
            .map(|m| m.size)
            .sum();
        let staged: u64 = fs::read_dir(self.root.join("staged"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().contains('.'))
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file() && m.nlink() == 1)
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        uploads.saturating_add(staged)
    }

    pub fn mkdir(&self, path: &Path) -> io::Result<()> {
        mkdir(path)
    }
}

pub fn read_meta(path: &Path) -> io::Result<BlobMeta> {
    let bytes = fs::read(path).map_err(|e| io_err(path, "reading", e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// Writes `meta` atomically (temp file + rename), so a crash leaves the old or the new one.
pub fn write_meta(path: &Path, meta: &BlobMeta) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(meta).map_err(io::Error::other)?;
    fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, "writing", e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, "renaming into", e))
}

/// The on-disk name of document `index`: its position plus a sanitised stem of the original name.
/// Only `[A-Za-z0-9._-]` survive, no leading dot, at most 64 bytes; so no separator, no NUL, no
/// `..` path and no markup can reach the file system, whatever the peer wrote.
pub fn safe_name(index: usize, original: &str) -> String {
    let mut stem: String = original
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_STEM)
        .collect();
    while stem.starts_with('.') {
        stem.remove(0);
    }
    if stem.is_empty() {
        stem.push_str("document");
    }
    format!("{index:02}-{stem}")
}

/// Opens for positioned writes, creating it 0600 at `size` bytes (sparse) if missing.
pub fn open_part(path: &Path, size: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, "opening", e))?;
    if f.metadata()?.len() != size {
        f.set_len(size).map_err(|e| io_err(path, "sizing", e))?;
    }
    Ok(f)
}

/// Whole-file SHA-256 (hex) and, when `chunk_size > 0`, every chunk's SHA-256 concatenated.
/// Reads `chunk_size` at a time (or 1 MiB), so memory stays flat whatever the size.
pub fn hash_file(path: &Path, chunk_size: u32) -> io::Result<(String, Vec<u8>, u64)> {
    let mut f = File::open(path).map_err(|e| io_err(path, "opening", e))?;
    let step = if chunk_size > 0 { chunk_size as usize } else { HASH_BUF };
    // Two hashes of the same bytes: the whole-file one runs on a second thread, so staging a
    // large upload takes one hash's time on a machine with two cores. Three buffers circulate
    // (reading, chunk hash, whole hash), so memory stays at three chunks.
    let (to_whole, whole_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(1);
    let (back_tx, back) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        let _ = back_tx.try_send(vec![0u8; step]);
    }
    std::thread::scope(|scope| {
        let whole = scope.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in whole_rx {
                h.update(&buf[..n]);
                let _ = back_tx.send(buf);
            }
            hex::encode(h.finalize())
        });
        let mut chunks = Vec::new();
        let mut total = 0u64;
        let read = loop {
            let Ok(mut buf) = back.recv() else {
                break Err(io::Error::other("the hashing thread stopped"));
            };
            let n = match read_full(&mut f, &mut buf) {
                Ok(n) => n,
                Err(e) => break Err(io_err(path, "reading", e)),
            };
            if n == 0 {
                break Ok(());
            }
            if chunk_size > 0 {
                chunks.extend_from_slice(&super::manifest::chunk_digest(&buf[..n]));
            }
            total += n as u64;
            if to_whole.send((buf, n)).is_err() {
                break Err(io::Error::other("the hashing thread stopped"));
            }
            if n < step {
                break Ok(());
            }
        };
        drop(to_whole);
        let whole = whole
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        read.map(|()| (whole, chunks, total))
    })
}

/// Removes the files in `dir` whose name `pick`s and that were not modified for `max_age`.
fn remove_older(dir: &Path, max_age: Duration, pick: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        if !entry.file_name().to_str().is_some_and(&pick) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Which chunks of `doc` the partial file at `path` already holds, verified against the manifest's
/// chunk hashes. A missing file holds nothing. This is what makes resume safe after a crash: a
/// chunk counts only if its bytes are really there and right.
pub fn scan_part(path: &Path, doc: &ManifestDoc, chunk_size: u32) -> io::Result<Vec<bool>> {
    let n = chunk_count(doc.size, chunk_size) as usize;
    let mut held = vec![false; n];
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(held),
        Err(e) => return Err(io_err(path, "opening", e)),
    };
    if f.metadata()?.len() != doc.size {
        return Ok(held);
    }
    let mut buf = vec![0u8; chunk_size as usize];
    // Chunks never written are holes of the sparse file: skip them without reading or hashing
    // (a fresh 1 GiB part file would otherwise cost a full read and hash of zeros).
    let mut next_data = 0u64;
    for (i, slot) in held.iter_mut().enumerate() {
        let (start, len) = chunk_range(doc.size, chunk_size, i as u64);
        if next_data < start {
            next_data = data_from(&f, start);
        }
        if next_data >= start + len as u64 {
            continue;
        }
        f.read_exact_at(&mut buf[..len], start)
            .map_err(|e| io_err(path, "reading", e))?;
        *slot = super::manifest::chunk_matches(doc, i as u64, &buf[..len]);
    }
    Ok(held)
}

/// The first offset at or after `from` that holds data (`u64::MAX` when none does). Where the
/// file system cannot tell, `from` itself: everything is read then, which is only slower.
fn data_from(f: &File, from: u64) -> u64 {
    use std::os::fd::AsFd;
    let Ok(off) = i64::try_from(from) else { return from };
    match nix::unistd::lseek(f.as_fd(), off, nix::unistd::Whence::SeekData) {
        Ok(at) => u64::try_from(at).unwrap_or(from),
        Err(nix::errno::Errno::ENXIO) => u64::MAX,
        Err(_) => from,
    }
}

/// Reads `len` bytes at `offset` into `buf` (resized), for sending a chunk or a download.
pub fn read_at(f: &File, buf: &mut Vec<u8>, offset: u64, len: usize) -> io::Result<()> {
    // No clear first: a reused buffer of the same length is overwritten, not zeroed again (that
    // memset was 6% of the sender's CPU).
    buf.resize(len, 0);
    f.read_exact_at(buf, offset)
}

/// Hard-links `from` to `to`, copying where the file system refuses links.
pub fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => fs::copy(from, to)
            .map(|_| ())
            .map_err(|e| io_err(to, "copying into", e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::transfer::manifest::sha256_hex;

    #[test]
    fn hostile_names_stay_inside_the_folder() {
        let long = "a".repeat(4096);
        for (name, want_prefix) in [
            ("../../x", "00-_.._x"),
            ("a\0b", "00-a_b"),
            ("<img onerror=alert(1)>", "00-_img_onerror_alert_1__"),
            ("", "00-document"),
            ("...", "00-document"),
            ("контракт.pdf", "00-________.pdf"),
            (long.as_str(), "00-aaaa"),
        ] {
            let s = safe_name(0, name);
            assert!(s.starts_with(want_prefix), "{name:?} -> {s}");
            assert!(s.len() <= MAX_STEM + 3);
            assert!(!s.contains('/') && !s.contains('\0') && !s.contains('<'));
            let p = Path::new("/base").join(&s);
            assert_eq!(p.parent(), Some(Path::new("/base")));
        }
    }

    #[test]
    fn resume_bitmap_comes_from_verified_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let chunk = 4096u32;
        let src = dir.path().join("src");
        fs::write(&src, &data).unwrap();
        let (whole, chunks, total) = hash_file(&src, chunk).unwrap();
        assert_eq!(whole, sha256_hex(&data));
        assert_eq!(total, 20_000);
        let doc = ManifestDoc {
            id: "d".into(),
            file_name: "f".into(),
            size: data.len() as u64,
            mime_type: "x".into(),
            sha256: whole,
            chunk_hashes: chunks,
        };
        let part = dir.path().join("p.part");
        assert_eq!(scan_part(&part, &doc, chunk).unwrap(), vec![false; 5]);
        // A partial file holding chunks 0 and 3 (the last one is short), and garbage in chunk 1.
        let f = open_part(&part, doc.size).unwrap();
        f.write_all_at(&data[..4096], 0).unwrap();
        f.write_all_at(&[1u8; 4096], 4096).unwrap();
        f.write_all_at(&data[12288..16384], 12288).unwrap();
        assert_eq!(
            scan_part(&part, &doc, chunk).unwrap(),
            vec![true, false, false, true, false]
        );
        f.write_all_at(&data[16384..], 16384).unwrap();
        assert_eq!(
            scan_part(&part, &doc, chunk).unwrap(),
            vec![true, false, false, true, true]
        );
    }
}
