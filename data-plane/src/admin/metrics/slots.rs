//! Counters per route and per member, kept per worker thread and indexed by a
//! slot number: the request path does an array index into its own thread's
//! block (no hash, no string, no allocation, no shared cache line written);
//! the labels are looked up only when `/metrics` is scraped.
//!
//! A route's slot is handed out when a table with the route is compiled and
//! is kept by name while any table has it; a member's when its state in
//! `upstream` is made (that state outlives tables). A slot given back is reused
//! only after its counters were zeroed in every thread, which is safe because
//! nothing counts on a slot once its owner ([`Slot`]) is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, Weak};

/// Slots per chunk; a thread's chunk is made the first time it counts on a slot in it.
const CHUNK: usize = 256;
/// Chunks per kind: at most `CHUNK × CHUNKS` (262,144) routes, and as many members,
/// are counted at once; a slot past that counts nothing.
const CHUNKS: usize = 1024;
/// The slot of nothing: counting on it does nothing.
pub const NONE: u32 = u32::MAX;

/// A counter only its own thread writes: a load and a store, no locked
/// instruction; read by the scrape from another thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn zero(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// Upper bounds (µs) of `switchyard_request_duration_seconds`' buckets; the
/// last bucket of [`RouteCounters::duration`] is `+Inf`.
pub const DURATION_BUCKETS_US: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// What one thread counted for one route.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Responses the client got, by status class 1xx … 5xx.
    pub responses: [Counter; 5],
    /// Request durations, one counter per bucket (not cumulative), `+Inf` last.
    pub duration: [Counter; DURATION_BUCKETS_US.len() + 1],
    /// Their sum, in µs.
    pub duration_sum_us: Counter,
}

/// Why an attempt to a member failed (`switchyard_upstream_failures_total{reason}`).
pub const FAILURE_REASONS: [&str; 3] = ["connect", "broken", "timeout"];

/// What one thread counted for one member.
#[derive(Debug, Default)]
pub struct MemberCounters {
    /// Responses the member answered, by status class 1xx … 5xx.
    pub responses: [Counter; 5],
    /// Attempts that got no answer, by [`FAILURE_REASONS`].
    pub failures: [Counter; FAILURE_REASONS.len()],
}

/// Counters set back to 0 when their slot is reused.
pub(super) trait Zero {
    fn zero(&self);
}

impl Zero for RouteCounters {
    fn zero(&self) {
        self.responses.iter().for_each(Counter::zero);
        self.duration.iter().for_each(Counter::zero);
        self.duration_sum_us.zero();
    }
}

impl Zero for MemberCounters {
    fn zero(&self) {
        self.responses.iter().for_each(Counter::zero);
        self.failures.iter().for_each(Counter::zero);
    }
}

/// One thread's counters of one kind, by slot, in chunks made on first use.
#[derive(Debug)]
pub struct Block<T> {
    chunks: Box<[OnceLock<Box<[T]>>]>,
}

impl<T: Default> Default for Block<T> {
    fn default() -> Self {
        Block {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl<T: Default> Block<T> {
    /// The counters of `slot`, their chunk made if this thread has none yet;
    /// `None` for [`NONE`] (or past the last chunk).
    #[inline]
    pub fn get(&self, slot: u32) -> Option<&T> {
        let slot = slot as usize;
        let chunk = self.chunks.get(slot / CHUNK)?;
        let chunk = chunk.get_or_init(|| (0..CHUNK).map(|_| T::default()).collect());
        chunk.get(slot % CHUNK)
    }

    /// The counters of `slot` if this thread ever counted near it (the scrape).
    pub fn peek(&self, slot: u32) -> Option<&T> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?.get()?.get(slot % CHUNK)
    }
}

/// The labels of a slot: a route's name, or a member's cluster and id.
#[derive(Debug, Clone)]
pub struct Labels {
    pub first: Arc<str>,
    pub second: Arc<str>,
}

/// The slots of one kind: who has which, and those given back.
#[derive(Debug, Default)]
struct Slots {
    labels: Vec<Option<Labels>>,
    free: Vec<u32>,
    /// Routes only: the slot of each route name while a table has the route.
    by_name: HashMap<Arc<str>, Weak<Slot>>,
}

/// The two kinds of slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Route,
    Member,
}

static ROUTES: LazyLock<Mutex<Slots>> = LazyLock::new(Mutex::default);
static MEMBERS: LazyLock<Mutex<Slots>> = LazyLock::new(Mutex::default);

fn slots(kind: Kind) -> MutexGuard<'static, Slots> {
    let slots = match kind {
        Kind::Route => &ROUTES,
        Kind::Member => &MEMBERS,
    };
    slots.lock().unwrap_or_else(|e| e.into_inner())
}

