//! Per-key state maintained in time order: the operator behind GROUP BY and top-k.
//!
//! Petrel's timestamps are totally ordered milliseconds, so a key's result at time `t` is a
//! fold of the key's updates up to `t`. The fold gets each key's updates on one worker (the
//! updates exchanged by key, or, for a datasource's rows in a single process, the positions
//! of its rows in the shared batch, routed by the worker that read them) and applies them to
//! the key's state in time order: updates at the input frontier's own time are folded as
//! they arrive (that time is the next to complete), later ones wait for their time. When
//! a time completes, it emits, for every key the time touched, the retraction of the key's
//! old output rows and the insertion of its new ones (consolidated). The work per
//! time is proportional to the updates and the touched keys' outputs, never to the keys'
//! whole history: there is no arrangement to merge and no group to re-read, only a hash
//! table of small states (accumulators, ordered maps of distinct values, ordered rows).

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use petrel_sql::Expr;
use petrel_value::{Row, Value};
use smallvec::SmallVec;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::Stream;

use crate::guard::Guard;
use crate::render::{plain_columns, Rows};
use crate::source::{Scan, Slice, Slices};
use petrel_view::slot_table::SlotTable;

/// One key's state: updates fold into it, and it says what rows the key outputs.
pub trait KeyedState: 'static {
    /// What one input record carries for the key.
    type Update: ExchangeData;
    /// The alignment the key's slot takes in its table: [`CacheLine`] for a state whose slot
    /// (hash, key, state) fits two cache lines when it starts on one, `()` otherwise (a
    /// larger alignment would pad every slot).
    type Alignment: 'static;
    /// Applies `update` with multiplicity `diff` (negative for retractions).
    fn apply(&mut self, update: Self::Update, diff: isize);
    /// When the state knows exactly how applying `update` changes its output rows, applies
    /// it and appends that change to `delta`, so the key's output is never re-read (a top-k
    /// whose window holds all its rows). Otherwise applies nothing and gives `update` back.
    fn apply_delta(
        &mut self,
        update: Self::Update,
        _diff: isize,
        _delta: &mut Vec<(Row, isize)>,
    ) -> Result<(), Self::Update> {
        Err(update)
    }
    /// Fetches into the cache what applying `update` will read inside the state (a
    /// distinct value's entry), a few updates ahead of it. A hint: it changes nothing.
    fn prefetch(&self, _update: &Self::Update) {}
    /// Whether [`KeyedState::prefetch`] may fetch anything for `update`: the fold finds the
    /// update's slot ahead of it only then (finding it reads the slot, which only the folds
    /// in between would otherwise wait for).
    fn reads_inside(_update: &Self::Update) -> bool {
        false
    }
    /// A time the key's updates came at is complete: every update of it was applied, so
    /// the state's multiplicities are the rows' own (none negative) and it may compact.
    fn settle(&mut self) {}
    /// Appends the key's output rows (none when the key has no result).
    fn output(&self, key: &[Value], out: &mut Vec<Row>);
    /// True when the state holds nothing, so the key can be forgotten.
    fn is_empty(&self) -> bool;
}

/// An update with its key and the key's hash ([`route`]), computed once: the exchange sends
/// it by the hash, and the fold finds the key's state by it.
type Routed<U> = (u64, Row, U);

/// An update as the fold takes it: its key's hash, the key, the update.
type Keyed<U> = (u64, Key, U);

/// Updates waiting for their time to complete, by time, with a capability to emit at it.
type Pending<U> = BTreeMap<u64, (Capability<u64>, Vec<(Keyed<U>, isize)>)>;

/// How a key touched in the time being folded will say what changed.
enum Touched {
    /// Its output rows' changes so far, as its state reported them.
    Delta(Vec<(Row, isize)>),
    /// Its output rows before the time, `len` of them from `start` in [`States::before`]:
    /// the new ones are diffed against them.
    Before { start: usize, len: usize },
}

/// A key as its slot keeps it: up to two values inline (the usual `GROUP BY a, b`), so a
/// probe that finds the key's slot compares its values there, without a second cache miss
/// behind a pointer.
pub(crate) type Key = SmallVec<[Value; 2]>;

/// A key's entry in [`States::slots`]: its hash, the key, its slot.
#[cfg(test)]
pub(crate) type Entry<S> = (u64, Key, Slot<S>);

