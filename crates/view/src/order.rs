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

/// How a view orders the rows of a key: sort values computed from each row and their
/// directions. With no items, rows keep their natural order.
#[derive(Clone)]
pub struct RowOrder {
    directions: Arc<[SortDirection]>,
    values: Option<SortValues>,
}

impl std::fmt::Debug for RowOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowOrder")
            .field("directions", &self.directions)
            .finish()
    }
}

impl RowOrder {
    /// Rows in their natural order (by their values, column by column).
    pub fn natural() -> RowOrder {
        RowOrder {
            directions: Arc::from(Vec::new()),
            values: None,
        }
    }

    /// Rows ordered by the values `values` computes, item by item in `directions`.
    pub fn by(directions: Vec<SortDirection>, values: SortValues) -> RowOrder {
        RowOrder {
            directions: Arc::from(directions),
            values: Some(values),
        }
    }

    /// `rows` in this order.
    pub fn sort(&self, rows: Vec<Row>) -> Vec<Row> {
        let mut entries: Vec<SortedRow> = rows.iter().map(|r| self.entry(r)).collect();
        entries.sort();
        entries.into_iter().map(|e| e.row).collect()
    }

    /// The row with its sort values: the key that orders it.
    pub fn entry(&self, row: &Row) -> SortedRow {
        let sort = match &self.values {
            Some(values) => values(row),
            None => Vec::new(),
        };
        SortedRow {
            sort,
            directions: self.directions.clone(),
            row: row.clone(),
        }
    }
}

/// A row with its sort values: the key of a group's ordered index.
#[derive(Clone, Debug)]
pub struct SortedRow {
    sort: Row,
    directions: Arc<[SortDirection]>,
    row: Row,
}

impl SortedRow {
    /// The row itself.
    pub fn row(&self) -> &Row {
        &self.row
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
        for ((x, y), d) in self
            .sort
            .iter()
            .zip(&other.sort)
            .zip(self.directions.iter())
        {
            let o = compare(x, y, *d);
            if o != Ordering::Equal {
                return o;
            }
        }
        self.row.cmp(&other.row)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
