//! How the process uses memory: a small board has a few hundred megabytes, and what
//! `deepstackd` keeps resident is what the user measures (BENCHMARKS.md).
//!
//! A request allocates and frees many short-lived buffers: tract creates every intermediate
//! tensor per run (1-4 MB each for SFace), a 12 MP photo decodes into 9 MB. Two requests at
//! once interleave them. Under glibc's malloc the resident size of a daemon under two
//! clients (720p and 12 MP mixed) reached 154-163 MiB while the live heap peaked at
//! ~75 MiB (heaptrack): what glibc kept was holes between the tensors, even with one arena,
//! a fixed 8 MiB mmap threshold and a 16 MiB trim threshold, the best of the settings
//! measured over issues 5 and 14 (lower thresholds returned more memory at 17-60% more
//! time in page faults).
//!
//! So Rust's allocations go to jemalloc ([`ALLOCATOR`]), which places buffers by size
//! class in extents reused first-fit, with [`MALLOC_CONF`]:
//!
//! - one arena (`narenas:1`): every thread (HTTP workers, inference threads, the pool that
//!   shares a lone request's work) allocates from the same arena, so the extents one
//!   thread frees serve the next thread's tensors instead of each arena keeping its own
//!   high-water mark. Same load, same machine: peak 120-122 MiB with one arena, 142 MiB
//!   with jemalloc's default of four arenas a core, 155-163 MiB with glibc. Request times
//!   on one thread within the noise; a lone request using both threads (the as-shipped
//!   rows of `deepstack-bench targets`) 10-20% slower in three runs, level over curl, when
//!   a thread was started for each detection, before the helper pool (BENCHMARKS.md,
//!   issue 14);
//! - freed pages are given back to the kernel by jemalloc's decay (10 s by default) as the
//!   daemon keeps allocating, so a busy daemon reuses warm pages without faulting them in.
//!
//! On top of that, everything free is given back when the inference threads have been idle
//! for [`IDLE_TRIM_AFTER`] ([`trim`], called by the daemon's trimmer thread): a busy daemon
//! keeps its working set warm, an idle one returns to the size of its models and gallery.
//! The first request after an idle period pays the page faults once.
//!
//! After the models are loaded, [`release_after_load`] returns the free memory (the ONNX
//! parse and graph rewrites peak at ~90 MB) and drops the resident pages of the embedded
//! model files, which were only read once to build the plans.
//!
//! jemalloc fixes its page size when it is built: the aarch64 build is configured for
//! 64 KiB pages (`AARCH64_UNKNOWN_LINUX_GNU_JEMALLOC_SYS_WITH_LG_PAGE=16` in
//! packaging/cross-build.sh and cross.toml), which also runs on 4 KiB and on the 16 KiB
//! pages of Raspberry Pi OS's Pi 5 kernel; a build for 4 KiB pages would not start there.
//! The C libraries (SQLite, libsystemd) keep glibc's malloc, limited to one arena.

use std::ffi::CStr;
use std::time::Duration;

/// The allocator of every Rust allocation in the binaries that link this crate (the
/// daemon, its bench and its tests alike, so that what they measure is what ships).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (see the module's documentation), read by jemalloc at its first
/// allocation through the `malloc_conf` symbol (`_rjem_` is the crate's symbol prefix).
/// `_RJEM_MALLOC_CONF` in the environment still overrides them, for experiments.
const MALLOC_CONF: &CStr = c"narenas:1";

#[used]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &u8 = &MALLOC_CONF.to_bytes_with_nul()[0];

/// How long the inference threads must have been idle before the memory is given back.
pub const IDLE_TRIM_AFTER: Duration = Duration::from_secs(2);

/// Tunes glibc's malloc, which the C libraries use; call first thing in `main`, before any
/// other thread starts.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the free memory of both allocators to the kernel.
pub fn trim() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena's unused dirty pages.
    // SAFETY: the control takes and returns nothing.
    if let Err(code) = unsafe { mallctl::<(), ()>(c"arena.4096.purge", None, None) } {
        log::debug!("jemalloc purge failed: error {code}");
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs jemalloc's control `name`: its value is read into `old` and `new` is written, each
/// when given. Err: jemalloc's error number.
///
/// # Safety
/// `O` must be the type the control returns and `N` the one it takes.
unsafe fn mallctl<O, N>(name: &CStr, old: Option<&mut O>, new: Option<&mut N>) -> Result<(), i32> {
    use std::ptr::null_mut;
    let mut old_len = std::mem::size_of::<O>();
    let (old, old_len) = match old {
        Some(old) => ((old as *mut O).cast(), &raw mut old_len),
        None => (null_mut(), null_mut()),
    };
    let (new, new_len) = match new {
        Some(new) => ((new as *mut N).cast(), std::mem::size_of::<N>()),
        None => (null_mut(), 0),
    };
    // SAFETY: `name` is NUL-terminated; `old` has room for `old_len` bytes and `new` holds
    // `new_len`, of the control's types (the caller's promise), or both are null.
    match unsafe { tikv_jemalloc_sys::mallctl(name.as_ptr(), old, old_len, new, new_len) } {
        0 => Ok(()),
        code => Err(code),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jemalloc_runs_with_one_arena() {
        // The options symbol was linked and read (jemalloc's default is 4 arenas a core).
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            let mut narenas = 0u32;
            // SAFETY: `opt.narenas` returns an unsigned.
            let rc = unsafe { mallctl::<u32, ()>(c"opt.narenas", Some(&mut narenas), None) };
            assert_eq!((rc, narenas), (Ok(()), 1), "opt.narenas");
        }
        // Rust's allocations are jemalloc's: it knows the arena of a Vec's buffer.
        let held = vec![1u8; 1 << 20];
        let mut ptr = held.as_ptr().cast::<std::ffi::c_void>();
        let mut arena = u32::MAX;
        // SAFETY: `arenas.lookup` takes a pointer and returns an unsigned arena index.
        let rc = unsafe { mallctl(c"arenas.lookup", Some(&mut arena), Some(&mut ptr)) };
        assert_eq!((rc, arena), (Ok(()), 0), "arenas.lookup of a Vec's buffer");
        drop(held);
        trim();
    }
}
