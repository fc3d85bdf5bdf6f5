//! The scrape: every thread's counters summed (under the threads' lock, once),
//! then encoded as Prometheus families by `prometheus-client`, through a
//! [`Collector`] that owns the sums. Labels are looked up here only.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::slots::{self, DURATION_BUCKETS_US, FAILURE_REASONS, Kind, Labels};
use super::{
    ACCESS_LOG, APPLIED, APPLY_BUCKETS, APPLY_TIMES, COMPRESS_ALGORITHMS, CONNECT_REASONS,
    CONTROL_PLANE_CONNECTED, CONTROL_PLANE_CONNECTS, ClientLimit, EJECTIONS, ERROR_KINDS, REFUSED,
    RETRY_REASONS, add, for_each_thread,
};
use crate::config::apply::State;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One route's counters, summed.
#[derive(Debug)]
struct RouteSums {
    labels: Labels,
    responses: [u64; 5],
    duration: [u64; DURATION_BUCKETS_US.len() + 1],
    duration_sum_us: u64,
}

/// One member's counters, summed.
#[derive(Debug)]
struct MemberSums {
    labels: Labels,
    responses: [u64; 5],
    failures: [u64; FAILURE_REASONS.len()],
}

/// Everything a scrape shows, taken at once.
#[derive(Debug, Default)]
pub(super) struct Scrape {
    responses: [u64; 5],
    errors: [u64; 8],
    client: [u64; ClientLimit::ALL.len()],
    retries: [u64; 4],
    connect_failures: [u64; 5],
    idle_timeouts: u64,
    compressed: [u64; 3],
    tunnels_opened: u64,
    tunnels_closed: u64,
    tunnel_bytes: [u64; 2],
    member_conns: [u64; 2],
    routes: Vec<RouteSums>,
    members: Vec<MemberSums>,
    /// Counters and gauges without labels: name (counters without `_total`), type, help, value.
    plain: Vec<(&'static str, MetricType, &'static str, u64)>,
    apply_buckets: [u64; APPLY_BUCKETS.len() + 1],
    apply_sum: f64,
}

fn sum(counters: &[slots::Counter]) -> impl Iterator<Item = u64> + '_ {
    counters.iter().map(slots::Counter::get)
}

fn add_to(sums: &mut [u64], counters: &[slots::Counter]) {
    for (sum, value) in sums.iter_mut().zip(sum(counters)) {
        *sum += value;
    }
}

impl Scrape {
    /// Sums every thread's counters and reads `state`.
    pub(super) fn take(state: &State) -> Scrape {
        let mut scrape = Scrape::default();
        // Labels first (the slots' locks), then the threads' lock: the order
        // a slot handed out again takes them in.
        let routes = slots::held(Kind::Route);
        let members = slots::held(Kind::Member);
        scrape.routes = routes
            .iter()
            .map(|(_, labels)| RouteSums {
                labels: labels.clone(),
                responses: [0; 5],
                duration: [0; DURATION_BUCKETS_US.len() + 1],
                duration_sum_us: 0,
            })
            .collect();
        scrape.members = members
            .iter()
            .map(|(_, labels)| MemberSums {
                labels: labels.clone(),
                responses: [0; 5],
                failures: [0; FAILURE_REASONS.len()],
            })
            .collect();
        for_each_thread(|stats| {
            add(&mut scrape.responses, &stats.responses);
            add(&mut scrape.errors, &stats.errors);
            add(&mut scrape.retries, &stats.retries);
            add(&mut scrape.connect_failures, &stats.connect_failures);
            scrape.idle_timeouts += stats.idle_timeouts.load(Ordering::Relaxed);
            add(&mut scrape.compressed, &stats.compressed);
            scrape.tunnels_opened += stats.tunnels_opened.load(Ordering::Relaxed);
            scrape.tunnels_closed += stats.tunnels_closed.load(Ordering::Relaxed);
            add(&mut scrape.tunnel_bytes, &stats.tunnel_bytes);
            add(&mut scrape.client, &stats.client);
            add_to(&mut scrape.member_conns, &stats.member_conns);
            for ((slot, _), sums) in routes.iter().zip(scrape.routes.iter_mut()) {
                if let Some(counters) = stats.routes.peek(*slot) {
                    add_to(&mut sums.responses, &counters.responses);
                    add_to(&mut sums.duration, &counters.duration);
                    sums.duration_sum_us += counters.duration_sum_us.get();
                }
            }
            for ((slot, _), sums) in members.iter().zip(scrape.members.iter_mut()) {
                if let Some(counters) = stats.members.peek(*slot) {
                    add_to(&mut sums.responses, &counters.responses);
                    add_to(&mut sums.failures, &counters.failures);
                }
            }
        });
        if let Ok(times) = APPLY_TIMES.lock() {
            scrape.apply_buckets = times.buckets;
            scrape.apply_sum = times.sum;
        }
        scrape.plain = plain(state, &scrape);
        scrape.routes = merge(
            std::mem::take(&mut scrape.routes),
            |r| &r.labels,
            |into, from| {
                add_sums(&mut into.responses, &from.responses);
                add_sums(&mut into.duration, &from.duration);
                into.duration_sum_us += from.duration_sum_us;
            },
        );
        scrape.members = merge(
            std::mem::take(&mut scrape.members),
            |m| &m.labels,
            |into, from| {
                add_sums(&mut into.responses, &from.responses);
                add_sums(&mut into.failures, &from.failures);
            },
        );
        scrape
    }
}

