//! A key's read-volume history and the `volume_anomaly` threshold derived from it.
//!
//! History is one summary per day (event time, UTC) with reads: the day's peak volume in the
//! sliding window, its total bytes and how many clock hours saw reads. The threshold for a
//! day follows from the peaks of *comparable* days: when some days of the week are at least
//! twice as busy as the others (office hours: Monday to Friday; a consumer app: the weekend;
//! shifted by a day at the edges for a key far from UTC), a busy day is compared with the
//! busy days of the history and a quiet day with the quiet ones, so a key's weekly rhythm is
//! not mistaken for spread.
//! Recurring large reads (a nightly backup) raise every day's peak, so they are not
//! anomalous; slow growth moves the peaks with it; a one-off spike far above every peak is.
//!
//! Whatever the statistics say, the threshold never exceeds `volume_max_ratio` x the highest
//! daily peak of the whole history: a read that many times above anything the key ever did
//! fires however noisy the history is. The history reaches back at least
//! [`MIN_HISTORY_DAYS`] days, so the last run of a monthly job is always part of it.
//! Cached per day: the hot path compares two integers.

use crate::config::DetectConfig;
use crate::time::{day_of, Nanos, DAY, HOUR};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct DaySummary {
    /// Days since 1970-01-01 (`i32`: an `i64` of nanoseconds spans ±106,752 days). A key's
    /// finished days are kept packed ([`PackedDays`]), the day in progress as this.
    pub day: i32,
    pub peak: u64,
    pub total: u64,
    pub active_hours: u8,
}

/// Days of volume history kept at least, whatever `history_window` says: a monthly job ran at
/// most 31 days (33 for "the last business day") before its next run.
pub const MIN_HISTORY_DAYS: i64 = 35;

/// The days of the week a peak model's statistics describe: bit 0 is Monday, bit 6 Sunday.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct DayMask(pub u8);

impl Default for DayMask {
    fn default() -> Self {
        DayMask::ALL
    }
}

impl DayMask {
    pub const ALL: DayMask = DayMask(0x7f);
    const NAMES: [&'static str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

    /// The day of the week of a day number (days since 1970-01-01, a Thursday): 0 is Monday.
    pub fn weekday(day: i64) -> u32 {
        (day + 3).rem_euclid(7) as u32
    }

    pub fn contains(self, day: i64) -> bool {
        self.0 & (1 << DayMask::weekday(day)) != 0
    }

    pub fn code(self) -> u8 {
        self.0
    }

    pub fn from_code(c: u8) -> Option<Self> {
        (c != 0 && c <= 0x7f).then_some(DayMask(c))
    }

    /// For a person: "daily", or the days as ranges ("Mon-Fri", "Sat-Sun", "Sun", "Mon/Wed").
    pub fn noun(self) -> String {
        if self == DayMask::ALL {
            return "daily".into();
        }
        let mut parts: Vec<String> = Vec::new();
        let mut d = 0;
        while d < 7 {
            if self.0 & (1 << d) == 0 {
                d += 1;
                continue;
            }
            let first = d;
            while d + 1 < 7 && self.0 & (1 << (d + 1)) != 0 {
                d += 1;
            }
            parts.push(match d - first {
                0 => DayMask::NAMES[first].to_string(),
                1 => format!("{}/{}", DayMask::NAMES[first], DayMask::NAMES[d]),
                _ => format!("{}-{}", DayMask::NAMES[first], DayMask::NAMES[d]),
            });
            d += 1;
        }
        parts.join("/")
    }
}

/// Days of the week whose typical peaks are at least this factor apart (in log) form their own
/// classes: twice as busy.
const LEVEL_GAP: f64 = std::f64::consts::LN_2;

/// The days of the week comparable with `day`'s: the days of the week split in two at the widest
/// gap between their median log peaks when that gap is at least [`LEVEL_GAP`] (busy days and
/// quiet days, whatever the key's time zone and rhythm), else every day. Every day of the week
/// needs a day of history first.
fn comparable_days(days: &[DaySummary], day: i64) -> DayMask {
    let mut by_weekday: [Vec<f64>; 7] = Default::default();
    for d in days.iter().filter(|d| d.peak > 0) {
        by_weekday[DayMask::weekday(d.day.into()) as usize].push((d.peak as f64).ln());
    }
    if by_weekday.iter().any(|v| v.is_empty()) {
        return DayMask::ALL;
    }
    let mut medians: Vec<(f64, u32)> = by_weekday
        .iter_mut()
        .enumerate()
        .map(|(w, v)| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            ((v[(n - 1) / 2] + v[n / 2]) / 2.0, w as u32)
        })
        .collect();
    medians.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (gap, at) =
        (1..7).map(|i| (medians[i].0 - medians[i - 1].0, i)).fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    if gap < LEVEL_GAP {
        return DayMask::ALL;
    }
    let today = DayMask::weekday(day);
    let side = |i: usize| i >= at;
    let mine = side(medians.iter().position(|m| m.1 == today).unwrap_or(0));
    DayMask(medians.iter().enumerate().filter(|(i, _)| side(*i) == mine).fold(0, |m, (_, x)| m | 1 << x.1))
}

