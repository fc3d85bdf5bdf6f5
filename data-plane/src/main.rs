//! The `switchyard-data-plane` binary; everything is in the library.

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    switchyard_data_plane::cli::main()
}

/// glibc gives threads that allocate arenas of their own (up to 8 per CPU),
/// which keep freed memory apart: the blocking pool and the config client
/// raised the peak memory under load by about 2 MB (16.3 → 14.3 MB in
/// `bench/peers.sh`). One arena per CPU, plus one, keeps the workers off each
/// other's arena lock (a single arena cost about 4% in lock waits).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // The environment's setting, read by glibc itself, wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: `mallopt` only changes an allocator setting; it runs first thing
    // in `main`, before any other thread exists.
    let arenas = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