fn add_sums(into: &mut [u64], from: &[u64]) {
    for (sum, value) in into.iter_mut().zip(from) {
        *sum += value;
    }
}

/// One entry per labels, in label order: two slots may have the same labels
/// for a moment (a member whose address changed, while a table with its old
/// state is still in use; a route dropped and made again by name), and a
/// scrape must not show a series twice.
fn merge<T>(mut all: Vec<T>, labels: impl Fn(&T) -> &Labels, add: impl Fn(&mut T, &T)) -> Vec<T> {
    all.sort_by(|a, b| {
        let (a, b) = (labels(a), labels(b));
        (&a.first, &a.second).cmp(&(&b.first, &b.second))
    });
    let mut merged: Vec<T> = Vec::with_capacity(all.len());
    for entry in all {
        match merged.last_mut() {
            Some(last)
                if labels(last).first == labels(&entry).first
                    && labels(last).second == labels(&entry).second =>
            {
                add(last, &entry);
            }
            _ => merged.push(entry),
        }
    }
    merged
}

/// The families without labels, state included.
fn plain(state: &State, scrape: &Scrape) -> Vec<(&'static str, MetricType, &'static str, u64)> {
    let running = state.running();
    let members = state.member_health();
    let healthy = members.iter().filter(|m| m.healthy).count();
    let ejected = members.iter().filter(|m| m.ejected).count();
    let (gauge, counter) = (MetricType::Gauge, MetricType::Counter);
    let f = |value: u64| value;
    let mut plain = vec![
        (
            "switchyard_config_version",
            gauge,
            "Version of the config this replica runs (0: none).",
            f(running.as_ref().map_or(0, |r| r.version)),
        ),
        (
            "switchyard_ready",
            gauge,
            "1 once a snapshot is applied.",
            f(u64::from(running.is_some())),
        ),
        (
            "switchyard_snapshots_applied",
            counter,
            "Snapshots applied.",
            f(APPLIED.load(Ordering::Relaxed)),
        ),
        (
            "switchyard_snapshots_refused",
            counter,
            "Snapshots refused (NACKed).",
            f(REFUSED.load(Ordering::Relaxed)),
        ),
        (
            "switchyard_control_plane_connected",
            gauge,
            "1 while the config stream to a control plane is open.",
            f(u64::from(CONTROL_PLANE_CONNECTED.load(Ordering::Relaxed))),
        ),
        (
            "switchyard_control_plane_connects",
            counter,
            "Config streams opened to a control plane (the first included: reconnects are this minus 1).",
            f(CONTROL_PLANE_CONNECTS.load(Ordering::Relaxed)),
        ),
        (
            "switchyard_tunnels_open",
            gauge,
            "Tunnels (Upgrade, WebSocket) open now.",
            f(scrape.tunnels_opened.saturating_sub(scrape.tunnels_closed)),
        ),
        (
            "switchyard_tunnels",
            counter,
            "Tunnels opened.",
            f(scrape.tunnels_opened),
        ),
        (
            "switchyard_client_connections",
            gauge,
            "Client connections open (capped by --max-connections).",
            f(crate::listener::open_connections() as u64),
        ),
        (
            "switchyard_upstream_connections",
            gauge,
            "Connections to members open now (pooled, in use, or HTTP/2).",
            f(scrape.member_conns[0].saturating_sub(scrape.member_conns[1])),
        ),
        (
            "switchyard_upstream_idle_timeouts",
            counter,
            "Member bodies cut after the cluster's idle_timeout.",
            f(scrape.idle_timeouts),
        ),
        (
            "switchyard_members",
            gauge,
            "Members in the table.",
            f(members.len() as u64),
        ),
        (
            "switchyard_members_usable",
            gauge,
            "Members healthy, not in their retry window and not ejected.",
            f(healthy as u64),
        ),
        (
            "switchyard_members_ejected",
            gauge,
            "Members ejected by outlier detection now.",
            f(ejected as u64),
        ),
        (
            "switchyard_member_ejections",
            counter,
            "Ejections of members by outlier detection.",
            f(EJECTIONS.load(Ordering::Relaxed)),
        ),
        (
            "switchyard_access_log_lines",
            counter,
            "Access log lines written (--access-log).",
            f(ACCESS_LOG.lines.load(Ordering::Relaxed)),
        ),
        (
            "switchyard_access_log_dropped",
            counter,
            "Access log lines dropped: the disk fell behind, or a write failed.",
            f(ACCESS_LOG.dropped.load(Ordering::Relaxed)),
        ),
        (
            "switchyard_access_log_write_errors",
            counter,
            "Writes of the access log that failed (a full disk, a closed stdout).",
            f(ACCESS_LOG.write_errors.load(Ordering::Relaxed)),
        ),
    ];
    for (name, kind, help, value) in crate::listener::tls::stats().metrics() {
        let (name, kind) = match name.strip_suffix("_total") {
            Some(name) if kind == "counter" => (name, counter),
            _ => (name, gauge),
        };
        plain.push((name, kind, help, f(value)));
    }
    plain
}