/// One key's state, and, when the time being folded touched the key, its place in
/// [`States::touched`] plus one (0: not touched). What the time changed in the key's output is
/// kept there, not in the slot: the slot is copied each time its table grows, and most keys
/// are not touched by a given time.
pub(crate) struct Slot<S: KeyedState> {
    state: S,
    touched: usize,
    /// No bytes: the state's alignment ([`KeyedState::Alignment`]).
    _alignment: [S::Alignment; 0],
}

/// No bytes, aligned to a cache line: a [`KeyedState::Alignment`] that puts each slot of
/// a state's table on whole lines.
#[repr(align(64))]
pub(crate) struct CacheLine;

/// Keys' states in a hash table, and the keys the time being folded touched (in first-touch
/// order, by position): an update hashes its key once, and draining a time finds each touched
/// key at its position, without hashing, comparing or cloning keys again.
struct States<S: KeyedState> {
    /// Each key with its hash: the table rehashes as it grows by the stored hash, without
    /// hashing each key's values again (reading them behind their pointer, a cache miss
    /// each), and a probe compares keys only where the hashes are equal. A key's place in
    /// it is fetched ahead by its hash alone ([`SlotTable`]).
    slots: SlotTable<Key, Slot<S>>,
    /// Each touched key's position in `slots` and what the time changed in its output so
    /// far. Positions hold until the time is drained (keys are forgotten only then).
    touched: Vec<(usize, Touched)>,
    /// The touched keys' output rows before the time, one run per key: one vector for the
    /// time, not one per key.
    before: Vec<Row>,
    /// A key's output rows after the time, while its changes are made.
    after: Vec<Row>,
    /// The next updates [`States::fold_all`] folds (kept for the next run's).
    window: VecDeque<(Keyed<S::Update>, isize)>,
}

impl<S: KeyedState> States<S> {
    fn new() -> Self {
        States {
            slots: SlotTable::new(),
            touched: Vec::new(),
            before: Vec::new(),
            after: Vec::new(),
            window: VecDeque::new(),
        }
    }

    /// Asks the processor to fetch the slot of the key with `hash` (the first whose
    /// fingerprint matches: the key's, unless it is new or another key's collides) into its
    /// cache. Reads the key's cells (fetched ahead), not its slot.
    fn fetch_slot(&self, hash: u64) {
        if let Some(position) = self.slots.likely_position(hash) {
            self.slots.prefetch_position(position);
        }
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.touched.clear();
        self.before.clear();
    }

    /// Folds a run of updates ([`States::fold`]) through a window of the next 16: each key's
    /// cell in the table is fetched into the cache as its update enters the window, its slot
    /// 8 updates ahead (the cell read from the cache by then), and 4 updates ahead what the
    /// update reads inside the state ([`KeyedState::prefetch`]): in a table of many groups
    /// each is a cache miss, which the folds of the updates in between hide. The window stays
    /// in the cache; the updates are made one by one as it needs them (a batch's updates
    /// gathered first were written to memory and read back, a copy of each).
    fn fold_all(
        &mut self,
        fresh: &impl Fn() -> S,
        mut updates: impl Iterator<Item = (Keyed<S::Update>, isize)>,
    ) {
        let mut window = std::mem::take(&mut self.window);
        while window.len() < 2 * PREFETCH_AHEAD && pull(&mut updates, &mut window, &self.slots) {}
        for ((hash, _, _), _) in window.iter().take(PREFETCH_AHEAD) {
            self.fetch_slot(*hash);
        }
        loop {
            pull(&mut updates, &mut window, &self.slots);
            let Some((keyed, diff)) = window.pop_front() else {
                break;
            };
            if let Some(((hash, _, _), _)) = window.get(PREFETCH_AHEAD - 1) {
                self.fetch_slot(*hash);
            }
            if let Some(((hash, _, update), _)) = window
                .get(PREFETCH_AHEAD / 2 - 1)
                .filter(|((_, _, update), _)| S::reads_inside(update))
            {
                let found = self.slots.likely_position(*hash);
                let entry = found.and_then(|p| self.slots.get(p));
                if let Some((_, _, slot)) = entry.filter(|(h, _, _)| h == hash) {
                    slot.state.prefetch(update);
                }
            }
            self.fold(fresh, keyed, diff);
        }
        self.window = window;
    }

