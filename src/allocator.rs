//! The binary's global allocator: mimalloc, with a small per-thread stack
//! of just-freed blocks in front of it.
//!
//! mimalloc does not hand a freed block out again until the rest of its
//! page's free list is used up, so most allocations return memory last
//! touched long ago. At 2,000 relayed messages a second, with the caches
//! cooled by the other processes between messages, the load of the free
//! list's next pointer in mimalloc's fast path was a cache miss nearly every
//! time: 7.7 % of cpm's CPU samples sat on that one instruction (perf
//! annotate, docs/performance.md). A block freed a moment ago is still in
//! cache, so each thread keeps the last few blocks of each small size class
//! and gives them out first (as glibc's tcache does).
//!
//! Blocks of a cached class are always requested from mimalloc at the
//! class's full size, so any block in a class's stack can serve any layout
//! of that class. Layouts over [`MAX_CACHED`] bytes or aligned beyond
//! [`MALLOC_ALIGN`] go straight to mimalloc, entered the way std's `System`
//! enters malloc (`mimalloc::MiMalloc` calls the `_aligned` variants for
//! every layout: ~57 instructions an allocation against ~31).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;

use mimalloc as _; // links the C library these functions come from

extern "C" {
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
/// Size classes: multiples of 8 bytes up to [`TINY`] (mimalloc's own bins
/// there: 16-byte classes would round every 24-, 40- and 56-byte block
/// up, a third more for a 24-byte String), of 16 up to [`SMALL`], of
/// 256 up to [`MAX_CACHED`] (the futures an actor hop or a spawned request
/// boxes are 1-4 KiB, moved into a block each). A layout aligned to 16 is
/// served from the class of its size rounded up to 16, whose blocks are
/// 16-aligned.
const WORD: usize = 8;
const TINY: usize = 64;
const CLASS: usize = 16;
const SMALL: usize = 1024;
const LARGE_CLASS: usize = 256;
/// Larger blocks are not cached.
const MAX_CACHED: usize = 4096;
const TINY_CLASSES: usize = TINY / WORD;
const SMALL_CLASSES: usize = TINY_CLASSES + (SMALL - TINY) / CLASS;
const CLASSES: usize = SMALL_CLASSES + (MAX_CACHED - SMALL) / LARGE_CLASS;
/// Blocks kept per class and thread: at most 16 × (8 + 16 + ... + 4096)
/// bytes, about 1 MiB, per thread, and far less in practice.
const DEPTH: usize = 16;

/// One class's stack of free blocks.
struct Bin {
    len: Cell<usize>,
    blocks: [Cell<*mut u8>; DEPTH],
}

struct Cache {
    bins: [Bin; CLASSES],
}

impl Drop for Cache {
    /// The thread is ending: its cached blocks go back to mimalloc.
    fn drop(&mut self) {
        for bin in &self.bins {
            for block in &bin.blocks[..bin.len.get()] {
                // SAFETY: every cached pointer is a live mimalloc block no
                // one else holds (it was freed into this cache).
                unsafe { mi_free(block.get().cast()) };
            }
            bin.len.set(0);
        }
    }
}

// Its destructor is registered with glibc's __cxa_thread_atexit_impl on the
// thread's first allocation; glibc allocates that record with its own
// malloc, so registering never re-enters this allocator.
thread_local! {
    static CACHE: Cache = const {
        Cache {
            bins: [const {
                Bin {
                    len: Cell::new(0),
                    blocks: [const { Cell::new(std::ptr::null_mut()) }; DEPTH],
                }
            }; CLASSES],
        }
    };
}

/// The class index of a layout that the cache serves.
fn class_of(layout: Layout) -> Option<usize> {
    let align = layout.align();
    if align > MALLOC_ALIGN || layout.size() == 0 || layout.size() > MAX_CACHED {
        return None;
    }
    // Rounded up to the alignment: a class's blocks are aligned to the
    // largest power of two (up to 16) dividing its size.
    let size = layout.size().next_multiple_of(align);
    Some(if size <= TINY {
        (size - 1) / WORD
    } else if size <= SMALL {
        TINY_CLASSES + (size - TINY - 1) / CLASS
    } else {
        SMALL_CLASSES + (size - SMALL - 1) / LARGE_CLASS
    })
}

fn class_size(class: usize) -> usize {
    if class < TINY_CLASSES {
        (class + 1) * WORD
    } else if class < SMALL_CLASSES {
        TINY + (class + 1 - TINY_CLASSES) * CLASS
    } else {
        SMALL + (class + 1 - SMALL_CLASSES) * LARGE_CLASS
    }
}

/// A cached block of `class`, if this thread has one (and is not ending).
fn pop(class: usize) -> Option<*mut u8> {
    CACHE
        .try_with(|c| {
            let bin = &c.bins[class];
            let n = bin.len.get().checked_sub(1)?;
            bin.len.set(n);
            Some(bin.blocks[n].get())
        })
        .ok()
        .flatten()
}

/// Keep `block` of `class` for this thread's next allocation of the class;
/// false when the stack is full or the thread is ending.
fn push(class: usize, block: *mut u8) -> bool {
    CACHE
        .try_with(|c| {
            let bin = &c.bins[class];
            let n = bin.len.get();
            if n == DEPTH {
                return false;
            }
            bin.blocks[n].set(block);
            bin.len.set(n + 1);
            true
        })
        .unwrap_or(false)
}

pub struct Allocator;

// SAFETY: every block comes from mimalloc and goes back to it (mi_free and
// mi_realloc find a block's size and alignment from the pointer itself).
// A block of a cached class is at least its class's size (it was requested
// at that size, or resized to it), aligned as mimalloc aligns that size
// (to the largest power of two up to 16 dividing it, which `class_of`
// rounds every layout's size up to), and held by no one while it sits in a
// cache, so it can serve any layout of its class.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = class_of(layout) {
            return match pop(class) {
                Some(block) => block,
                None => mi_malloc(class_size(class)).cast(),
            };
        }
        match layout.align() <= MALLOC_ALIGN {
            true => mi_malloc(layout.size()).cast(),
            false => mi_malloc_aligned(layout.size(), layout.align()).cast(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = class_of(layout) {
            return match pop(class) {
                Some(block) => {
                    block.write_bytes(0, layout.size());
                    block
                }
                None => mi_zalloc(class_size(class)).cast(),
            };
        }
        match layout.align() <= MALLOC_ALIGN {
            true => mi_zalloc(layout.size()).cast(),
            false => mi_zalloc_aligned(layout.size(), layout.align()).cast(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout) {
            if push(class, ptr) {
                return;
            }
        }
        mi_free(ptr.cast())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // Rounded up to the class size: the block may come back to a
            // cache under its new layout.
            let size = match Layout::from_size_align(new_size, layout.align())
                .ok()
                .and_then(class_of)
            {
                Some(class) => class_size(class),
                None => new_size,
            };
            mi_realloc(ptr.cast(), size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_honours_every_alignment_and_zeroes_and_keeps_bytes_on_resize() {
        let a = Allocator;
        for align in [1, 2, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 24, 100, 1024, 1025, 1500, 4096, 4097, 70_000] {
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
                        // What was just freed may come back from the cache: zeroed when asked.
                        let r = a.alloc_zeroed(layout);
                        assert!(!r.is_null() && (r as usize).is_multiple_of(align));
                        assert!(std::slice::from_raw_parts(r, size).iter().all(|b| *b == 0));
                        a.dealloc(r, layout);
                    }
                }
            }
        }
    }

    #[test]
    fn every_size_maps_to_the_smallest_class_that_holds_it() {
        let mut last = 0;
        for size in 1..=MAX_CACHED {
            let class = class_of(Layout::from_size_align(size, 1).unwrap()).unwrap();
            assert!(class_size(class) >= size, "{size}");
            assert!(class == 0 || class_size(class - 1) < size, "{size}");
            assert!(class_size(class).is_multiple_of(WORD));
            assert!(class >= last && class < CLASSES);
            last = class;
        }
        assert_eq!(last, CLASSES - 1);
        assert_eq!(class_of(Layout::from_size_align(MAX_CACHED + 1, 1).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(64, 32).unwrap()), None);
        // A 16-aligned layout gets a class whose size is a multiple of 16.
        for size in 1..=MAX_CACHED {
            let class = class_of(Layout::from_size_align(size, 16).unwrap()).unwrap();
            assert!(
                class_size(class).is_multiple_of(16) && class_size(class) >= size,
                "{size}"
            );
        }
    }

    #[test]
    fn a_freed_small_block_is_the_next_one_given_out_and_the_stack_is_bounded() {
        let a = Allocator;
        let layout = Layout::from_size_align(34, 2).unwrap();
        let same_class = Layout::from_size_align(40, 8).unwrap();
        // SAFETY: blocks are written within their layouts and freed once.
        unsafe {
            let p = a.alloc(layout);
            a.dealloc(p, layout);
            let q = a.alloc(same_class);
            assert_eq!(p, q, "the warm block is reused for its class");
            q.write_bytes(0x5a, 40); // the whole class size is usable
            a.dealloc(q, same_class);
            // More frees than the stack holds: the rest go back to mimalloc.
            let many: Vec<*mut u8> = (0..DEPTH * 3).map(|_| a.alloc(layout)).collect();
            for p in &many {
                a.dealloc(*p, layout);
            }
            let class = class_of(layout).unwrap();
            assert_eq!(CACHE.with(|c| c.bins[class].len.get()), DEPTH);
        }
    }

    #[test]
    fn blocks_freed_on_another_thread_serve_that_thread() {
        let a = Allocator;
        let layout = Layout::from_size_align(200, 8).unwrap();
        // SAFETY: the block is written within its layout and freed once
        // (mimalloc accepts frees from any thread).
        let p = unsafe { a.alloc(layout) } as usize;
        std::thread::spawn(move || unsafe {
            let p = p as *mut u8;
            p.write_bytes(1, 200);
            Allocator.dealloc(p, layout);
            let q = Allocator.alloc(layout);
            assert_eq!(q, p);
            Allocator.dealloc(q, layout);
            // The thread ends: its cache goes back to mimalloc (Drop).
        })
        .join()
        .unwrap();
    }
}
