//! [`TrustStore`]: the trust anchors of [`Trust::Roots`](super::Trust::Roots) — the
//! operating system's trust store plus `[tls] extra_ca_files` — loaded once per process and
//! reloaded when they change.
//!
//! Reading the system store (hundreds of certificates) for every session, DEFAULT fetch and
//! SUB delivery is wasted work; never reading it again would miss a CA added or removed by
//! `update-ca-certificates`. So the loaded anchors are kept with a *stamp* of the files they
//! came from (each watched path's inode, size and modification time, and for a directory
//! also those of its entries), and at most once per [`RELOAD_CHECK`] the stamp is taken
//! again: if it differs, the anchors are loaded anew and callers get a new
//! `Arc<RootCertStore>` (so a [`ClientCache`](super::ClientCache) sees that its client is
//! stale). Checking costs a few `stat` calls; a change takes effect within
//! [`RELOAD_CHECK`].
//!
//! Watched system paths: those named by `SSL_CERT_FILE` and `SSL_CERT_DIR` (`:`-separated)
//! when set — as `rustls-native-certs` reads them —, else the usual locations of Debian,
//! Fedora, Alpine and Arch (`/etc/ssl/certs`, `/etc/ssl/cert.pem`, `/etc/pki/tls/certs`,
//! `/etc/pki/ca-trust/extracted/pem`); missing ones count as "absent" in the stamp.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

use super::{TransportError, certs};

/// How often, at most, the watched files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(30);

/// Reads the system's certificates (errors are logged by the reader).
type SystemLoader = Box<dyn Fn() -> Vec<CertificateDer<'static>> + Send + Sync>;

/// The process-wide trust store of the operating system.
pub(crate) fn system() -> &'static Arc<TrustStore> {
    static SYSTEM: LazyLock<Arc<TrustStore>> = LazyLock::new(|| {
        Arc::new(TrustStore::new(
            system_paths(),
            RELOAD_CHECK,
            Box::new(native_certs),
        ))
    });
    &SYSTEM
}

/// The system's trust anchors plus extra CA files, loaded lazily, reloaded on change.
pub struct TrustStore {
    /// System paths whose change means "reload".
    watched: Vec<PathBuf>,
    interval: Duration,
    load_system: SystemLoader,
    /// Per list of extra CA files (in practice one: the configuration's).
    loaded: Mutex<HashMap<Vec<PathBuf>, Loaded>>,
}

struct Loaded {
    stamp: Stamp,
    checked: Instant,
    roots: Arc<RootCertStore>,
}

