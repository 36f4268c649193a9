//! How the process uses memory: a small board has a few hundred megabytes, and what
//! `deepstackd` keeps resident is what the user measures (BENCHMARKS.md).
//!
//! A request allocates and frees many short-lived tensors (tract creates every intermediate
//! tensor per run): heaptrack puts the live heap at ~54 MB at its highest over a 720p and a
//! 12 MP recognize, models included, while the resident size of a daemon under two clients
//! reached 210-225 MiB with glibc's defaults. The difference is what malloc keeps. Two
//! settings, measured with `deepstack-bench targets` and a mixed 720p + 12 MP load (two runs
//! each, against the defaults on the same machine):
//!
//! - one arena: every thread (HTTP workers, inference threads, the threads a request borrows
//!   to embed its faces) allocates from the main heap, so free space left by one thread is
//!   reused by the next instead of each arena keeping its own high-water mark (peak 179 vs
//!   215 MiB alone);
//! - a fixed 8 MiB mmap threshold: the large buffers (decoded photos, the High mode's detector
//!   activations, 26 MB at 1280x1280) are mapped per use and unmapped when freed, instead of
//!   glibc's adaptive threshold moving them onto the heap, where they fragment it. Smaller
//!   tensors stay on the heap, whose pages the next request reuses. A 256 KiB threshold cost
//!   63,000 page faults and +70-110 ms per 4-face 720p recognize; 1-2 MiB cost +17-60% in
//!   time. 4 MiB, the value until the detector got its own kernels, mapped the Medium mode's
//!   largest activations (4.9 MB at 640x480, 6.5 MB at 640x640) on every run: about 3,000
//!   page faults per detection, which doubled the time of YuNet at 640x480 once its layers
//!   took 20 ms instead of 30 (YuNet in a loop under these settings, 160 runs: 0.6-1.1 M page
//!   faults and 47-63 ms a run at 4 MiB, 17 k and 28-32 ms at 8 MiB). Peak under the two-client
//!   load with 8 MiB: 136 MiB (`deepstack-bench targets`).
//!
//! Together: peak under load 147-200 MiB instead of 209-223, idle 71 instead of 75-78 MiB,
//! request times and throughput within the noise.
//!
//! A third setting follows from the second: a fixed mmap threshold also freezes glibc's trim
//! threshold at its 128 KiB default, so each request that freed the top of the heap gave it
//! back to the kernel and the next one faulted it in again: 9,200-12,700 page faults per
//! 4-face 720p recognize on one inference thread. A 16 MiB trim threshold brings that to
//! 0-1,150, and the request to 4-12% less CPU (four alternated pairs of runs of 40
//! requests: 198-215 instead of 219-226 ms, on a busy day for this machine). The price is
//! the heap top kept between requests: the peak under two clients rose by about 10 MiB
//! (191-208 instead of 181-193 MiB over three alternated runs each). 8 MiB left 260-4,500
//! faults; 64 MiB no fewer than 16, with a peak of 197-209 MiB. The idle trim below still
//! gives it all back.
//!
//! On top of that, the heap is given back when the inference threads have been idle for
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

/// Allocations of at least this many bytes get their own mapping, returned when freed.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 8 << 20;

/// free() gives the top of the heap back to the kernel only past this much free space.
#[cfg(target_env = "gnu")]
const TRIM_THRESHOLD: libc::c_int = 16 << 20;

/// Tunes malloc; call first thing in `main`, before any other thread starts.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
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
