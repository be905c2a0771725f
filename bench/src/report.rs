//! Samples, medians and the entries of `target/bench/results.json`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Durations of repeated runs of one thing.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    /// Records one run.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }

    /// Number of runs recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Median in milliseconds (mean of the middle two for an even count).
    pub fn median_ms(&self) -> f64 {
        percentile(&self.0, 50.0)
    }

    /// Smallest run in milliseconds.
    pub fn min_ms(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// 95th percentile in milliseconds.
    pub fn p95_ms(&self) -> f64 {
        percentile(&self.0, 95.0)
    }
}

/// Percentile by linear interpolation between closest ranks; NaN when empty.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// Rounds to two decimals, for the JSON and the table.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One line of `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Benchmark name, e.g. `rust_launch_true`.
    pub name: String,
    /// Our median; `None` when our side could not be measured (see `note`).
    pub value: Option<f64>,
    /// `ms` or `s`.
    pub unit: String,
    /// What ran side by side with us in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The peer's median, in `unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_value: Option<f64>,
    /// `value / peer_value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Runs behind the median (ours; the peer had as many).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<usize>,
    /// The target the issue sets, in words (`ratio <= 1.5`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Extra figures: phase medians, minimums, p95s, failures.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, f64>,
    /// Why a value is missing, or how it was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Entry {
    /// An entry of ours alone.
    pub fn new(name: &str, value: f64, unit: &str) -> Self {
        Entry {
            name: name.to_string(),
            value: Some(round2(value)),
            unit: unit.to_string(),
            peer: None,
            peer_value: None,
            ratio: None,
            runs: None,
            target: None,
            detail: BTreeMap::new(),
            note: None,
        }
    }

    /// Our median against a peer's, from the same run.
    pub fn versus(name: &str, ours: &Samples, peer: &str, theirs: &Samples) -> Self {
        let (v, p) = (ours.median_ms(), theirs.median_ms());
        let mut e = Entry::new(name, v, "ms");
        e.peer = Some(peer.to_string());
        e.peer_value = Some(round2(p));
        e.ratio = Some((v / p * 1000.0).round() / 1000.0);
        e.runs = Some(ours.len());
        e.detail.insert("min".into(), round2(ours.min_ms()));
        e.detail.insert("p95".into(), round2(ours.p95_ms()));
        e.detail.insert("peer_min".into(), round2(theirs.min_ms()));
        e.detail.insert("peer_p95".into(), round2(theirs.p95_ms()));
        e
    }

    /// Sets the target text.
    pub fn target(mut self, t: &str) -> Self {
        self.target = Some(t.to_string());
        self
    }

    /// Adds a detail figure (rounded).
    pub fn with(mut self, key: &str, value: f64) -> Self {
        self.detail.insert(key.to_string(), round2(value));
        self
    }

    /// Sets the note.
    pub fn note(mut self, n: impl Into<String>) -> Self {
        self.note = Some(n.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        let mut s = Samples::default();
        for ms in [5, 1, 3, 2, 4] {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.median_ms(), 3.0);
        assert_eq!(s.min_ms(), 1.0);
        assert!((s.p95_ms() - 4.8).abs() < 1e-9);
        s.push(Duration::from_millis(6));
        assert_eq!(s.median_ms(), 3.5);
    }

    #[test]
    fn ratio_is_ours_over_peer() {
        let mut a = Samples::default();
        let mut b = Samples::default();
        a.push(Duration::from_millis(6));
        b.push(Duration::from_millis(4));
        let e = Entry::versus("x", &a, "crun", &b);
        assert_eq!(e.ratio, Some(1.5));
        assert_eq!(e.peer_value, Some(4.0));
    }
}
