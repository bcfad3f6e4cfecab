//! Giving memory back to the OS after a burst.
//!
//! glibc's malloc keeps what a burst of connections freed in its arenas, for reuse: after 300
//! slow readers left `wsline serve --tokio`, the process still held 138 MiB, against 11 MiB
//! before them, although every buffer was freed (mimalloc gave back half of it on its own,
//! jemalloc none within 10 s). `malloc_trim` returns the free pages of every arena: 16 MiB
//! after the same burst. So the server asks glibc how much it holds free, and once that has
//! stayed above [`FREE_THRESHOLD`] at two checks in a row (a burst over, not memory that a
//! steady load keeps reusing), trims.
//!
//! This is the application's choice, not the library's: an application picks its allocator.

use std::time::Duration;

/// Free memory held by the allocator above which it is given back.
pub const FREE_THRESHOLD: usize = 16 << 20;

/// Starts a thread that checks the allocator's free memory every `every` and gives it back
/// to the OS as described in the [module](self). Where the allocator is not glibc's, does
/// nothing.
///
/// # Errors
/// If the thread cannot be started.
pub fn trim_periodically(every: Duration) -> std::io::Result<()> {
    if !glibc::AVAILABLE {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("wsline-trim".into())
        .spawn(move || {
            let mut held_before = false;
            loop {
                std::thread::sleep(every);
                let held = glibc::free_bytes() > FREE_THRESHOLD;
                if held && held_before {
                    let before = rss_kib();
                    glibc::trim();
                    tracing::debug!(
                        rss_before_kib = before,
                        rss_after_kib = rss_kib(),
                        "gave free memory back to the OS"
                    );
                    held_before = false;
                } else {
                    held_before = held;
                }
            }
        })?;
    Ok(())
}

/// This process's resident memory in KiB, for the log.
fn rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    pub const AVAILABLE: bool = true;

    /// The bytes the allocator holds free in all its arenas.
    pub fn free_bytes() -> usize {
        // SAFETY: mallinfo2 takes no arguments and has no preconditions; it only reads the
        // arenas under their locks and returns a plain struct by value.
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// Returns the free pages of every arena to the OS.
    pub fn trim() {
        // SAFETY: malloc_trim has no preconditions; it only takes the arenas' locks and
        // releases whole free pages (`madvise`), which no live allocation uses.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub const AVAILABLE: bool = false;

    pub fn free_bytes() -> usize {
        0
    }

    pub fn trim() {}
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_counted_and_trimming_gives_pages_back() {
        // Mid-sized blocks (below the mmap threshold), every other one freed: 16 MiB of
        // holes between live blocks, which free() cannot give back itself.
        let mut blocks: Vec<Option<Vec<u8>>> =
            (0..512).map(|_| Some(vec![1u8; 64 << 10])).collect();
        let before = glibc::free_bytes();
        for block in blocks.iter_mut().step_by(2) {
            drop(block.take());
        }
        assert!(
            glibc::free_bytes() >= before + (12 << 20),
            "the holes show as free in the arenas"
        );
        let rss = rss_kib().unwrap();
        glibc::trim();
        assert!(
            rss_kib().unwrap() + (8 << 10) <= rss,
            "trimming gave their pages back"
        );
        std::hint::black_box(&blocks);
    }
}
