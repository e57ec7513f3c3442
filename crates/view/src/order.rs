//! The order a view keeps each key's rows in: the query's top-level `ORDER BY`, evaluated
//! once per row when it is folded in, then compared as ClickHouse sorts (NULLs last unless
//! asked first; ties broken by the whole row so the order is total and stable).

use std::cmp::Ordering;
use std::sync::Arc;

use petrel_value::{Row, Value};

/// One ORDER BY item's direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SortDirection {
    /// `DESC`.
    pub desc: bool,
    /// `NULLS FIRST`.
    pub nulls_first: bool,
}

/// Evaluates a row's sort values (one per ORDER BY item).
pub type SortValues = Arc<dyn Fn(&Row) -> Row + Send + Sync>;

/// How a view orders the rows of a key: sort values computed from each row (or read from its
/// columns) and their directions. With no items, rows keep their natural order.
#[derive(Clone)]
pub struct RowOrder {
    spec: Arc<Spec>,
    values: Option<SortValues>,
}

/// What every entry of an ordered index shares: the items' directions and, when the items
/// are plain columns, which ones (the entries then keep no copy of their sort values).
#[derive(Debug)]
struct Spec {
    directions: Vec<SortDirection>,
    columns: Option<Vec<usize>>,
}

impl std::fmt::Debug for RowOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowOrder")
            .field("spec", &self.spec)
            .finish()
    }
}

impl RowOrder {
    /// Rows in their natural order (by their values, column by column).
    pub fn natural() -> RowOrder {
        RowOrder {
            spec: Arc::new(Spec {
                directions: Vec::new(),
                columns: None,
            }),
            values: None,
        }
    }

    /// Rows ordered by the values `values` computes, item by item in `directions`.
    pub fn by(directions: Vec<SortDirection>, values: SortValues) -> RowOrder {
        RowOrder {
            spec: Arc::new(Spec {
                directions,
                columns: None,
            }),
            values: Some(values),
        }
    }

    /// Rows ordered by their own `columns`, item by item in `directions` (one per column):
    /// the common `ORDER BY total DESC, user_id`, whose entries need no copy of the values.
    pub fn by_columns(directions: Vec<SortDirection>, columns: Vec<usize>) -> RowOrder {
        RowOrder {
            spec: Arc::new(Spec {
                directions,
                columns: Some(columns),
            }),
            values: None,
        }
    }

    /// The same order with its own copy of what entries share: entries made from it count
    /// their references on that copy, so threads that each fold with their own copy never
    /// contend for one reference count (a cache line bouncing between cores on every entry).
    pub fn detached(&self) -> RowOrder {
        RowOrder {
            spec: Arc::new(Spec {
                directions: self.spec.directions.clone(),
                columns: self.spec.columns.clone(),
            }),
            values: self.values.clone(),
        }
    }

    /// `rows` in this order.
    pub fn sort(&self, rows: Vec<Row>) -> Vec<Row> {
        let mut entries: Vec<SortedRow> = rows.into_iter().map(|r| self.entry_of(r)).collect();
        entries.sort();
        entries.into_iter().map(SortedRow::into_row).collect()
    }

    /// The row with its sort values: the key that orders it.
    pub fn entry(&self, row: &Row) -> SortedRow {
        // One allocation of exactly the row and its sort values.
        let values: Box<[Value]> = match &self.values {
            Some(values) => {
                let sort = values(row);
                let mut all = Vec::with_capacity(row.len() + sort.len());
                all.extend_from_slice(row);
                all.extend(sort);
                all.into_boxed_slice()
            }
            None => row.as_slice().into(),
        };
        self.entry_from(row.len(), values)
    }

    /// Makes `entry` the entry of `row`, in the allocation it has when the row fits it (the
    /// new version of a group's row has as many values): a changed row costs a copy of its
    /// values, not an allocation and a free.
    pub fn replace_entry(&self, entry: &mut SortedRow, row: &Row) {
        if self.values.is_some() || entry.values.len() != row.len() {
            *entry = self.entry(row);
            return;
        }
        // The entry's values are the row's alone, as many as before: its `row_len` stands.
        entry.values.clone_from_slice(row);
        let [a, b] = self.hints(row.len(), &entry.values);
        entry.bits = [a.bits, b.bits];
        entry.class = [a.class, b.class];
        entry.exact = [a.exact, b.exact];
    }

