//! Table benchmarks, rerun with `cargo bench -p switchyard-data-plane --bench table`:
//! - applying a snapshot of 10k routes and 100k members (convert from protobuf,
//!   validate, compile, swap), first and then again with every member kept;
//! - route lookup time for 10 to 10k routes (it should stay flat).
//!
//! Plain timing loops (no bench framework): the numbers are medians of several runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use switchyard_data_plane::config::apply::State;
use switchyard_data_plane::config::routing::Router;
use switchyard_shared::proto::v1;
use switchyard_shared::{Cluster, Config, Member, Route, Snapshot};

fn big_snapshot(version: u64, routes: usize, members_per_cluster: usize) -> Snapshot {
    let mut config = Config::default();
    let mut n = 0u32;
    for i in 0..routes {
        let name = format!("cluster-{i:05}");
        let mut cluster = Cluster::new(name.clone());
        for _ in 0..members_per_cluster {
            let ip = [10, (n >> 16) as u8, (n >> 8) as u8, n as u8];
            cluster.members.push(Member::new(format!(
                "http://{}.{}.{}.{}:8080",
                ip[0], ip[1], ip[2], ip[3]
            )));
            n += 1;
        }
        config.clusters.push(cluster);
        config.routes.push(Route::new(
            format!("route-{i:05}"),
            format!("/svc/{i}/"),
            name,
        ));
    }
    Snapshot::new(version, "bench-store", config)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bench_apply() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let (routes, per_cluster) = (10_000, 10);
    let mut fresh = Vec::new();
    let mut kept = Vec::new();
    for round in 0..5u64 {
        let state = State::new("bench".into(), None);
        let message = v1::Snapshot::from(&big_snapshot(1, routes, per_cluster));
        let started = Instant::now();
        let snapshot = Snapshot::try_from(message).expect("convert");
        state.apply(snapshot).expect("apply");
        fresh.push(started.elapsed());
        // The next version with the same members: their state is kept, the table rebuilt.
        let message = v1::Snapshot::from(&big_snapshot(2 + round, routes, per_cluster));
        let started = Instant::now();
        let snapshot = Snapshot::try_from(message).expect("convert");
        state.apply(snapshot).expect("apply");
        kept.push(started.elapsed());
    }
    println!(
        "apply {routes} routes / {} members: first {:?}, next version {:?} (median of 5; protobuf -> model -> validate -> compile -> swap)",
        routes * per_cluster,
        median(fresh),
        median(kept)
    );
}

fn bench_lookup() {
    for routes in [10usize, 100, 1_000, 10_000] {
        let mut router = Router::default();
        for i in 0..routes {
            router.insert(None, &format!("/svc/{i}/"), i);
        }
        router.insert(None, "/", routes);
        let paths: Vec<String> = (0..1024)
            .map(|i| format!("/svc/{}/users/42?x=1", (i * 7919) % routes))
            .collect();
        let iterations = 2_000_000;
        let mut samples = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            for i in 0..iterations {
                black_box(router.lookup(
                    black_box(Some("example.com")),
                    black_box(&paths[i % paths.len()]),
                ));
            }
            samples.push(started.elapsed() / iterations as u32);
        }
        println!(
            "lookup with {routes:>6} routes: {:?} per lookup (median of 5)",
            median(samples)
        );
    }
}

fn main() {
    bench_lookup();
    bench_apply();
}