    /// Folds one update into its key's state, keeping what the time changed in its output:
    /// the state's own delta when it can give one, else its output rows before the time.
    fn fold(&mut self, fresh: &impl Fn() -> S, (hash, key, update): Keyed<S::Update>, diff: isize) {
        let States {
            slots,
            touched,
            before,
            ..
        } = self;
        let fresh_slot = || Slot {
            state: fresh(),
            touched: 0,
            _alignment: [],
        };
        let (position, (_, key, slot)) = slots.find_or_insert(hash, key, fresh_slot);
        let update = match slot.touched.checked_sub(1).and_then(|i| touched.get_mut(i)) {
            Some((_, change)) => match change {
                Touched::Before { .. } => update,
                Touched::Delta(delta) => match slot.state.apply_delta(update, diff, delta) {
                    Ok(()) => return,
                    Err(update) => {
                        // The output before the time: the output now, less the delta so far.
                        let delta = std::mem::take(delta);
                        let mut rows = Vec::new();
                        slot.state.output(key, &mut rows);
                        let mut was: Vec<(Row, isize)> = rows.into_iter().map(|r| (r, 1)).collect();
                        was.extend(delta.into_iter().map(|(r, n)| (r, -n)));
                        consolidate(&mut was);
                        let start = before.len();
                        before.extend(
                            was.into_iter()
                                .flat_map(|(r, n)| std::iter::repeat_n(r, n.max(0) as usize)),
                        );
                        let len = before.len() - start;
                        *change = Touched::Before { start, len };
                        update
                    }
                },
            },
            None => {
                let mut delta = Vec::new();
                match slot.state.apply_delta(update, diff, &mut delta) {
                    Ok(()) => {
                        touched.push((position, Touched::Delta(delta)));
                        slot.touched = touched.len();
                        return;
                    }
                    Err(update) => {
                        let start = before.len();
                        slot.state.output(key, before);
                        let len = before.len() - start;
                        touched.push((position, Touched::Before { start, len }));
                        slot.touched = touched.len();
                        update
                    }
                }
            }
        };
        slot.state.apply(update, diff);
    }

    /// Appends, for every key the time touched, its output's changes (consolidated per key),
    /// and forgets the keys whose state is empty.
    fn drain_changes(&mut self, mut emit: impl FnMut(&mut Vec<(Row, isize)>)) {
        let States {
            slots,
            touched,
            before,
            after,
            ..
        } = self;
        let mut changes: Vec<(Row, isize)> = Vec::new();
        // Each touched key's slot is fetched a few keys ahead, at its position.
        for (position, _) in touched.iter().take(PREFETCH_AHEAD) {
            slots.prefetch_position(*position);
        }
        let mut empty = Vec::new();
        let mut drained = touched.drain(..);
        while let Some((position, change)) = drained.next() {
            if let Some((ahead, _)) = drained.as_slice().get(PREFETCH_AHEAD - 1) {
                slots.prefetch_position(*ahead);
            }
            let Some((_, key, slot)) = slots.get_mut(position) else {
                continue;
            };
            slot.touched = 0;
            match change {
                Touched::Delta(delta) => changes.extend(delta),
                Touched::Before { start, len } => {
                    slot.state.settle();
                    // Each key's run is taken once: the rows move out, leaving empty ones.
                    let old = before[start..start + len].iter_mut().map(std::mem::take);
                    changes.extend(old.map(|r| (r, -1)));
                    slot.state.output(key, after);
                    changes.extend(after.drain(..).map(|r| (r, 1)));
                }
            }
            if slot.state.is_empty() {
                empty.push(position);
            }
            consolidate_key(&mut changes);
            emit(&mut changes);
            changes.clear();
        }
        before.clear();
        // Forgotten only now: forgetting a key moves another into its place.
        slots.remove_positions(empty);
    }
}

/// Takes the next of `updates` into `window`, asking the processor for its key's cell in
/// `slots` ([`States::fold_all`]); false when none is left.
fn pull<U, K, V>(
    updates: &mut impl Iterator<Item = (Keyed<U>, isize)>,
    window: &mut VecDeque<(Keyed<U>, isize)>,
    slots: &SlotTable<K, V>,
) -> bool {
    match updates.next() {
        Some(update) => {
            slots.prefetch_cell(update.0 .0);
            window.push_back(update);
            true
        }
        None => false,
    }
}

/// Consolidates one key's changes as [`consolidate`] does (sorted, equal rows summed, zeros
/// dropped). The usual change of a key, its row's retraction and its new version, is settled
/// with one comparison instead of a sort and a second pass.
fn consolidate_key(changes: &mut Vec<(Row, isize)>) {
    if let [(a, x), (b, y)] = changes.as_mut_slice() {
        if *x != 0 && *y != 0 {
            match Ord::cmp(&*a, &*b) {
                Ordering::Less => {}
                Ordering::Greater => changes.swap(0, 1),
                Ordering::Equal => {
                    let sum = *x + *y;
                    *x = sum;
                    changes.truncate(usize::from(sum != 0));
                }
            }
            return;
        }
    }
    consolidate(changes);
}

