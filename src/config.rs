//! `/etc/omadmd/omadmd.toml`: every key optional, built-in defaults serve; an unknown key
//! is an error that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/omadmd/omadmd.toml";

/// The daemon's configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub ddf: DdfConfig,
    pub tls: TlsConfig,
    pub session: SessionConfig,
    /// `[exec."<ClientURI pattern>"] command = [...]`: EXEC handlers.
    pub exec: BTreeMap<String, ExecConfig>,
}

/// `[tls]`: extra CA certificates (PEM files) trusted for servers whose account has no
/// `Ext/CACert`, on top of the system roots.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub extra_ca_files: Vec<PathBuf>,
}

/// `[session]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Largest Package#2 accepted; larger ones end the session with 413.
    pub max_package_bytes: usize,
}

/// One `[exec."<pattern>"]` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments.
    pub command: Vec<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_package_bytes: 8 * 1024 * 1024,
        }
    }
}

/// `[ddf]`: where DDF files are read from, in order (later files override earlier ones).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdfConfig {
    pub dirs: Vec<PathBuf>,
}

impl Default for DdfConfig {
    fn default() -> Self {
        DdfConfig {
            dirs: vec!["/usr/share/omadmd/ddf".into(), "/etc/omadmd/ddf".into()],
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    /// Reads `path`. A missing file at the default path means the defaults; a missing file
    /// named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text).map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(
            Config::default().ddf.dirs[1],
            PathBuf::from("/etc/omadmd/ddf")
        );
    }

    #[test]
    fn keys_are_read_and_unknown_keys_are_named() {
        let c = Config::parse("[ddf]\ndirs = [\"/x\"]\n").unwrap();
        assert_eq!(c.ddf.dirs, [PathBuf::from("/x")]);
        let err = Config::parse("[ddf]\ndirz = []\n").unwrap_err();
        assert!(err.contains("dirz"), "{err}");
        let err = Config::parse("[nope]\n").unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn session_tls_and_exec_keys() {
        let c = Config::parse(
            "[tls]\nextra_ca_files = [\"/ca.pem\"]\n[session]\nmax_package_bytes = 1024\n\
             [exec.\"urn:x:1.0/*/Reboot\"]\ncommand = [\"/sbin/reboot\"]\n",
        )
        .unwrap();
        assert_eq!(c.tls.extra_ca_files, [PathBuf::from("/ca.pem")]);
        assert_eq!(c.session.max_package_bytes, 1024);
        assert_eq!(c.exec["urn:x:1.0/*/Reboot"].command, ["/sbin/reboot"]);
        assert_eq!(Config::default().session.max_package_bytes, 8 * 1024 * 1024);
        let err = Config::parse("[exec.\"x\"]\ncmd = []\n").unwrap_err();
        assert!(err.contains("cmd"), "{err}");
    }

    #[test]
    fn missing_files() {
        let missing = Path::new("/nonexistent/omadmd.toml");
        assert_eq!(Config::load(missing, false).unwrap(), Config::default());
        let err = Config::load(missing, true).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/omadmd.toml: "),
            "{err}"
        );
    }
}
