//! The agent's total resources: parsed from `--resources` or detected.
// `Resource.role` is deprecated in Mesos in favour of reservations, but "*"
// is still what the default role looks like on the wire.
#![allow(deprecated)]

use mezzo_proto::mesos::v1::{value, Resource, Value};

/// Error in a `--resources` value.
#[derive(Debug, thiserror::Error)]
#[error("invalid --resources '{input}': {reason}")]
pub struct ResourcesError {
    input: String,
    reason: String,
}

fn err(input: &str, reason: impl Into<String>) -> ResourcesError {
    ResourcesError { input: input.to_string(), reason: reason.into() }
}

/// A scalar resource with the default role.
pub fn scalar(name: &str, v: f64) -> Resource {
    Resource {
        name: name.to_string(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: v }),
        role: Some("*".to_string()),
        ..Default::default()
    }
}

/// A ranges resource with the default role.
pub fn ranges(name: &str, r: &[(u64, u64)]) -> Resource {
    Resource {
        name: name.to_string(),
        r#type: value::Type::Ranges as i32,
        ranges: Some(value::Ranges {
            range: r.iter().map(|&(begin, end)| value::Range { begin, end }).collect(),
        }),
        role: Some("*".to_string()),
        ..Default::default()
    }
}

/// Parses `--resources`: Mesos's text form (`cpus:2;mem:1024;ports:[31000-32000]`,
/// roles as `cpus(*):2`) or a JSON array of `Resource`. Missing cpus, mem,
/// disk and ports are filled from `detect()`.
pub fn parse(input: Option<&str>) -> Result<Vec<Resource>, ResourcesError> {
    let mut out: Vec<Resource> = Vec::new();
    if let Some(input) = input.map(str::trim).filter(|s| !s.is_empty()) {
        if input.starts_with('[') {
            let items: Vec<serde_json::Value> =
                serde_json::from_str(input).map_err(|e| err(input, e.to_string()))?;
            for item in items {
                let r: Resource = mezzo_proto::json::from_json(item.to_string().as_bytes())
                    .map_err(|e| err(input, e.to_string()))?;
                validate(&r).map_err(|reason| err(input, reason))?;
                out.push(r);
            }
        } else {
            for part in input.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let (key, val) = part.split_once(':').ok_or_else(|| err(input, format!("'{part}' has no ':'")))?;
                let (name, role) = match key.split_once('(') {
                    Some((n, rest)) => (n.trim(), rest.trim_end_matches(')').trim()),
                    None => (key.trim(), "*"),
                };
                if name.is_empty() {
                    return Err(err(input, "empty resource name"));
                }
                let val = val.trim();
                let mut r = if val.starts_with('[') {
                    let inner = val.trim_start_matches('[').trim_end_matches(']');
                    let mut rs = Vec::new();
                    for span in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let (b, e) = span.split_once('-').unwrap_or((span, span));
                        let b: u64 = b.trim().parse().map_err(|_| err(input, format!("bad range '{span}'")))?;
                        let e: u64 = e.trim().parse().map_err(|_| err(input, format!("bad range '{span}'")))?;
                        if e < b {
                            return Err(err(input, format!("bad range '{span}'")));
                        }
                        rs.push((b, e));
                    }
                    ranges(name, &rs)
                } else if val.starts_with('{') {
                    let inner = val.trim_start_matches('{').trim_end_matches('}');
                    Resource {
                        name: name.to_string(),
                        r#type: value::Type::Set as i32,
                        set: Some(value::Set { item: inner.split(',').map(|s| s.trim().to_string()).collect() }),
                        role: Some("*".to_string()),
                        ..Default::default()
                    }
                } else {
                    let v: f64 = val.parse().map_err(|_| err(input, format!("'{val}' is not a number")))?;
                    if !v.is_finite() || v < 0.0 {
                        return Err(err(input, format!("'{val}' is not a non-negative number")));
                    }
                    scalar(name, v)
                };
                r.role = Some(role.to_string());
                out.push(r);
            }
        }
    }
    for d in detect() {
        if !out.iter().any(|r| r.name == d.name) {
            out.push(d);
        }
    }
    Ok(out)
}