    /// [`RowOrder::entry`] of a row the caller gives up (no copy of it is made).
    pub fn entry_of(&self, row: Row) -> SortedRow {
        let len = row.len();
        let values: Box<[Value]> = match &self.values {
            Some(values) => {
                let sort = values(&row);
                let mut all = row;
                all.reserve_exact(sort.len());
                all.extend(sort);
                all.into_boxed_slice()
            }
            None => row.into_boxed_slice(),
        };
        self.entry_from(len, values)
    }

    /// True when `row` comes after `entry` in this order. When the order reads plain columns
    /// and the first sort values settle it, no entry is made for the row (no copy of it).
    pub fn is_after(&self, row: &Row, entry: &SortedRow) -> bool {
        if let Some(columns) = &self.spec.columns {
            for (k, d) in self.spec.directions.iter().enumerate().take(2) {
                let hint = columns
                    .get(k)
                    .map(|&c| Hint::of(row.get(c).unwrap_or(&NULL)))
                    .unwrap_or(Hint::NONE);
                match by_hints(hint, entry.hint(k), *d) {
                    Some(Ordering::Equal) => continue,
                    Some(o) => return o == Ordering::Greater,
                    None => break,
                }
            }
        }
        self.entry(row) > *entry
    }

    /// The entry of a row of `row_len` values, followed in `values` by its computed sort
    /// values (if the order computes them).
    fn entry_from(&self, row_len: usize, values: Box<[Value]>) -> SortedRow {
        let [a, b] = self.hints(row_len, &values);
        SortedRow {
            bits: [a.bits, b.bits],
            class: [a.class, b.class],
            exact: [a.exact, b.exact],
            row_len: u32::try_from(row_len).unwrap_or(u32::MAX),
            values,
            spec: self.spec.clone(),
        }
    }

    /// The hints of the first two sort values of an entry's `values` (a row of `row_len`
    /// values, then its computed sort values).
    fn hints(&self, row_len: usize, values: &[Value]) -> [Hint; 2] {
        let (own, sort) = values.split_at(row_len.min(values.len()));
        let item = |k: usize| match &self.spec.columns {
            Some(columns) => columns.get(k).map(|&c| own.get(c).unwrap_or(&NULL)),
            None => sort.get(k),
        };
        [0, 1].map(|k| item(k).map(Hint::of).unwrap_or(Hint::NONE))
    }
}

/// The sort value of a column a row lacks.
static NULL: Value = Value::Null;

/// A cheap, inline prefix of a sort value that orders the way the value does (a smaller hint
/// of the same class means a smaller value), so most comparisons in a group's ordered index
/// settle without following the rows' pointers. An exact hint stands for its value: two equal
/// exact hints mean equal values, and the comparison goes on to the next item without reading
/// either row (ties on the first item, as on a `sum` shared by many groups, are common).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hint {
    /// Which values the bits compare: numbers, strings, or none (compare the values).
    class: u8,
    /// The bits are the value's own (an integer of at most 53 bits, a string of at most
    /// seven bytes).
    exact: bool,
    bits: u64,
}

impl Hint {
    const NONE: Hint = Hint {
        class: 0,
        exact: false,
        bits: 0,
    };
    const NUMBER: u8 = 1;
    const STRING: u8 = 2;

    /// Numbers map through `f64` (monotone, so it never reverses an order: ties fall back to
    /// the values); strings keep their first seven bytes and then their length up to eight,
    /// as byte order compares them.
    fn of(v: &Value) -> Hint {
        const EXACT_INTEGER: u64 = 1 << 53;
        match v {
            Value::String(s) => {
                let mut b = [0u8; 8];
                let n = s.len().min(7);
                b[..n].copy_from_slice(&s.as_bytes()[..n]);
                b[7] = s.len().min(8) as u8;
                Hint {
                    class: Hint::STRING,
                    exact: s.len() <= 7,
                    bits: u64::from_be_bytes(b),
                }
            }
            Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_) => {
                match v.as_f64() {
                    Some(x) if !x.is_nan() => {
                        // -0.0 and 0.0 are equal numbers.
                        let x = if x == 0.0 { 0.0 } else { x };
                        let b = x.to_bits();
                        let bits = if b >> 63 == 1 { !b } else { b | 1 << 63 };
                        let exact = match v {
                            Value::Int(i) => i.unsigned_abs() <= EXACT_INTEGER,
                            Value::UInt(u) => *u <= EXACT_INTEGER,
                            _ => false,
                        };
                        Hint {
                            class: Hint::NUMBER,
                            exact,
                            bits,
                        }
                    }
                    _ => Hint::NONE,
                }
            }
            _ => Hint::NONE,
        }
    }
}