/// The fitted model of a key's daily peaks, for one day (of the day's kind).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeakModel {
    /// Mean and spread (floored, predictive) of ln(peak bytes) of the comparable days.
    pub mean_ln: f64,
    pub scale_ln: f64,
    /// Degrees of freedom of the Student's t (days - 1).
    pub dof: f64,
    /// The highest daily peak of the whole history (every kind of day): the ceiling's base.
    pub max_peak: u64,
    /// The bytes in the window at which `volume_anomaly` fires.
    pub threshold: u64,
    /// The days of the week the statistics describe.
    #[serde(default)]
    pub basis: DayMask,
}

impl PeakModel {
    /// One-sided p-value of `bytes` under this model.
    pub fn p_value(&self, bytes: u64) -> f64 {
        let t = ((bytes.max(1) as f64).ln() - self.mean_ln) / self.scale_ln;
        StudentsT::new(0.0, 1.0, self.dof).map_or(0.0, |d| d.sf(t))
    }

    /// The typical daily peak (geometric mean).
    pub fn typical_peak(&self) -> u64 {
        self.mean_ln.exp().round() as u64
    }
}

/// A key's finished days, oldest first, packed: per day the difference of its day number from
/// the day before (zigzag), its active hours, then its peak and total bytes (LEB128 varints):
/// about 10 bytes a day where a [`DaySummary`] takes 24, and the days are most of a key's state
/// once it has a month of history. Read whole when the model is fitted (once a day per key)
/// and when an alert is made; written when a day ends. Written and read as the list of days.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedDays {
    bytes: Box<[u8]>,
    len: u32,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(*at) else { break };
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
    }
    v
}

impl PackedDays {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Appends `d` (after `prev`, the day number of the last day, 0 for the first) to `out`.
    fn put(out: &mut Vec<u8>, d: &DaySummary, prev: i32) {
        let delta = i64::from(d.day) - i64::from(prev);
        put_varint(out, ((delta << 1) ^ (delta >> 63)) as u64);
        out.push(d.active_hours);
        put_varint(out, d.peak);
        put_varint(out, d.total);
    }

    /// The days, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = DaySummary> + '_ {
        let (mut at, mut prev) = (0usize, 0i64);
        (0..self.len).map(move |_| {
            let z = get_varint(&self.bytes, &mut at);
            let day = prev + ((z >> 1) as i64 ^ -((z & 1) as i64));
            prev = day;
            let active_hours = self.bytes.get(at).copied().unwrap_or(0);
            at += 1;
            let peak = get_varint(&self.bytes, &mut at);
            let total = get_varint(&self.bytes, &mut at);
            DaySummary { day: day as i32, peak, total, active_hours }
        })
    }

    pub fn to_vec(&self) -> Vec<DaySummary> {
        self.iter().collect()
    }

    pub fn last(&self) -> Option<DaySummary> {
        self.iter().last()
    }

    fn set(&mut self, days: &[DaySummary]) {
        let mut out = Vec::with_capacity(days.len() * 12);
        let mut prev = 0;
        for d in days {
            Self::put(&mut out, d, prev);
            prev = d.day;
        }
        self.bytes = out.into_boxed_slice();
        self.len = days.len() as u32;
    }

    /// Appends a day.
    pub fn push(&mut self, d: DaySummary) {
        let prev = self.last().map_or(0, |l| l.day);
        let mut out = std::mem::take(&mut self.bytes).into_vec();
        out.reserve_exact(12);
        Self::put(&mut out, &d, prev);
        self.bytes = out.into_boxed_slice();
        self.len += 1;
    }

    /// Drops the first days while they are before `oldest`.
    pub fn drop_before(&mut self, oldest: i64) {
        if self.iter().next().is_some_and(|d| i64::from(d.day) < oldest) {
            let kept: Vec<DaySummary> = self.iter().skip_while(|d| i64::from(d.day) < oldest).collect();
            self.set(&kept);
        }
    }

    /// Adds `bytes` to the total of day `day`, if it is kept.
    pub fn add_to_total(&mut self, day: i32, bytes: u64) {
        let mut days = self.to_vec();
        if let Some(d) = days.iter_mut().find(|d| d.day == day) {
            d.total += bytes;
            self.set(&days);
        }
    }
}

