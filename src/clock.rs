//! Wall-clock time as Unix epoch seconds and milliseconds: what tokens, offers, alerts and the
//! database record. Durations and deadlines use `tokio::time::Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time in milliseconds (what mails show).
pub fn utc_minute(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Milliseconds since the epoch of an RFC 3339 time in UTC, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`,
/// as upstream bodies write when they took their data (a fraction of up to nine digits, truncated
/// to milliseconds). `None` for anything else, an offset other than `Z` included: a caller falls
/// back to a time of its own rather than trust a half-read one.
pub fn parse_utc_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if b.len() < 20 || b[b.len() - 1] != b'Z' || separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let millis = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            // Every place a digit; the first three count.
            digits(fraction)?;
            let kept = fraction.len().min(3);
            digits(&fraction[..kept])? * 10_i64.pow(3 - kept as u32)
        }
        _ => return None,
    };
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1000 + millis)
}

/// The number ASCII digits spell; `None` if any byte is not a digit.
fn digits(bytes: &[u8]) -> Option<i64> {
    let mut n = 0i64;
    for &d in bytes {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(n)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm, the inverse of `utc_minute`'s).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    // Months counted from March, so February's length comes last.
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_utc_ms;

    #[test]
    fn utc_minutes_are_civil_dates() {
        assert_eq!(super::utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::utc_minute(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(super::utc_minute(1_796_000_000_000), "2026-11-30 00:53 UTC");
    }

    #[test]
    fn rfc3339_utc_times_read_to_the_millisecond() {
        // 500.farm's `timestamp`: nanoseconds, truncated.
        assert_eq!(parse_utc_ms("2025-12-07T20:30:16.932863812Z"), Some(1_765_139_416_932));
        assert_eq!(parse_utc_ms("2025-07-26T08:01:10.57621754Z"), Some(1_753_516_870_576));
        assert_eq!(parse_utc_ms("2026-11-28T00:00:05.5Z"), Some(1_795_824_005_500));
        assert_eq!(parse_utc_ms("2024-02-29T23:59:59.999Z"), Some(1_709_251_199_999));
        assert_eq!(parse_utc_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(parse_utc_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            super::utc_minute(parse_utc_ms("2026-11-30T00:53:20Z").unwrap()),
            "2026-11-30 00:53 UTC"
        );
    }

    #[test]
    fn anything_but_a_strict_utc_time_is_refused() {
        for bad in [
            "",
            "2025-12-07",
            "2025-12-07 20:30:16Z",
            "2025-12-07T20:30:16",
            "2025-12-07T20:30:16+00:00",
            "2025-12-07T20:30:16.932+01:00",
            "2025-12-07T20:30:16.Z",
            "2025-12-07T20:30:16.1234567890Z",
            "2025-12-07T20:30:16.9a2Z",
            "2025-12-07t20:30:16z",
            "2025-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-00-10T00:00:00Z",
            "2025-04-31T00:00:00Z",
            "2025-12-07T24:00:00Z",
            "2025-12-07T20:60:00Z",
            "2025-12-07T20:30:60Z",
            "+025-12-07T20:30:16Z",
            "2025-12-07T20:30:16ZZ",
        ] {
            assert_eq!(parse_utc_ms(bad), None, "{bad}");
        }
    }
}