/// How many updates ahead [`States::fold_all`] fetches what an update reads inside its
/// key's state (and twice as many, the key's slot), and [`States::drain_changes`] a touched
/// key's slot.
const PREFETCH_AHEAD: usize = 8;

/// A key's worker: a hash that is the same on every worker and in every process.
fn route(key: &[Value]) -> u64 {
    route_values(key.len(), key.iter())
}

/// [`route`] of a key given as its `len` values: its length, then its values, hashed one
/// definition for keys made and keys read where they lie.
fn route_values<'v>(len: usize, values: impl Iterator<Item = &'v Value>) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_usize(len);
    for v in values {
        v.hash(&mut h);
    }
    h.finish()
}

/// [`route`] of the key made of `row`'s `columns`, read where they lie; `None` when the row
/// lacks one of them.
fn route_columns(row: &[Value], columns: &[usize]) -> Option<u64> {
    if columns.iter().any(|&c| c >= row.len()) {
        return None;
    }
    Some(route_values(
        columns.len(),
        columns.iter().map(|&c| &row[c]),
    ))
}

/// The worker (of `peers`) that folds a key of this [`route`] hash when a batch is read where
/// it lies. The hash is mixed first: a hash's bits that the workers' hash tables do not use
/// depend on only a few low bits of each value (keys such as days, multiples of 2^7 seconds,
/// would all fall on one worker), and a multiply carries every bit into the high ones.
///
/// The worker is the mixed hash's remainder by `peers`, its low bits: a worker's keys then
/// still differ in the high bits, which place them in the worker's own table
/// ([`SlotTable`]; choosing the worker by the high bits left each table half its places).
fn worker_of(hash: u64, peers: usize) -> usize {
    let mixed = (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize;
    let peers = peers.max(1);
    // The same remainder without a division (every worker paid one on every row of every
    // batch) when `peers` is a power of two, as it usually is.
    if peers.is_power_of_two() {
        mixed & (peers - 1)
    } else {
        mixed % peers
    }
}

/// One worker's share of a fold by key: the keys' states, the updates waiting for their time,
/// and the time being folded early. Both ways of feeding a fold (updates exchanged by key, or
/// a datasource's batches read where they lie) drive it the same way.
struct Fold<S: KeyedState> {
    pending: Pending<S::Update>,
    states: States<S>,
    /// The time being folded early, if any (see [`Fold::take`]), with a capability for it.
    early: Option<(u64, Capability<u64>)>,
}

impl<S: KeyedState> Fold<S> {
    fn new() -> Self {
        Fold {
            pending: BTreeMap::new(),
            states: States::new(),
            early: None,
        }
    }

    /// Forgets everything (a failed or dropped view), releasing the capabilities.
    fn clear(&mut self) {
        self.pending.clear();
        self.early = None;
        self.states.clear();
    }

    /// Whether an update at `t` folds as it comes, `at` being the input frontier's time: its
    /// time is the next to complete (no update before it can arrive any more, none earlier is
    /// pending, no other time is being folded early), so the fold's order stays the times'
    /// order, and a large time (a replay) costs its state, not a buffer of updates.
    fn folds_now(&self, at: Option<u64>, t: u64) -> bool {
        match &self.early {
            Some((e, _)) => *e == t,
            None => at == Some(t) && self.pending.first_key_value().is_none_or(|(k, _)| *k >= t),
        }
    }

    /// Takes updates at `t`: folds them now when [`Fold::folds_now`], else keeps them until
    /// `t` completes. `cap` makes a capability for `t`, asked for at most once.
    fn take(
        &mut self,
        at: Option<u64>,
        t: u64,
        cap: impl FnOnce() -> Capability<u64>,
        fresh: &impl Fn() -> S,
        updates: impl Iterator<Item = (Keyed<S::Update>, isize)>,
    ) {
        if self.folds_now(at, t) {
            if self.early.is_none() {
                self.early = Some((t, cap()));
            }
            self.states.fold_all(fresh, updates);
        } else {
            let (_, pending) = self.pending.entry(t).or_insert_with(|| (cap(), Vec::new()));
            pending.extend(updates);
        }
    }

    /// The earliest time `done` says no update can come at any more, with a capability for
    /// it, once its waiting updates are folded: [`States::drain_changes`] then gives its
    /// changes.
    fn next_complete(
        &mut self,
        done: impl Fn(u64) -> bool,
        fresh: &impl Fn() -> S,
    ) -> Option<(Capability<u64>, u64)> {
        // The early time is always the earliest.
        let next = match (&self.early, self.pending.first_key_value()) {
            (Some((t, _)), _) => *t,
            (None, Some((t, _))) => *t,
            (None, None) => return None,
        };
        if !done(next) {
            return None;
        }
        let cap = match self.early.take() {
            Some((_, cap)) => cap,
            None => {
                let (_, (cap, updates)) = self.pending.pop_first()?;
                self.states.fold_all(fresh, updates.into_iter());
                cap
            }
        };
        // Updates at the same time that arrived before it was foldable.
        if self
            .pending
            .first_key_value()
            .is_some_and(|(t, _)| *t == next)
        {
            if let Some((_, (_, updates))) = self.pending.pop_first() {
                self.states.fold_all(fresh, updates.into_iter());
            }
        }
        Some((cap, next))
    }
}

/// Folds `input`'s updates into one state per key (made by `fresh`), in time order, and
/// outputs each key's rows as they change.
pub fn fold_by_key<'s, S, F>(
    input: VecCollection<'s, u64, (Row, S::Update), isize>,
    guard: Guard,
    fresh: F,
) -> Rows<'s>
where
    S: KeyedState,
    F: Fn() -> S + 'static,
{
    let pact = Exchange::new(|(d, _, _): &(Routed<S::Update>, u64, isize)| d.0);
    let routed = input
        .inner
        .map(|((key, update), time, diff)| ((route(&key), key, update), time, diff));
    fold_operator(
        routed,
        pact,
        "FoldByKey",
        guard,
        fresh,
        |fold, fresh, at, cap, data| {
            // A container's updates mostly share one time: they are taken a run of equal times
            // at once.
            let mut drained = data.drain(..).peekable();
            while let Some(&(_, t, _)) = drained.peek() {
                let run = std::iter::from_fn(|| drained.next_if(|(_, t2, _)| *t2 == t))
                    .map(|((hash, key, update), _, r)| ((hash, Key::from_vec(key), update), r));
                fold.take(at, t, || cap.delayed(&t, 0), fresh, run);
            }
        },
    )
}

