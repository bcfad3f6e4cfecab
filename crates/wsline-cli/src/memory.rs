//! Giving memory back to the OS after a burst.
//!
//! glibc's malloc keeps what a burst of connections freed in its arenas, for reuse: after 300
//! slow readers left `wsline serve --tokio`, the process still held 138 MiB, against 11 MiB
//! before them, although every buffer was freed (mimalloc gave back half of it on its own,
//! jemalloc none within 10 s). `malloc_trim` returns the free pages of every arena: 16 MiB
//! after the same burst.
//!
//! So the server asks glibc how much it holds free (`mallinfo2`), and trims once that has
//! risen more than [`FREE_THRESHOLD`] above its lowest since the last trim and stayed there
//! at two checks in a row (a burst over, not memory a steady load keeps reusing). A trim
//! leaves the freed chunks in glibc's bins (only their pages go back), so the free figure
//! does not drop: the next trim waits for the memory to be used and freed again.
//! `mallinfo2` is looked up when the server starts, so a glibc older than 2.33, which lacks
//! it, runs without trimming instead of failing to start.
//!
//! This is the application's choice, not the library's: an application picks its allocator.

use std::time::Duration;

/// A rise of the allocator's free memory, in bytes, past which it is given back.
pub const FREE_THRESHOLD: usize = 16 << 20;

/// When to trim, from successive readings of the allocator's free bytes.
#[derive(Debug)]
struct Trimmer {
    /// The lowest reading since the last trim.
    low: usize,
    /// Whether the previous reading was past the threshold.
    risen: bool,
}

impl Trimmer {
    fn new(free: usize) -> Self {
        Self {
            low: free,
            risen: false,
        }
    }

    /// Whether to trim now, given this reading.
    fn should_trim(&mut self, free: usize) -> bool {
        self.low = self.low.min(free);
        let risen = free > self.low + FREE_THRESHOLD;
        let trim = risen && self.risen;
        self.risen = risen && !trim;
        if trim {
            self.low = free;
        }
        trim
    }
}

/// Starts a thread that reads the resident memory every `every` and gives free memory back
/// to the OS as described in the [module](self). Where the allocator is not glibc's, or
/// `/proc` cannot be read, does nothing.
///
/// # Errors
/// If the thread cannot be started.
pub fn trim_periodically(every: Duration) -> std::io::Result<()> {
    let Some(mallinfo2) = glibc::mallinfo2() else {
        return Ok(());
    };
    let mut trimmer = Trimmer::new(glibc::free_bytes(mallinfo2));
    std::thread::Builder::new()
        .name("wsline-trim".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if trimmer.should_trim(glibc::free_bytes(mallinfo2)) {
                let before = rss_kib();
                glibc::trim();
                tracing::debug!(
                    rss_before_kib = before,
                    rss_after_kib = rss_kib(),
                    "gave free memory back to the OS"
                );
            }
        })?;
    Ok(())
}

/// This process's resident memory in KiB.
fn rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    /// glibc's `mallinfo2` (2.33 and later).
    pub type Mallinfo2 = unsafe extern "C" fn() -> libc::mallinfo2;

    /// `mallinfo2`, if this glibc has it.
    pub fn mallinfo2() -> Option<Mallinfo2> {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol
        // up; it returns null when there is none.
        let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        // SAFETY: the symbol is glibc's `struct mallinfo2 mallinfo2(void)`, which is what
        // `Mallinfo2` declares; a null pointer was ruled out.
        (!symbol.is_null())
            .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Mallinfo2>(symbol) })
    }

    /// The bytes the allocator holds free in all its arenas.
    pub fn free_bytes(mallinfo2: Mallinfo2) -> usize {
        // SAFETY: mallinfo2 takes no arguments and has no preconditions; it reads the arenas
        // under their locks and returns a plain struct by value.
        unsafe { mallinfo2() }.fordblks
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
    pub type Mallinfo2 = fn() -> usize;

    pub fn mallinfo2() -> Option<Mallinfo2> {
        None
    }

    pub fn free_bytes(mallinfo2: Mallinfo2) -> usize {
        mallinfo2()
    }

    pub fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_burst_is_trimmed_once_it_is_over_and_a_steady_load_is_not_again() {
        let mut trimmer = Trimmer::new(MIB);
        // A burst in use: little free.
        assert!(!trimmer.should_trim(MIB));
        // It ends: 100 MiB free, at two checks in a row.
        assert!(!trimmer.should_trim(100 * MIB));
        assert!(trimmer.should_trim(100 * MIB));
        // The freed chunks stay in the bins after the trim: no trim again and again.
        for _ in 0..10 {
            assert!(!trimmer.should_trim(100 * MIB));
        }
        // A second burst uses them and frees them again: trimmed again.
        assert!(!trimmer.should_trim(5 * MIB));
        assert!(!trimmer.should_trim(100 * MIB));
        assert!(trimmer.should_trim(100 * MIB));
        // A blip past the threshold for one check only is left alone.
        assert!(!trimmer.should_trim(5 * MIB));
        assert!(!trimmer.should_trim(40 * MIB));
        assert!(!trimmer.should_trim(5 * MIB));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_gives_the_pages_of_freed_holes_back() {
        // Mid-sized blocks (below the mmap threshold), every other one freed: 16 MiB of
        // holes between live blocks, which free() cannot give back itself.
        let mut blocks: Vec<Option<Vec<u8>>> =
            (0..512).map(|_| Some(vec![1u8; 64 << 10])).collect();
        for block in blocks.iter_mut().step_by(2) {
            drop(block.take());
        }
        let mallinfo2 = glibc::mallinfo2().expect("glibc 2.33 or later");
        assert!(
            glibc::free_bytes(mallinfo2) >= 12 << 20,
            "the holes count as free"
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
