//! Process memory: RSS from /proc and giving freed heap back to the OS.

/// (VmRSS, VmHWM) of this process in bytes; zeros where /proc is missing.
pub fn rss() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// mimalloc's option ids (v3 `mi_option_e`); libmimalloc-sys exports the
// setter but not these two constants for v3. Declared here, not taken from
// libmimalloc-sys, so that crate stays an indirect dependency.
use mimalloc as _; // links the C library these functions come from

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

const MI_OPTION_ARENA_PURGE_MULT: std::ffi::c_int = 24;
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_malloc(size: usize) -> *mut c_void;
    fn mi_zalloc(size: usize) -> *mut c_void;
    fn mi_realloc(p: *mut c_void, new_size: usize) -> *mut c_void;
    fn mi_malloc_aligned(size: usize, alignment: usize) -> *mut c_void;
    fn mi_zalloc_aligned(size: usize, alignment: usize) -> *mut c_void;
    fn mi_realloc_aligned(p: *mut c_void, new_size: usize, alignment: usize) -> *mut c_void;
    fn mi_free(p: *mut c_void);
}

/// What `malloc` guarantees on the targets we build for (`max_align_t`):
/// mimalloc's unaligned entry points give it for every size of at least it.
const MALLOC_ALIGN: usize = 16;

/// The binary's global allocator: mimalloc, entered the way std's `System`
/// enters malloc. `mimalloc::MiMalloc` calls the `_aligned` variants for
/// every layout, whose extra checks and generic fallback (every block over
/// 1 KiB) cost ~57 instructions an allocation against ~25 for `mi_malloc`;
/// with ~100 allocations per relayed message that was 4 % of the relay
/// (callgrind, docs/performance.md). Layouts `malloc` cannot serve (over-
/// aligned, or alignment above the size) still go to the `_aligned` ones.
pub struct Allocator;

fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: each method forwards to the mimalloc function of the same
// contract; a pointer is only ever freed or resized by mimalloc, which
// finds the block's size and alignment from the pointer itself.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match plain(layout.align(), layout.size()) {
            true => mi_malloc(layout.size()).cast(),
            false => mi_malloc_aligned(layout.size(), layout.align()).cast(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match plain(layout.align(), layout.size()) {
            true => mi_zalloc(layout.size()).cast(),
            false => mi_zalloc_aligned(layout.size(), layout.align()).cast(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr.cast())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match plain(layout.align(), new_size) {
            true => mi_realloc(ptr.cast(), new_size).cast(),
            false => mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast(),
        }
    }
}

/// Arena memory freed by mimalloc goes back to the OS after 10 s unused
/// instead of 1 s. With the default, memory a relay frees and reuses a moment
/// later was purged and faulted back in (2 MiB huge pages zeroed each time):
/// about 2,000 page faults per 20,000 relayed messages at 2,000/s and ~6 % of
/// the relay's CPU (perf: `clear_page_erms`); with this, about 200. Idle
/// memory still goes back.
/// Run at the start of `main`; returns the arena purge delay in ms.
pub fn tune_allocator() -> std::ffi::c_long {
    // SAFETY: plain setters/getters of mimalloc's global option table.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_PURGE_MULT, 10);
        mi_option_get(MI_OPTION_PURGE_DELAY) * mi_option_get(MI_OPTION_ARENA_PURGE_MULT)
    }
}

/// Give free glibc heap pages back to the OS after a wave of passivations.
/// The binary's Rust heap is mimalloc's, which returns freed pages itself;
/// this still matters for C allocations and for library users who keep
/// glibc malloc (many user actors stopping at once leave holes in every arena).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    fn allocator_honours_every_alignment_and_zeroes_and_keeps_bytes_on_resize() {
        let a = super::Allocator;
        for align in [1, 2, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 24, 100, 1024, 1500, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                for new_size in [size / 2 + 1, size * 3] {
                    let kept = (size / 2 + 1).min(new_size);
                    // SAFETY: non-zero sizes; each block is resized and freed
                    // by the allocator that made it, with its current layout.
                    unsafe {
                        let p = a.alloc_zeroed(layout);
                        assert!(
                            !p.is_null() && (p as usize).is_multiple_of(align),
                            "{size} bytes aligned {align}"
                        );
                        assert!(std::slice::from_raw_parts(p, size).iter().all(|b| *b == 0));
                        p.write_bytes(0xab, size);
                        let q = a.realloc(p, layout, new_size);
                        assert!(
                            !q.is_null() && (q as usize).is_multiple_of(align),
                            "{size} resized to {new_size}, aligned {align}"
                        );
                        assert!(std::slice::from_raw_parts(q, kept).iter().all(|b| *b == 0xab));
                        a.dealloc(q, Layout::from_size_align(new_size, align).unwrap());
                        let r = a.alloc(layout);
                        assert!(!r.is_null() && (r as usize).is_multiple_of(align));
                        a.dealloc(r, layout);
                    }
                }
            }
        }
    }

    #[test]
    fn arena_purge_delay_is_ten_seconds() {
        // Also checks the hard-coded option ids: wrong ones would not multiply to this.
        assert_eq!(super::tune_allocator(), 10_000);
    }
}
