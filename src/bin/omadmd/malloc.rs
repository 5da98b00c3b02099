//! The daemon's memory allocator: glibc's malloc, tuned at start so that what a large read
//! used goes back to the system when it is done, instead of staying in the daemon's RSS.
//!
//! Left as it is, glibc keeps memory a large read freed: each thread that allocates gets an
//! arena of its own (up to 8 per core), each freed large block raises the size from which
//! blocks get their own mapping (up to 32 MiB), so the next large blocks come from the
//! arenas, and an arena gives memory back only from its top. After one `GetJson` of 10,000
//! instances the daemon kept about 5 MiB for good; each further one on another store thread
//! kept more (`benches/dbus.rs`, the memory rows).
//!
//! [`configure`], first thing in `main`, sets at most [`ARENAS`] arenas, and a fixed
//! [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`]: large blocks (replies, D-Bus messages, row
//! buffers) are mapped for themselves and unmapped when freed. [`Trimming`], the global
//! allocator, is the system allocator; when a block of at least [`LARGE`] is freed it wakes
//! the trimmer thread, which, once no such block was freed for [`QUIET`], calls
//! `malloc_trim`: the free pages inside the arenas that the read's small blocks left go back
//! too. An idle daemon never wakes it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Duration;

/// Arenas at most: two threads allocate at once without waiting on each other's arena
/// (the daemon's machines have one to four cores); glibc's default would be 8 per core.
const ARENAS: libc::c_int = 2;

/// Blocks at least this large get a mapping of their own, given back when freed (glibc's
/// initial value, kept from rising).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Free memory at the top of an arena beyond this goes back at once (glibc's initial value,
/// kept from rising).
const TRIM_THRESHOLD: libc::c_int = 128 * 1024;

/// A freed block at least this large marks the end of a large read or reply, and a trim.
/// (A `GetJson` of 1,000 small instances is about 270 KB and trims nothing.)
const LARGE: usize = 1024 * 1024;

/// How long no large block must have been freed before the trim: a burst of large replies
/// trims once.
const QUIET: Duration = Duration::from_secs(1);

/// Sets glibc's malloc up (see the module documentation) and starts the trimmer thread.
/// Call it first thing in `main`, before other threads start. A setting glibc refuses, or a
/// trimmer that cannot start, only costs memory: each is logged by the caller.
pub fn configure() -> Vec<String> {
    let mut problems = Vec::new();
    for (param, value, name) in [
        (libc::M_ARENA_MAX, ARENAS, "M_ARENA_MAX"),
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD, "M_MMAP_THRESHOLD"),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD, "M_TRIM_THRESHOLD"),
    ] {
        // SAFETY: mallopt takes two integers; no other thread allocates yet.
        if unsafe { libc::mallopt(param, value) } != 1 {
            problems.push(format!("glibc refused mallopt({name}, {value})"));
        }
    }
    match std::thread::Builder::new()
        .name("omadmd-trim".into())
        .stack_size(64 * 1024)
        .spawn(trimmer)
    {
        Ok(handle) => {
            // Invariant: configure runs once, so the cell is empty.
            let _ = TRIMMER.set(handle.thread().clone());
        }
        Err(e) => problems.push(format!("cannot start the malloc trimmer thread: {e}")),
    }
    problems
}

/// The trimmer thread, once started.
static TRIMMER: OnceLock<Thread> = OnceLock::new();

/// A large block was freed since the trimmer last looked.
static LARGE_FREED: AtomicBool = AtomicBool::new(false);

/// Trims so far.
static TRIMS: AtomicU64 = AtomicU64::new(0);

/// Parks until a large block is freed, waits for [`QUIET`], trims; forever.
fn trimmer() {
    loop {
        std::thread::park();
        if !LARGE_FREED.swap(false, Ordering::AcqRel) {
            continue;
        }
        loop {
            std::thread::sleep(QUIET);
            if !LARGE_FREED.swap(false, Ordering::AcqRel) {
                break;
            }
        }
        // SAFETY: malloc_trim takes an integer and is thread-safe (it locks each arena).
        let released = unsafe { libc::malloc_trim(0) } == 1;
        let n = TRIMS.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            "large blocks were freed: malloc_trim {} (trim {n})",
            if released {
                "gave memory back to the system"
            } else {
                "found none to give back"
            }
        );
    }
}

/// The system allocator, noting when a large block is freed (see the module documentation).
pub struct Trimming;

// SAFETY: every call goes to `System` unchanged; `dealloc` only adds an atomic store and a
// wake-up that neither allocate nor touch the block.
unsafe impl GlobalAlloc for Trimming {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for alloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for alloc.
        unsafe { System.dealloc(ptr, layout) };
        if layout.size() >= LARGE {
            LARGE_FREED.store(true, Ordering::Release);
            if let Some(trimmer) = TRIMMER.get() {
                trimmer.unpark();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeing_a_large_block_trims_once_quiet() {
        assert_eq!(configure(), Vec::<String>::new());
        let before = TRIMS.load(Ordering::Relaxed);
        drop(std::hint::black_box(vec![1u8; 2 * LARGE]));
        let deadline = std::time::Instant::now() + 10 * QUIET;
        while TRIMS.load(Ordering::Relaxed) == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no trim after a large block was freed"
            );
            std::thread::sleep(QUIET / 10);
        }
    }
}
