//! Mesos's resource arithmetic, written once for every backend: the cgroup
//! values of a container from its `Resources` (requests) and
//! `ResourceLimits`. The cgroups isolator writes them to cgroupfs (and hands
//! them to libcontainer in `ContainerSpec.limits`); the docker backend gives
//! them to the engine, which writes the same cgroup files.
//!
//! The rules (Mesos's cgroups isolators and `docker run` option mapping):
//! - cpu shares `max(1024 × cpus, 2)` and v2 weight `100 × cpus` within
//!   `[1, 10000]`, from the cpu request;
//! - a CFS quota `max(100 ms × cpus, 1 ms)` per 100 ms period from a finite
//!   cpu limit, or from the request with `--cgroups_enable_cfs`; none for an
//!   infinite limit;
//! - the memory request (soft limit, `memory.low`, docker's reservation)
//!   `max(mem, 32 MiB)`; the hard limit `max(mem limit, 32 MiB)`, the request
//!   when there is no limit, none for an infinite limit.
//!
//! Every value is checked: requests are finite and non-negative, limits
//! non-negative (infinite means no limit), and a value too large for its
//! cgroup file is an error naming the field, never a silently saturated
//! number.

use crate::{ContainerizerError, Limits, ResourceLimits, Resources};

/// cpu.shares per requested cpu (Mesos `CPU_SHARES_PER_CPU`).
pub const CPU_SHARES_PER_CPU: f64 = 1024.0;
/// Smallest cpu.shares the kernel accepts (Mesos `MIN_CPU_SHARES`).
pub const MIN_CPU_SHARES: u64 = 2;
/// cpu.weight per requested cpu on v2 (Mesos `CPU_WEIGHT_PER_CPU`).
pub const CPU_WEIGHT_PER_CPU: f64 = 100.0;
/// Bounds of cpu.weight.
pub const MIN_CPU_WEIGHT: u64 = 1;
pub const MAX_CPU_WEIGHT: u64 = 10_000;
/// CFS period (Mesos `CPU_CFS_PERIOD`, 100 ms; docker's default too).
pub const CPU_CFS_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota (Mesos `MIN_CPU_CFS_QUOTA`, 1 ms).
pub const MIN_CPU_CFS_QUOTA_US: i64 = 1_000;
/// Smallest memory limit Mesos sets (`MIN_MEMORY`, 32 MiB).
pub const MIN_MEMORY_BYTES: i64 = 32 * 1024 * 1024;

/// The cgroup values Mesos derives from a container's resources and limits.
/// `None` leaves a value unset: no request, or no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupValues {
    /// cpu.shares (v1; docker's `--cpu-shares`) from the cpu request.
    pub cpu_shares: Option<u64>,
    /// cpu.weight (v2) from the cpu request.
    pub cpu_weight: Option<u64>,
    /// CFS quota in µs per [`CPU_CFS_PERIOD_US`]; `None`: no quota.
    pub cpu_quota_us: Option<i64>,
    /// The memory request: soft limit (`memory.soft_limit_in_bytes`,
    /// `memory.low`) and docker's `--memory-reservation`.
    pub memory_request_bytes: Option<i64>,
    /// The hard memory limit (`memory.limit_in_bytes`, `memory.max`,
    /// docker's `--memory`); `None`: unlimited.
    pub memory_limit_bytes: Option<i64>,
}

impl CgroupValues {
    /// Computes the values for `resources` and `limits`; `enable_cfs`
    /// (`--cgroups_enable_cfs`) takes the CFS quota from the cpu request
    /// when there is no cpu limit.
    pub fn new(resources: &Resources, limits: &ResourceLimits, enable_cfs: bool) -> Result<Self, ContainerizerError> {
        let cpus = request("cpus", resources.cpus)?;
        let mem = request("mem", resources.mem_mb)?;
        let cpus_limit = limit("cpus limit", limits.cpus)?;
        let mem_limit = limit("mem limit", limits.mem_mb)?;
        let cpu_shares = cpus.map(cpu_shares).transpose()?;
        let cpu_weight = cpus.map(cpu_weight);
        let cpu_quota_us = match (cpus_limit, cpus) {
            (Some(Bound::Unlimited), _) => None,
            (Some(Bound::At(limit)), _) => Some(cpu_quota_us("cpus limit", limit)?),
            (None, Some(request)) if enable_cfs => Some(cpu_quota_us("cpus", request)?),
            (None, _) => None,
        };
        let memory_request_bytes = mem.map(|mb| memory_bytes("mem", mb)).transpose()?;
        let memory_limit_bytes = match mem_limit {
            Some(Bound::Unlimited) => None,
            Some(Bound::At(mb)) => Some(memory_bytes("mem limit", mb)?),
            None => memory_request_bytes,
        };
        Ok(CgroupValues { cpu_shares, cpu_weight, cpu_quota_us, memory_request_bytes, memory_limit_bytes })
    }

