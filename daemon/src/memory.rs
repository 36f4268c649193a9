//! How the process uses memory: a small board has a few hundred megabytes, and what
//! `deepstackd` keeps resident is what the user measures (BENCHMARKS.md).
//!
//! glibc's malloc is tuned once at start-up, before any thread exists:
//! - at most two arenas (one per thread would keep every thread's high-water mark);
//! - a fixed mmap threshold of 256 KiB. By default glibc raises the threshold after each large
//!   free (up to 32 MiB), so a decoded 12 MP photo (36 MB) and tract's scratch buffers end up
//!   on the heap, where they stay resident after the request. Fixed, they are mmapped and
//!   returned to the kernel when freed;
//! - free memory at the top of the heap is returned to the kernel once it passes 256 KiB.
//!
//! Measured (release, empty gallery, 2 inference threads; `deepstack-bench targets` has the
//! figures with 100,000 samples): idle 143 -> 80 MB, after five pairs of 12 MP + 720p
//! recognitions 242 -> 86 MB, peak 276 -> 139 MB.
//!
//! After the models are loaded, [`release_after_load`] returns the heap's free memory (the
//! ONNX parse and graph rewrites peak at ~90 MB) and drops the resident pages of the embedded
//! model files, which were only read once to build the plans.

/// Tunes malloc; call first thing in `main`, before any other thread starts.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 10);
    }
}

/// Gives back what model loading left behind: free heap memory, and the pages of `embedded`
/// (the model files compiled into the binary, already turned into plans).
pub fn release_after_load(embedded: &[&'static [u8]]) {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
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
