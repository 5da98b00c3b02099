//! The part file a download fills, with the SHA-256 of what it holds. Blocking file work:
//! the runner calls it on the blocking pool. What is synced ([`Part::sync`]) is what a
//! resume may trust; the hash state saved with it lets the digest go on without re-reading
//! the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256};

/// A part file and the hash of its `done` bytes.
pub struct Part {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    done: u64,
}

impl Part {
    /// Opens (creating, mode 0600) the part file at `path` to go on after `done` bytes
    /// whose hash state is `state`. What the file holds past `done` (written, never
    /// synced as done) is cut off. A file shorter than `done`, or a state that does not
    /// read back, starts over from nothing.
    pub fn open(path: &Path, done: u64, state: Option<&[u8]>) -> io::Result<Part> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let hasher = state.and_then(|s| {
            SerializedState::<Sha256>::try_from(s)
                .ok()
                .and_then(|s| Sha256::deserialize(&s).ok())
        });
        let mut part = Part {
            path: path.to_owned(),
            file,
            hasher: Sha256::new(),
            done: 0,
        };
        match hasher {
            Some(hasher) if done > 0 && part.file.metadata()?.len() >= done => {
                part.hasher = hasher;
                part.done = done;
                part.file.set_len(done)?;
                part.file.seek(SeekFrom::Start(done))?;
            }
            _ => part.restart()?,
        }
        Ok(part)
    }

    /// Empties the file: the object is fetched from its first byte again.
    pub fn restart(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.hasher = Sha256::new();
        self.done = 0;
        Ok(())
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.done += bytes.len() as u64;
        Ok(())
    }

    /// Bytes in the file.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Makes the bytes written so far durable; returns the hash state after them, to be
    /// saved with [`Part::done`].
    pub fn sync(&mut self) -> io::Result<Vec<u8>> {
        self.file.sync_data()?;
        Ok(self.hasher.serialize().to_vec())
    }

    /// The complete file, synced: its size and SHA-256. The file stays where it is for the
    /// caller to publish or remove.
    pub fn finish(self) -> io::Result<(PathBuf, u64, [u8; 32])> {
        self.file.sync_all()?;
        Ok((self.path, self.done, self.hasher.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_part_hashes_as_if_written_in_one_go() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("1");
        let mut part = Part::open(&path, 0, None).unwrap();
        part.write(b"hello ").unwrap();
        let state = part.sync().unwrap();
        part.write(b"junk not synced").unwrap();
        drop(part);
        let mut part = Part::open(&path, 6, Some(&state)).unwrap();
        assert_eq!(part.done(), 6);
        part.write(b"world").unwrap();
        let (path, size, digest) = part.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(size, 11);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(b"hello world")));
    }

    #[test]
    fn a_file_shorter_than_its_record_or_a_bad_state_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("1");
        std::fs::write(&path, b"abc").unwrap();
        let part = Part::open(&path, 10, Some(&[0; 8])).unwrap();
        assert_eq!(part.done(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
