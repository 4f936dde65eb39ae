//! The durable spool: every sealed batch is written here, fsynced, and only then sent; it is
//! removed only when the collector acknowledges its `(epoch, seq)` after committing it. A crash
//! (kill -9, OOM, panic) or a power loss loses nothing that `append` returned for, because
//! `append` returns after `fdatasync`.
//!
//! On-disk format (directory `<state_dir>/spool/`):
//!
//! ```text
//! seg-<first seq, 20 digits>.log   append-only segments, rotated at `segment_bytes`
//!   record := len: u32 LE | crc32: u32 LE | body[len]
//!   body   := kind: u8 (BatchKind) | epoch: u64 LE | seq: u64 LE | payload (protobuf Batch)
//!   crc32 is CRC-32 (IEEE) of body.
//! acked                            first line "<epoch> <seq> <dropped_total>": every record up to
//!                                  and including (epoch, seq) is delivered; then one line
//!                                  "<epoch> <seq> <segment>" per record above that watermark
//!                                  already acknowledged or dropped. Rewritten atomically.
//! ```
//! Opening scans every segment. A record that is cut short or fails its CRC ends the valid part of
//! its segment (a torn write from a power loss): the rest of that segment is counted as lost, the
//! file is truncated there, and later segments are still read. The loss is counted, never silent.
//!
//! Size cap: when the spool holds more than `max_bytes`, the oldest *telemetry* batches are
//! dropped (counted, reason `spool_full`); inventory and mixed batches are never dropped. Their
//! records are carried over into the current segment when the segment that held them is removed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use groundtruth_proto::v1::{Batch, BatchKind};
use prost::Message as _;

const HEADER: usize = 8;
const BODY_PREFIX: usize = 1 + 8 + 8;
/// Largest record accepted on read; anything larger is corruption (batches are far smaller).
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Spool limits.
#[derive(Debug, Clone, Copy)]
pub struct SpoolLimits {
    /// Total bytes of unacknowledged records before telemetry is dropped.
    pub max_bytes: u64,
    /// Segment size at which a new segment is started.
    pub segment_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where an unacknowledged record lives.
#[derive(Debug, Clone, Copy)]
struct Entry {
    segment: u64,
    offset: u64,
    len: u32,
    kind: i32,
}

/// What opening the spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged batches found intact.
    pub pending: usize,
    /// Records (or partial records) lost to torn writes or corruption.
    pub lost_records: u64,
    pub lost_bytes: u64,
}

