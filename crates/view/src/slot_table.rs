//! A hash table whose lookups can be fetched into the cache ahead of time: the engine's
//! keyed fold keeps its groups in one, and a view its large keys' unordered rows.
//!
//! A `hashbrown` table must read a key's control bytes (a cache miss in a table of hundreds
//! of thousands of entries, which the processor waits for) before it knows which entry to
//! fetch. Here a key's first cell in the index is a function of its hash alone, so a fold
//! asks for it with a prefetch many changes ahead and, a few changes later, reads the cell (in
//! the cache by then) to fetch the entry. Entries lie densely in insertion order, each with
//! its hash (the index grows without hashing a key again): a key touched in a time is found
//! again by its position, without a lookup, and removals may wait for the end of the time
//! ([`SlotTable::remove_positions`]).

/// Entries `(hash, key, value)` found by their hash, stored densely.
#[derive(Clone)]
pub struct SlotTable<K, V> {
    /// Open addressing with linear probing over `2^bits` cells: 0 is empty, else the entry's
    /// position plus one (low 32 bits) under its hash's fingerprint ([`fingerprint`], high 32
    /// bits), which also gives the cell the entry belongs at.
    cells: Vec<u64>,
    bits: u32,
    entries: Vec<(u64, K, V)>,
}

/// The most cells used before the index doubles, as a fraction of its cells: 7/8, as
/// `hashbrown` fills its tables; a probe reads cells of 8 bytes, eight to a cache line.
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

