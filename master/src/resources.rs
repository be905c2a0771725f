//! Resource arithmetic for offers and task launches.
//!
//! Mesos compares scalar resources in fixed point with three decimal places
//! (`src/common/values.cpp`), so scalars are kept as integer thousandths here:
//! `0.1 + 0.2` must fit exactly into an offer of `0.3` cpus.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mezzo_proto::mesos::v1::{value, Resource};

/// Why a list of `Resource` messages is not usable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResourceError {
    /// A resource has an empty name.
    #[error("resource name must not be empty")]
    EmptyName,
    /// A scalar is negative, infinite or not a number.
    #[error("invalid scalar value {value} for resource '{name}'")]
    InvalidScalar {
        /// Resource name.
        name: String,
        /// Offending value.
        value: f64,
    },
    /// A range has its begin after its end.
    #[error("invalid range [{begin}-{end}] for resource '{name}'")]
    InvalidRange {
        /// Resource name.
        name: String,
        /// Range begin.
        begin: u64,
        /// Range end.
        end: u64,
    },
    /// The value field matching the declared type is missing.
    #[error("resource '{name}' lacks a value of its declared type")]
    MissingValue {
        /// Resource name.
        name: String,
    },
    /// The type is TEXT or unknown; Mesos does not allow it for resources.
    #[error("resource '{name}' has an unsupported type")]
    UnsupportedType {
        /// Resource name.
        name: String,
    },
    /// The scalars of one name add up past what the master can count.
    #[error("the amounts of resource '{name}' add up to more than {max}", max = MAX_SCALAR)]
    ScalarOverflow {
        /// Resource name.
        name: String,
    },
    /// The same name is used with two different types.
    #[error("resource '{name}' is used with conflicting types")]
    ConflictingTypes {
        /// Resource name.
        name: String,
    },
}

/// A bag of unreserved resources: scalars, ranges and sets by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Scalars in thousandths of a unit.
    scalars: BTreeMap<String, i64>,
    /// Sorted, merged, non-overlapping inclusive ranges.
    ranges: BTreeMap<String, Vec<(u64, u64)>>,
    sets: BTreeMap<String, BTreeSet<String>>,
}

/// The largest scalar amount accepted, in units (`1e15` thousandths fit an
/// i64 a thousand times over, so sums of accepted bags cannot overflow it
/// before `checked_add` says so).
pub const MAX_SCALAR: f64 = 1e15;

/// Thousandths of a finite amount within `0..=MAX_SCALAR`.
fn to_milli(v: f64) -> i64 {
    debug_assert!(v.is_finite() && (0.0..=MAX_SCALAR).contains(&v));
    (v * 1000.0).round() as i64
}

fn from_milli(v: i64) -> f64 {
    v as f64 / 1000.0
}