/// The most changes a fold hands on in one container. A time's changes are sent as a few
/// containers of many changes rather than one change at a time (a container builder's check
/// and copy per change, and a new container per 8 KiB, cost the emitting worker more than
/// the changes' rows), and bounded so that a replay's many changes at one time are not held
/// twice at once.
const EMIT_CHUNK: usize = 1 << 16;

/// The operator around a [`Fold`]: `take` hands each input container's updates to the fold
/// (given the input frontier's time and the container's capability); every time the frontier
/// passes is then published, key by key. A failed or dropped view's fold holds nothing back:
/// its input is dropped and its capabilities released, so the dataflow goes quiet.
fn fold_operator<'s, S, F, D, P>(
    stream: Stream<'s, u64, Vec<D>>,
    pact: P,
    name: &str,
    guard: Guard,
    fresh: F,
    mut take: impl FnMut(&mut Fold<S>, &F, Option<u64>, &InputCapability<u64>, &mut Vec<D>) + 'static,
) -> Rows<'s>
where
    S: KeyedState,
    F: Fn() -> S + 'static,
    D: Clone + 'static,
    P: ParallelizationContract<u64, Vec<D>>,
{
    stream
        .unary_frontier::<CapacityContainerBuilder<Vec<(Row, u64, isize)>>, _, _, _>(
            pact,
            name,
            move |_, _| {
                let mut fold: Fold<S> = Fold::new();
                move |(input, frontier), output| {
                    if guard.stopped() {
                        input.for_each(|_, data| data.clear());
                        fold.clear();
                        return;
                    }
                    let _ = guard.run(|| {
                        let at = frontier.frontier().first().copied();
                        input.for_each(|cap, data| take(&mut fold, &fresh, at, &cap, data));
                        let done = |t: u64| !frontier.less_equal(&t);
                        while let Some((cap, t)) = fold.next_complete(done, &fresh) {
                            let mut session = output.session(&cap);
                            // A key's usual change is two rows: its old one and its new one.
                            let chunk = fold.states.touched.len().saturating_mul(2).min(EMIT_CHUNK);
                            let mut out = Vec::with_capacity(chunk);
                            fold.states.drain_changes(|changes| {
                                out.extend(changes.drain(..).map(|(row, diff)| (row, t, diff)));
                                if out.len() >= EMIT_CHUNK {
                                    session.give_container(&mut out);
                                    out = Vec::with_capacity(chunk);
                                }
                            });
                            if !out.is_empty() {
                                session.give_container(&mut out);
                            }
                        }
                    });
                }
            },
        )
        .as_collection()
}

