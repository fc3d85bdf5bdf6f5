//! The `switchyard-data-plane` binary; everything is in the library.

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    switchyard_data_plane::cli::main()
}

/// glibc gives threads that allocate arenas of their own, which keep freed
/// memory apart: with a worker per core, the blocking pool and the config
/// client, that raised the peak memory under load by about 2 MB (16.3 → 14.3 MB
/// in `bench/peers.sh`) for no measurable speed. One arena is enough: each
/// thread's small allocations go through glibc's per-thread cache anyway.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: `mallopt` only changes an allocator setting; it runs first thing
    // in `main`, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
