//! `omadmctl alert`: a Generic Alert sent through omadmd (`SendAlert`). The data is read
//! here — from the command line, a file or standard input — and held to the daemon's bound
//! before any bus is touched; omadmd checks every field again.

use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use omadmd::session::send_alert::DATA_BYTES;

use crate::cli::AlertArgs;
use crate::client::Client;
use crate::failure::Failure;

/// The `data` argument of `SendAlert`: `--data`, or `--data-file` read (base64-encoded for
/// `--data-type b64`), or `""`.
pub fn data(args: &AlertArgs) -> Result<String, Failure> {
    let Some(file) = &args.data_file else {
        let data = args.data.clone().unwrap_or_default();
        return within_bound(data);
    };
    let data_type = args.data_type.as_deref().unwrap_or("");
    let b64 = data_type == "b64";
    // Base64 takes 4 bytes for 3.
    let limit = if b64 { DATA_BYTES / 4 * 3 } else { DATA_BYTES };
    let bytes = read_bounded(file, limit)?;
    let data = if b64 {
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    } else {
        let text = String::from_utf8(bytes).map_err(|_| {
            Failure::usage(format!(
                "{}: not UTF-8 text (use --data-type b64 for binary data)",
                file.display()
            ))
        })?;
        match data_type {
            "int" | "bool" => text.trim().to_owned(),
            _ => text,
        }
    };
    within_bound(data)
}

fn within_bound(data: String) -> Result<String, Failure> {
    if data.len() > DATA_BYTES {
        return Err(Failure::usage(format!(
            "the alert data is {} bytes; at most {DATA_BYTES} are sent",
            data.len()
        )));
    }
    Ok(data)
}

/// At most `limit` bytes of `file` ("-": standard input); more is an error.
fn read_bounded(file: &Path, limit: usize) -> Result<Vec<u8>, Failure> {
    let failed = |e: std::io::Error| Failure::usage(format!("{}: {e}", file.display()));
    let reader: Box<dyn std::io::Read> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(failed)?)
    };
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file at the bound from a longer one.
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() > limit {
        return Err(Failure::usage(format!(
            "{}: more than {limit} bytes; an alert carries at most {DATA_BYTES} bytes of data",
            file.display()
        )));
    }
    Ok(bytes)
}

/// Sends the alert; `data` is what [`data`] read.
pub async fn send(client: &Client, args: &AlertArgs, data: &str) -> Result<(), Failure> {
    client
        .proxy
        .send_alert(
            args.server.as_deref().unwrap_or(""),
            &args.alert_type,
            args.source.as_deref().unwrap_or(""),
            args.mark.as_deref().unwrap_or(""),
            args.data_type.as_deref().unwrap_or(""),
            data,
        )
        .await
        .map_err(|e| client.fail(e))
}