/// Folds a datasource's rows, read where they lie in its batches through `scan`, into one state
/// per key (made by `fresh`), in time order, and outputs each key's rows as they change: the
/// fold of [`fold_by_key`] for a single process. No update is combined or exchanged between
/// workers on its way to its key's state: each worker finds which worker's key every row of
/// its own slices of a batch has ([`RowRouter::route_slice`]) and hands each worker the
/// indices of its rows in the batch with their keys' hashes, so a row's key is hashed once and
/// a worker reads only its own rows (updates at a time after the input frontier's still wait
/// for it in the fold). Where the key is known only after the scan ([`Routing::AfterScan`]),
/// every worker reads each batch whole and keeps its own rows. `keys` are the key's expressions over the
/// rows the scan keeps; `update_of` gives what such a row carries for its key.
pub(crate) fn fold_scanned_by_key<'s, S, F>(
    (scan, slices, guard): (Scan, Slices<'s>, Guard),
    keys: Vec<Expr>,
    update_of: impl Fn(&Row) -> S::Update + 'static,
    fresh: F,
) -> Rows<'s>
where
    S: KeyedState,
    F: Fn() -> S + 'static,
{
    let (peers, index) = (slices.scope().peers(), slices.scope().index());
    let routing = Routing::new(&scan, &keys);
    let router = RowRouter {
        routing: routing.clone(),
        scan: scan.clone(),
        guard: guard.clone(),
        keys: keys.clone(),
        peers,
    };
    let spread = slices.flat_map(move |slice| router.route_slice(slice));
    let pact = Exchange::new(|(to, _): &(u64, RoutedSlice)| *to);
    let scan_guard = guard.clone();
    // The projected row of the row being read, made in one vector for every row.
    let mut made = Row::new();
    fold_operator(
        spread,
        pact,
        "FoldScannedByKey",
        guard,
        fresh,
        move |fold, fresh, at, cap, data| {
            let own = |hash: u64| worker_of(hash, peers) == index;
            for (_, RoutedSlice { slice, rows }) in data.drain(..) {
                // The engine sends no slice older than its input's time.
                let t = cap.least().map_or(slice.ts, |&c| slice.ts.max(c));
                let batch = &slice.rows;
                let delayed = || cap.delayed(&t, 0);
                match rows {
                    OwnRows::Hashed(rows) => {
                        let updates = rows.iter().filter_map(|&(i, hash)| {
                            let (row, diff) = batch.get(i)?;
                            let row = scan.apply_in(&scan_guard, row, &mut made)?;
                            Some(((hash, key_of(&keys, row), update_of(row)), *diff))
                        });
                        fold.take(at, t, delayed, fresh, updates);
                    }
                    OwnRows::Keyed(rows) => {
                        let updates = rows.into_iter().filter_map(|(i, hash, key)| {
                            let (row, diff) = batch.get(i)?;
                            let row = scan.project(&scan_guard, row)?;
                            Some(((hash, key, update_of(&row)), *diff))
                        });
                        fold.take(at, t, delayed, fresh, updates);
                    }
                    OwnRows::All => {
                        let columns = match &routing {
                            Routing::AfterScan(columns) => columns.as_deref(),
                            _ => None,
                        };
                        let updates = slice.updates().iter().filter_map(|(row, diff)| {
                            let row = scan.apply(&scan_guard, row)?;
                            let hash = columns.and_then(|c| route_columns(&row, c));
                            if hash.is_some_and(|h| !own(h)) {
                                return None;
                            }
                            let key = key_of(&keys, &row);
                            let hash = hash.unwrap_or_else(|| route(&key));
                            own(hash).then(|| ((hash, key, update_of(&row)), *diff))
                        });
                        fold.take(at, t, delayed, fresh, updates);
                    }
                }
            }
        },
    )
}

/// The key `keys` make of a row the scan kept.
fn key_of(keys: &[Expr], row: &Row) -> Key {
    keys.iter().map(|e| e.eval(row)).collect()
}

/// A slice of a batch as one worker of [`fold_scanned_by_key`] receives it, with which of its
/// rows are the worker's.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct RoutedSlice {
    slice: Slice,
    rows: OwnRows,
}