/// A row with its sort values: the key of a group's ordered index. Kept small (48 bytes): a
/// search in a group's index reads entry after entry, and the index of a large view holds
/// one per row.
#[derive(Clone, Debug)]
pub struct SortedRow {
    /// The first two sort values' [`Hint`]s, field by field (no padding between them).
    bits: [u64; 2],
    class: [u8; 2],
    exact: [bool; 2],
    /// How many of `values` are the row's own; the rest are its computed sort values.
    row_len: u32,
    /// The row's values, then its sort values when they are not plain columns of the row: one
    /// allocation, held by a slice's two words instead of a vector's three.
    values: Box<[Value]>,
    spec: Arc<Spec>,
}

impl SortedRow {
    /// The row itself.
    pub fn row(&self) -> &[Value] {
        &self.values[..self.own_len()]
    }

    /// The row itself, given up by its entry.
    pub fn into_row(self) -> Row {
        let len = self.own_len();
        let mut row = self.values.into_vec();
        row.truncate(len);
        row
    }

    fn own_len(&self) -> usize {
        (self.row_len as usize).min(self.values.len())
    }

    /// The `k`-th sort value's hint (`k` < 2).
    fn hint(&self, k: usize) -> Hint {
        Hint {
            class: self.class[k],
            exact: self.exact[k],
            bits: self.bits[k],
        }
    }

    /// The `k`-th sort value.
    fn value(&self, k: usize) -> &Value {
        match &self.spec.columns {
            Some(columns) => columns
                .get(k)
                .and_then(|&c| self.row().get(c))
                .unwrap_or(&NULL),
            None => self.values[self.own_len()..].get(k).unwrap_or(&NULL),
        }
    }
}

impl PartialEq for SortedRow {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortedRow {}

impl PartialOrd for SortedRow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortedRow {
    fn cmp(&self, other: &Self) -> Ordering {
        let directions = &self.spec.directions;
        for (k, d) in directions.iter().enumerate() {
            if k < 2 {
                match by_hints(self.hint(k), other.hint(k), *d) {
                    Some(Ordering::Equal) => continue,
                    Some(o) => return o,
                    None => {}
                }
            }
            let o = compare(self.value(k), other.value(k), *d);
            if o != Ordering::Equal {
                return o;
            }
        }
        self.row().cmp(other.row())
    }
}

/// How two sort values compare by their hints in direction `d`: settled when their hints'
/// bits differ, equal when both hints are exact and the same, `None` when only the values
/// can tell.
fn by_hints(a: Hint, b: Hint, d: SortDirection) -> Option<Ordering> {
    if a.class == 0 || a.class != b.class {
        return None;
    }
    match a.bits.cmp(&b.bits) {
        Ordering::Equal => (a.exact && b.exact).then_some(Ordering::Equal),
        o if d.desc => Some(o.reverse()),
        o => Some(o),
    }
}

/// Adds `diff` copies of a row to an ordered index of rows with multiplicities, with one
/// search, removing the row when it reaches zero; returns its multiplicity before and after.
pub fn add_multiplicity(
    rows: &mut std::collections::BTreeMap<SortedRow, i64>,
    entry: SortedRow,
    diff: i64,
) -> (i64, i64) {
    use std::collections::btree_map::Entry;
    match rows.entry(entry) {
        Entry::Occupied(mut o) => {
            let before = *o.get();
            let after = before + diff;
            if after == 0 {
                o.remove();
            } else {
                *o.get_mut() = after;
            }
            (before, after)
        }
        Entry::Vacant(v) => {
            if diff != 0 {
                v.insert(diff);
            }
            (0, diff)
        }
    }
}

/// Compares two sort values as ClickHouse's ORDER BY does. Values SQL cannot compare (NaN,
/// mismatched types) fall back to their natural order, so the order stays total.
fn compare(x: &Value, y: &Value, d: SortDirection) -> Ordering {
    match (x.is_null(), y.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) if d.nulls_first => Ordering::Less,
        (true, false) => Ordering::Greater,
        (false, true) if d.nulls_first => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => {
            let o = x.sql_cmp(y).unwrap_or_else(|| x.cmp(y));
            if d.desc {
                o.reverse()
            } else {
                o
            }
        }
    }
}

