//! Why a command failed and with which exit status: D-Bus error names map to statuses
//! (the table is [`EXIT_STATUS`], shown in `--help` and the man page), and the message is the
//! daemon's own error text.

use std::fmt;

/// Every exit status omadmctl uses, with its meaning.
pub const EXIT_STATUS: [(u8, &str); 12] = [
    (0, "Success."),
    (
        1,
        "Failure: omadmd reported Failed or an unexpected error; for ddf check and tnds check, \
         a file is invalid.",
    ),
    (
        2,
        "Usage error: bad arguments, or omadmd refused the ClientURI (InvalidUri) or the value \
         (InvalidValue).",
    ),
    (
        3,
        "omadmd is not running (no org.omadm.Client1 on the bus), or the bus cannot be \
         reached.",
    ),
    (
        4,
        "No such node, MO instance, DM server account, transfer or child (NotFound).",
    ),
    (
        5,
        "Access denied (AccessDenied) by polkit or by the grants on the MO instance; try as \
         root or ask the administrator for a polkit rule or a grant.",
    ),
    (
        6,
        "Not allowed (NotAllowed): the DDF forbids the operation on that node, e.g. replacing \
         a read-only node; or the transfer to suspend or resume has finished.",
    ),
    (
        7,
        "Conflict (Conflict): the node changed meanwhile or a server with a higher priority \
         wrote it.",
    ),
    (
        8,
        "omadmd is busy (Busy), e.g. with a DM session; try again later.",
    ),
    (
        9,
        "Session failed: session start saw the DM session end with a status other than 200.",
    ),
    (
        10,
        "Transfer failed: transfers watch saw a transfer end failed.",
    ),
    (
        130,
        "Interrupted: session start or transfers watch stopped waiting on Ctrl-C; the session \
         or transfers go on in omadmd.",
    ),
];

/// The status of NotFound: no such node, instance or account.
pub const NOT_FOUND: u8 = 4;

/// The status of AccessDenied.
pub const ACCESS_DENIED: u8 = 5;

/// The status of a DM session that ended with a failure.
pub const SESSION_FAILED: u8 = 9;

/// The status of transfers watch when a transfer failed.
pub const TRANSFER_FAILED: u8 = 10;

/// The status when Ctrl-C stops session start (or transfers watch) from waiting.
pub const INTERRUPTED: u8 = 130;

const ERROR_PREFIX: &str = "org.omadm.Client1.Error.";

const ACCESS_HINT: &str =
    "try as root or ask the administrator for a polkit rule / grant (omadmctl grant)";

/// A failed command: what to print on stderr and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub status: u8,
    /// Empty for a quiet stop (e.g. the reader of our output went away).
    pub message: String,
    pub hint: Option<&'static str>,
}

/// Which bus omadmctl talks on, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bus::System => "system",
            Bus::Session => "session",
        })
    }
}