/// The rows of a [`RoutedSlice`] slice that are the receiving worker's, as the worker that routed
/// the slice found them.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum OwnRows {
    /// Every row of the slice: the receiving worker finds its own ([`Routing::AfterScan`]).
    All,
    /// Each row's index in the batch and its key's hash; the receiving worker runs the scan
    /// on it and makes its key ([`Routing::Columns`]).
    Hashed(Vec<(usize, u64)>),
    /// Each row's index in the batch, its key's hash and its key, for rows the scan's
    /// filters keep; the receiving worker runs the scan's projections on it
    /// ([`Routing::Exprs`]).
    Keyed(Vec<(usize, u64, Key)>),
}

/// What the worker that receives a slice of a batch needs to send each worker its rows
/// ([`RowRouter::route_slice`]).
struct RowRouter {
    routing: Routing,
    scan: Scan,
    guard: Guard,
    keys: Vec<Expr>,
    peers: usize,
}

impl RowRouter {
    /// `slice` for each worker that has rows in it: the slice itself for every worker where
    /// the key is known only after the scan, else the indices of the worker's rows with their
    /// keys' hashes (and keys, where they are expressions). A row whose key cannot be read
    /// where it lies (a row with fewer columns) is routed by the key the scan makes of it;
    /// a row the scan's filters drop is routed to no worker where the filters ran here.
    fn route_slice(&self, slice: Slice) -> Vec<(u64, RoutedSlice)> {
        let peers = self.peers.max(1);
        if self.guard.stopped() {
            return Vec::new();
        }
        let start = slice.range.start;
        let share = slice.range.len() / peers + slice.range.len() / 8 + 1;
        match &self.routing {
            Routing::AfterScan(_) => (0..peers)
                .map(|to| routed(to, &slice, OwnRows::All))
                .collect(),
            Routing::Columns(columns) => {
                let mut lists = worker_lists(peers, share);
                for (i, (row, _)) in slice.updates().iter().enumerate() {
                    let hash = match route_columns(row, columns) {
                        Some(hash) => hash,
                        None => {
                            let Some(row) = self.scan.apply(&self.guard, row) else {
                                continue;
                            };
                            match self.guard.run(|| key_of(&self.keys, &row)) {
                                Some(key) => route(&key),
                                None => continue,
                            }
                        }
                    };
                    lists[worker_of(hash, peers)].push((start + i, hash));
                }
                addressed(&slice, lists, OwnRows::Hashed)
            }
            Routing::Exprs(exprs) => {
                let mut lists = worker_lists(peers, share);
                for (i, (row, _)) in slice.updates().iter().enumerate() {
                    if !self.scan.filters_keep(&self.guard, row) {
                        continue;
                    }
                    let Some(key) = self.guard.run(|| key_of(exprs, row)) else {
                        continue;
                    };
                    let hash = route(&key);
                    lists[worker_of(hash, peers)].push((start + i, hash, key));
                }
                addressed(&slice, lists, OwnRows::Keyed)
            }
        }
    }
}

/// Each worker's rows of `slice` (`lists`, by worker), sent to it with the slice (a handle on
/// the batch); a worker with none is sent nothing.
fn addressed<T>(
    slice: &Slice,
    lists: Vec<Vec<T>>,
    own: fn(Vec<T>) -> OwnRows,
) -> Vec<(u64, RoutedSlice)> {
    let lists = lists.into_iter().enumerate();
    let lists = lists.filter(|(_, rows)| !rows.is_empty());
    lists
        .map(|(to, rows)| routed(to, slice, own(rows)))
        .collect()
}

/// `slice` with the rows of it that are worker `to`'s, addressed to that worker.
fn routed(to: usize, slice: &Slice, rows: OwnRows) -> (u64, RoutedSlice) {
    let slice = slice.clone();
    (to as u64, RoutedSlice { slice, rows })
}

/// One empty list of rows per worker, each with room for `share` rows.
fn worker_lists<T>(peers: usize, share: usize) -> Vec<Vec<T>> {
    (0..peers).map(|_| Vec::with_capacity(share)).collect()
}

