//! How the process uses memory: a small board has a few hundred megabytes, and what
//! `deepstackd` keeps resident is what the user measures (BENCHMARKS.md).
//!
//! glibc's malloc keeps at most two arenas (one per thread would keep every thread's
//! high-water mark), and otherwise its defaults: a request allocates and frees a few hundred
//! megabytes of short-lived tensors (tract creates every intermediate tensor per run), and
//! glibc's adaptive mmap threshold keeps them on the heap, where the next request reuses the
//! pages. Forcing them to mmap (a fixed 256 KiB threshold) was measured: 63,000 page faults and
//! +70-110 ms per 4-face 720p recognize (1,400 faults with the defaults).
//!
//! Instead the heap is given back when the inference threads have been idle for
//! [`IDLE_TRIM_AFTER`] ([`trim`], called by the daemon's trimmer thread): a busy daemon keeps
//! its working set warm, an idle one returns to the size of its models and gallery. The first
//! request after an idle period pays the page faults once.
//!
//! After the models are loaded, [`release_after_load`] returns the heap's free memory (the
//! ONNX parse and graph rewrites peak at ~90 MB) and drops the resident pages of the embedded
//! model files, which were only read once to build the plans.

use std::time::Duration;

/// How long the inference threads must have been idle before the heap is trimmed.
pub const IDLE_TRIM_AFTER: Duration = Duration::from_secs(2);

/// Tunes malloc; call first thing in `main`, before any other thread starts.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the free memory of every malloc arena to the kernel.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives back what model loading left behind: free heap memory, and the pages of `embedded`
/// (the model files compiled into the binary, already turned into plans).
pub fn release_after_load(embedded: &[&'static [u8]]) {
    trim();
    for bytes in embedded {
        drop_file_pages(bytes);
    }
}

/// Drops the resident pages of a static byte slice that is backed by the binary's file.
/// Reading it again later works: the kernel pages it back in from the file.
fn drop_file_pages(bytes: &'static [u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Ok(page) = usize::try_from(page) else {
        return;
    };
    if page == 0 {
        return;
    }
    let start = (bytes.as_ptr() as usize).next_multiple_of(page);
    let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
    if end <= start {
        return;
    }
    // MADV_DONTNEED on a private, never-written file mapping (read-only data of the
    // executable) only discards cached copies: the contents stay the file's.
    // SAFETY: [start, end) lies inside `bytes`, which is 'static read-only data.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    if rc != 0 {
        log::debug!(
            "madvise(DONTNEED) on embedded model bytes: {}",
            std::io::Error::last_os_error()
        );
    }
}