impl Failure {
    pub fn new(status: u8, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            hint: None,
        }
    }

    /// A usage error found before talking to the daemon.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(2, message)
    }

    /// Stop without a message and with status 0.
    pub fn quiet() -> Failure {
        Failure::new(0, "")
    }

    /// A failed call or connection on `bus`.
    pub fn from_dbus(error: zbus::Error, bus: Bus) -> Failure {
        let not_running = || {
            Failure::new(
                3,
                format!("omadmd is not running (no org.omadm.Client1 on the {bus} bus)"),
            )
        };
        let (name, message) = match error {
            zbus::Error::MethodError(name, message, _) => {
                (name.to_string(), message.unwrap_or_default())
            }
            zbus::Error::FDO(e) => match *e {
                zbus::fdo::Error::ZBus(inner) => return Failure::from_dbus(inner, bus),
                e => (
                    zbus::DBusError::name(&e).to_string(),
                    zbus::DBusError::description(&e)
                        .unwrap_or_default()
                        .to_owned(),
                ),
            },
            zbus::Error::DBus(e) => (
                e.name().to_string(),
                e.description().unwrap_or_default().to_owned(),
            ),
            zbus::Error::InputOutput(e) => {
                return Failure::new(3, format!("lost the connection to the {bus} bus: {e}"));
            }
            zbus::Error::Connection(e, address) => {
                return Failure::new(
                    3,
                    format!("cannot connect to the {bus} bus at {address}: {e}"),
                );
            }
            zbus::Error::Address(reason) | zbus::Error::Handshake(reason) => {
                return Failure::new(3, format!("cannot connect to the {bus} bus: {reason}"));
            }
            other => return Failure::new(1, other.to_string()),
        };
        let with_name = || {
            if message.is_empty() {
                name.clone()
            } else {
                format!("{name}: {message}")
            }
        };
        let own = |m: &str| {
            if m.is_empty() {
                name.clone()
            } else {
                m.to_owned()
            }
        };
        match name.strip_prefix(ERROR_PREFIX) {
            Some("NotFound") => Failure::new(NOT_FOUND, own(&message)),
            Some("AccessDenied") => Failure::access_denied(own(&message)),
            Some("InvalidUri" | "InvalidValue") => Failure::new(2, own(&message)),
            Some("NotAllowed") => Failure::new(6, own(&message)),
            Some("Conflict") => Failure::new(7, own(&message)),
            Some("Busy") => Failure::new(8, own(&message)),
            Some(_) => Failure::new(1, own(&message)),
            None => match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => not_running(),
                n if n.starts_with("org.freedesktop.DBus.Error.Spawn.") => Failure::new(
                    3,
                    format!(
                        "omadmd could not be started by the {bus} bus: {}",
                        with_name()
                    ),
                ),
                "org.freedesktop.DBus.Error.AccessDenied"
                | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => {
                    Failure::access_denied(with_name())
                }
                "org.freedesktop.DBus.Error.Disconnected" => {
                    Failure::new(3, format!("lost the connection to the {bus} bus"))
                }
                "org.freedesktop.DBus.Error.InvalidArgs" => Failure::new(2, with_name()),
                _ => Failure::new(1, with_name()),
            },
        }
    }

    /// Access denied, with the hint where rights come from.
    pub fn access_denied(message: String) -> Failure {
        Failure {
            status: ACCESS_DENIED,
            message,
            hint: Some(ACCESS_HINT),
        }
    }

    /// Prints the message (and hint) on stderr.
    pub fn report(&self) {
        if self.message.is_empty() {
            return;
        }
        eprintln!("omadmctl: {}", self.message);
        if let Some(hint) = self.hint {
            eprintln!("omadmctl: hint: {hint}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method_error(name: &str, message: &str) -> zbus::Error {
        let msg = zbus::Message::method_call("/", "Ping").build(&()).unwrap();
        zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from(name).unwrap(),
            Some(message.to_owned()),
            msg,
        )
    }

    #[test]
    fn daemon_errors_map_to_their_statuses() {
        for (name, status) in [
            ("NotFound", 4),
            ("AccessDenied", 5),
            ("InvalidUri", 2),
            ("InvalidValue", 2),
            ("NotAllowed", 6),
            ("Conflict", 7),
            ("Busy", 8),
            ("Failed", 1),
            ("SomethingNew", 1),
        ] {
            let f = Failure::from_dbus(
                method_error(&format!("{ERROR_PREFIX}{name}"), "the reason"),
                Bus::System,
            );
            assert_eq!(f.status, status, "{name}");
            assert_eq!(f.message, "the reason");
            assert_eq!(f.hint.is_some(), name == "AccessDenied");
        }
    }

    #[test]
    fn a_missing_daemon_is_status_3() {
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("x".into())));
        let f = Failure::from_dbus(e, Bus::Session);
        assert_eq!(f.status, 3);
        assert_eq!(
            f.message,
            "omadmd is not running (no org.omadm.Client1 on the session bus)"
        );
    }

    #[test]
    fn every_status_is_documented() {
        for status in (0..=9u8).chain([INTERRUPTED]) {
            assert!(EXIT_STATUS.iter().any(|(s, _)| *s == status));
        }
    }
}
