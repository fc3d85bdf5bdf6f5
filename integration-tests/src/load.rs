//! A bounded client loop: a few concurrent tasks sending requests through the
//! proxy until told to stop, a request budget is spent or a time limit passes,
//! counting every answer that is not a 200 with one of the expected bodies.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Client;

/// Failures kept with their detail; the rest are only counted.
const FAILURES_KEPT: usize = 20;

/// What to send and what counts as success.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Requests go to these URLs in turn.
    pub urls: Vec<String>,
    /// A 200 whose body is not one of these is a failure.
    pub expected_bodies: Vec<String>,
    pub concurrency: usize,
    /// The most requests sent, all tasks together.
    pub max_requests: usize,
    /// The loop ends after this long even if not stopped.
    pub max_duration: Duration,
}

#[derive(Debug, Default)]
struct Stats {
    sent: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
    failures: Mutex<Vec<String>>,
    bodies: Mutex<BTreeMap<String, usize>>,
}

/// A running load; dropping it aborts it.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    tasks: JoinSet<()>,
    started: Instant,
}

/// What a load saw, once stopped.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub sent: usize,
    pub ok: usize,
    pub failed: usize,
    /// The first failures, with what was received.
    pub failures: Vec<String>,
    /// How many 200s each body got.
    pub bodies: BTreeMap<String, usize>,
    pub elapsed: Duration,
}

impl Load {
    /// Starts `options.concurrency` tasks sharing one keep-alive client.
    pub fn start(options: LoadOptions) -> Self {
        assert!(!options.urls.is_empty(), "a load needs URLs");
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let options = Arc::new(options);
        let client = Client::new();
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..options.concurrency {
            let (stop, stats, options, client) = (
                Arc::clone(&stop),
                Arc::clone(&stats),
                Arc::clone(&options),
                client.clone(),
            );
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) && started.elapsed() < options.max_duration {
                    let n = stats.sent.fetch_add(1, Ordering::Relaxed);
                    if n >= options.max_requests {
                        stats.sent.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                    let url = &options.urls[n % options.urls.len()];
                    let outcome = client.send(Method::GET, url, &[], None).await;
                    stats.record(url, outcome, &options.expected_bodies);
                }
            });
        }
        Load {
            stop,
            stats,
            tasks,
            started,
        }
    }

    /// How many requests got an expected answer so far.
    pub fn ok_count(&self) -> usize {
        self.stats.ok.load(Ordering::Relaxed)
    }

    /// How many requests failed so far.
    pub fn failed_count(&self) -> usize {
        self.stats.failed.load(Ordering::Relaxed)
    }

    /// Stops the loop, waits for the requests in flight, and reports.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                panic!("a load task failed: {e}");
            }
        }
        let stats = &self.stats;
        LoadReport {
            sent: stats.sent.load(Ordering::Relaxed),
            ok: stats.ok.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
            failures: stats
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            bodies: stats
                .bodies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Stats {
    fn record(&self, url: &str, outcome: anyhow::Result<crate::Response>, expected: &[String]) {
        let failure = match outcome {
            Ok(r) if r.status == StatusCode::OK && expected.contains(&r.body) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
                *bodies.entry(r.body).or_default() += 1;
                return;
            }
            Ok(r) => format!("GET {url}: {} {:?}", r.status, r.body),
            Err(e) => format!("{e:#}"),
        };
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() < FAILURES_KEPT {
            failures.push(failure);
        }
    }
}