/// The spool. Not shared between processes; one agent owns its state directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    /// Unacknowledged records by (epoch, seq).
    index: BTreeMap<(u64, u64), Entry>,
    /// Segment id (its first seq) → live record count and file size.
    segments: BTreeMap<u64, (usize, u64)>,
    current: Option<(u64, File)>,
    acked: (u64, u64),
    /// Records above the watermark already acknowledged or dropped → their segment.
    removed: BTreeMap<(u64, u64), u64>,
    dropped_total: u64,
    bytes: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering what is on disk.
    ///
    /// # Errors
    /// If the directory cannot be created or read.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<(Self, Recovery), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let ack_path = dir.join("acked");
        let text = std::fs::read_to_string(&ack_path).unwrap_or_default();
        let mut lines = text.lines().map(|l| {
            l.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect::<Vec<u64>>()
        });
        let (acked, dropped_total) = match lines.next() {
            Some(v) if v.len() == 3 => ((v[0], v[1]), v[2]),
            _ => ((0, 0), 0),
        };
        let removed = lines
            .filter(|v| v.len() == 3)
            .map(|v| ((v[0], v[1]), v[2]))
            .collect();
        let mut spool = Self {
            dir: dir.to_owned(),
            limits,
            index: BTreeMap::new(),
            segments: BTreeMap::new(),
            current: None,
            acked,
            removed,
            dropped_total,
            bytes: 0,
        };
        let mut recovery = Recovery::default();
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        for id in ids {
            spool.scan_segment(id, &mut recovery)?;
        }
        spool.gc()?;
        recovery.pending = spool.index.len();
        Ok((spool, recovery))
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("seg-{id:020}.log"))
    }

    fn scan_segment(&mut self, id: u64, recovery: &mut Recovery) -> Result<(), SpoolError> {
        let path = self.segment_path(id);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io(&path))?;
        let mut pos = 0usize;
        let mut live = 0usize;
        while pos < data.len() {
            let Some(rec) = parse_record(&data[pos..]) else {
                // Torn or corrupt from here on: count it and cut it off.
                let lost = (data.len() - pos) as u64;
                recovery.lost_bytes += lost;
                recovery.lost_records += 1;
                tracing::error!(segment = %path.display(), offset = pos, lost_bytes = lost, "Spool segment has a torn or corrupt tail; it is cut off and counted as lost.");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(pos as u64).and_then(|()| f.sync_all()))
                    .map_err(io(&path))?;
                data.truncate(pos);
                break;
            };
            let key = (rec.epoch, rec.seq);
            if key > self.acked && !self.removed.contains_key(&key) {
                self.index.insert(
                    key,
                    Entry {
                        segment: id,
                        offset: pos as u64,
                        len: rec.total_len,
                        kind: rec.kind,
                    },
                );
                self.bytes += u64::from(rec.total_len);
                live += 1;
            }
            pos += rec.total_len as usize;
        }
        self.segments.insert(id, (live, data.len() as u64));
        Ok(())
    }

    /// Appends a batch durably (fsynced before returning), enforcing the size cap.
    ///
    /// # Errors
    /// If the write or sync fails (e.g. disk full); the batch is then not in the spool.
    pub fn append(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let payload = batch.encode_to_vec();
        let record = encode_record(batch.kind, batch.epoch, batch.seq, &payload);
        self.write_record(batch.epoch, batch.seq, batch.kind, &record)?;
        self.enforce_cap()
    }

    fn write_record(&mut self, epoch: u64, seq: u64, kind: i32, record: &[u8]) -> Result<(), SpoolError> {
        let rotate = match &self.current {
            None => true,
            Some((id, _)) => self
                .segments
                .get(id)
                .is_none_or(|s| s.1 >= self.limits.segment_bytes),
        };
        if rotate {
            let id = seq.max(self.segments.keys().next_back().map_or(0, |k| k + 1));
            let path = self.segment_path(id);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            // Make the new file's directory entry durable too.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
            self.segments.entry(id).or_insert((0, 0));
            self.current = Some((id, file));
        }
        let (id, file) = self
            .current
            .as_mut()
            .expect("invariant: a current segment was just ensured");
        let id = *id;
        let seg = self
            .segments
            .get_mut(&id)
            .expect("invariant: the current segment is registered");
        let offset = seg.1;
        let path = self.dir.join(format!("seg-{id:020}.log"));
        file.write_all(record)
            .and_then(|()| file.sync_data())
            .map_err(io(&path))?;
        seg.0 += 1;
        seg.1 += record.len() as u64;
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.index.insert(
            (epoch, seq),
            Entry {
                segment: id,
                offset,
                len,
                kind,
            },
        );
        self.bytes += u64::from(len);
        Ok(())
    }

    /// Drops the oldest telemetry batches while the spool is over its cap.
    fn enforce_cap(&mut self) -> Result<(), SpoolError> {
        while self.bytes > self.limits.max_bytes {
            let victim = self
                .index
                .iter()
                .find(|(_, e)| e.kind == BatchKind::Telemetry as i32)
                .map(|(k, _)| *k);
            let Some(key) = victim else {
                tracing::warn!(
                    bytes = self.bytes,
                    cap = self.limits.max_bytes,
                    "Spool is over its cap with inventory only; nothing is dropped."
                );
                break;
            };
            self.remove(key);
            self.dropped_total += 1;
            tracing::error!(
                epoch = key.0,
                seq = key.1,
                reason = "spool_full",
                dropped_total = self.dropped_total,
                "Dropped the oldest telemetry batch: the spool is full."
            );
        }
        self.persist_ack()?;
        self.gc()
    }

    fn remove(&mut self, key: (u64, u64)) {
        if let Some(e) = self.index.remove(&key) {
            self.removed.insert(key, e.segment);
            self.bytes -= u64::from(e.len);
            if let Some(s) = self.segments.get_mut(&e.segment) {
                s.0 = s.0.saturating_sub(1);
            }
        }
    }

    /// The oldest unacknowledged batches, in (epoch, seq) order, at most `limit`.
    ///
    /// # Errors
    /// If a segment cannot be read. A record that no longer decodes is dropped and counted.
    pub fn pending(&mut self, limit: usize) -> Result<Vec<Batch>, SpoolError> {
        let keys: Vec<((u64, u64), Entry)> = self.index.iter().take(limit).map(|(k, e)| (*k, *e)).collect();
        let mut out = Vec::with_capacity(keys.len());
        for (key, e) in keys {
            let path = self.segment_path(e.segment);
            let mut buf = vec![0u8; e.len as usize];
            File::open(&path)
                .and_then(|mut f| {
                    f.seek(SeekFrom::Start(e.offset))
                        .and_then(|_| f.read_exact(&mut buf))
                })
                .map_err(io(&path))?;
            match parse_record(&buf).and_then(|r| Batch::decode(r.payload).ok()) {
                Some(b) => out.push(b),
                None => {
                    tracing::error!(seq = key.1, segment = %path.display(), "Spooled batch no longer decodes; dropped and counted.");
                    self.remove(key);
                    self.dropped_total += 1;
                }
            }
        }
        Ok(out)
    }

    /// Marks a batch delivered (committed, duplicate or rejected by the collector).
    ///
    /// # Errors
    /// If the ack state cannot be written.
    pub fn ack(&mut self, epoch: u64, seq: u64) -> Result<(), SpoolError> {
        self.remove((epoch, seq));
        // Everything below the oldest still-pending record is delivered.
        let watermark = match self.index.keys().next() {
            Some(&(e, s)) if s > 1 => (e, s - 1),
            Some(&(e, _)) => (e.saturating_sub(1), u64::MAX),
            None => self.acked.max((epoch, seq)),
        };
        if watermark > self.acked {
            self.acked = watermark;
        }
        let acked = self.acked;
        self.removed.retain(|k, _| *k > acked);
        self.persist_ack()?;
        self.gc()
    }

    fn persist_ack(&self) -> Result<(), SpoolError> {
        let path = self.dir.join("acked");
        let tmp = self.dir.join("acked.tmp");
        let mut text = format!("{} {} {}\n", self.acked.0, self.acked.1, self.dropped_total);
        for ((epoch, seq), segment) in &self.removed {
            text.push_str(&format!("{epoch} {seq} {segment}\n"));
        }
        File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io(&path))
    }

    /// Removes segments without live records, and forgets removal marks of records in them.
    fn gc(&mut self) -> Result<(), SpoolError> {
        let current = self.current.as_ref().map(|(id, _)| *id);
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(id, (live, _))| *live == 0 && Some(**id) != current)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            let path = self.segment_path(id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            self.segments.remove(&id);
        }
        let segments = &self.segments;
        self.removed.retain(|_, seg| segments.contains_key(seg));
        Ok(())
    }

    /// The newest sequence number this spool has seen in `epoch` (appended, acknowledged or
    /// dropped), 0 if none.
    #[must_use]
    pub fn last_seq(&self, epoch: u64) -> u64 {
        let in_index = self
            .index
            .keys()
            .chain(self.removed.keys())
            .filter(|k| k.0 == epoch)
            .map(|k| k.1)
            .max();
        let acked = (self.acked.0 == epoch).then_some(self.acked.1);
        in_index.max(acked).unwrap_or(0)
    }

    /// Unacknowledged batches.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of unacknowledged records.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Batches dropped over the spool's lifetime (cap or corruption).
    #[must_use]
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