    /// The CFS period that goes with the quota (none without a quota).
    pub fn cpu_period_us(&self) -> Option<u64> {
        self.cpu_quota_us.map(|_| CPU_CFS_PERIOD_US)
    }

    /// The values as a spec's limits (cpu shares, CFS quota and period,
    /// memory limit and reservation; no pids limit).
    pub fn spec_limits(&self) -> Limits {
        Limits {
            cpu_shares: self.cpu_shares,
            cpu_quota_us: self.cpu_quota_us,
            cpu_period_us: self.cpu_period_us(),
            memory_limit_bytes: self.memory_limit_bytes,
            memory_reservation_bytes: self.memory_request_bytes,
            pids_limit: None,
        }
    }
}

/// A checked limit: a number, or infinite (no limit).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    At(f64),
    Unlimited,
}

fn invalid(field: &str, value: f64, why: &str) -> ContainerizerError {
    ContainerizerError::InvalidSpec(format!("invalid {field} {value}: {why}"))
}

/// A request: finite and non-negative.
fn request(field: &str, value: Option<f64>) -> Result<Option<f64>, ContainerizerError> {
    match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(invalid(field, v, "must be a finite non-negative number")),
        v => Ok(v),
    }
}

/// A limit: non-negative; infinite is no limit.
fn limit(field: &str, value: Option<f64>) -> Result<Option<Bound>, ContainerizerError> {
    match value {
        Some(v) if v.is_nan() || v < 0.0 => Err(invalid(field, v, "must be a non-negative number or infinite")),
        Some(v) if v.is_infinite() => Ok(Some(Bound::Unlimited)),
        Some(v) => Ok(Some(Bound::At(v))),
        None => Ok(None),
    }
}

/// `value` rounded down, when it fits below `max` (an exclusive power of two).
fn fits(value: f64, max: f64) -> Option<f64> {
    (value < max).then(|| value.trunc())
}

/// cpu.shares for `cpus`: max(1024 × cpus, 2).
pub fn cpu_shares(cpus: f64) -> Result<u64, ContainerizerError> {
    let shares = fits(cpus * CPU_SHARES_PER_CPU, u64::MAX as f64).ok_or_else(|| invalid("cpus", cpus, "too large for cpu shares"))?;
    Ok(MIN_CPU_SHARES.max(shares as u64))
}

/// cpu.weight for `cpus` (v2): 100 × cpus, within [1, 10000].
pub fn cpu_weight(cpus: f64) -> u64 {
    // The clamp bounds it: a cast of a huge value saturates, still above the top.
    ((cpus * CPU_WEIGHT_PER_CPU) as u64).clamp(MIN_CPU_WEIGHT, MAX_CPU_WEIGHT)
}

/// The CFS quota for `cpus` (`field` names it in errors): max(100 ms × cpus, 1 ms) in µs.
fn cpu_quota_us(field: &str, cpus: f64) -> Result<i64, ContainerizerError> {
    let quota = fits(cpus * CPU_CFS_PERIOD_US as f64, i64::MAX as f64).ok_or_else(|| invalid(field, cpus, "too large for a CFS quota"))?;
    Ok(MIN_CPU_CFS_QUOTA_US.max(quota as i64))
}

