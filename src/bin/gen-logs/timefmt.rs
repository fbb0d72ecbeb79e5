//! Time: 100-ns ticks since the Unix epoch, civil dates, and the timestamp forms the logs
//! use (ISO 8601 with 7 or 0 fractional digits, RFC 1123 with milliseconds), formatted by hand.

use super::write::push_digits;

pub(crate) const TPS: u64 = 10_000_000; // ticks per second
pub(crate) const SEC: u64 = TPS;
pub(crate) const MIN: u64 = 60 * TPS;
pub(crate) const HOUR: u64 = 3600 * TPS;
pub(crate) const DAY: u64 = 24 * HOUR;
pub(crate) const MS: u64 = TPS / 1000;

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

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

pub(crate) fn ticks(y: i64, mo: u32, d: u32, h: u64, mi: u64, s: u64) -> u64 {
    days_from_civil(y, mo, d) as u64 * DAY + h * HOUR + mi * MIN + s * SEC
}

pub(crate) struct Tm {
    pub(crate) y: i64,
    pub(crate) mo: u32,
    pub(crate) d: u32,
    pub(crate) h: u32,
    pub(crate) mi: u32,
    pub(crate) s: u32,
    pub(crate) frac: u32,   // 7 digits
    pub(crate) wday: usize, // 0 = Sunday
}

pub(crate) fn split_time(t: u64) -> Tm {
    let days = (t / DAY) as i64;
    let rem = t % DAY;
    let (y, mo, d) = civil_from_days(days);
    let secs = rem / TPS;
    Tm {
        y,
        mo,
        d,
        h: (secs / 3600) as u32,
        mi: (secs / 60 % 60) as u32,
        s: (secs % 60) as u32,
        frac: (rem % TPS) as u32,
        wday: ((days + 4).rem_euclid(7)) as usize,
    }
}

/// `2021-08-17T02:13:05.1234567Z`
pub(crate) fn iso7(t: u64) -> String {
    let mut b = Vec::with_capacity(28);
    push_iso7(&mut b, t);
    String::from_utf8_lossy(&b).into_owned()
}

/// `2021-08-12T15:10:46Z`
pub(crate) fn iso0(t: u64) -> String {
    let m = split_time(t);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", m.y, m.mo, m.d, m.h, m.mi, m.s)
}

/// `Wed, 11 Aug 2021 19:29:50.266 GMT`
pub(crate) fn rfc1123_ms(t: u64) -> String {
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MO: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = split_time(t);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02}.{:03} GMT",
        WD[m.wday],
        m.d,
        MO[m.mo as usize - 1],
        m.y,
        m.h,
        m.mi,
        m.s,
        m.frac / 10_000
    )
}

pub(crate) fn push_iso7(b: &mut Vec<u8>, t: u64) {
    let m = split_time(t);
    push_digits(b, m.y as u64, 4);
    b.push(b'-');
    push_digits(b, m.mo as u64, 2);
    b.push(b'-');
    push_digits(b, m.d as u64, 2);
    b.push(b'T');
    push_digits(b, m.h as u64, 2);
    b.push(b':');
    push_digits(b, m.mi as u64, 2);
    b.push(b':');
    push_digits(b, m.s as u64, 2);
    b.push(b'.');
    push_digits(b, m.frac as u64, 7);
    b.push(b'Z');
}