/// What a set of files looked like: per path, `None` when absent, else its identity and for
/// a directory its entries'.
#[derive(Debug, PartialEq, Eq)]
struct Stamp(Vec<(PathBuf, Option<FileId>)>);

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct FileId {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(meta: &Metadata) -> FileId {
        FileId {
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

impl Stamp {
    fn take(paths: &[PathBuf]) -> Stamp {
        let mut out = Vec::new();
        for path in paths {
            let meta = std::fs::metadata(path).ok();
            out.push((path.clone(), meta.as_ref().map(FileId::of)));
            if meta.is_some_and(|m| m.is_dir()) {
                let mut entries: Vec<_> = std::fs::read_dir(path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                entries.sort();
                for entry in entries {
                    let id = std::fs::metadata(&entry).ok().map(|m| FileId::of(&m));
                    out.push((entry, id));
                }
            }
        }
        Stamp(out)
    }
}

impl TrustStore {
    /// A store whose system part is read by `load_system` and changes with the files at
    /// `watched`, checked at most once per `interval`.
    pub fn new(watched: Vec<PathBuf>, interval: Duration, load_system: SystemLoader) -> Self {
        TrustStore {
            watched,
            interval,
            load_system,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The system anchors plus those of `extra_ca_files`: the same `Arc` as last time unless
    /// a watched file (or an extra file) changed since. Reads files on a miss or a check:
    /// call it where blocking is allowed. An unreadable or certificate-less extra file is
    /// [`TransportError::Settings`].
    pub fn roots(&self, extra_ca_files: &[PathBuf]) -> Result<Arc<RootCertStore>, TransportError> {
        let now = Instant::now();
        {
            let loaded = self.lock();
            if let Some(l) = loaded.get(extra_ca_files)
                && now.duration_since(l.checked) < self.interval
            {
                return Ok(l.roots.clone());
            }
        }
        let paths: Vec<PathBuf> = self.watched.iter().chain(extra_ca_files).cloned().collect();
        let stamp = Stamp::take(&paths);
        let mut loaded = self.lock();
        if let Some(l) = loaded.get_mut(extra_ca_files)
            && l.stamp == stamp
        {
            l.checked = now;
            return Ok(l.roots.clone());
        }
        let roots = Arc::new(self.load(extra_ca_files)?);
        if loaded.contains_key(extra_ca_files) {
            tracing::info!(
                "TLS trust store changed: {} trust anchor(s) now",
                roots.len()
            );
        }
        loaded.insert(
            extra_ca_files.to_vec(),
            Loaded {
                stamp,
                checked: now,
                roots: roots.clone(),
            },
        );
        Ok(roots)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<PathBuf>, Loaded>> {
        // A panic while holding the lock leaves at worst a stale entry: keep using it.
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the system's certificates and the extra files.
    fn load(&self, extra_ca_files: &[PathBuf]) -> Result<RootCertStore, TransportError> {
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates((self.load_system)());
        if ignored > 0 {
            tracing::warn!("system trust store: {ignored} certificate(s) could not be used");
        }
        tracing::debug!("system trust store: {added} trust anchor(s)");
        for path in extra_ca_files {
            add_file(&mut roots, path)?;
        }
        if roots.is_empty() {
            tracing::warn!(
                "no TLS trust anchors: the system trust store is empty and no extra CA files \
                 are configured; every server certificate will be refused"
            );
        }
        Ok(roots)
    }
}

/// Adds every certificate of the PEM file at `path`.
fn add_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TransportError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| TransportError::Settings(format!("extra CA file {}: {e}", path.display())))?;
    let what = format!("extra CA file {}", path.display());
    for (i, cert) in certs::parse_certs(&pem, &what)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            TransportError::Settings(format!("{what}: certificate #{} is unusable: {e}", i + 1))
        })?;
    }
    Ok(())
}

/// The operating system's certificates, as `rustls-native-certs` finds them.
fn native_certs() -> Vec<CertificateDer<'static>> {
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!("system trust store: {e}");
    }
    native.certs
}

/// The system paths to watch (see the module documentation).
fn system_paths() -> Vec<PathBuf> {
    let mut from_env: Vec<PathBuf> = Vec::new();
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        from_env.push(file.into());
    }
    if let Some(dirs) = std::env::var_os("SSL_CERT_DIR") {
        from_env.extend(std::env::split_paths(&dirs));
    }
    if !from_env.is_empty() {
        return from_env;
    }
    [
        "/etc/ssl/certs",
        "/etc/ssl/cert.pem",
        "/etc/pki/tls/certs",
        "/etc/pki/ca-trust/extracted/pem",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn ca_pem() -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["ca".to_string()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    /// A trust store whose "system" part is every `*.pem` in `dir`.
    fn store_in(dir: &Path, interval: Duration) -> TrustStore {
        let root = dir.to_owned();
        TrustStore::new(
            vec![dir.to_owned()],
            interval,
            Box::new(move || {
                let mut out = Vec::new();
                for entry in std::fs::read_dir(&root).unwrap().flatten() {
                    let pem = std::fs::read_to_string(entry.path()).unwrap();
                    out.extend(certs::parse_certs(&pem, "t").unwrap());
                }
                out
            }),
        )
    }

    #[test]
    fn loaded_once_and_reloaded_when_the_store_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.pem"), ca_pem()).unwrap();
        let store = store_in(dir.path(), Duration::ZERO);
        let first = store.roots(&[]).unwrap();
        assert_eq!(first.len(), 1);
        assert!(Arc::ptr_eq(&first, &store.roots(&[]).unwrap()), "unchanged");

        std::fs::write(dir.path().join("b.pem"), ca_pem()).unwrap();
        let added = store.roots(&[]).unwrap();
        assert_eq!(added.len(), 2, "a CA added to the store is picked up");
        assert!(Arc::ptr_eq(&added, &store.roots(&[]).unwrap()));

        // Replaced in place (same name, new content): a new inode or size.
        std::fs::write(
            dir.path().join("a.pem"),
            format!("{}{}", ca_pem(), ca_pem()),
        )
        .unwrap();
        assert_eq!(store.roots(&[]).unwrap().len(), 3);
        std::fs::remove_file(dir.path().join("b.pem")).unwrap();
        assert_eq!(
            store.roots(&[]).unwrap().len(),
            2,
            "a removed CA is dropped"
        );
    }

    #[test]
    fn extra_ca_files_are_watched_and_checked() {
        let store_dir = tempfile::tempdir().unwrap();
        let extra_dir = tempfile::tempdir().unwrap();
        let extra = extra_dir.path().join("extra.pem");
        std::fs::write(&extra, ca_pem()).unwrap();
        let store = store_in(store_dir.path(), Duration::ZERO);
        let files = [extra.clone()];
        let first = store.roots(&files).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(store.roots(&[]).unwrap().len(), 0, "a list of its own");
        std::fs::write(&extra, format!("{}{}", ca_pem(), ca_pem())).unwrap();
        assert_eq!(store.roots(&files).unwrap().len(), 2);
        std::fs::write(&extra, "not a certificate").unwrap();
        let err = store.roots(&files).unwrap_err().to_string();
        assert!(
            err.contains("extra CA file") && err.contains("extra.pem"),
            "{err}"
        );
    }

    #[test]
    fn changes_are_looked_for_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.pem"), ca_pem()).unwrap();
        let store = store_in(dir.path(), Duration::from_secs(3600));
        let first = store.roots(&[]).unwrap();
        std::fs::write(dir.path().join("b.pem"), ca_pem()).unwrap();
        let again = store.roots(&[]).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "not checked again within the interval"
        );
        assert_eq!(again.len(), 1);
    }
}
