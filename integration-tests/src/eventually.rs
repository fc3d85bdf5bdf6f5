//! Waiting without sleeping blindly: poll a probe until it holds or a deadline
//! passes, and report what was last seen when it never held.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

/// How often a probe is run.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Runs `probe` until it returns `Ok`, and returns that value; panics with
/// `what` and the last `Err` once `deadline` has passed.
pub async fn eventually<T, E: Display>(
    what: &str,
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if start.elapsed() >= deadline => {
                panic!("{what}: still not true after {deadline:?}; last observed: {last}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Runs `probe` again and again for `duration` and panics the first time it
/// does not hold: for what must *stay* true (no resend, no failure).
pub async fn consistently<E: Display>(
    what: &str,
    duration: Duration,
    mut probe: impl AsyncFnMut() -> Result<(), E>,
) {
    let start = Instant::now();
    let mut polls = 0_u32;
    while start.elapsed() < duration || polls < 2 {
        if let Err(seen) = probe().await {
            panic!(
                "{what}: stopped holding after {:?}: {seen}",
                start.elapsed()
            );
        }
        polls += 1;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
