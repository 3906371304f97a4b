//! Times in the store: unix seconds (UTC) in `BIGINT` columns, the same on SQLite and
//! PostgreSQL. This file converts them from Django's ISO 8601 fixture strings and to a
//! readable UTC string for pages, with the civil-calendar arithmetic of Howard Hinnant's
//! `days_from_civil`, so no date crate is needed.

/// Seconds since the unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Parse a Django `dumpdata` datetime, e.g. `2014-12-03T15:28:21.284`, `2014-12-03T15:28:41`,
/// `2020-01-02T03:04:05Z` or `2020-01-02T03:04:05.123+01:00`, into unix seconds (fractions are
/// dropped). A time without an offset is taken as UTC. `None` if it is not such a string.
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, min, sec) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"" | b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let secs = digits(&[*h1, *h2])? * 3600 + digits(&[*m1, *m2])? * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

/// `2014-12-03 15:28:21 UTC`, for pages.
pub fn format_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_django_fixture_times() {
        // date -u -d 2014-12-03T15:28:21 +%s
        assert_eq!(
            parse_iso8601("2014-12-03T15:28:21.284"),
            Some(1_417_620_501)
        );
        assert_eq!(parse_iso8601("2014-12-03T15:28:41"), Some(1_417_620_521));
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601("2024-02-29T12:00:00+01:00"),
            Some(1_709_204_400)
        );
        assert_eq!(
            parse_iso8601("2024-02-29 12:00:00.5-00:30"),
            Some(1_709_209_800)
        );
    }

    #[test]
    fn rejects_what_is_not_a_datetime() {
        for bad in [
            "",
            "2014-12-03",
            "2014-13-03T00:00:00",
            "2023-02-29T00:00:00",
            "2014-12-03T24:00:00",
            "2014-12-03T15:28:21.",
            "2014-12-03T15:28:21+0100",
            "2014-12-03T15:28:21 junk",
            "２０１４-12-03T15:28:21",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_utc(1_417_620_501), "2014-12-03 15:28:21 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        for t in [-86_401, 951_782_400, 1_709_204_400, 4_102_444_799] {
            let s = format_utc(t).replace(' ', "T").replace("TUTC", "Z");
            assert_eq!(parse_iso8601(&s), Some(t), "{s}");
        }
    }
}
