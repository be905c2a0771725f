//! Prometheus's text exposition format (version 0.0.4) for the metrics Mesos
//! names in `/metrics/snapshot`: `master/tasks_running` becomes
//! `mesos_master_tasks_running`, with `# HELP` and `# TYPE` lines.

use std::fmt::Write;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a metric only grows (a Prometheus counter) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (until the process restarts).
    Counter,
    /// Any value.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric of a snapshot, by its Mesos name (`master/uptime_secs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Mesos's name, `/`-separated.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Counter or gauge.
    pub kind: Kind,
}

impl Sample {
    /// A gauge named `name`.
    pub fn gauge(name: impl Into<String>, value: f64) -> Self {
        Self { name: name.into(), value, kind: Kind::Gauge }
    }

    /// A counter named `name`.
    pub fn counter(name: impl Into<String>, value: f64) -> Self {
        Self { name: name.into(), value, kind: Kind::Counter }
    }
}

/// The Prometheus name of a Mesos metric: `mesos_` then the name with every
/// character outside `[a-zA-Z0-9_]` replaced by `_`.
pub fn metric_name(mesos_name: &str) -> String {
    let mut out = String::with_capacity(mesos_name.len() + 6);
    out.push_str("mesos_");
    out.extend(mesos_name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    out
}

fn value_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{value}")
    }
}

/// Renders `samples` in the text exposition format, one HELP, TYPE and
/// sample line per metric, in the given order.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::with_capacity(samples.len() * 96);
    for sample in samples {
        let name = metric_name(&sample.name);
        let _ = writeln!(out, "# HELP {name} Mesos metric {} (as in /metrics/snapshot).", sample.name);
        let _ = writeln!(out, "# TYPE {name} {}", sample.kind.name());
        let _ = writeln!(out, "{name} {}", value_text(sample.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_lines_are_complete() {
        assert_eq!(metric_name("master/tasks_running"), "mesos_master_tasks_running");
        assert_eq!(metric_name("slave/cpus-used.x"), "mesos_slave_cpus_used_x");
        let text = render(&[Sample::gauge("master/elected", 1.0), Sample::counter("master/slave_registrations", 3.0)]);
        assert_eq!(
            text,
            "# HELP mesos_master_elected Mesos metric master/elected (as in /metrics/snapshot).\n\
             # TYPE mesos_master_elected gauge\n\
             mesos_master_elected 1\n\
             # HELP mesos_master_slave_registrations Mesos metric master/slave_registrations (as in /metrics/snapshot).\n\
             # TYPE mesos_master_slave_registrations counter\n\
             mesos_master_slave_registrations 3\n"
        );
        assert_eq!(value_text(0.25), "0.25");
        assert_eq!(value_text(f64::NAN), "NaN");
    }
}