/// Sorts and merges ranges, joining adjacent ones (`[1-2]` + `[3-4]` = `[1-4]`).
fn normalize(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (b, e) in ranges {
        match out.last_mut() {
            Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

/// Whether every value of `inner` lies in `outer` (both normalized).
fn ranges_contain(outer: &[(u64, u64)], inner: &[(u64, u64)]) -> bool {
    inner
        .iter()
        .all(|&(b, e)| outer.iter().any(|&(ob, oe)| ob <= b && e <= oe))
}

/// `outer` minus `inner` (both normalized).
fn ranges_subtract(outer: &[(u64, u64)], inner: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(mut b, e) in outer {
        let mut alive = true;
        for &(ib, ie) in inner {
            if !alive || ie < b || ib > e {
                continue;
            }
            if ib > b {
                out.push((b, ib - 1));
            }
            if ie >= e {
                alive = false;
            } else {
                b = ie + 1;
            }
        }
        if alive {
            out.push((b, e));
        }
    }
    normalize(out)
}

impl Resources {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses and validates resource messages, summing duplicates by name.
    pub fn from_protos(list: &[Resource]) -> Result<Self, ResourceError> {
        let mut out = Resources::new();
        for r in list {
            let name = r.name.clone();
            if name.is_empty() {
                return Err(ResourceError::EmptyName);
            }
            match value::Type::try_from(r.r#type).ok() {
                Some(value::Type::Scalar) => {
                    let v = r
                        .scalar
                        .as_ref()
                        .ok_or_else(|| ResourceError::MissingValue { name: name.clone() })?
                        .value;
                    if !v.is_finite() || v < 0.0 || v > MAX_SCALAR {
                        return Err(ResourceError::InvalidScalar { name, value: v });
                    }
                    if out.ranges.contains_key(&name) || out.sets.contains_key(&name) {
                        return Err(ResourceError::ConflictingTypes { name });
                    }
                    let sum = out.scalars.get(&name).copied().unwrap_or(0).checked_add(to_milli(v));
                    match sum {
                        Some(sum) if sum <= to_milli(MAX_SCALAR) => {
                            out.scalars.insert(name, sum);
                        }
                        _ => return Err(ResourceError::ScalarOverflow { name }),
                    }
                }
                Some(value::Type::Ranges) => {
                    let rs = r
                        .ranges
                        .as_ref()
                        .ok_or_else(|| ResourceError::MissingValue { name: name.clone() })?;
                    let mut list = Vec::with_capacity(rs.range.len());
                    for range in &rs.range {
                        if range.begin > range.end {
                            return Err(ResourceError::InvalidRange {
                                name,
                                begin: range.begin,
                                end: range.end,
                            });
                        }
                        list.push((range.begin, range.end));
                    }
                    if out.scalars.contains_key(&name) || out.sets.contains_key(&name) {
                        return Err(ResourceError::ConflictingTypes { name });
                    }
                    let entry = out.ranges.entry(name).or_default();
                    entry.extend(list);
                    *entry = normalize(std::mem::take(entry));
                }
                Some(value::Type::Set) => {
                    let set = r
                        .set
                        .as_ref()
                        .ok_or_else(|| ResourceError::MissingValue { name: name.clone() })?;
                    if out.scalars.contains_key(&name) || out.ranges.contains_key(&name) {
                        return Err(ResourceError::ConflictingTypes { name });
                    }
                    out.sets
                        .entry(name)
                        .or_default()
                        .extend(set.item.iter().cloned());
                }
                _ => return Err(ResourceError::UnsupportedType { name }),
            }
        }
        out.prune();
        Ok(out)
    }

    /// Drops zero scalars and empty ranges/sets so that emptiness is structural.
    fn prune(&mut self) {
        self.scalars.retain(|_, v| *v > 0);
        self.ranges.retain(|_, v| !v.is_empty());
        self.sets.retain(|_, v| !v.is_empty());
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty() && self.ranges.is_empty() && self.sets.is_empty()
    }

    /// Whether `other` fits entirely into `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .scalars
            .iter()
            .all(|(n, v)| self.scalars.get(n).copied().unwrap_or(0) >= *v)
            && other.ranges.iter().all(|(n, r)| {
                self.ranges
                    .get(n)
                    .is_some_and(|mine| ranges_contain(mine, r))
            })
            && other
                .sets
                .iter()
                .all(|(n, s)| self.sets.get(n).is_some_and(|mine| s.is_subset(mine)))
    }

    /// Adds `other` into `self`; a sum past `i64` saturates (bags come from
    /// `from_protos`, so it would take a million agents' worth of maxima).
    pub fn add(&mut self, other: &Resources) {
        for (n, v) in &other.scalars {
            let mine = self.scalars.entry(n.clone()).or_default();
            *mine = mine.saturating_add(*v);
        }
        for (n, r) in &other.ranges {
            let entry = self.ranges.entry(n.clone()).or_default();
            entry.extend(r.iter().copied());
            *entry = normalize(std::mem::take(entry));
        }
        for (n, s) in &other.sets {
            self.sets.entry(n.clone()).or_default().extend(s.iter().cloned());
        }
        self.prune();
    }

    /// Removes `other` from `self`; whatever `self` lacks is ignored.
    pub fn subtract(&mut self, other: &Resources) {
        for (n, v) in &other.scalars {
            if let Some(mine) = self.scalars.get_mut(n) {
                *mine = mine.saturating_sub(*v).max(0);
            }
        }
        for (n, r) in &other.ranges {
            if let Some(mine) = self.ranges.get_mut(n) {
                *mine = ranges_subtract(mine, r);
            }
        }
        for (n, s) in &other.sets {
            if let Some(mine) = self.sets.get_mut(n) {
                mine.retain(|x| !s.contains(x));
            }
        }
        self.prune();
    }

    /// `self` minus `other`, as a new bag.
    pub fn minus(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        out.subtract(other);
        out
    }

    /// The scalar amount of `name`, 0 when absent.
    pub fn scalar(&self, name: &str) -> f64 {
        from_milli(self.scalars.get(name).copied().unwrap_or(0))
    }

    /// Unreserved `Resource` messages (role `*`), sorted by name.
    #[allow(deprecated)] // Mesos still fills the legacy `role` for old clients.
    pub fn to_protos(&self) -> Vec<Resource> {
        let mut out = Vec::new();
        for (n, v) in &self.scalars {
            out.push(Resource {
                name: n.clone(),
                r#type: value::Type::Scalar as i32,
                scalar: Some(value::Scalar {
                    value: from_milli(*v),
                }),
                role: Some("*".to_string()),
                ..Default::default()
            });
        }
        for (n, r) in &self.ranges {
            out.push(Resource {
                name: n.clone(),
                r#type: value::Type::Ranges as i32,
                ranges: Some(value::Ranges {
                    range: r
                        .iter()
                        .map(|&(begin, end)| value::Range { begin, end })
                        .collect(),
                }),
                role: Some("*".to_string()),
                ..Default::default()
            });
        }
        for (n, s) in &self.sets {
            out.push(Resource {
                name: n.clone(),
                r#type: value::Type::Set as i32,
                set: Some(value::Set {
                    item: s.iter().cloned().collect(),
                }),
                role: Some("*".to_string()),
                ..Default::default()
            });
        }
        out
    }

    /// The legacy JSON shape of `/state`: `{"cpus": 1.0, "ports": "[31000-32000]"}`.
    pub fn to_state_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        // Mesos always reports the standard scalars, zero when absent.
        for n in ["cpus", "disk", "gpus", "mem"] {
            map.insert(n.to_string(), serde_json::json!(self.scalar(n)));
        }
        for (n, v) in &self.scalars {
            map.insert(n.clone(), serde_json::json!(from_milli(*v)));
        }
        for (n, r) in &self.ranges {
            let text: Vec<String> = r.iter().map(|(b, e)| format!("{b}-{e}")).collect();
            map.insert(n.clone(), serde_json::json!(format!("[{}]", text.join(", "))));
        }
        for (n, s) in &self.sets {
            let items: Vec<&str> = s.iter().map(String::as_str).collect();
            map.insert(n.clone(), serde_json::json!(format!("{{{}}}", items.join(", "))));
        }
        serde_json::Value::Object(map)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (n, v) in &self.scalars {
            parts.push(format!("{n}:{}", from_milli(*v)));
        }
        for (n, r) in &self.ranges {
            let text: Vec<String> = r.iter().map(|(b, e)| format!("{b}-{e}")).collect();
            parts.push(format!("{n}:[{}]", text.join(", ")));
        }
        for (n, s) in &self.sets {
            let items: Vec<&str> = s.iter().map(String::as_str).collect();
            parts.push(format!("{n}:{{{}}}", items.join(", ")));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Convenience constructor for a scalar `Resource`, used by tests and callers.
pub fn scalar(name: &str, amount: f64) -> Resource {
    Resource {
        name: name.to_string(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: amount }),
        ..Default::default()
    }
}

/// Convenience constructor for a ranges `Resource`.
pub fn ranges(name: &str, list: &[(u64, u64)]) -> Resource {
    Resource {
        name: name.to_string(),
        r#type: value::Type::Ranges as i32,
        ranges: Some(value::Ranges {
            range: list
                .iter()
                .map(|&(begin, end)| value::Range { begin, end })
                .collect(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(list: &[Resource]) -> Resources {
        Resources::from_protos(list).unwrap()
    }

    #[test]
    fn scalars_are_exact_to_three_decimals() {
        let offer = bag(&[scalar("cpus", 0.3)]);
        let mut used = bag(&[scalar("cpus", 0.1)]);
        used.add(&bag(&[scalar("cpus", 0.2)]));
        assert!(offer.contains(&used));
        assert!(offer.minus(&used).is_empty());
    }

    #[test]
    fn ranges_split_and_merge() {
        let total = bag(&[ranges("ports", &[(31000, 32000)])]);
        let used = bag(&[ranges("ports", &[(31005, 31005), (31010, 31020)])]);
        assert!(total.contains(&used));
        let left = total.minus(&used);
        assert!(!left.contains(&bag(&[ranges("ports", &[(31005, 31005)])])));
        assert!(left.contains(&bag(&[ranges("ports", &[(31000, 31004), (31006, 31009)])])));
        let mut back = left.clone();
        back.add(&used);
        assert_eq!(back, total);
    }

    #[test]
    fn over_offer_is_not_contained() {
        let offer = bag(&[scalar("cpus", 1.0), scalar("mem", 128.0)]);
        assert!(!offer.contains(&bag(&[scalar("mem", 129.0)])));
        assert!(!offer.contains(&bag(&[scalar("gpus", 1.0)])));
        assert!(!offer.contains(&bag(&[ranges("ports", &[(1, 1)])])));
    }

    #[test]
    fn invalid_resources_are_rejected() {
        assert!(matches!(
            Resources::from_protos(&[scalar("cpus", -1.0)]),
            Err(ResourceError::InvalidScalar { .. })
        ));
        assert!(matches!(
            Resources::from_protos(&[ranges("ports", &[(5, 4)])]),
            Err(ResourceError::InvalidRange { .. })
        ));
        assert_eq!(
            Resources::from_protos(&[scalar("", 1.0)]),
            Err(ResourceError::EmptyName)
        );
    }

    #[test]
    fn huge_scalars_are_refused_and_sums_are_checked() {
        // Two entries of 1e300 used to overflow the sum and panic the handler.
        let err = Resources::from_protos(&[scalar("cpus", 1e300), scalar("cpus", 1e300)]).unwrap_err();
        assert!(err.to_string().contains("'cpus'"), "{err}");
        let at_max = [scalar("mem", MAX_SCALAR), scalar("mem", MAX_SCALAR)];
        assert_eq!(
            Resources::from_protos(&at_max),
            Err(ResourceError::ScalarOverflow { name: "mem".into() })
        );
        assert!(Resources::from_protos(&[scalar("mem", MAX_SCALAR)]).is_ok());
        assert!(Resources::from_protos(&[scalar("cpus", f64::NAN)]).is_err());
        assert!(Resources::from_protos(&[scalar("cpus", f64::INFINITY)]).is_err());
        let mut big = bag(&[scalar("mem", MAX_SCALAR)]);
        for _ in 0..10 {
            big.add(&big.clone());
        }
        assert!(big.scalar("mem") > 0.0);
    }

    #[test]
    fn state_json_formats_ranges() {
        let r = bag(&[scalar("cpus", 2.0), ranges("ports", &[(1, 2), (4, 4)])]);
        let j = r.to_state_json();
        assert_eq!(j["cpus"], 2.0);
        assert_eq!(j["mem"], 0.0);
        assert_eq!(j["ports"], "[1-2, 4-4]");
    }
}