/// `mb` MiB in bytes, at least 32 MiB (`field` names it in errors).
fn memory_bytes(field: &str, mb: f64) -> Result<i64, ContainerizerError> {
    let bytes = fits(mb * 1024.0 * 1024.0, i64::MAX as f64).ok_or_else(|| invalid(field, mb, "too large in bytes"))?;
    Ok(MIN_MEMORY_BYTES.max(bytes as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(cpus: f64, mem: f64, limits: ResourceLimits, enable_cfs: bool) -> CgroupValues {
        let r = Resources { cpus: Some(cpus), mem_mb: Some(mem), ..Default::default() };
        CgroupValues::new(&r, &limits, enable_cfs).unwrap()
    }

    #[test]
    fn cpu_rules() {
        assert_eq!(cpu_shares(0.0).unwrap(), 2);
        assert_eq!(cpu_shares(0.001).unwrap(), 2);
        assert_eq!(cpu_shares(0.5).unwrap(), 512);
        assert_eq!(cpu_shares(2.0).unwrap(), 2048);
        assert_eq!(cpu_weight(0.6), 60);
        assert_eq!(cpu_weight(0.001), 1);
        assert_eq!(cpu_weight(1000.0), 10_000);
        let none = ResourceLimits::default();
        assert_eq!(values(0.5, 16.0, none.clone(), false).cpu_quota_us, None);
        let v = values(0.5, 16.0, none, true);
        assert_eq!((v.cpu_quota_us, v.cpu_period_us()), (Some(50_000), Some(CPU_CFS_PERIOD_US)));
        let limited = ResourceLimits { cpus: Some(2.0), mem_mb: None };
        assert_eq!(values(0.5, 16.0, limited, false).cpu_quota_us, Some(200_000));
        let tiny = ResourceLimits { cpus: Some(0.001), mem_mb: None };
        assert_eq!(values(0.5, 16.0, tiny, false).cpu_quota_us, Some(MIN_CPU_CFS_QUOTA_US));
        let inf = ResourceLimits { cpus: Some(f64::INFINITY), mem_mb: None };
        let v = values(0.5, 16.0, inf, true);
        assert_eq!((v.cpu_quota_us, v.cpu_period_us(), v.cpu_shares), (None, None, Some(512)));
    }

    #[test]
    fn memory_rules() {
        let none = ResourceLimits::default();
        let v = values(1.0, 16.0, none.clone(), false);
        assert_eq!((v.memory_request_bytes, v.memory_limit_bytes), (Some(MIN_MEMORY_BYTES), Some(MIN_MEMORY_BYTES)));
        let v = values(1.0, 128.5, none, false);
        assert_eq!(v.memory_request_bytes, Some((128 << 20) + (1 << 19)));
        let limited = ResourceLimits { cpus: None, mem_mb: Some(128.0) };
        let v = values(1.0, 64.0, limited, false);
        assert_eq!((v.memory_request_bytes, v.memory_limit_bytes), (Some(64 << 20), Some(128 << 20)));
        // A limit below 32 MiB is raised to it, as the request is.
        let small = ResourceLimits { cpus: None, mem_mb: Some(8.0) };
        assert_eq!(values(1.0, 1.0, small, false).memory_limit_bytes, Some(MIN_MEMORY_BYTES));
        let inf = ResourceLimits { cpus: None, mem_mb: Some(f64::INFINITY) };
        let v = values(1.0, 64.0, inf, false);
        assert_eq!((v.memory_request_bytes, v.memory_limit_bytes), (Some(64 << 20), None));
        let l = v.spec_limits();
        assert_eq!((l.memory_limit_bytes, l.memory_reservation_bytes), (None, Some(64 << 20)));
        // Neither a request nor a limit: nothing set.
        let v = CgroupValues::new(&Resources::default(), &ResourceLimits::default(), true).unwrap();
        assert_eq!(v, CgroupValues::default());
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let err = |r: Resources, l: ResourceLimits| CgroupValues::new(&r, &l, true).unwrap_err().to_string();
        let cpus = |c: f64| Resources { cpus: Some(c), ..Default::default() };
        let mem = |m: f64| Resources { mem_mb: Some(m), ..Default::default() };
        assert!(err(cpus(f64::NAN), ResourceLimits::default()).contains("invalid cpus NaN"));
        assert!(err(cpus(-1.0), ResourceLimits::default()).contains("invalid cpus -1"));
        assert!(err(mem(f64::INFINITY), ResourceLimits::default()).contains("invalid mem inf"));
        let limit = |c: Option<f64>, m: Option<f64>| ResourceLimits { cpus: c, mem_mb: m };
        assert!(err(Resources::default(), limit(Some(-0.5), None)).contains("invalid cpus limit -0.5"));
        assert!(err(Resources::default(), limit(None, Some(f64::NAN))).contains("invalid mem limit NaN"));
        // Too large for the cgroup files: an error, not a saturated value.
        assert!(err(cpus(1e300), ResourceLimits::default()).ends_with("0: too large for cpu shares"));
        assert!(err(Resources::default(), limit(Some(1e14), None)).contains("cpus limit 100000000000000: too large for a CFS quota"));
        assert!(err(mem(1e13), ResourceLimits::default()).contains("invalid mem 10000000000000: too large in bytes"));
        assert!(err(mem(1.0), limit(None, Some(1e13))).contains("invalid mem limit"));
        // The largest values that fit are fine.
        assert!(CgroupValues::new(&mem(8.0e12), &ResourceLimits::default(), false).is_ok());
    }
}
