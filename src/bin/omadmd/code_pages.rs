//! The daemon's own code pages after start-up: given back.
//!
//! Code runs from the executable's pages in the page cache, and every page the daemon has
//! run — with the pages the kernel maps around each (fault-around, 64 KiB) — counts in its
//! RSS until memory runs short. Most of omadmd's code runs at start-up only (configuration,
//! DDF and bootstrap loading, D-Bus setup) or rarely (TLS handshakes, sessions, MQTT), so
//! after start-up most of its resident code is idle. [`page_out`] asks the kernel to reclaim
//! the executable's code pages (`MADV_PAGEOUT`, Linux 5.4): clean file pages, dropped from
//! the process and, where nothing else maps them, from the page cache — memory given back,
//! nothing lost. The cost: the first run of a code path afterwards reads its pages in again
//! (a page fault and, if the page cache no longer has them, a read of the executable).
//! Measured by `cargo bench --bench dbus` (idle RSS).

use std::path::Path;

/// Reclaims every executable mapping of `/proc/self/exe`; returns the problems, if any (the
/// daemon runs the same without, with a larger RSS).
pub fn page_out() -> Vec<String> {
    let exe = match std::fs::read_link("/proc/self/exe") {
        Ok(exe) => exe,
        Err(e) => return vec![format!("cannot read /proc/self/exe: {e}")],
    };
    let maps = match std::fs::read_to_string("/proc/self/maps") {
        Ok(maps) => maps,
        Err(e) => return vec![format!("cannot read /proc/self/maps: {e}")],
    };
    code_ranges(&maps, &exe)
        .into_iter()
        .filter_map(|(start, end)| {
            // SAFETY: MADV_PAGEOUT of a read-only, file-backed mapping of our own executable
            // only drops clean pages, which the kernel reads in again on the next access; no
            // memory the program holds is freed or changed.
            let done = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT)
            };
            (done != 0).then(|| {
                format!(
                    "madvise(MADV_PAGEOUT) of the code at {start:#x}: {}",
                    std::io::Error::last_os_error()
                )
            })
        })
        .collect()
}

/// The address ranges of `maps` (the text of `/proc/self/maps`) that map `exe` executable.
fn code_ranges(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if !perms.contains('x') || Path::new(path) != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_code_mappings_count() {
        let maps = "\
5581f0a00000-5581f0b00000 r--p 00000000 08:01 1234 /usr/sbin/omadmd
5581f0b00000-5581f0f00000 r-xp 00100000 08:01 1234 /usr/sbin/omadmd
5581f0f00000-5581f0f80000 rw-p 00500000 08:01 1234 /usr/sbin/omadmd
7f0000000000-7f0000100000 r-xp 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            code_ranges(maps, Path::new("/usr/sbin/omadmd")),
            [(0x5581_f0b0_0000, 0x5581_f0f0_0000)]
        );
        assert!(code_ranges(maps, Path::new("/usr/bin/other")).is_empty());
    }

    #[test]
    fn paging_out_our_own_code_works_and_we_run_on() {
        assert_eq!(page_out(), Vec::<String>::new());
    }
}
