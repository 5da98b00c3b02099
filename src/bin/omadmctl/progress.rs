//! A spinner with the elapsed time on stderr, for waits that a person watches: drawn only
//! when stderr is a terminal (and `TERM` is not `dumb`), so scripts and logs never see it.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// A one-line spinner: `⠹ <label> 3.2s`, redrawn in place by [`Spinner::tick`].
pub struct Spinner {
    label: String,
    start: Instant,
    frame: usize,
    enabled: bool,
    shown: bool,
}

impl Spinner {
    /// How often to call [`Spinner::tick`].
    pub const INTERVAL: Duration = Duration::from_millis(100);

    /// A spinner for `label`; it draws nothing unless stderr is a terminal.
    pub fn new(label: impl Into<String>) -> Spinner {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Spinner {
            label: label.into(),
            start: Instant::now(),
            frame: 0,
            enabled: io::stderr().is_terminal() && !dumb,
            shown: false,
        }
    }

    /// Whether the spinner draws anything (else ticking is pointless).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Draws the next frame with the time elapsed since the spinner was made.
    pub fn tick(&mut self) {
        if !self.enabled {
            return;
        }
        let frame = FRAMES[self.frame % FRAMES.len()];
        self.frame += 1;
        let line = format!(
            "\r\x1b[2K{frame} {} {}",
            self.label,
            elapsed(self.start.elapsed())
        );
        let mut err = io::stderr().lock();
        // A spinner that cannot be drawn is not worth failing for.
        let _ = err.write_all(line.as_bytes()).and_then(|()| err.flush());
        self.shown = true;
    }

    /// Erases the spinner's line, so that other output starts on a clean line. It comes
    /// back with the next tick.
    pub fn clear(&mut self) {
        if !self.shown {
            return;
        }
        let mut err = io::stderr().lock();
        let _ = err.write_all(b"\r\x1b[2K").and_then(|()| err.flush());
        self.shown = false;
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `4.2s` under a minute, then `2m05s`.
fn elapsed(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{}.{}s", secs, d.subsec_millis() / 100)
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_reads_well() {
        assert_eq!(elapsed(Duration::from_millis(4250)), "4.2s");
        assert_eq!(elapsed(Duration::from_millis(59_999)), "59.9s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2m05s");
    }
}
