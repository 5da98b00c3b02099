//! The twelve commands of Package#2 (PROTOCOL.md §3), parsed from their wire form (a JSON
//! array of strings: the name, then the parameters in order).

use crate::tree::uri::{ClientUri, Moid};

/// A command, with its parameters checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// HTTP GET from the repository; add or replace the data in the tree.
    Hget {
        server_uri: String,
        client_uri: Option<ClientUri>,
    },
    /// HTTP PUT the data at the ClientURIs to the repository.
    Hput {
        server_uri: String,
        client_uris: Vec<ClientUri>,
    },
    /// HTTP POST the data at the ClientURIs to the repository.
    Hpost {
        server_uri: String,
        client_uris: Vec<ClientUri>,
    },
    Delete {
        client_uri: ClientUri,
    },
    /// Execute; with a ServerURI the result goes there later as an alert (`202` now).
    Exec {
        client_uri: ClientUri,
        server_uri: Option<String>,
    },
    Get {
        client_uri: ClientUri,
    },
    /// Open a browser component on the URI, without waiting.
    Show {
        server_uri: String,
    },
    /// Send this and all later Package#3 of the session to the URI.
    Cont {
        server_uri: String,
    },
    /// Stop after this package; no Package#3.
    End,
    /// Remember the URI to fetch MOs of `moid` from when a local app asks for a missing one.
    Default {
        moid: Moid,
        server_uri: String,
    },
    /// Whenever the subtree changes, PUT it to the URI.
    Sub {
        client_uri: ClientUri,
        server_uri: String,
    },
    Unsub {
        client_uri: ClientUri,
    },
}

/// Why one command cannot run: its status code (`400` malformed, `501` unknown) and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct CommandError {
    pub status: u16,
    pub reason: String,
}

impl Command {
    /// Parses one element of the `CMD` array.
    pub fn parse(value: &serde_json::Value) -> Result<Command, CommandError> {
        let bad = |reason: String| CommandError {
            status: 400,
            reason,
        };
        let parts: Vec<&str> = value
            .as_array()
            .ok_or_else(|| bad("a command must be a JSON array of strings".into()))?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| bad("command parameters must be strings".into()))
            })
            .collect::<Result<_, _>>()?;
        let (name, params) = parts
            .split_first()
            .ok_or_else(|| bad("empty command".into()))?;
        let arity = |min: usize, max: Option<usize>| {
            if params.len() < min || max.is_some_and(|m| params.len() > m) {
                let want = match max {
                    Some(m) if m == min => format!("{min}"),
                    Some(m) => format!("{min} to {m}"),
                    None => format!("at least {min}"),
                };
                Err(bad(format!(
                    "{name} takes {want} parameter(s), got {}",
                    params.len()
                )))
            } else {
                Ok(())
            }
        };
        let uri = |s: &str| ClientUri::parse(s).map_err(|e| bad(e.to_string()));
        let server = |s: &str| server_uri(s).map_err(bad);
        Ok(match *name {
            "HGET" => {
                arity(1, Some(2))?;
                Command::Hget {
                    server_uri: server(params[0])?,
                    client_uri: params.get(1).map(|s| uri(s)).transpose()?,
                }
            }
            "HPUT" | "HPOST" => {
                arity(2, None)?;
                let server_uri = server(params[0])?;
                let client_uris = params[1..]
                    .iter()
                    .map(|s| uri(s))
                    .collect::<Result<_, _>>()?;
                if *name == "HPUT" {
                    Command::Hput {
                        server_uri,
                        client_uris,
                    }
                } else {
                    Command::Hpost {
                        server_uri,
                        client_uris,
                    }
                }
            }
            "DELETE" => {
                arity(1, Some(1))?;
                Command::Delete {
                    client_uri: uri(params[0])?,
                }
            }
            "EXEC" => {
                arity(1, Some(2))?;
                Command::Exec {
                    client_uri: uri(params[0])?,
                    server_uri: params.get(1).map(|s| server(s)).transpose()?,
                }
            }
            "GET" => {
                arity(1, Some(1))?;
                Command::Get {
                    client_uri: uri(params[0])?,
                }
            }
            "SHOW" => {
                arity(1, Some(1))?;
                Command::Show {
                    server_uri: server(params[0])?,
                }
            }
            "CONT" => {
                arity(1, Some(1))?;
                Command::Cont {
                    server_uri: server(params[0])?,
                }
            }
            "END" => {
                arity(0, Some(0))?;
                Command::End
            }
            "DEFAULT" => {
                arity(2, Some(2))?;
                let moid = params[0];
                Command::Default {
                    moid: Moid::parse(moid)
                        .map_err(|e| bad(format!("bad MOID {moid:?}: {}", e.reason)))?,
                    server_uri: server(params[1])?,
                }
            }
            "SUB" => {
                arity(2, Some(2))?;
                Command::Sub {
                    client_uri: uri(params[0])?,
                    server_uri: server(params[1])?,
                }
            }
            "UNSUB" => {
                arity(1, Some(1))?;
                Command::Unsub {
                    client_uri: uri(params[0])?,
                }
            }
            other => {
                return Err(CommandError {
                    status: 501,
                    reason: format!("unknown command {other:?}"),
                });
            }
        })
    }

    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Hget { .. } => "HGET",
            Command::Hput { .. } => "HPUT",
            Command::Hpost { .. } => "HPOST",
            Command::Delete { .. } => "DELETE",
            Command::Exec { .. } => "EXEC",
            Command::Get { .. } => "GET",
            Command::Show { .. } => "SHOW",
            Command::Cont { .. } => "CONT",
            Command::End => "END",
            Command::Default { .. } => "DEFAULT",
            Command::Sub { .. } => "SUB",
            Command::Unsub { .. } => "UNSUB",
        }
    }

    /// The wire form; inverse of [`Command::parse`].
    pub fn to_wire(&self) -> Vec<String> {
        let mut out = vec![self.name().to_owned()];
        let s = |u: &ClientUri| u.to_string();
        match self {
            Command::Hget {
                server_uri,
                client_uri,
            } => {
                out.push(server_uri.clone());
                out.extend(client_uri.as_ref().map(s));
            }
            Command::Hput {
                server_uri,
                client_uris,
            }
            | Command::Hpost {
                server_uri,
                client_uris,
            } => {
                out.push(server_uri.clone());
                out.extend(client_uris.iter().map(s));
            }
            Command::Delete { client_uri }
            | Command::Get { client_uri }
            | Command::Unsub { client_uri } => out.push(s(client_uri)),
            Command::Exec {
                client_uri,
                server_uri,
            } => {
                out.push(s(client_uri));
                out.extend(server_uri.clone());
            }
            Command::Show { server_uri } | Command::Cont { server_uri } => {
                out.push(server_uri.clone())
            }
            Command::End => {}
            Command::Default { moid, server_uri } => {
                out.extend([moid.to_string(), server_uri.clone()])
            }
            Command::Sub {
                client_uri,
                server_uri,
            } => out.extend([s(client_uri), server_uri.clone()]),
        }
        out
    }
}

