//! A key's read-volume history and the `volume_anomaly` threshold derived from it.
//!
//! History is one summary per day (event time, UTC) with reads: the day's peak volume in the
//! sliding window, its total bytes and how many clock hours saw reads. The threshold for the
//! next day follows from the peaks: recurring large reads (a nightly backup) raise every
//! day's peak, so they are not anomalous; slow growth moves the peaks with it; a one-off spike
//! far above every peak is. Cached per day: the hot path compares two integers.

use crate::config::DetectConfig;
use crate::time::{day_of, Nanos, DAY, HOUR};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct DaySummary {
    pub day: i64,
    pub peak: u64,
    pub total: u64,
    pub active_hours: u8,
}

/// The fitted model of a key's daily peaks.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeakModel {
    /// Mean and spread (floored, predictive) of ln(peak bytes).
    pub mean_ln: f64,
    pub scale_ln: f64,
    /// Degrees of freedom of the Student's t (days - 1).
    pub dof: f64,
    pub max_peak: u64,
    /// The bytes in the window at which `volume_anomaly` fires.
    pub threshold: u64,
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

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VolumeHistory {
    today: Option<DaySummary>,
    hours_today: u32,
    days: VecDeque<DaySummary>,
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
    pub fn parts(&self) -> (Option<DaySummary>, u32, &VecDeque<DaySummary>, Option<&PeakModel>) {
        (self.today, self.hours_today, &self.days, self.model.as_ref())
    }

    /// Fits the peak model again (a restored history under other volume settings).
    pub fn refit(&mut self, cfg: &DetectConfig, tq: &mut TQuantiles) {
        self.model = fit(&self.days, cfg, tq);
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
        let day = day_of(t);
        let hour_bit = 1u32 << (t.rem_euclid(DAY) / HOUR);
        let mut rolled = false;
        match &mut self.today {
            Some(today) if today.day == day => {}
            Some(today) if today.day > day => {
                // A late record from an earlier day: its bytes join that day's total.
                if let Some(d) = self.days.iter_mut().find(|d| d.day == day) {
                    d.total += bytes;
                }
                return false;
            }
            _ => {
                if let Some(done) = self.today.take() {
                    if done.total > 0 {
                        self.days.push_back(DaySummary { active_hours: self.hours_today.count_ones() as u8, ..done });
                    }
                }
                let oldest = day - cfg.history_window.0 / DAY;
                while self.days.front().is_some_and(|d| d.day < oldest) {
                    self.days.pop_front();
                }
                self.today = Some(DaySummary { day, peak: 0, total: 0, active_hours: 0 });
                self.hours_today = 0;
                self.model = fit(&self.days, cfg, tq);
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

/// Fits the peak model; `None` with fewer than `volume_min_history_days` days of reads.
pub fn fit(days: &VecDeque<DaySummary>, cfg: &DetectConfig, tq: &mut TQuantiles) -> Option<PeakModel> {
    let logs: Vec<f64> = days.iter().filter(|d| d.peak > 0).map(|d| (d.peak as f64).ln()).collect();
    let n = logs.len();
    if n < cfg.volume_min_history_days as usize || n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean = logs.iter().sum::<f64>() / nf;
    let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    // Predictive spread for one more day: the sample spread, floored, widened by sqrt(1 + 1/n).
    let scale = var.sqrt().max(cfg.volume_min_log_spread) * (1.0 + 1.0 / nf).sqrt();
    let dof = nf - 1.0;
    let t_crit = tq.get(n - 1, cfg.volume_p_value)?;
    let max_peak = days.iter().map(|d| d.peak).max().unwrap_or(0);
    let statistical = (mean + t_crit * scale).exp();
    let threshold = statistical.max(cfg.volume_min_ratio * max_peak as f64).max(cfg.volume_min_bytes.0 as f64);
    Some(PeakModel {
        mean_ln: mean,
        scale_ln: scale,
        dof,
        max_peak,
        threshold: if threshold >= u64::MAX as f64 { u64::MAX } else { threshold.ceil() as u64 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(peaks: &[u64]) -> VecDeque<DaySummary> {
        peaks
            .iter()
            .enumerate()
            .map(|(i, &p)| DaySummary { day: i as i64, peak: p, total: p * 4, active_hours: 10 })
            .collect()
    }

    fn fit_(d: &VecDeque<DaySummary>, cfg: &DetectConfig) -> Option<PeakModel> {
        fit(d, cfg, &mut TQuantiles::default())
    }

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn too_little_history_has_no_model() {
        let cfg = DetectConfig::default();
        assert!(fit_(&days(&[100 * MIB, 120 * MIB]), &cfg).is_none());
    }

    #[test]
    fn nightly_backup_is_its_own_normal() {
        // A 5 GiB backup every night: the peaks are the backup, so another one is not extreme.
        let cfg = DetectConfig::default();
        let m = fit_(
            &days(&[5 * GIB, 5 * GIB + 90 * MIB, 4 * GIB + 900 * MIB, 5 * GIB, 5 * GIB + 200 * MIB, 5 * GIB, 5 * GIB]),
            &cfg,
        )
        .unwrap();
        assert!(m.threshold > 6 * GIB, "threshold {}", m.threshold);
    }

    #[test]
    fn one_off_25x_spike_is_extreme_and_growth_is_not() {
        let cfg = DetectConfig::default();
        // Peaks of ~120 MiB growing 3% a day.
        let peaks: Vec<u64> = (0..9).map(|d| (120.0 * 1.03f64.powi(d) * MIB as f64) as u64).collect();
        let m = fit_(&days(&peaks), &cfg).unwrap();
        let next_day_growth = (peaks[8] as f64 * 1.03) as u64;
        assert!(next_day_growth < m.threshold);
        assert!(25 * 120 * MIB >= m.threshold, "threshold {} MiB", m.threshold / MIB);
        assert!(m.p_value(25 * 120 * MIB) < cfg.volume_p_value);
        assert!(m.p_value(next_day_growth) > 0.05);
    }

    #[test]
    fn never_below_the_minimum_bytes() {
        let cfg = DetectConfig::default();
        let m = fit_(&days(&[MIB, MIB, MIB, MIB]), &cfg).unwrap();
        assert_eq!(m.threshold, GIB);
    }
}