/// A counter family with one label.
fn labelled(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[&str],
    counts: &[u64],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values.iter().zip(counts) {
        ConstCounter::new(*count).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn seconds(micros: u64) -> f64 {
    Duration::from_micros(micros).as_secs_f64()
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        labelled(
            &mut encoder,
            "switchyard_responses",
            "Responses sent to clients, by status class.",
            "class",
            &CLASSES,
            &self.responses,
        )?;
        let mut family = encoder.encode_descriptor(
            "switchyard_requests",
            "Responses sent to clients of requests that matched a route, by route and status class.",
            None,
            MetricType::Counter,
        )?;
        for route in &self.routes {
            for (class, count) in CLASSES.iter().zip(route.responses) {
                let labels = [("route", &*route.labels.first), ("class", class)];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "switchyard_request_duration_seconds",
            "Time from a request's first byte to its response's last byte sent (or the client gone), by route (ms resolution).",
            None,
            MetricType::Histogram,
        )?;
        for route in &self.routes {
            // Per bucket, as counted: the encoder makes them cumulative.
            let buckets: Vec<(f64, u64)> = route
                .duration
                .iter()
                .enumerate()
                .map(|(at, &count)| {
                    let bound = DURATION_BUCKETS_US
                        .get(at)
                        .map_or(f64::INFINITY, |&us| seconds(us));
                    (bound, count)
                })
                .collect();
            let count = route.duration.iter().sum();
            family
                .encode_family(&[("route", &*route.labels.first)])?
                .encode_histogram::<NoLabelSet>(
                    seconds(route.duration_sum_us),
                    count,
                    &buckets,
                    None,
                )?;
        }
        let mut family = encoder.encode_descriptor(
            "switchyard_upstream_responses",
            "Answers of members (each attempt), by cluster, member and status class.",
            None,
            MetricType::Counter,
        )?;
        for member in &self.members {
            for (class, count) in CLASSES.iter().zip(member.responses) {
                let labels = [
                    ("cluster", &*member.labels.first),
                    ("member", &*member.labels.second),
                    ("class", class),
                ];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "switchyard_upstream_failures",
            "Attempts to members that got no answer, by cluster, member and reason (connect, broken, timeout).",
            None,
            MetricType::Counter,
        )?;
        for member in &self.members {
            for (reason, count) in FAILURE_REASONS.iter().zip(member.failures) {
                let labels = [
                    ("cluster", &*member.labels.first),
                    ("member", &*member.labels.second),
                    ("reason", reason),
                ];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        labelled(
            &mut encoder,
            "switchyard_proxy_errors",
            "Requests the proxy answered itself, by reason.",
            "reason",
            &ERROR_KINDS,
            &self.errors,
        )?;
        labelled(
            &mut encoder,
            "switchyard_retries",
            "Attempts sent to another member (over_budget: refused by the retry budget).",
            "reason",
            &RETRY_REASONS,
            &self.retries,
        )?;
        labelled(
            &mut encoder,
            "switchyard_upstream_connect_failures",
            "Connections to members that could not be had, by reason.",
            "reason",
            &CONNECT_REASONS,
            &self.connect_failures,
        )?;
        labelled(
            &mut encoder,
            "switchyard_responses_compressed",
            "Responses compressed on their way to the client (a route's compress), by coding.",
            "algorithm",
            &COMPRESS_ALGORITHMS,
            &self.compressed,
        )?;
        labelled(
            &mut encoder,
            "switchyard_tunnel_bytes",
            "Bytes carried by tunnels (Upgrade, WebSocket), by direction.",
            "direction",
            &["to_member", "to_client"],
            &self.tunnel_bytes,
        )?;
        let limits = ClientLimit::ALL.map(ClientLimit::label);
        labelled(
            &mut encoder,
            "switchyard_client_limits",
            "Clients cut off by a client-side clock or limit, by reason.",
            "reason",
            &limits,
            &self.client,
        )?;
        let buckets: Vec<(f64, u64)> = self
            .apply_buckets
            .iter()
            .enumerate()
            .map(|(at, &count)| {
                (
                    APPLY_BUCKETS.get(at).copied().unwrap_or(f64::INFINITY),
                    count,
                )
            })
            .collect();
        let count = self.apply_buckets.iter().sum();
        encoder
            .encode_descriptor(
                "switchyard_snapshot_apply_duration_seconds",
                "Time to apply a snapshot (validate, compile, swap in).",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(self.apply_sum, count, &buckets, None)?;
        for (name, kind, help, value) in &self.plain {
            let metric = encoder.encode_descriptor(name, help, None, *kind)?;
            match kind {
                MetricType::Counter => ConstCounter::new(*value).encode(metric)?,
                _ => ConstGauge::new(*value).encode(metric)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use crate::admin::metrics::{self, slots::Slot};
    use crate::config::apply::State;

    #[test]
    fn two_slots_with_the_same_labels_are_one_series() {
        let old = Slot::member("merge-c", "m");
        let new = Slot::member("merge-c", "m");
        metrics::member_response(old.index(), StatusCode::OK);
        metrics::member_response(new.index(), StatusCode::OK);
        let page = metrics::render(&State::new("n".to_owned(), None));
        let series =
            "switchyard_upstream_responses_total{cluster=\"merge-c\",member=\"m\",class=\"2xx\"}";
        assert_eq!(page.matches(series).count(), 1, "{page}");
        assert!(page.contains(&format!("{series} 2\n")), "{page}");
    }

    #[test]
    fn a_scrape_sums_routes_and_members_with_their_labels() {
        let route = Slot::route("encode-test");
        let member = Slot::member("c\"x", "m\n1");
        for _ in 0..3 {
            metrics::route_response(
                route.index(),
                StatusCode::OK,
                std::time::Duration::from_millis(3),
            );
        }
        metrics::route_response(
            route.index(),
            StatusCode::BAD_GATEWAY,
            std::time::Duration::from_secs(20),
        );
        metrics::member_response(member.index(), StatusCode::OK);
        let page = metrics::render(&State::new("n".to_owned(), None));
        for line in [
            "switchyard_requests_total{route=\"encode-test\",class=\"2xx\"} 3\n",
            "switchyard_requests_total{route=\"encode-test\",class=\"5xx\"} 1\n",
            "switchyard_request_duration_seconds_bucket{route=\"encode-test\",le=\"0.0025\"} 0\n",
            "switchyard_request_duration_seconds_bucket{route=\"encode-test\",le=\"0.005\"} 3\n",
            "switchyard_request_duration_seconds_bucket{route=\"encode-test\",le=\"10\"} 3\n",
            "switchyard_request_duration_seconds_bucket{route=\"encode-test\",le=\"+Inf\"} 4\n",
            "switchyard_request_duration_seconds_count{route=\"encode-test\"} 4\n",
            // Label values are escaped by the encoder.
            "switchyard_upstream_responses_total{cluster=\"c\\\"x\",member=\"m\\n1\",class=\"2xx\"} 1\n",
            "# TYPE switchyard_request_duration_seconds histogram\n",
            "# TYPE switchyard_responses_total counter\n",
            "# TYPE switchyard_config_version gauge\n",
        ] {
            assert!(page.contains(line), "{line:?} not in:\n{page}");
        }
        drop(route);
        let page = metrics::render(&State::new("n".to_owned(), None));
        assert!(!page.contains("encode-test"), "a route gone has no series");
    }
}
