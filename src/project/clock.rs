//! Pipes that read the clock outside temporal filters (`today()` in a projection, a node of
//! dates computed from `now()`): their SQL is rendered with the request's time written in as
//! a constant, so they plan like any other pipe.
//!
//! A pipe pinned to the day (it reads `today()`/`yesterday()` only) is a maintained view per
//! day; a pipe pinned to the second (it reads `now()`) is recomputed for each request, as
//! ClickHouse does, and cannot be subscribed to.

use petrel_value::time;

/// How finely a pipe's clock reads are pinned to the request's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimePin {
    /// `today()` and `yesterday()` become the request's date.
    Day,
    /// `now()` and `now64()` too become the request's time.
    Second,
}

/// The time of a request as the pins write it: seconds and milliseconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct RequestTime {
    /// Milliseconds since the epoch (UTC).
    pub millis: i64,
}

impl RequestTime {
    /// Now.
    pub fn now() -> RequestTime {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        RequestTime { millis }
    }
}

/// `sql` with each clock call the pin covers replaced by a constant of `at` (calls inside
/// quoted strings and identifiers are left alone).
pub fn pin_time(sql: &str, pin: TimePin, at: RequestTime) -> String {
    let secs = at.millis.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let mut out = String::with_capacity(sql.len() + 32);
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' || c == b'`' || c == b'"' {
            let end = closing_quote(bytes, i);
            out.push_str(&sql[i..end]);
            i = end;
            continue;
        }
        let starts_word = c.is_ascii_alphabetic()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts_word {
            let end = i + bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
            let word = sql[i..end].to_ascii_lowercase();
            let replacement = match word.as_str() {
                "today" => Some(format!("toDate('{}')", time::format_date(days))),
                "yesterday" => Some(format!("toDate('{}')", time::format_date(days - 1))),
                "now" if pin == TimePin::Second => {
                    Some(format!("toDateTime('{}')", time::format_datetime(secs)))
                }
                "now64" if pin == TimePin::Second => Some(format!(
                    "toDateTime64('{}', 3)",
                    time::format_datetime64(at.millis, 3)
                )),
                _ => None,
            };
            if let (Some(replacement), Some(args_end)) = (replacement, call_end(bytes, end)) {
                out.push_str(&replacement);
                i = args_end;
                continue;
            }
            out.push_str(&sql[i..end]);
            i = end;
            continue;
        }
        // Copy one whole character.
        let len = sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&sql[i..i + len]);
        i += len;
    }
    out
}

/// The end (exclusive) of a quoted string or identifier starting at `start`, with `\` escapes
/// and doubled quotes.
fn closing_quote(bytes: &[u8], start: usize) -> usize {
    let q = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == q && bytes.get(i + 1) == Some(&q) => i += 2,
            b if b == q => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// When `(..)` follows at `from` (after spaces), the end of its closing parenthesis: the
/// argument list of a clock call (`now()`, `now('UTC')`, `now64(3)`).
fn call_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    if bytes.get(i) != Some(&b'(') {
        return None;
    }
    let close = bytes[i..].iter().position(|b| *b == b')')?;
    Some(i + close + 1)
}

/// True when a planning error is about reading the clock outside a temporal filter: the pipe
/// can be served pinned to the request's time.
pub fn is_clock_error(message: &str) -> bool {
    message.contains("is only supported in WHERE comparisons")
        || message.contains("unsupported temporal filter")
}

/// True when SQL text calls `today()`, `yesterday()`, `now()` or `now64()`.
pub fn mentions_clock(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    ["today", "yesterday", "now", "now64"].iter().any(|f| {
        lower.match_indices(f).any(|(i, _)| {
            let before = lower[..i].chars().next_back();
            let rest = lower[i + f.len()..].trim_start();
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && rest.starts_with('(')
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_clock_calls_outside_quotes() {
        // 2024-03-05 07:08:09.250 UTC
        let at = RequestTime {
            millis: 1_709_622_489_250,
        };
        let sql = "SELECT today() AS d, yesterday(), now() - 1, NOW64(3), 'today()' AS s, `now`, nowhere(), today FROM t";
        assert_eq!(
            pin_time(sql, TimePin::Second, at),
            "SELECT toDate('2024-03-05') AS d, toDate('2024-03-04'), toDateTime('2024-03-05 07:08:09') - 1, toDateTime64('2024-03-05 07:08:09.250', 3), 'today()' AS s, `now`, nowhere(), today FROM t"
        );
        assert_eq!(
            pin_time("SELECT today(), now ( 'UTC' )", TimePin::Day, at),
            "SELECT toDate('2024-03-05'), now ( 'UTC' )"
        );
        assert!(mentions_clock("WHERE d >= today () - 7"));
        assert!(!mentions_clock("SELECT nowhere(), today_count FROM t"));
    }
}