struct Parsed<'a> {
    total_len: u32,
    kind: i32,
    epoch: u64,
    seq: u64,
    payload: &'a [u8],
}

fn encode_record(kind: i32, epoch: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_PREFIX + payload.len());
    body.push(u8::try_from(kind).unwrap_or(0));
    body.extend_from_slice(&epoch.to_le_bytes());
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(payload);
    let mut rec = Vec::with_capacity(HEADER + body.len());
    rec.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    rec.extend_from_slice(&body);
    rec
}

/// Fuzzing entry point (`fuzz/` workspace and the corpus replay test): walks `data` as a
/// segment file's contents, record by record, the way recovery does. Returns the number of
/// valid records before the first invalid one. Not an API.
#[doc(hidden)]
#[must_use]
pub fn fuzz_parse_records(data: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Some(p) = data.get(at..).and_then(parse_record) {
        let _ = (p.kind, p.epoch, p.seq, p.payload.len());
        at += p.total_len as usize;
        n += 1;
    }
    n
}

/// Parses one record at the start of `data`; `None` if it is cut short, too large or corrupt.
fn parse_record(data: &[u8]) -> Option<Parsed<'_>> {
    let len = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    if !(BODY_PREFIX..=MAX_RECORD).contains(&len) {
        return None;
    }
    let body = data.get(HEADER..HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some(Parsed {
        total_len: u32::try_from(HEADER + len).ok()?,
        kind: i32::from(body[0]),
        epoch: u64::from_le_bytes(body[1..9].try_into().ok()?),
        seq: u64::from_le_bytes(body[9..17].try_into().ok()?),
        payload: &body[BODY_PREFIX..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundtruth_proto::v1::AgentInfo;

    fn batch(seq: u64, kind: BatchKind, filler: usize) -> Batch {
        Batch {
            agent: Some(AgentInfo {
                agent_id: "a".repeat(filler.max(1)),
                ..Default::default()
            }),
            epoch: 7,
            seq,
            kind: kind as i32,
            ..Default::default()
        }
    }

    fn seqs(s: &mut Spool) -> Vec<u64> {
        s.pending(usize::MAX).unwrap().iter().map(|b| b.seq).collect()
    }

    #[test]
    fn appended_batches_survive_reopen_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, r) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        assert_eq!(r, Recovery::default());
        for seq in 1..=5 {
            s.append(&batch(seq, BatchKind::Telemetry, 10)).unwrap();
        }
        s.ack(7, 1).unwrap();
        s.ack(7, 2).unwrap();
        drop(s);
        let (mut s, r) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        assert_eq!((r.pending, r.lost_records), (3, 0));
        assert_eq!(seqs(&mut s), [3, 4, 5]);
        for seq in 3..=5 {
            s.ack(7, seq).unwrap();
        }
        assert!(s.is_empty());
        drop(s);
        let (s, _) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn out_of_order_ack_keeps_the_unacked_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        for seq in 1..=3 {
            s.append(&batch(seq, BatchKind::Telemetry, 10)).unwrap();
        }
        s.ack(7, 2).unwrap();
        drop(s);
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        assert_eq!(seqs(&mut s), [1, 3]);
        s.ack(7, 1).unwrap();
        s.ack(7, 3).unwrap();
        drop(s);
        let (s, _) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn torn_tail_at_every_offset_keeps_every_whole_record_and_counts_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        for seq in 1..=3 {
            s.append(&batch(seq, BatchKind::Telemetry, 40)).unwrap();
        }
        drop(s);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        let full = std::fs::read(&seg).unwrap();
        let rec = full.len() / 3;
        for cut in (2 * rec + 1)..full.len() {
            std::fs::write(&seg, &full[..cut]).unwrap();
            let (mut s, r) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
            assert_eq!(seqs(&mut s), [1, 2], "cut at {cut}");
            assert_eq!(
                (r.lost_records, r.lost_bytes),
                (1, (cut - 2 * rec) as u64),
                "cut at {cut}"
            );
            // The torn tail was cut off: the next append lands on a clean boundary.
            s.append(&batch(9, BatchKind::Telemetry, 5)).unwrap();
            drop(s);
            let (mut s, r) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
            assert_eq!((seqs(&mut s), r.lost_records), (vec![1, 2, 9], 0));
            drop(s);
            for e in std::fs::read_dir(dir.path()).unwrap() {
                let p = e.unwrap().path();
                if p != seg && p.extension().is_some_and(|x| x == "log") {
                    std::fs::remove_file(p).unwrap();
                }
            }
            std::fs::write(&seg, &full).unwrap();
        }
    }

    #[test]
    fn flipped_bit_is_detected_by_crc() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        for seq in 1..=2 {
            s.append(&batch(seq, BatchKind::Telemetry, 40)).unwrap();
        }
        drop(s);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        let mut data = std::fs::read(&seg).unwrap();
        let last = data.len() - 3;
        data[last] ^= 0x10;
        std::fs::write(&seg, &data).unwrap();
        let (mut s, r) = Spool::open(dir.path(), SpoolLimits::default()).unwrap();
        assert_eq!(seqs(&mut s), [1]);
        assert_eq!(r.lost_records, 1);
    }

    #[test]
    fn cap_drops_oldest_telemetry_never_inventory_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 1000,
            segment_bytes: 300,
        };
        let (mut s, _) = Spool::open(dir.path(), limits).unwrap();
        s.append(&batch(1, BatchKind::Inventory, 200)).unwrap();
        for seq in 2..=8 {
            s.append(&batch(seq, BatchKind::Telemetry, 200)).unwrap();
        }
        assert!(s.bytes() <= 1000, "{}", s.bytes());
        let kept = seqs(&mut s);
        assert_eq!(kept[0], 1, "inventory kept: {kept:?}");
        assert_eq!(*kept.last().unwrap(), 8, "newest kept: {kept:?}");
        let dropped = 8 - kept.len() as u64;
        assert!(dropped > 0);
        assert_eq!(s.dropped_total(), dropped);
        // The drop count survives a restart.
        drop(s);
        let (s, _) = Spool::open(dir.path(), limits).unwrap();
        assert_eq!(s.dropped_total(), dropped);
        assert_eq!(s.len(), kept.len());
    }

    #[test]
    fn segments_rotate_and_are_deleted_when_fully_acked() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_bytes: 1 << 20,
            segment_bytes: 200,
        };
        let (mut s, _) = Spool::open(dir.path(), limits).unwrap();
        for seq in 1..=10 {
            s.append(&batch(seq, BatchKind::Telemetry, 100)).unwrap();
        }
        let count = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
                .count()
        };
        assert!(count() >= 5, "{}", count());
        for seq in 1..=10 {
            s.ack(7, seq).unwrap();
        }
        assert_eq!(count(), 1, "only the current segment remains");
    }

    #[test]
    fn parse_record_never_panics_on_garbage() {
        let mut x: u32 = 12345;
        for n in 0..2000usize {
            let len = n % 64;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x.to_le_bytes()[0]
                })
                .collect();
            let _ = parse_record(&data);
        }
    }
}