/// How [`fold_scanned_by_key`] finds a batch row's worker: from the row as it lies where it
/// can, so that the worker that routes a row runs as few of the scan's steps as its key
/// allows, and its own worker the rest.
#[derive(Clone)]
enum Routing {
    /// The key is these columns of the batch's rows (through the scan's projections), hashed
    /// where they lie, before the scan's filters.
    Columns(Vec<usize>),
    /// The key's expressions over the batch's rows ([`Scan::over_batch_rows`]), evaluated
    /// on the rows the scan's filters keep, before its projections; a time bucket
    /// (`toStartOfMinute(timestamp)`) is one.
    Exprs(Vec<Expr>),
    /// The key is known only after the scan's steps; when it is plain columns of the rows
    /// the scan keeps, those are hashed without making the key.
    AfterScan(Option<Vec<usize>>),
}

impl Routing {
    fn new(scan: &Scan, keys: &[Expr]) -> Routing {
        match scan.over_batch_rows(keys) {
            Some(exprs) => match plain_columns(&exprs) {
                Some(columns) => Routing::Columns(columns),
                None => Routing::Exprs(exprs),
            },
            None => Routing::AfterScan(plain_columns(keys)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key hashed from a row's columns where they lie routes as the key made of them.
    #[test]
    fn a_key_routes_alike_made_or_read_in_place() {
        let row = vec![
            Value::str("US"),
            Value::UInt(7),
            Value::Null,
            Value::Int(-3),
        ];
        for columns in [vec![0], vec![1, 0], vec![3, 2, 1], vec![]] {
            let key: Key = columns.iter().map(|&c| row[c].clone()).collect();
            assert_eq!(route_columns(&row, &columns), Some(route(&key)));
        }
        assert_eq!(route_columns(&row, &[4]), None);
    }

    /// One key's changes settle as differential's consolidation settles them: the pair fast
    /// path (a retraction and a new version, equal rows, zero multiplicities) and the rest.
    #[test]
    fn a_keys_changes_consolidate_as_differential_does() {
        let rows = [
            vec![Value::UInt(1), Value::Int(5)],
            vec![Value::UInt(1), Value::Int(7)],
            vec![Value::UInt(2), Value::Null],
        ];
        let diffs = [-2isize, -1, 0, 1, 3];
        for n in 0..4usize {
            // Every choice of n rows and multiplicities, by counting in mixed radix.
            let choices = (rows.len() * diffs.len()).pow(n as u32);
            for mut pick in 0..choices {
                let mut changes = Vec::new();
                for _ in 0..n {
                    let (r, d) = (pick % rows.len(), pick / rows.len() % diffs.len());
                    pick /= rows.len() * diffs.len();
                    changes.push((rows[r].clone(), diffs[d]));
                }
                let mut expected = changes.clone();
                consolidate(&mut expected);
                consolidate_key(&mut changes);
                assert_eq!(changes, expected);
            }
        }
    }

    /// A worker's keys still take every place of its table: the bits that choose the worker
    /// are not the ones that place a key in the table ([`petrel_view::slot_table::fingerprint`]'s
    /// top bits), or each worker's table would fill only a part of its places and probe long
    /// runs.
    #[test]
    fn a_workers_keys_spread_over_its_tables_places() {
        for peers in [2, 3, 4] {
            let mut homes = vec![[0usize; 8]; peers];
            for user in 0..4_000u64 {
                let hash = route(&[Value::str("US"), Value::UInt(user)]);
                let home = (petrel_view::slot_table::fingerprint(hash) >> 29) as usize;
                homes[worker_of(hash, peers)][home] += 1;
            }
            for (worker, counts) in homes.iter().enumerate() {
                let fair = counts.iter().sum::<usize>() / 8;
                assert!(
                    counts.iter().all(|&n| n * 2 >= fair),
                    "{peers} workers, worker {worker}'s keys by their table's eighth: {counts:?}"
                );
            }
        }
    }

    /// Keys whose values share their low bits (days as seconds, multiples of 2^7; ids in steps
    /// of 1024) still spread over the workers that fold a batch where it lies.
    #[test]
    fn keys_with_equal_low_bits_spread_over_the_workers() {
        let days = (0..200).map(|d| vec![Value::DateTime(d * 86_400)]);
        let ids = (0..200).map(|i| vec![Value::UInt(i * 1024), Value::str("US")]);
        for keys in [days.collect::<Vec<_>>(), ids.collect()] {
            for peers in [2, 4] {
                let mut counts = vec![0; peers];
                for key in &keys {
                    counts[worker_of(route(key), peers)] += 1;
                }
                let fair = keys.len() / peers;
                assert!(
                    counts
                        .iter()
                        .all(|&n| n * 4 >= fair * 3 && n * 4 <= fair * 5),
                    "{peers} workers: {counts:?}"
                );
            }
        }
    }
}
