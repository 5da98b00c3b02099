//! `OpenValue`'s answer: one leaf's value as a read-only file descriptor. A large object
//! (DM-HLF-022) is its own file, opened read-only ([`Objects::open`]); any other value is
//! put in a sealed memfd (no write, grow or shrink; the seals themselves sealed), holding
//! `bin` and `b64` values as their raw bytes and every other format as its text form. Either
//! way the caller reads the bytes without them passing through the bus message, and cannot
//! change what omadmd keeps.

use std::fs::File;
use std::io::{self, Seek as _, SeekFrom, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use crate::authority::{AccessError, Found};
use crate::store::Objects;
use crate::tree::value::Value;

/// Why a value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not one leaf: several nodes, or an interior node.
    #[error("{0}")]
    NotALeaf(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("{uri}: cannot open its large object file: {source}")]
    Object { uri: String, source: io::Error },
    #[error("{uri}: a large object, but this store keeps no object files")]
    NoObjects { uri: String },
    #[error("{uri}: cannot make a sealed memory file of its value: {source}")]
    Memfd { uri: String, source: io::Error },
}

/// The one leaf `found` holds, as a read-only descriptor positioned at its first byte;
/// `uri` is what the caller asked for (for messages), `objects` where large objects live.
pub fn open(uri: &str, found: Vec<Found>, objects: Option<&Objects>) -> Result<OwnedFd, OpenError> {
    let [found] = <[Found; 1]>::try_from(found).map_err(|all| {
        OpenError::NotALeaf(format!(
            "{uri}: names {} nodes; OpenValue takes one leaf",
            all.len()
        ))
    })?;
    let value = found.value.ok_or_else(|| {
        OpenError::NotALeaf(format!(
            "{uri}: {} is an interior node; OpenValue takes one leaf",
            found.addr
        ))
    })?;
    match value {
        Value::Object(object) => {
            let objects = objects.ok_or_else(|| OpenError::NoObjects {
                uri: uri.to_owned(),
            })?;
            return objects
                .open(&object)
                .map(OwnedFd::from)
                .map_err(|source| OpenError::Object {
                    uri: uri.to_owned(),
                    source,
                });
        }
        Value::Bin(bytes) | Value::B64(bytes) => sealed(&bytes),
        other => sealed(other.to_text().as_bytes()),
    }
    .map_err(|source| OpenError::Memfd {
        uri: uri.to_owned(),
        source,
    })
}

/// A memfd holding `bytes`, sealed against every change, positioned at its start.
fn sealed(bytes: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: the name is a NUL-terminated string that outlives the call.
    let raw = unsafe {
        libc::memfd_create(
            c"omadmd-value".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor memfd_create just opened, owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(raw) };
    file.write_all(bytes)?;
    file.seek(SeekFrom::Start(0))?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor this function owns; F_ADD_SEALS takes an int.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::os::unix::fs::FileExt as _;

    use super::*;
    use crate::tree::uri::NodeAddr;
    use crate::tree::value::ObjectRef;

    fn leaf(value: Option<Value>) -> Vec<Found> {
        vec![Found {
            addr: NodeAddr::root("urn:oma:mo:x:1.0", "1").child("Data"),
            value,
        }]
    }

    fn read(fd: OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        File::from(fd).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn inline_values_come_as_their_bytes_or_text_in_a_sealed_memfd() {
        let fd = open("u", leaf(Some(Value::Bin(vec![0, 1, 255]))), None).unwrap();
        assert_eq!(read(fd), [0, 1, 255]);
        let fd = open("u", leaf(Some(Value::B64(b"raw".to_vec()))), None).unwrap();
        assert_eq!(read(fd), b"raw");
        let fd = open("u", leaf(Some(Value::Int(-42))), None).unwrap();
        assert_eq!(read(fd), b"-42");
        let fd = open("u", leaf(Some(Value::Null)), None).unwrap();
        assert_eq!(read(fd), b"");

        let fd = open("u", leaf(Some(Value::Chr("text".into()))), None).unwrap();
        let file = File::from(fd);
        assert!(file.write_at(b"X", 0).is_err(), "sealed against writing");
        assert!(file.set_len(1).is_err(), "sealed against shrinking");
        assert!(file.set_len(100).is_err(), "sealed against growing");
        let mut text = String::new();
        (&file).read_to_string(&mut text).unwrap();
        assert_eq!(text, "text");
    }

    #[test]
    fn a_large_object_is_its_file_opened_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::beside(&dir.path().join("store.db"));
        objects.create_dirs().unwrap();
        let object = ObjectRef {
            size: 5,
            sha256: [9; 32],
        };
        std::fs::write(objects.path(&object), b"large").unwrap();
        let fd = open("u", leaf(Some(Value::Object(object))), Some(&objects)).unwrap();
        let file = File::from(fd);
        assert!(file.write_at(b"X", 0).is_err(), "opened read-only");
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"large");

        let missing = ObjectRef {
            size: 5,
            sha256: [8; 32],
        };
        let err = open("u", leaf(Some(Value::Object(missing))), Some(&objects)).unwrap_err();
        assert!(matches!(err, OpenError::Object { .. }), "{err}");
        let err = open("u", leaf(Some(Value::Object(object))), None).unwrap_err();
        assert!(matches!(err, OpenError::NoObjects { .. }), "{err}");
    }

    #[test]
    fn only_one_leaf_is_opened() {
        let err = open("u", leaf(None), None).unwrap_err();
        assert!(err.to_string().contains("interior"), "{err}");
        let mut two = leaf(Some(Value::Int(1)));
        two.extend(leaf(Some(Value::Int(2))));
        let err = open("u/*", two, None).unwrap_err();
        assert!(err.to_string().contains("names 2 nodes"), "{err}");
        let err = open("u/*", Vec::new(), None).unwrap_err();
        assert!(matches!(err, OpenError::NotALeaf(_)), "{err}");
    }
}