/// 32 well-mixed bits of a hash: its cell is their top `bits` bits, and a probe compares them
/// before it compares keys. The multiply carries every bit of the hash into the high ones.
pub fn fingerprint(hash: u64) -> u32 {
    (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}

impl<K, V> Default for SlotTable<K, V> {
    fn default() -> Self {
        SlotTable::new()
    }
}

impl<K, V> SlotTable<K, V> {
    /// An empty table (no allocation until the first entry).
    pub fn new() -> Self {
        SlotTable {
            cells: Vec::new(),
            bits: 0,
            entries: Vec::new(),
        }
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.cells.clear();
        self.bits = 0;
        self.entries.clear();
    }

    /// How many entries the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> &[(u64, K, V)] {
        &self.entries
    }

    /// Every entry, taken out of the table.
    pub fn into_entries(self) -> Vec<(u64, K, V)> {
        self.entries
    }

    fn mask(&self) -> usize {
        self.cells.len().wrapping_sub(1)
    }

    /// The cell an entry of fingerprint `fp` belongs at.
    fn home(&self, fp: u32) -> usize {
        match self.bits {
            0 => 0,
            bits => (fp >> (32 - bits)) as usize,
        }
    }

    /// Asks the processor for the cell a key of `hash` is looked up at first. A hint only.
    pub fn prefetch_cell(&self, hash: u64) {
        if !self.cells.is_empty() {
            let at = self.home(fingerprint(hash));
            crate::prefetch(&self.cells[at..at + 1]);
        }
    }

    /// Asks the processor for the entry at `position`. A hint only.
    pub fn prefetch_position(&self, position: usize) {
        if let Some(entry) = self.entries.get(position) {
            crate::prefetch(std::slice::from_ref(entry));
        }
    }

    /// The position of the first entry whose hash shares `hash`'s fingerprint: the key's,
    /// unless it is new or another key's fingerprint collides. Reads cells only.
    pub fn likely_position(&self, hash: u64) -> Option<usize> {
        self.positions_of(hash).next()
    }

    /// The positions of the entries whose hash has `hash`'s fingerprint, in probe order.
    fn positions_of(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let fp = fingerprint(hash);
        let mask = self.mask();
        let mut at = self.home(fp);
        let mut done = self.cells.is_empty();
        std::iter::from_fn(move || {
            while !done {
                let cell = self.cells[at];
                if cell == 0 {
                    done = true;
                    return None;
                }
                at = (at + 1) & mask;
                if (cell >> 32) as u32 == fp {
                    return Some((cell as u32 - 1) as usize);
                }
            }
            None
        })
    }

    /// The positions of the entries with `hash`, in probe order.
    pub fn positions(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        self.positions_of(hash)
            .filter(move |&p| self.entries.get(p).is_some_and(|(h, _, _)| *h == hash))
    }

    /// The position of the entry with `hash` whose key `is_it` accepts.
    pub fn position(&self, hash: u64, is_it: impl Fn(&K) -> bool) -> Option<usize> {
        self.positions(hash)
            .find(|&p| self.entries.get(p).is_some_and(|(_, key, _)| is_it(key)))
    }

    /// The entry at `position`.
    pub fn get(&self, position: usize) -> Option<&(u64, K, V)> {
        self.entries.get(position)
    }

    /// The entry at `position`, to change its value (its hash and key stay).
    pub fn get_mut(&mut self, position: usize) -> Option<&mut (u64, K, V)> {
        self.entries.get_mut(position)
    }

    /// The position and entry of `key` (with `hash`), added with the value `value` makes
    /// when the table does not hold it.
    pub fn find_or_insert(
        &mut self,
        hash: u64,
        key: K,
        value: impl FnOnce() -> V,
    ) -> (usize, &mut (u64, K, V))
    where
        K: PartialEq,
    {
        let position = match self.position(hash, |k| *k == key) {
            Some(position) => position,
            None => self.insert_new(hash, key, value()),
        };
        (position, &mut self.entries[position])
    }

    /// Adds an entry for a key the table does not hold (the caller looked it up); returns its
    /// position.
    pub fn insert_new(&mut self, hash: u64, key: K, value: V) -> usize {
        if (self.entries.len() + 1) * LOAD_DEN > self.cells.len() * LOAD_NUM {
            self.grow();
        }
        let position = self.entries.len();
        self.entries.push((hash, key, value));
        self.place(fingerprint(hash), position);
        position
    }

    /// Puts the cell of the entry at `position` (fingerprint `fp`) in its first free cell.
    fn place(&mut self, fp: u32, position: usize) {
        let mask = self.mask();
        let mut at = self.home(fp);
        while self.cells[at] != 0 {
            at = (at + 1) & mask;
        }
        self.cells[at] = (u64::from(fp) << 32) | (position as u64 + 1);
    }

    /// Doubles the index and places every entry's cell again, from the hashes the entries
    /// keep (read one after the other).
    fn grow(&mut self) {
        self.bits = (self.bits + 1).max(4);
        self.cells.clear();
        self.cells.resize(1 << self.bits, 0);
        for position in 0..self.entries.len() {
            let fp = fingerprint(self.entries[position].0);
            self.place(fp, position);
        }
    }

    /// The cell that holds `position`, probing from the entry's own cell.
    fn cell_of(&self, position: usize) -> Option<usize> {
        let (hash, _, _) = self.entries.get(position)?;
        let mask = self.mask();
        let mut at = self.home(fingerprint(*hash));
        loop {
            match self.cells[at] {
                0 => return None,
                cell if (cell as u32 - 1) as usize == position => return Some(at),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Removes the entries at `positions` (each once). Other entries may move: positions
    /// taken before the call do not hold after it.
    pub fn remove_positions(&mut self, mut positions: Vec<usize>) {
        // From the last: the entry moved into a freed place is never one still to remove.
        positions.sort_unstable_by(|a, b| b.cmp(a));
        positions.dedup();
        for position in positions {
            self.remove(position);
        }
    }

    /// Removes the entry at `position`. The last entry moves into its place: positions taken
    /// before the call do not hold after it.
    pub fn remove(&mut self, position: usize) {
        let Some(at) = self.cell_of(position) else {
            return;
        };
        // Backward-shift deletion: each later cell of the run moves into the hole unless its
        // own cell lies after the hole, so every probe still finds what it looks for.
        let mask = self.mask();
        let (mut hole, mut next) = (at, (at + 1) & mask);
        loop {
            let cell = self.cells[next];
            if cell == 0 {
                break;
            }
            let home = self.home((cell >> 32) as u32);
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.cells[hole] = cell;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.cells[hole] = 0;
        let last = self.entries.len() - 1;
        if position != last {
            // The last entry moves into the freed place: its cell says so.
            if let Some(moved) = self.cell_of(last) {
                self.cells[moved] = (self.cells[moved] & !0xFFFF_FFFF) | (position as u64 + 1);
            }
        }
        self.entries.swap_remove(position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random inserts, lookups and batched removals agree with a `HashMap`, including keys
    /// whose hashes collide (fingerprint and all) and runs that wrap around the index.
    #[test]
    fn the_table_agrees_with_a_map() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.random::<u64>();
        for keys in [8u64, 100, 5_000] {
            let mut table: SlotTable<u64, u64> = SlotTable::new();
            let mut oracle: HashMap<u64, u64> = HashMap::new();
            // Few distinct hashes: many keys share one, so probes walk past equal hashes.
            let hash = |k: u64| k % (keys / 2 + 1);
            for round in 0..200 {
                for _ in 0..next() % 64 {
                    let k = next() % keys;
                    match table.position(hash(k), |key| *key == k) {
                        Some(p) => {
                            let entry = table.get_mut(p).expect("a found position holds");
                            entry.2 += 1;
                        }
                        None => {
                            table.insert_new(hash(k), k, 1);
                        }
                    }
                    *oracle.entry(k).or_default() += 1;
                }
                if round % 3 == 0 {
                    let doomed: Vec<u64> =
                        oracle.keys().copied().filter(|_| next() % 3 == 0).collect();
                    let positions = doomed
                        .iter()
                        .filter_map(|k| table.position(hash(*k), |key| key == k))
                        .collect();
                    table.remove_positions(positions);
                    for k in doomed {
                        oracle.remove(&k);
                    }
                }
                assert_eq!(table.len(), oracle.len());
                for (k, n) in &oracle {
                    let p = table.position(hash(*k), |key| key == k);
                    let held = p.and_then(|p| table.get(p)).map(|e| e.2);
                    assert_eq!(held, Some(*n), "key {k}");
                    assert!(
                        table.likely_position(hash(*k)).is_some(),
                        "a held key's fingerprint is in the index"
                    );
                }
                for k in 0..keys {
                    if !oracle.contains_key(&k) {
                        assert_eq!(table.position(hash(k), |key| *key == k), None);
                    }
                }
            }
        }
    }
}
