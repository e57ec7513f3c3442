//! Gathers a part's built columns into the part's order ([`super::part`] builds them in the
//! rows' log order, then sorts). Arrow's `take` copies each string of a string column with a
//! call to `memmove`, which for an event's short strings (a country, a path) cost more than
//! the copy: a compaction spent more time there than in any one Parquet encoder. Short strings
//! are copied here as one fixed-size move each.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, StringArray, UInt32Array};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};

/// Strings of up to this many bytes are copied as one move of this many bytes (the extra
/// bytes are then dropped), when the source has that many bytes from the string's start.
const SHORT: usize = 16;

/// `column`'s values at `indices`, in that order.
pub(super) fn gather(
    column: &ArrayRef,
    indices: &UInt32Array,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    if let Some(strings) = column.as_any().downcast_ref::<StringArray>() {
        if strings.null_count() == 0 {
            if let Some(gathered) = gather_strings(strings, indices.values()) {
                return Ok(Arc::new(gathered));
            }
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
    for &i in indices {
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
        let column: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        assert!(gather(&column, &UInt32Array::from(vec![0, 5])).is_err());
    }
}