/// A seeded xorshift generator: the tests' random inputs, the same on every run.
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry stays at 48 bytes: a group's ordered index reads entry after entry, and each
    /// byte more is read on every search and held per row of the view.
    #[test]
    fn an_entry_stays_small() {
        assert_eq!(std::mem::size_of::<SortedRow>(), 48);
    }

    /// An entry gives back its row as it was, whether its sort values are columns or
    /// computed (and then kept after the row's values).
    #[test]
    fn an_entry_gives_back_its_row() {
        let row = vec![Value::str("a"), Value::Int(5), Value::Null];
        for order in [
            by_second_desc(),
            RowOrder::by_columns(vec![SortDirection::default()], vec![1]),
        ] {
            let entry = order.entry(&row);
            assert_eq!(entry.row(), row.as_slice());
            assert_eq!(entry.value(0), &Value::Int(5));
            assert_eq!(entry.into_row(), row);
        }
        assert_eq!(by_second_desc().sort(vec![row.clone()]), vec![row]);
    }

    /// An entry made over for another row, in its allocation or not (a row of another length,
    /// an order that computes its sort values), is the entry made for that row: the same row,
    /// equal, and ordered alike against others.
    #[test]
    fn an_entry_made_over_is_the_new_rows_entry() {
        let old = vec![Value::str("a"), Value::Int(5), Value::Null];
        let others = [
            vec![Value::str("long enough to skip the hint"), Value::Int(7)],
            vec![Value::str("b"), Value::Int(4), Value::UInt(1)],
            vec![Value::str("a"), Value::Int(9), Value::Null],
        ];
        for order in [
            by_second_desc(),
            RowOrder::by_columns(vec![SortDirection::default()], vec![1]),
        ] {
            for new in &others {
                let mut entry = order.entry(&old);
                order.replace_entry(&mut entry, new);
                let fresh = order.entry(new);
                assert_eq!(entry.row(), new.as_slice());
                assert!(entry == fresh);
                for other in others.iter().chain([&old]) {
                    let other = order.entry(other);
                    assert_eq!(entry.cmp(&other), fresh.cmp(&other));
                }
            }
        }
    }

    fn by_second_desc() -> RowOrder {
        RowOrder::by(
            vec![SortDirection {
                desc: true,
                nulls_first: false,
            }],
            Arc::new(|r: &Row| vec![r[1].clone()]),
        )
    }

    #[test]
    fn orders_by_sort_values_then_by_row() {
        let o = by_second_desc();
        let a = o.entry(&vec![Value::str("a"), Value::Int(5)]);
        let b = o.entry(&vec![Value::str("b"), Value::Int(7)]);
        let c = o.entry(&vec![Value::str("c"), Value::Int(5)]);
        let n = o.entry(&vec![Value::str("n"), Value::Null]);
        let mut v = vec![n.clone(), c.clone(), a.clone(), b.clone()];
        v.sort();
        assert_eq!(v, vec![b, a, c, n]);
    }

    #[test]
    fn nulls_first_when_asked() {
        let o = RowOrder::by(
            vec![SortDirection {
                desc: false,
                nulls_first: true,
            }],
            Arc::new(|r: &Row| vec![r[0].clone()]),
        );
        assert!(o.entry(&vec![Value::Null]) < o.entry(&vec![Value::Int(-5)]));
    }

    /// Ordering by columns read from the row equals ordering by the same values computed, for
    /// several items in mixed directions (ties, NULLs, rows shorter than a sort column).
    #[test]
    fn column_orders_equal_computed_orders() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let directions = vec![
            SortDirection {
                desc: true,
                nulls_first: false,
            },
            SortDirection {
                desc: false,
                nulls_first: true,
            },
        ];
        let computed = RowOrder::by(
            directions.clone(),
            Arc::new(|r: &Row| {
                [2, 0]
                    .iter()
                    .map(|&c| r.get(c).cloned().unwrap_or(Value::Null))
                    .collect()
            }),
        );
        let read = RowOrder::by_columns(directions, vec![2, 0]);
        let mut rows: Vec<Row> = Vec::new();
        for _ in 0..200 {
            let mut row = vec![
                match next() % 4 {
                    0 => Value::Null,
                    _ => Value::str(["a", "b", "ab"][(next() % 3) as usize]),
                },
                Value::Int((next() % 3) as i64),
            ];
            if !next().is_multiple_of(5) {
                row.push(match next() % 4 {
                    0 => Value::Null,
                    _ => Value::Int((next() % 4) as i64 - 1),
                });
            }
            rows.push(row);
        }
        for a in &rows {
            for b in &rows {
                assert_eq!(
                    read.entry(a).cmp(&read.entry(b)),
                    computed.entry(a).cmp(&computed.entry(b)),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    /// With two items, exact hints that tie let the comparison skip to the next item: the
    /// order stays the values' order, across integers of both signs and kinds (equal numbers
    /// of different kinds tie), floats, strings around the seven-byte limit, and NULLs.
    #[test]
    fn two_item_hints_order_as_the_values_do() {
        let mut next = xorshift(0x0bad_5eed_1234_5678u64);
        let strings = [
            "",
            "a",
            "a\0",
            "abcdefg",
            "abcdefg\0",
            "abcdefgh",
            "abcdefgi",
            "b",
        ];
        let mut value = || match next() % 6 {
            0 => Value::Int((next() % 5) as i64 - 2),
            1 => Value::UInt(next() % 3),
            2 => Value::Float(petrel_value::F64((next() % 5) as f64 / 2.0 - 1.0)),
            3 => Value::Null,
            4 => Value::UInt((1 << 53) + next() % 3),
            _ => Value::str(strings[(next() % strings.len() as u64) as usize]),
        };
        let rows: Vec<Row> = (0..150).map(|_| vec![value(), value(), value()]).collect();
        for (d0, d1) in [(false, false), (true, false), (false, true), (true, true)] {
            let directions = vec![
                SortDirection {
                    desc: d0,
                    nulls_first: false,
                },
                SortDirection {
                    desc: d1,
                    nulls_first: true,
                },
            ];
            let order = RowOrder::by_columns(directions.clone(), vec![0, 1]);
            for a in &rows {
                for b in &rows {
                    let expected = compare(&a[0], &b[0], directions[0])
                        .then_with(|| compare(&a[1], &b[1], directions[1]))
                        .then_with(|| a.cmp(b));
                    assert_eq!(
                        order.entry(a).cmp(&order.entry(b)),
                        expected,
                        "{a:?} vs {b:?}"
                    );
                }
            }
        }
    }

    /// The inline hint settles comparisons exactly as comparing the values does, across
    /// numbers of every kind, strings with shared prefixes, NULLs and both directions.
    #[test]
    fn hints_order_as_the_values_do() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let strings = [
            "",
            "a",
            "a\0",
            "ab",
            "abcdefgh",
            "abcdefghi",
            "abcdefgz",
            "b",
            "\u{e9}",
        ];
        let mut values = Vec::new();
        for _ in 0..300 {
            let v = match next() % 7 {
                0 => Value::Int((next() % 21) as i64 - 10),
                1 => Value::UInt(next() % 11),
                2 => Value::Float(petrel_value::F64(((next() % 41) as f64 - 20.0) / 4.0)),
                3 => Value::Float(petrel_value::F64(-0.0)),
                4 => Value::Null,
                5 => Value::Int(i64::MAX - (next() % 3) as i64),
                _ => Value::str(strings[(next() % strings.len() as u64) as usize]),
            };
            values.push(v);
        }
        for desc in [false, true] {
            let d = SortDirection {
                desc,
                nulls_first: false,
            };
            let o = RowOrder::by(vec![d], Arc::new(|r: &Row| vec![r[0].clone()]));
            // The same order read from the column instead of computed.
            let by_column = RowOrder::by_columns(vec![d], vec![0]);
            for (i, a) in values.iter().enumerate() {
                for b in &values[i..] {
                    let (ra, rb) = (vec![a.clone()], vec![b.clone()]);
                    let expected = compare(a, b, d).then_with(|| ra.cmp(&rb));
                    assert_eq!(o.entry(&ra).cmp(&o.entry(&rb)), expected, "{a:?} vs {b:?}");
                    assert_eq!(
                        by_column.entry(&ra).cmp(&by_column.entry(&rb)),
                        expected,
                        "{a:?} vs {b:?} by column"
                    );
                }
            }
        }
    }
}