impl From<Vec<DaySummary>> for PackedDays {
    fn from(days: Vec<DaySummary>) -> Self {
        let mut p = PackedDays::default();
        p.set(&days);
        p
    }
}

impl Serialize for PackedDays {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PackedDays {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<DaySummary>::deserialize(d).map(PackedDays::from)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VolumeHistory {
    today: Option<DaySummary>,
    hours_today: u32,
    days: PackedDays,
    model: Option<PeakModel>,
}

impl VolumeHistory {
    pub fn model(&self) -> Option<&PeakModel> {
        self.model.as_ref()
    }

    /// Average bytes per active hour over the history (today excluded).
    pub fn typical_hourly(&self) -> u64 {
        let (b, h) = self.days.iter().fold((0u64, 0u64), |(b, h), d| (b + d.total, h + d.active_hours as u64));
        b.checked_div(h).unwrap_or(0)
    }

    pub fn days(&self) -> usize {
        self.days.len()
    }

    /// The parts, for a model: the day in progress, its active clock hours (a bit per hour),
    /// the finished days oldest first, and the fitted model.
    pub fn parts(&self) -> (Option<DaySummary>, u32, Vec<DaySummary>, Option<&PeakModel>) {
        (self.today, self.hours_today, self.days.to_vec(), self.model.as_ref())
    }

    /// Fits the peak model again (a restored history under other volume settings).
    pub fn refit(&mut self, cfg: &DetectConfig, tq: &mut TQuantiles) {
        let day = match (self.today, self.days.last()) {
            (Some(t), _) => i64::from(t.day),
            (None, Some(last)) => i64::from(last.day) + 1,
            (None, None) => return,
        };
        self.model = fit(&self.days.to_vec(), day, cfg, tq);
    }

    /// Rebuilds a history from [`VolumeHistory::parts`]; `None` unless the finished days are
    /// strictly increasing and before the day in progress.
    pub fn from_parts(
        today: Option<DaySummary>,
        hours_today: u32,
        days: Vec<DaySummary>,
        model: Option<PeakModel>,
    ) -> Option<Self> {
        let ordered = days.windows(2).all(|w| w[0].day < w[1].day);
        let before_today = match (today, days.last()) {
            (Some(t), Some(last)) => last.day < t.day,
            (None, Some(_)) => false,
            _ => true,
        };
        (ordered && before_today).then(|| VolumeHistory { today, hours_today, days: days.into(), model })
    }

