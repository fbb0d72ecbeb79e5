//! Event time: parsing the time stamps Cosmos DB writes, and formatting RFC 3339.
//!
//! Times are `i64` nanoseconds since the Unix epoch, UTC ([`Nanos`]). Parsing is hand-written
//! because it sits on the per-record hot path: no allocation, no locale, no time-zone database.

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Nanos = i64;

pub const SECOND: Nanos = 1_000_000_000;
pub const MINUTE: Nanos = 60 * SECOND;
pub const HOUR: Nanos = 60 * MINUTE;
pub const DAY: Nanos = 24 * HOUR;

/// Days since the epoch of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        let mut v = 0u32;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        self.i += n;
        Some(v)
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    /// Fractional seconds after a '.', any number of digits, as nanoseconds.
    fn fraction(&mut self) -> Nanos {
        let mut nanos: Nanos = 0;
        let mut scale: Nanos = 100_000_000;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            nanos += (c - b'0') as Nanos * scale;
            scale /= 10;
            self.i += 1;
        }
        nanos
    }
}

fn assemble(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, frac: Nanos) -> Option<Nanos> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + (h * 3600 + mi * 60 + s.min(59)) as i64;
    secs.checked_mul(SECOND)?.checked_add(frac)
}

/// Parses RFC 3339 / ISO 8601 (`2019-04-23T23:12:52.3814846Z`, any number of fractional
/// digits, `Z` or `±hh:mm`, `T` or a space) and RFC 1123 (`Fri, 23 Jun 2017 19:29:50.266 GMT`).
pub fn parse_timestamp(s: &str) -> Option<Nanos> {
    let s = crate::decode::trim(s);
    let b = s.as_bytes();
    if b.first().is_some_and(u8::is_ascii_digit) {
        parse_rfc3339(b)
    } else {
        parse_rfc1123(b)
    }
}

fn parse_rfc3339(b: &[u8]) -> Option<Nanos> {
    let mut c = Cursor { b, i: 0 };
    let y = c.digits(4)? as i64;
    c.eat(b'-').then_some(())?;
    let mo = c.digits(2)?;
    c.eat(b'-').then_some(())?;
    let d = c.digits(2)?;
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        // A bare date means midnight.
        return if c.i == b.len() { assemble(y, mo, d, 0, 0, 0, 0) } else { None };
    }
    let h = c.digits(2)?;
    c.eat(b':').then_some(())?;
    let mi = c.digits(2)?;
    let s = if c.eat(b':') { c.digits(2)? } else { 0 };
    let frac = if c.eat(b'.') || c.eat(b',') { c.fraction() } else { 0 };
    let offset_secs: i64 = match c.peek() {
        None => 0, // No zone: Log Analytics exports are UTC.
        Some(b'Z' | b'z') => {
            c.i += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.i += 1;
            let oh = c.digits(2)? as i64;
            c.eat(b':');
            let om = c.digits(2).unwrap_or(0) as i64;
            let off = oh * 3600 + om * 60;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        Some(_) => return None,
    };
    if c.i != b.len() {
        return None;
    }
    assemble(y, mo, d, h, mi, s, frac)?.checked_sub(offset_secs * SECOND)
}

fn parse_rfc1123(b: &[u8]) -> Option<Nanos> {
    // "Fri, 23 Jun 2017 19:29:50.266 GMT": the weekday is ignored.
    let s = std::str::from_utf8(b).ok()?;
    let rest = match s.find(',') {
        Some(i) => &s[i + 1..],
        None => s,
    };
    let mut parts = rest.split_ascii_whitespace();
    let d: u32 = parts.next()?.parse().ok()?;
    let mon = parts.next()?;
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let mo = MONTHS.iter().position(|m| mon.get(..3).is_some_and(|p| p.eq_ignore_ascii_case(m)))? as u32 + 1;
    let y: i64 = parts.next()?.parse().ok()?;
    let hms = parts.next()?.as_bytes();
    let mut c = Cursor { b: hms, i: 0 };
    let h = c.digits(2)?;
    c.eat(b':').then_some(())?;
    let mi = c.digits(2)?;
    let sec = if c.eat(b':') { c.digits(2)? } else { 0 };
    let frac = if c.eat(b'.') { c.fraction() } else { 0 };
    if c.i != hms.len() {
        return None;
    }
    match parts.next() {
        None => {}
        Some(z) if z.eq_ignore_ascii_case("GMT") || z.eq_ignore_ascii_case("UTC") || z == "Z" => {}
        Some(_) => return None,
    }
    assemble(y, mo, d, h, mi, sec, frac)
}

/// RFC 3339 in UTC with the shortest exact fraction: `2021-08-17T02:13:05.1234567Z`.
pub fn format_rfc3339(t: Nanos) -> String {
    let mut out = String::with_capacity(30);
    write_rfc3339(&mut out, t);
    out
}

pub fn write_rfc3339(out: &mut String, t: Nanos) {
    use std::fmt::Write;
    let secs = t.div_euclid(SECOND);
    let nanos = t.rem_euclid(SECOND);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(out, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60);
    if nanos != 0 {
        let mut frac = format!("{nanos:09}");
        while frac.ends_with('0') {
            frac.pop();
        }
        out.push('.');
        out.push_str(&frac);
    }
    out.push('Z');
}

/// The day number (days since the epoch) of an event time.
pub fn day_of(t: Nanos) -> i64 {
    t.div_euclid(DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_seven_digits_and_without() {
        let a = parse_timestamp("2019-04-23T23:12:52.3814846Z").unwrap();
        let b = parse_timestamp("2019-04-23T23:12:52Z").unwrap();
        assert_eq!(a - b, 381_484_600);
        assert_eq!(format_rfc3339(a), "2019-04-23T23:12:52.3814846Z");
        assert_eq!(format_rfc3339(b), "2019-04-23T23:12:52Z");
        assert_eq!(b, 1_556_061_172 * SECOND);
    }

    #[test]
    fn rfc3339_offsets_and_spaces() {
        let z = parse_timestamp("2021-08-17T02:13:05Z").unwrap();
        assert_eq!(parse_timestamp("2021-08-17T04:13:05+02:00"), Some(z));
        assert_eq!(parse_timestamp("2021-08-17 02:13:05"), Some(z));
        assert_eq!(parse_timestamp("2021-08-16T21:13:05-05:00"), Some(z));
    }

    #[test]
    fn rfc1123_of_2017() {
        let t = parse_timestamp("Fri, 23 Jun 2017 19:29:50.266 GMT").unwrap();
        assert_eq!(format_rfc3339(t), "2017-06-23T19:29:50.266Z");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "yesterday",
            "2021-13-01T00:00:00Z",
            "2021-02-30T00:00:00Z",
            "2021-08-17T25:00:00Z",
            "2021-08-17T02:13:05Zjunk",
            "Fri, 32 Jun 2017 19:29:50 GMT",
            "Fri, 23 Foo 2017 19:29:50 GMT",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 18_000, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