/// Checks a ServerURI: an absolute http(s) URL with a host.
fn server_uri(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("ServerURI {s:?} is not an http(s) URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("ServerURI {s:?} is not a valid URL"));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_command_round_trips() {
        let wire = [
            json!(["HGET", "https://repo.example/new_mo"]),
            json!(["HGET", "https://repo.example/x", "urn:oma:mo:a:1.0/m/"]),
            json!([
                "HPUT",
                "https://repo.example/dev/1",
                "urn:oma:mo:a:1.0//",
                "urn:oma:mo:b:1.0/x/Y"
            ]),
            json!([
                "HPOST",
                "https://repo.example/dev/123",
                "urn:oma:mo:oma-dm-devinfo:1.0//"
            ]),
            json!(["DELETE", "urn:oma:mo:a:1.0/m/N"]),
            json!(["EXEC", "urn:oma:mo:a:1.0/m/Reboot"]),
            json!([
                "EXEC",
                "urn:oma:mo:a:1.0/m/Reboot",
                "https://srv.example/result"
            ]),
            json!(["GET", "urn:oma:mo:oma-sessioninfomo:1.0//CBT"]),
            json!(["SHOW", "https://portal.example/"]),
            json!(["CONT", "https://other.example/dm"]),
            json!(["END"]),
            json!(["DEFAULT", "urn:oma:mo:a:1.0", "https://repo.example/a"]),
            json!(["SUB", "urn:oma:mo:a:1.0/m/", "https://srv.example/sub"]),
            json!(["UNSUB", "urn:oma:mo:a:1.0/m/"]),
        ];
        for w in wire {
            let c = Command::parse(&w).unwrap_or_else(|e| panic!("{w}: {e}"));
            assert_eq!(json!(c.to_wire()), w);
        }
    }

    #[test]
    fn bad_commands_get_400_and_unknown_ones_501() {
        let cases = [
            (json!(["GET"]), 400, "takes 1"),
            (json!(["GET", "a", "b"]), 400, "takes 1"),
            (json!(["GET", "not a uri"]), 400, "invalid ClientURI"),
            (json!(["HGET", "ftp://x/"]), 400, "not an http(s) URL"),
            (json!(["HGET", "https:///x"]), 400, "not a valid URL"),
            (json!(["HPUT", "https://x/"]), 400, "at least 2"),
            (json!(["END", "x"]), 400, "takes 0"),
            (json!(["DEFAULT", "nope", "https://x/"]), 400, "bad MOID"),
            (json!(["GET", 5]), 400, "must be strings"),
            (json!([]), 400, "empty"),
            (json!({"GET": 1}), 400, "JSON array"),
            (json!(["REPLACE", "x"]), 501, "unknown command"),
            (json!(["get", "urn:a:1.0//"]), 501, "unknown command"),
        ];
        for (w, status, reason) in cases {
            let e = Command::parse(&w).unwrap_err();
            assert_eq!(e.status, status, "{w}: {e}");
            assert!(e.reason.contains(reason), "{w}: {e}");
        }
    }
}
