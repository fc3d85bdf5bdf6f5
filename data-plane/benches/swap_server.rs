//! A replica that swaps its table on demand, for `bench/swaps.sh`: it serves
//! the proxy (a worker per CPU, as the real binary) on `LISTEN` with a route
//! `/` to two members, and reads commands on stdin:
//! `on` (apply a new snapshot every millisecond: 1,000 swaps/s, each flipping
//! a member's weight), `off` (stop swapping), `count` (print swaps so far).
//!
//! Usage: swap_server LISTEN MEMBER_URL MEMBER_URL

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_data_plane::config::apply::State;
use switchyard_data_plane::proxy::Proxy;
use switchyard_data_plane::{bind_workers, listener, upstream};
use switchyard_shared::{Cluster, Config, Member, Route, Snapshot};

fn snapshot(version: u64, members: &[String]) -> Snapshot {
    let mut cluster = Cluster::new("bench");
    for (i, url) in members.iter().enumerate() {
        let mut member = Member::new(url.clone());
        member.weight = if i == 0 { 1 + (version % 2) as u32 } else { 1 };
        cluster.members.push(member);
    }
    let route = Route::new("all", "/", "bench");
    Snapshot::new(
        version,
        "swap-bench",
        Config {
            clusters: vec![cluster],
            routes: vec![route],
        },
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [listen, first, second] = args.as_slice() else {
        eprintln!("usage: swap_server LISTEN MEMBER_URL MEMBER_URL");
        std::process::exit(2);
    };
    let members = vec![first.clone(), second.clone()];
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = control.enter();
    let listeners =
        bind_workers(listen.parse().expect("LISTEN must be ip:port"), workers).expect("bind");
    upstream::set_workers(workers);
    let state = Arc::new(State::new("swap-bench".into(), None));
    state.apply(snapshot(1, &members)).expect("first snapshot");
    let proxy = Arc::new(Proxy::new(state.table(), "swap-bench"));
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let clients = listener::Clients::new(listener::ClientLimits {
        drain_timeout: Duration::from_secs(1),
        ..listener::ClientLimits::default()
    });
    for (index, listener) in listeners.into_iter().enumerate() {
        let (proxy, shutdown, clients) = (proxy.clone(), shutdown.clone(), clients.clone());
        std::thread::spawn(move || {
            upstream::enter_worker(index);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                listener::serve(listener, proxy, clients, shutdown).await;
            });
        });
    }
    let swapping = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    {
        let (swapping, swaps, state) = (swapping.clone(), swaps.clone(), state.clone());
        let handle = control.handle().clone();
        std::thread::spawn(move || {
            let _guard = handle.enter();
            let mut version = 1;
            let mut next = Instant::now();
            loop {
                if !swapping.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    next = Instant::now();
                    continue;
                }
                version += 1;
                state.apply(snapshot(version, &members)).expect("swap");
                swaps.fetch_add(1, Ordering::Relaxed);
                next += Duration::from_millis(1);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
    }
    for line in std::io::stdin().lock().lines() {
        match line.expect("stdin").trim() {
            "on" => swapping.store(true, Ordering::Relaxed),
            "off" => swapping.store(false, Ordering::Relaxed),
            "count" => println!("{}", swaps.load(Ordering::Relaxed)),
            _ => {}
        }
    }
}