    /// Records `bytes` read at `t`, with `window_sum` the key's sliding volume after it.
    /// Returns true when a new day began (the model was refitted).
    pub fn observe(&mut self, t: Nanos, bytes: u64, window_sum: u64, cfg: &DetectConfig, tq: &mut TQuantiles) -> bool {
        let day = day_of(t) as i32; // lossless: see `DaySummary::day`
        let hour_bit = 1u32 << (t.rem_euclid(DAY) / HOUR);
        let mut rolled = false;
        match &mut self.today {
            Some(today) if today.day == day => {}
            Some(today) if today.day > day => {
                // A late record from an earlier day: its bytes join that day's total.
                self.days.add_to_total(day, bytes);
                return false;
            }
            _ => {
                if let Some(done) = self.today.take() {
                    if done.total > 0 {
                        self.days.push(DaySummary { active_hours: self.hours_today.count_ones() as u8, ..done });
                    }
                }
                let oldest = i64::from(day) - (cfg.history_window.0 / DAY).max(MIN_HISTORY_DAYS);
                self.days.drop_before(oldest);
                self.today = Some(DaySummary { day, peak: 0, total: 0, active_hours: 0 });
                self.hours_today = 0;
                self.model = fit(&self.days.to_vec(), day.into(), cfg, tq);
                rolled = true;
            }
        }
        if let Some(today) = &mut self.today {
            today.total += bytes;
            today.peak = today.peak.max(window_sum);
            if bytes > 0 {
                self.hours_today |= hour_bit;
            }
        }
        rolled
    }
}

/// Upper quantiles of Student's t by degrees of freedom, computed once each: the inverse CDF
/// is iterative and a day rollover of every key would otherwise pay for it.
#[derive(Clone, Debug, Default)]
pub struct TQuantiles {
    p_value: f64,
    by_dof: Vec<Option<f64>>,
}

impl TQuantiles {
    pub fn get(&mut self, dof: usize, p_value: f64) -> Option<f64> {
        if dof == 0 {
            return None;
        }
        if self.p_value != p_value {
            self.by_dof.clear();
            self.p_value = p_value;
        }
        if self.by_dof.len() <= dof {
            self.by_dof.resize(dof + 1, None);
        }
        if self.by_dof[dof].is_none() {
            self.by_dof[dof] = StudentsT::new(0.0, 1.0, dof as f64).ok().map(|d| d.inverse_cdf(1.0 - p_value));
        }
        self.by_dof[dof]
    }
}

/// Growth of a key's level that scales an old peak, at most: a key whose reads were tiny a
/// month ago must not make every old spike look small.
pub const MAX_GROWTH: f64 = 4.0;

/// The highest daily peak of the history, each scaled by the key's growth since its day: the
/// level (median daily peak) of the last seven days over the level of the seven days around
/// it (a whole week, moved inside the history at its ends), between 1 and [`MAX_GROWTH`]; with
/// under two weeks of history, no growth. A month-end batch that grows with the data (3x a month)
/// is then compared with last month's batch as it would read today, not as it read then.
pub fn grown_max_peak(days: &[DaySummary]) -> f64 {
    let peaks: Vec<(i64, u64)> = days.iter().filter(|d| d.peak > 0).map(|d| (i64::from(d.day), d.peak)).collect();
    let (Some(&(first, _)), Some(&(last, _))) = (peaks.first(), peaks.last()) else { return 0.0 };
    // The level of the seven days from `from`: always a whole week, so that a weekly rhythm
    // (quiet weekends) weighs the same in every level.
    let level = |from: i64| -> Option<f64> {
        let mut v: Vec<u64> = peaks.iter().filter(|(d, _)| (from..from + 7).contains(d)).map(|&(_, p)| p).collect();
        v.sort_unstable();
        v.get(v.len().checked_sub(1)? / 2).map(|&p| p as f64)
    };
    if last - first < 13 {
        return peaks.iter().map(|&(_, p)| p as f64).fold(0.0, f64::max); // under two weeks: no trend
    }
    let now = level(last - 6).unwrap_or(0.0);
    peaks
        .iter()
        .map(|&(d, p)| {
            let week = (d - 3).clamp(first, last - 6);
            let growth = level(week).map_or(1.0, |then| (now / then.max(1.0)).clamp(1.0, MAX_GROWTH));
            p as f64 * growth
        })
        .fold(0.0, f64::max)
}

/// Fits the peak model for `day`; `None` with fewer than `volume_min_history_days` days of
/// reads.
///
/// The statistics describe the days comparable with `day` ([`comparable_days`]) once the
/// history holds `volume_min_history_days` of them, every day before that (less sensitive on
/// a quiet day, never more). The threshold is the Student's t quantile of the comparable
/// log peaks, kept above `volume_min_ratio` x the highest peak of the whole history (scaled by
/// the key's growth since, [`grown_max_peak`]), below `volume_max_ratio` x the highest peak, and
/// never below `volume_min_bytes`.
pub fn fit(days: &[DaySummary], day: i64, cfg: &DetectConfig, tq: &mut TQuantiles) -> Option<PeakModel> {
    let min_days = (cfg.volume_min_history_days as usize).max(2);
    let all: Vec<u64> = days.iter().filter(|d| d.peak > 0).map(|d| d.peak).collect();
    if all.len() < min_days {
        return None;
    }
    let class = comparable_days(days, day);
    let same_kind: Vec<u64> =
        days.iter().filter(|d| d.peak > 0 && class.contains(d.day.into())).map(|d| d.peak).collect();
    let (peaks, basis) = if same_kind.len() >= min_days { (same_kind, class) } else { (all.clone(), DayMask::ALL) };
    let logs: Vec<f64> = peaks.iter().map(|&p| (p as f64).ln()).collect();
    let n = logs.len();
    let nf = n as f64;
    let mean = logs.iter().sum::<f64>() / nf;
    let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    // Predictive spread for one more day: the sample spread, floored, widened by sqrt(1 + 1/n).
    let scale = var.sqrt().max(cfg.volume_min_log_spread) * (1.0 + 1.0 / nf).sqrt();
    let dof = nf - 1.0;
    let t_crit = tq.get(n - 1, cfg.volume_p_value)?;
    let max_peak = all.iter().copied().max().unwrap_or(0);
    // Between volume_min_ratio and volume_max_ratio x the highest peak of any kind of day (a
    // monthly job may have last run on a weekend and run on a weekday now), where the
    // comparable days' statistics put it.
    let statistical = (mean + t_crit * scale).exp();
    let floor = cfg.volume_min_ratio * grown_max_peak(days);
    let ceiling = (cfg.volume_max_ratio * max_peak as f64).max(floor);
    let threshold = statistical.max(floor).min(ceiling).max(cfg.volume_min_bytes.0 as f64);
    Some(PeakModel {
        mean_ln: mean,
        scale_ln: scale,
        dof,
        max_peak,
        threshold: if threshold >= u64::MAX as f64 { u64::MAX } else { threshold.ceil() as u64 },
        basis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// 2021-08-02, a Monday.
    const MONDAY: i64 = 18_841;

    /// Days `first..` with the given peaks (total 4x the peak over 10 active hours).
    fn days_from(first: i64, peaks: &[u64]) -> Vec<DaySummary> {
        peaks
            .iter()
            .enumerate()
            .map(|(i, &p)| DaySummary { day: (first + i as i64) as i32, peak: p, total: p * 4, active_hours: 10 })
            .collect()
    }

    fn days(peaks: &[u64]) -> Vec<DaySummary> {
        days_from(MONDAY, peaks)
    }

    /// The model for the day after the history.
    fn fit_(d: &[DaySummary], cfg: &DetectConfig) -> Option<PeakModel> {
        let next = d.last().map_or(MONDAY, |l| i64::from(l.day) + 1);
        fit(d, next, cfg, &mut TQuantiles::default())
    }

    /// Whether a day number (days since 1970-01-01, a Thursday) is a Saturday or Sunday.
    fn is_weekend(day: i64) -> bool {
        DayMask::weekday(day) >= 5
    }

    /// Deterministic noise in [0, 1) (no RNG crate in the library).
    fn noise(i: u64) -> f64 {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Four weeks from a Monday: weekday peaks 160-250 MiB, weekend peaks about 20 MiB.
    fn weekly_rhythm() -> Vec<DaySummary> {
        let peaks: Vec<u64> = (0..28u64)
            .map(|i| {
                if is_weekend(MONDAY + i as i64) {
                    ((18.0 + 4.0 * noise(i)) * MIB as f64) as u64
                } else {
                    ((160.0 + 90.0 * noise(i)) * MIB as f64) as u64
                }
            })
            .collect();
        days(&peaks)
    }

    #[test]
    fn weekdays_and_weekends() {
        assert!(!is_weekend(MONDAY));
        assert!(!is_weekend(MONDAY + 4)); // Friday
        assert!(is_weekend(MONDAY + 5) && is_weekend(MONDAY + 6));
        assert!(!is_weekend(MONDAY + 7));
        assert!(is_weekend(MONDAY - 1) && !is_weekend(0)); // 1970-01-01 was a Thursday
    }

    #[test]
    fn busy_and_quiet_days_follow_the_key_not_utc() {
        // A key eight hours west of UTC: its Friday afternoon falls on Saturday UTC, so the UTC
        // Saturday is as busy as a weekday and only Sunday is quiet.
        // Five weeks of history (the t quantile of four Sundays alone would still be wide).
        let peaks: Vec<u64> = (0..35u64)
            .map(|i| {
                let w = DayMask::weekday(MONDAY + i as i64);
                let mib = if w == 6 { 60.0 } else { 280.0 };
                ((mib * (0.9 + 0.2 * noise(i + 900))) * MIB as f64) as u64
            })
            .collect();
        let d = days(&peaks);
        let cfg = DetectConfig::default();
        let sunday = fit(&d, MONDAY + 34 + 7, &cfg, &mut TQuantiles::default()).unwrap();
        assert_eq!(sunday.basis, DayMask(0x40));
        assert_eq!(sunday.basis.noun(), "Sun");
        assert_eq!(sunday.threshold, GIB, "a 1.67 GiB read on a Sunday fires");
        let saturday = fit(&d, MONDAY + 33 + 7, &cfg, &mut TQuantiles::default()).unwrap();
        assert_eq!(saturday.basis.noun(), "Mon-Sat");
        // Days of one level are one class.
        let flat: Vec<u64> = (0..28u64).map(|i| ((100.0 + 30.0 * noise(i)) * MIB as f64) as u64).collect();
        assert_eq!(fit_(&days(&flat), &cfg).unwrap().basis, DayMask::ALL);
        assert_eq!(DayMask(0x1f).noun(), "Mon-Fri");
        assert_eq!(DayMask(0x60).noun(), "Sat/Sun");
        assert_eq!(DayMask(0x45).noun(), "Mon/Wed/Sun");
    }

    #[test]
    fn too_little_history_has_no_model() {
        let cfg = DetectConfig::default();
        assert!(fit_(&days(&[100 * MIB, 120 * MIB]), &cfg).is_none());
    }

    #[test]
    fn weekly_rhythm_is_judged_against_days_of_the_same_kind() {
        // The key: a pooled fit put the threshold at 15 GiB, so 4.7 GB in 45 minutes
        // (26x its typical hour) raised nothing.
        let cfg = DetectConfig::default();
        let history = weekly_rhythm();
        let theft = 4_700_000_000u64;
        let max = history.iter().map(|d| d.peak).max().unwrap();
        // A weekday (Monday after four weeks): compared with weekdays.
        let monday = fit(&history, MONDAY + 28, &cfg, &mut TQuantiles::default()).unwrap();
        assert_eq!(monday.basis, DayMask(0x1f));
        assert_eq!(monday.threshold, GIB, "min_bytes binds: the weekday statistics put it below");
        assert!(theft >= monday.threshold);
        // A Saturday: compared with weekends, and the ratio floor to the highest peak of any day.
        let saturday = fit(&history, MONDAY + 26, &cfg, &mut TQuantiles::default()).unwrap();
        assert_eq!(saturday.basis, DayMask(0x60));
        assert_eq!(saturday.threshold, GIB);
        assert!(theft >= saturday.threshold);
        assert!(saturday.typical_peak() < 25 * MIB && monday.typical_peak() > 150 * MIB);
        // Neither is anywhere near the pooled fit's 60x the highest peak.
        assert!(monday.threshold < 10 * max && saturday.threshold < 10 * max);
        // A normal day of either kind stays far below.
        assert!(300 * MIB < monday.threshold && 40 * MIB < saturday.threshold);
    }

    #[test]
    fn the_ceiling_caps_a_noisy_history() {
        // Peaks scattered over three orders of magnitude: the statistics alone would put the
        // threshold far above anything the key did; the ceiling holds it at 10x the highest.
        let cfg = DetectConfig::default();
        let peaks: Vec<u64> = (0..30u64).map(|i| (MIB as f64 * 1000f64.powf(noise(i + 100))) as u64).collect();
        let max = *peaks.iter().max().unwrap();
        let m = fit_(&days(&peaks), &cfg).unwrap();
        let statistical = (m.mean_ln + 3.0 * m.scale_ln).exp();
        assert!(statistical > 10.0 * max as f64, "the statistics alone: {statistical}");
        assert_eq!(m.threshold, (cfg.volume_max_ratio * max as f64).ceil() as u64);
        // A smaller max_ratio moves it.
        let tight = DetectConfig { volume_max_ratio: 4.0, ..cfg };
        assert_eq!(fit_(&days(&peaks), &tight).unwrap().threshold, (4.0 * max as f64).ceil() as u64);
    }

    #[test]
    fn nightly_backup_is_its_own_normal() {
        // A 5 GiB backup every night, weekends too: the peaks are the backup.
        let cfg = DetectConfig::default();
        let peaks: Vec<u64> = (0..21u64).map(|i| 5 * GIB - 100 * MIB + (200.0 * noise(i)) as u64 * MIB).collect();
        let m = fit_(&days(&peaks), &cfg).unwrap();
        let max = *peaks.iter().max().unwrap();
        assert!(m.threshold >= 2 * max, "threshold {}", m.threshold);
        assert!(m.threshold <= 10 * max);
    }

    #[test]
    fn growth_of_3x_over_a_month_is_not_extreme() {
        let cfg = DetectConfig::default();
        // Peaks of ~120 MiB on weekdays and 40 MiB at weekends, 3x higher after 30 days.
        let daily = 3f64.powf(1.0 / 30.0);
        let peaks: Vec<u64> = (0..30i64)
            .map(|i| {
                let base = if is_weekend(MONDAY + i) { 40.0 } else { 120.0 };
                (base * daily.powi(i as i32) * MIB as f64) as u64
            })
            .collect();
        let d = days(&peaks);
        let last_weekday = d.iter().rev().find(|x| !is_weekend(x.day.into())).unwrap().peak;
        let m = fit_(&d, &cfg).unwrap();
        let next = (last_weekday as f64 * daily * 1.2) as u64; // and a busy day on top
        assert!(next < m.threshold, "{} MiB vs {} MiB", next / MIB, m.threshold / MIB);
        // While a one-off 25x spike is extreme.
        assert!(25 * 120 * MIB >= m.threshold);
        assert!(m.p_value(25 * 120 * MIB) < cfg.volume_p_value);
        assert!(m.p_value(next) > 0.01);
    }

    #[test]
    fn autoscaling_on_top_of_the_busiest_hour_is_not_extreme() {
        // New instances add 0.8-1.5x the typical hour: at most 2.5x the usual peak.
        let cfg = DetectConfig { volume_min_bytes: crate::units::ByteSize(MIB), ..DetectConfig::default() };
        let peaks: Vec<u64> = (0..21u64).map(|i| ((300.0 + 60.0 * noise(i + 7)) * MIB as f64) as u64).collect();
        let m = fit_(&days(&peaks), &cfg).unwrap();
        let max = *peaks.iter().max().unwrap();
        assert!(m.threshold >= 2 * max, "threshold {} MiB", m.threshold / MIB);
        assert!(((2.5 * 330.0) as u64) * MIB < m.threshold);
    }

    #[test]
    fn a_monthly_job_is_remembered_to_its_next_run() {
        // A 3 GiB month-end batch on a Saturday 31 days ago, ~100 MiB peaks otherwise; with the
        // default 30-day history_window it would have been forgotten the day before its next run.
        let cfg = DetectConfig::default();
        let mut peaks: Vec<u64> = (0..31u64).map(|i| ((90.0 + 20.0 * noise(i + 50)) * MIB as f64) as u64).collect();
        peaks[5] = 3 * GIB; // MONDAY + 5: a Saturday
        let mut h = VolumeHistory::default();
        let mut tq = TQuantiles::default();
        for (i, &p) in peaks.iter().enumerate() {
            let t = (MONDAY + i as i64) * DAY + 12 * HOUR;
            h.observe(t, p, p, &cfg, &mut tq);
        }
        // The next month-end falls on a Tuesday, 31 days after the last.
        let t = (MONDAY + 36) * DAY + 1;
        h.observe(t, MIB, MIB, &cfg, &mut tq);
        assert!(h.parts().2.iter().any(|d| i64::from(d.day) == MONDAY + 5), "the batch day is still in the history");
        let m = h.model().copied().unwrap();
        assert_eq!(m.basis, DayMask::ALL, "no weekly rhythm: every day is comparable");
        assert!(m.threshold >= 6 * GIB, "threshold {} MiB", m.threshold / MIB);
        assert!(3 * GIB + 500 * MIB < m.threshold);
    }

    #[test]
    fn a_monthly_job_that_grows_with_the_key_is_compared_as_it_would_read_today() {
        // The key's reads grow 3x in 30 days, and so does its month-end batch: 2 GiB 30 days
        // ago, about 6 GiB now (1.3 GiB in its busiest hour then, 3.9 GiB now).
        let cfg = DetectConfig::default();
        let daily = 3f64.powf(1.0 / 30.0);
        let peaks: Vec<u64> = (0..33i64)
            .map(|i| {
                let base = if i == 2 { 1300.0 } else { 100.0 * (0.9 + 0.2 * noise(i as u64 + 300)) };
                (base * daily.powi(i as i32) * MIB as f64) as u64
            })
            .collect();
        let d = days(&peaks);
        let m = fit_(&d, &cfg).unwrap();
        let next_batch = (1300.0 * daily.powi(32) * 1.07 * MIB as f64) as u64;
        assert!(next_batch < m.threshold, "{} MiB vs {} MiB", next_batch / MIB, m.threshold / MIB);
        // Growth is capped: a key that was idle a month ago does not hide a spike.
        let g = grown_max_peak(&d);
        assert!(g <= MAX_GROWTH * *peaks.iter().max().unwrap() as f64);
        // Without growth the old batch counts about as it read (the levels' own noise aside).
        let flat: Vec<u64> = peaks.iter().enumerate().map(|(i, &p)| (p as f64 / daily.powi(i as i32)) as u64).collect();
        let flat_max = *flat.iter().max().unwrap() as f64;
        let g = grown_max_peak(&days(&flat));
        assert!(g >= flat_max && g <= 1.15 * flat_max, "{g} vs {flat_max}");
        assert!(next_batch as f64 > 2.0 * g, "without growth it would be twice last month's");
    }

    #[test]
    fn a_weekly_rhythm_is_not_growth() {
        // Steady weekdays of ~540 MiB and weekends of ~100 MiB, the history ending on a Monday
        // after a weekend: no day may be scaled as if the key had grown 5x since.
        let peaks: Vec<u64> = (0..35u64)
            .map(|i| {
                let w = DayMask::weekday(MONDAY + 1 + i as i64);
                let mib = if w >= 5 { 100.0 } else { 540.0 };
                ((mib * (0.95 + 0.1 * noise(i + 77))) * MIB as f64) as u64
            })
            .collect();
        let d = days_from(MONDAY + 1, &peaks);
        let max = *peaks.iter().max().unwrap() as f64;
        let g = grown_max_peak(&d);
        assert!(g <= 1.1 * max, "{} MiB vs {} MiB", g / MIB as f64, max / MIB as f64);
        let m = fit(&d, MONDAY + 36, &DetectConfig::default(), &mut TQuantiles::default()).unwrap();
        assert!(m.threshold < 2 * GIB, "a weekday threshold of {} MiB", m.threshold / MIB);
    }

    #[test]
    fn never_below_the_minimum_bytes() {
        let cfg = DetectConfig::default();
        let m = fit_(&days(&[MIB, MIB, MIB, MIB]), &cfg).unwrap();
        assert_eq!(m.threshold, GIB);
    }

    proptest::proptest! {
        /// The packed days are the list of days they stand for, through every change the
        /// history makes (a day appended, the first days dropped, a late total added), and
        /// written as that list: days far apart, before 1970, in any order, any byte count.
        #[test]
        fn packed_days_are_the_plain_list(
            steps in proptest::collection::vec(
                (0u8..4, -3i32..40, 0u8..25, proptest::prelude::any::<u64>(), 0u32..70),
                1..60,
            ),
        ) {
            let mut packed = PackedDays::default();
            let mut plain: VecDeque<DaySummary> = VecDeque::new();
            let mut day = -20_000i32;
            for (op, gap, hours, bytes, size) in steps {
                let scale = 1u64.checked_shl(size).unwrap_or(u64::MAX);
                let bytes = bytes % scale;
                match op {
                    0 | 1 => {
                        day = day.saturating_add(gap);
                        let d = DaySummary { day, peak: bytes / 3, total: bytes, active_hours: hours };
                        packed.push(d);
                        plain.push_back(d);
                    }
                    2 => {
                        let oldest = i64::from(day) - i64::from(gap);
                        packed.drop_before(oldest);
                        while plain.front().is_some_and(|d| i64::from(d.day) < oldest) {
                            plain.pop_front();
                        }
                    }
                    _ => {
                        let late = day.saturating_sub(gap);
                        let add = bytes % (1 << 20);
                        if let Some(d) = plain.iter_mut().find(|d| d.day == late) {
                            if let Some(total) = d.total.checked_add(add) {
                                d.total = total;
                                packed.add_to_total(late, add);
                            }
                        }
                    }
                }
                let want: Vec<DaySummary> = plain.iter().copied().collect();
                proptest::prop_assert_eq!(packed.to_vec(), want.clone());
                proptest::prop_assert_eq!(packed.len(), want.len());
                proptest::prop_assert_eq!(packed.last(), want.last().copied());
                let json = serde_json::to_string(&packed).unwrap();
                proptest::prop_assert_eq!(&json, &serde_json::to_string(&want).unwrap());
                let back: PackedDays = serde_json::from_str(&json).unwrap();
                proptest::prop_assert_eq!(&back, &packed);
                proptest::prop_assert_eq!(PackedDays::from(want), packed.clone());
            }
        }
    }
}
