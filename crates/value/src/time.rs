//! Calendar arithmetic in UTC: days since the Unix epoch to civil dates and back, and the
//! text forms ClickHouse uses (`YYYY-MM-DD`, `YYYY-MM-DD hh:mm:ss[.fff]`).
//!
//! Hand-written (Howard Hinnant's algorithms) because Petrel needs only these few
//! conversions on its hot paths and a date crate would add build time for nothing.

/// Days since 1970-01-01 for a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date `(year, month, day)` of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats a day number as `YYYY-MM-DD`.
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Formats seconds since the epoch as `YYYY-MM-DD hh:mm:ss`.
pub fn format_datetime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        format_date(days),
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Formats ticks of `10^-precision` seconds as `YYYY-MM-DD hh:mm:ss.fff`.
pub fn format_datetime64(ticks: i64, precision: u8) -> String {
    let scale = 10i64.pow(precision as u32);
    let secs = ticks.div_euclid(scale);
    let frac = ticks.rem_euclid(scale);
    if precision == 0 {
        format_datetime(secs)
    } else {
        format!(
            "{}.{:0width$}",
            format_datetime(secs),
            frac,
            width = precision as usize
        )
    }
}

/// Parses `YYYY-MM-DD` into a day number.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    // Dates are ASCII; anything else is not one (and must not be sliced by bytes).
    if !s.is_ascii() {
        return None;
    }
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD[ T]hh:mm:ss[.fraction][Z]` (or a bare date, at midnight) into ticks of
/// `10^-precision` seconds. Also accepts a plain integer of seconds since the epoch.
pub fn parse_datetime(s: &str, precision: u8) -> Option<i64> {
    let scale = 10i64.pow(precision as u32);
    if let Some(secs) = parse_plain_datetime(s.as_bytes()) {
        return Some(secs * scale);
    }
    let s = s.trim();
    // Times are ASCII; anything else is not one (and must not be sliced by bytes).
    if !s.is_ascii() {
        return None;
    }
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && s.len() != 10 {
        return s.parse::<i64>().ok().map(|v| v * scale);
    }
    if s.len() == 10 {
        return parse_date(s).map(|d| d * 86_400 * scale);
    }
    if s.len() < 19 {
        return None;
    }
    let days = parse_date(&s[0..10])?;
    let sep = s.as_bytes()[10];
    if sep != b' ' && sep != b'T' {
        return None;
    }
    let t = &s[11..19];
    let tb = t.as_bytes();
    if tb[2] != b':' || tb[5] != b':' {
        return None;
    }
    let h: i64 = t[0..2].parse().ok()?;
    let mi: i64 = t[3..5].parse().ok()?;
    let se: i64 = t[6..8].parse().ok()?;
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s[19..].trim_end_matches('Z');
    let mut frac_ticks = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits: String = f.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest = &f[digits.len()..];
        let mut ticks = 0i64;
        for i in 0..precision as usize {
            let d = digits
                .as_bytes()
                .get(i)
                .map(|c| (c - b'0') as i64)
                .unwrap_or(0);
            ticks = ticks * 10 + d;
        }
        frac_ticks = ticks;
    }
    let offset_secs = parse_offset(rest)?;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    Some(secs * scale + frac_ticks)
}

/// Reads exactly `YYYY-MM-DD hh:mm:ss` (or with `T`), the form most events carry, digit by
/// digit into seconds; `None` for anything else (which the general reader then reads).
fn parse_plain_datetime(b: &[u8]) -> Option<i64> {
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b' ' | b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (h, mi, se) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let (m, d) = (u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + se)
}

fn parse_offset(s: &str) -> Option<i64> {
    if s.is_empty() {
        return Some(0);
    }
    let sign = match s.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = s[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 {
        return None;
    }
    let h: i64 = digits[0..2].parse().ok()?;
    let m: i64 = digits[2..4].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digit-by-digit reader of the common form agrees with the general reader, and
    /// leaves every other form (and every invalid time) to it.
    #[test]
    fn plain_datetimes_read_as_the_general_reader_reads_them() {
        for s in [
            "2024-06-01 00:00:00",
            "2024-02-29T23:59:59",
            "1969-12-31 23:59:60",
            "0001-01-01 00:00:00",
        ] {
            let plain = parse_plain_datetime(s.as_bytes());
            assert!(plain.is_some(), "{s}");
            let general = parse_datetime(&format!(" {s} "), 0);
            assert_eq!(plain, general, "{s}");
        }
        for s in [
            "2023-02-29 00:00:00",
            "2024-13-01 00:00:00",
            "2024-06-01 24:00:00",
            "2024-06-01 00:60:00",
            "2024-06-0a 00:00:00",
            "2024-06-01+00:00:00",
            "2024-06-01 00:00:0",
            "+024-06-01 00:00:00",
        ] {
            assert_eq!(parse_plain_datetime(s.as_bytes()), None, "{s}");
        }
        assert_eq!(
            parse_datetime("2024-06-01 00:00:00", 3),
            Some(1_717_200_000_000)
        );
    }

    /// The reader of the common form gives every valid time of a four-digit year the seconds the
    /// general reader gives it, refuses the days no month has, and never reads a time where a
    /// digit or a separator is any other byte.
    #[test]
    fn plain_datetimes_of_every_year_and_every_wrong_byte() {
        for y in 0..=9999 {
            for m in 0..=13 {
                for d in [0, 1, 2, 15, 27, 28, 29, 30, 31, 32, 39, 99] {
                    let s = format!("{y:04}-{m:02}-{d:02} 23:59:58");
                    let general =
                        parse_date(&s[..10]).map(|days| days * 86_400 + 23 * 3600 + 59 * 60 + 58);
                    assert_eq!(parse_plain_datetime(s.as_bytes()), general, "{s}");
                }
            }
        }
        let valid = *b"2024-02-29T07:08:09";
        let seconds = parse_plain_datetime(&valid).expect("a valid time");
        for at in 0..valid.len() {
            for byte in 0..=255u8 {
                let mut b = valid;
                b[at] = byte;
                let plain = parse_plain_datetime(&b);
                if byte == valid[at] || (at == 10 && byte == b' ') {
                    assert_eq!(plain, Some(seconds), "{at} {byte}");
                } else if !byte.is_ascii_digit() || !valid[at].is_ascii_digit() {
                    assert_eq!(plain, None, "byte {byte} at {at}");
                } else if let Ok(s) = std::str::from_utf8(&b) {
                    // Another digit: a valid time or not, as the general reader says.
                    assert_eq!(plain, parse_datetime(&format!(" {s} "), 0), "{s}");
                }
            }
        }
    }

    #[test]
    fn civil_round_trip() {
        for d in [-1_000_000i64, -1, 0, 1, 19_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
    }

    #[test]
    fn datetimes_parse_and_format() {
        let t = parse_datetime("2024-01-01 10:00:00", 0).unwrap();
        assert_eq!(format_datetime(t), "2024-01-01 10:00:00");
        let t = parse_datetime("2024-01-01T10:00:00.123Z", 3).unwrap();
        assert_eq!(format_datetime64(t, 3), "2024-01-01 10:00:00.123");
        assert_eq!(
            parse_datetime("2024-01-01T12:00:00+02:00", 0),
            parse_datetime("2024-01-01 10:00:00", 0)
        );
        assert_eq!(parse_datetime("nonsense", 0), None);
    }

    /// Found by `tests/fuzz.rs`: a multi-byte character inside a time (here a BOM) made the
    /// parser slice inside it and panic, taking the ingest request down.
    #[test]
    fn non_ascii_times_are_rejected_not_sliced() {
        assert_eq!(parse_datetime("2024-01-0\u{feff}1 00:00:00", 0), None);
        assert_eq!(parse_datetime("2023-10-1\u{feff}1T07:58:10.324Z", 3), None);
        assert_eq!(parse_datetime("2024-01-01 10:00:00+0\u{e9}:00", 0), None);
        assert_eq!(parse_date("2024-\u{e9}1-01"), None);
    }
}