/// A slot held: counting on it is counting for its owner (a route name, kept
/// by every table that has the route; a member's state). Given back when dropped.
#[derive(Debug)]
pub struct Slot {
    index: u32,
    kind: Kind,
}

impl Slot {
    /// The slot number the request path counts on.
    #[inline]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The slot of route `name`: the one it has if a table still has the
    /// route, a new one otherwise.
    pub fn route(name: &str) -> Arc<Slot> {
        let mut slots = slots(Kind::Route);
        if let Some(slot) = slots.by_name.get(name).and_then(Weak::upgrade) {
            return slot;
        }
        let name: Arc<str> = Arc::from(name);
        let labels = Labels {
            first: name.clone(),
            second: Arc::from(""),
        };
        let slot = Arc::new(Slot {
            index: take(&mut slots, Kind::Route, labels),
            kind: Kind::Route,
        });
        slots.by_name.insert(name, Arc::downgrade(&slot));
        slot
    }

    /// A new slot for a member of `cluster` with `id`.
    pub fn member(cluster: &str, id: &str) -> Slot {
        let labels = Labels {
            first: Arc::from(cluster),
            second: Arc::from(id),
        };
        Slot {
            index: take(&mut slots(Kind::Member), Kind::Member, labels),
            kind: Kind::Member,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.index == NONE {
            return;
        }
        let mut slots = slots(self.kind);
        let Some(labels) = slots
            .labels
            .get_mut(self.index as usize)
            .and_then(Option::take)
        else {
            return;
        };
        if self.kind == Kind::Route
            && slots
                .by_name
                .get(&labels.first)
                .is_some_and(|slot| slot.strong_count() == 0)
        {
            slots.by_name.remove(&labels.first);
        }
        slots.free.push(self.index);
    }
}

/// A free slot (its counters zeroed in every thread) or a new one; [`NONE`]
/// when every slot is taken.
fn take(slots: &mut Slots, kind: Kind, labels: Labels) -> u32 {
    if let Some(index) = slots.free.pop() {
        // Nothing counts on a slot given back: zeroing it races with nobody.
        super::for_each_thread(|stats| match kind {
            Kind::Route => {
                if let Some(counters) = stats.routes.peek(index) {
                    counters.zero();
                }
            }
            Kind::Member => {
                if let Some(counters) = stats.members.peek(index) {
                    counters.zero();
                }
            }
        });
        if let Some(entry) = slots.labels.get_mut(index as usize) {
            *entry = Some(labels);
        }
        return index;
    }
    if slots.labels.len() >= CHUNK * CHUNKS {
        return NONE;
    }
    slots.labels.push(Some(labels));
    u32::try_from(slots.labels.len() - 1).unwrap_or(NONE)
}

/// Every slot of `kind` held now, with its labels (the scrape).
pub fn held(kind: Kind) -> Vec<(u32, Labels)> {
    let slots = slots(kind);
    slots
        .labels
        .iter()
        .enumerate()
        .filter_map(|(index, labels)| Some((u32::try_from(index).ok()?, labels.clone()?)))
        .collect()
}
