//! Per-agent `(epoch, seq)` numbering, persisted in the state directory so a restarted agent
//! never reuses a sequence number (the collector would drop the new batch as a duplicate).
//!
//! File `sequence` holds one line: `<epoch> <last_seq>`, rewritten atomically (temporary file,
//! fsync, rename) after each batch is appended to the spool. A sequence number is *used* only once
//! its batch is in the spool, so a crash between the two leaves no gap: on start the agent takes
//! the larger of this file's `last_seq` and the spool's (see `Agent::new`). A missing file starts
//! a new epoch (the current Unix time, so epochs increase across re-installs).

use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Sequencer {
    path: PathBuf,
    epoch: u64,
    last: u64,
}

impl Sequencer {
    /// Opens or creates the sequence file in `dir` (created if missing).
    ///
    /// # Errors
    /// If the directory or file cannot be created or read, or the file is corrupt.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("sequence");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut it = text.split_whitespace().map(str::parse::<u64>);
                match (it.next(), it.next()) {
                    (Some(Ok(epoch)), Some(Ok(last))) => Ok(Self { path, epoch, last }),
                    _ => Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} is corrupt (expected '<epoch> <seq>'); move it away to start a new epoch",
                            path.display()
                        ),
                    )),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs());
                let s = Self { path, epoch, last: 0 };
                s.persist()?;
                Ok(s)
            }
            Err(e) => Err(e),
        }
    }

    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number the next batch gets.
    #[must_use]
    pub fn next(&self) -> u64 {
        self.last + 1
    }

    /// Records that `seq` is used (its batch is in the spool).
    ///
    /// # Errors
    /// If the state file cannot be written.
    pub fn commit(&mut self, seq: u64) -> std::io::Result<()> {
        self.last = self.last.max(seq);
        self.persist()
    }

    /// Never hand out a number at or below `last` (e.g. the spool's newest record).
    pub fn raise_to(&mut self, last: u64) {
        self.last = self.last.max(last);
    }

    fn persist(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{} {}\n", self.epoch, self.last).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_survives_reopen_and_never_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sequencer::open(dir.path()).unwrap();
        let epoch = s.epoch();
        assert_eq!(s.next(), 1);
        s.commit(1).unwrap();
        s.commit(2).unwrap();
        drop(s);
        let mut s = Sequencer::open(dir.path()).unwrap();
        assert_eq!(s.epoch(), epoch);
        assert_eq!(s.next(), 3);
        s.raise_to(9);
        assert_eq!(s.next(), 10);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sequence"), "garbage").unwrap();
        let e = Sequencer::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("sequence is corrupt"), "{e}");
    }
}
