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
