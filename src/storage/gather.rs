//! Gathers a part's built columns into the part's order ([`super::part`] builds them in the
//! rows' log order, then sorts). Arrow's `take` copies each string of a string column with a
//! call to `memmove`, which for an event's short strings (a country, a path) cost more than
//! the copy: a compaction spent more time there than in any one Parquet encoder. Short strings
//! are copied here as one fixed-size move each. Each value read is a cache miss in a column of
//! a part's size (the order is the sort's, not the memory's), so the gather asks for the
//! values a few rows ahead, as the engine's folds do for their groups.

use std::sync::Arc;

use arrow_array::types::{Float64Type, Int32Type, Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray, StringArray, UInt32Array};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use petrel_view::prefetch;

/// Strings of up to this many bytes are copied as one move of this many bytes (the extra
/// bytes are then dropped), when the source has that many bytes from the string's start.
const SHORT: usize = 16;

/// How many rows ahead a gather asks for the value it will read (for a string, its offsets;
/// half as many ahead, its bytes).
const AHEAD: usize = 32;

/// `column`'s values at `indices`, in that order.
pub(super) fn gather(
    column: &ArrayRef,
    indices: &UInt32Array,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let any = column.as_any();
    if column.null_count() == 0 {
        let gathered: Option<ArrayRef> = if let Some(strings) = any.downcast_ref::<StringArray>() {
            gather_strings(strings, indices.values()).map(|a| Arc::new(a) as ArrayRef)
        } else if let Some(a) = any.downcast_ref::<PrimitiveArray<UInt64Type>>() {
            gather_primitives(a, indices.values())
        } else if let Some(a) = any.downcast_ref::<PrimitiveArray<Int64Type>>() {
            gather_primitives(a, indices.values())
        } else if let Some(a) = any.downcast_ref::<PrimitiveArray<Float64Type>>() {
            gather_primitives(a, indices.values())
        } else if let Some(a) = any.downcast_ref::<PrimitiveArray<Int32Type>>() {
            gather_primitives(a, indices.values())
        } else {
            None
        };
        if let Some(gathered) = gathered {
            return Ok(gathered);
        }
    }
    let checked = arrow_select::take::TakeOptions { check_bounds: true };
    arrow_select::take::take(column.as_ref(), indices, Some(checked))
}

/// A string column without NULLs gathered at `indices`; `None` when an index is out of range
/// (the caller then gathers with Arrow's `take`, which checks the bounds and says so).
fn gather_strings(strings: &StringArray, indices: &[u32]) -> Option<StringArray> {
    let offsets = strings.value_offsets();
    let data = strings.value_data();
    let bounds = |i: u32| -> Option<(usize, usize)> {
        let i = usize::try_from(i).ok()?;
        let start = usize::try_from(*offsets.get(i)?).ok()?;
        let end = usize::try_from(*offsets.get(i + 1)?).ok()?;
        Some((start, end))
    };
    // The gathered strings' bytes, reckoned from the column's average length (a chunk of
    // the part is gathered at a time).
    let estimate = data.len().saturating_mul(indices.len()) / strings.len().max(1);
    let mut bytes: Vec<u8> = Vec::with_capacity(estimate + SHORT);
    let mut ends: Vec<i32> = Vec::with_capacity(indices.len() + 1);
    ends.push(0);
    for (n, &i) in indices.iter().enumerate() {
        if let Some(&ahead) = indices.get(n + AHEAD) {
            prefetch_from(offsets, ahead as usize, 2);
        }
        if let Some((start, _)) = indices.get(n + AHEAD / 2).and_then(|&ahead| bounds(ahead)) {
            prefetch_from(data, start, SHORT);
        }
        let (start, end) = bounds(i)?;
        let len = end.checked_sub(start)?;
        match data.get(start..start + SHORT) {
            Some(chunk) if len <= SHORT => {
                bytes.extend_from_slice(chunk);
                bytes.truncate(bytes.len() - SHORT + len);
            }
            _ => bytes.extend_from_slice(data.get(start..end)?),
        }
        ends.push(i32::try_from(bytes.len()).ok()?);
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(ends));
    StringArray::try_new(offsets, Buffer::from_vec(bytes), None).ok()
}

/// A primitive column without NULLs gathered at `indices`; `None` when an index is out of
/// range (the caller then gathers with Arrow's `take`, which says so).
fn gather_primitives<T: ArrowPrimitiveType>(
    column: &PrimitiveArray<T>,
    indices: &[u32],
) -> Option<ArrayRef> {
    let values = column.values();
    let mut gathered = Vec::with_capacity(indices.len());
    for (n, &i) in indices.iter().enumerate() {
        if let Some(&ahead) = indices.get(n + AHEAD) {
            prefetch_from(values, ahead as usize, 1);
        }
        gathered.push(*values.get(i as usize)?);
    }
    let array = PrimitiveArray::<T>::try_new(ScalarBuffer::from(gathered), None).ok()?;
    // A type with parameters (a time zone, a precision) keeps them.
    Some(Arc::new(array.with_data_type(column.data_type().clone())))
}

/// Asks for up to `len` of `items` from `start` (what of them is in range).
fn prefetch_from<T>(items: &[T], start: usize, len: usize) {
    let from = items.get(start..).unwrap_or_default();
    prefetch(from.get(..len).unwrap_or(from));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathered string columns (short and long strings, empty ones, at the end of the source,
    /// repeated and skipped indices) equal Arrow's `take` of them; columns with NULLs and
    /// other types are gathered by `take` itself.
    #[test]
    fn a_gathered_column_equals_arrows_take() {
        let long = "a path longer than sixteen bytes, with ünïcode";
        let values: Vec<&str> = vec!["US", "", long, "/home", "DE", "exactly16bytes!!", "é"];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(values.clone())),
            Arc::new(StringArray::from(vec![Some("x"), None, Some("yz")])),
            Arc::new(UInt32Array::from(vec![3, 1, 2])),
            Arc::new(arrow_array::UInt64Array::from(vec![3, u64::MAX, 0, 9])),
            Arc::new(arrow_array::Int64Array::from(vec![-3, i64::MIN, 0])),
            Arc::new(arrow_array::Int64Array::from(vec![Some(1), None, Some(2)])),
            Arc::new(arrow_array::Float64Array::from(vec![1.5, -0.0, f64::NAN])),
            Arc::new(arrow_array::Int32Array::from(vec![7, -7])),
            Arc::new(
                arrow_array::TimestampMillisecondArray::from(vec![1, 2, 3]).with_timezone("UTC"),
            ),
        ];
        for column in columns {
            let n = column.len() as u32;
            for indices in [
                (0..n).rev().collect::<Vec<u32>>(),
                vec![n - 1, 0, n - 1, 0],
                vec![],
                (0..n).filter(|i| i % 2 == 1).collect(),
            ] {
                let indices = UInt32Array::from(indices);
                let ours = gather(&column, &indices).unwrap();
                let theirs = arrow_select::take::take(column.as_ref(), &indices, None).unwrap();
                assert_eq!(ours.as_ref(), theirs.as_ref(), "{indices:?}");
            }
        }
    }

    /// An index past the column's end is an error, as Arrow's `take` gives it, not a panic.
    #[test]
    fn an_index_out_of_range_is_an_error() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(arrow_array::UInt64Array::from(vec![1, 2])),
        ];
        for column in columns {
            assert!(gather(&column, &UInt32Array::from(vec![0, 5])).is_err());
        }
    }
}