/// The rules the text form applies as it parses, for a `Resource` given as
/// JSON: a name, the value of its declared type, finite non-negative scalars
/// and ranges whose begin is not after their end (what the master accepts).
fn validate(r: &Resource) -> Result<(), String> {
    if r.name.is_empty() {
        return Err("empty resource name".to_string());
    }
    let missing = || format!("resource '{}' lacks a value of its type", r.name);
    match value::Type::try_from(r.r#type) {
        Ok(value::Type::Scalar) => {
            let v = r.scalar.as_ref().ok_or_else(missing)?.value;
            if !v.is_finite() || v < 0.0 {
                return Err(format!("resource '{}' has the invalid value {v}", r.name));
            }
        }
        Ok(value::Type::Ranges) => {
            for range in &r.ranges.as_ref().ok_or_else(missing)?.range {
                if range.begin > range.end {
                    return Err(format!("resource '{}' has the bad range [{}-{}]", r.name, range.begin, range.end));
                }
            }
        }
        Ok(value::Type::Set) => {
            r.set.as_ref().ok_or_else(missing)?;
        }
        _ => return Err(format!("resource '{}' has an unsupported type", r.name)),
    }
    Ok(())
}

/// Detects cpus, mem and disk as Mesos does: memory and disk leave 1 GiB (or
/// half when small) to the host; ports default to 31000-32000.
pub fn detect() -> Vec<Resource> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let mem_mb = total_memory_mb().unwrap_or(1024.0);
    let disk_mb = disk_mb("/").unwrap_or(10240.0);
    let leave = |total: f64| if total >= 2048.0 { total - 1024.0 } else { total / 2.0 };
    vec![
        scalar("cpus", cpus),
        scalar("mem", leave(mem_mb).floor()),
        scalar("disk", leave(disk_mb).floor()),
        ranges("ports", &[(31000, 32000)]),
    ]
}

fn total_memory_mb() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn disk_mb(path: &str) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks() as f64 * st.fragment_size() as f64 / (1024.0 * 1024.0))
}

/// The scalar value of `name` summed over `resources`.
pub fn scalar_of(resources: &[Resource], name: &str) -> Option<f64> {
    let vals: Vec<f64> = resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| r.scalar.as_ref().map(|s| s.value))
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

/// Value type alias used by callers that build resources by hand.
pub type ResourceValue = Value;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mesos_text_form() {
        let rs = parse(Some("cpus:2;mem:1024;disk:4096;ports:[31000-31005,32000-32000]")).unwrap();
        assert_eq!(scalar_of(&rs, "cpus"), Some(2.0));
        assert_eq!(scalar_of(&rs, "mem"), Some(1024.0));
        let ports = rs.iter().find(|r| r.name == "ports").unwrap();
        assert_eq!(ports.ranges.as_ref().unwrap().range.len(), 2);
        assert_eq!(ports.ranges.as_ref().unwrap().range[0].end, 31005);
    }

    #[test]
    fn fills_missing_from_detection() {
        let rs = parse(Some("cpus(*):1.5")).unwrap();
        assert_eq!(scalar_of(&rs, "cpus"), Some(1.5));
        assert!(scalar_of(&rs, "mem").unwrap() > 0.0);
        assert!(rs.iter().any(|r| r.name == "ports"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(Some("cpus:abc")).is_err());
        assert!(parse(Some("cpus")).is_err());
        assert!(parse(Some("ports:[5-1]")).is_err());
        assert!(parse(Some("[{\"name\": 3")).is_err());
    }

    /// Found writing the fuzz target `flags` (its validity check): the JSON form took negative, NaN and
    /// infinite scalars, inverted ranges and values missing for their type
    /// (the text form refuses them all); the master then refused the agent.
    #[test]
    fn json_form_is_validated_like_the_text_form() {
        for bad in [
            r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":-1}}]"#,
            r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":"NaN"}}]"#,
            r#"[{"name":"mem","type":"SCALAR","scalar":{"value":"Infinity"}}]"#,
            r#"[{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":5,"end":1}]}}]"#,
            r#"[{"name":"ports","type":"RANGES"}]"#,
            r#"[{"name":"cpus","type":"TEXT","text":{"value":"x"}}]"#,
            r#"[{"name":"","type":"SCALAR","scalar":{"value":1}}]"#,
        ] {
            let e = parse(Some(bad)).expect_err(bad).to_string();
            assert!(e.contains("invalid --resources"), "{e}");
        }
    }

    #[test]
    fn parses_json_form() {
        let rs = parse(Some(r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":3}}]"#)).unwrap();
        assert_eq!(scalar_of(&rs, "cpus"), Some(3.0));
    }
}
