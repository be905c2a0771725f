//! Durations in stout's text form (`5secs`, `250ms`, `15mins`), as Mesos
//! writes them into executors' environments and flags.

use std::time::Duration;

/// Parses a stout duration; the unit is required.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration '{text}' is missing a unit"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("duration '{text}' is not a number followed by a unit (e.g. 5secs, 250ms, 10mins)"))?;
    let nanos_per_unit: f64 = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "secs" => 1e9,
        "mins" => 60.0 * 1e9,
        "hrs" => 3600.0 * 1e9,
        "days" => 86400.0 * 1e9,
        "weeks" => 7.0 * 86400.0 * 1e9,
        other => return Err(format!("unknown unit '{other}' in duration '{text}' (known: ns, us, ms, secs, mins, hrs, days, weeks)")),
    };
    let nanos = (value * nanos_per_unit).round();
    // `as u64` would saturate: refuse what a Duration of nanoseconds cannot hold.
    if !(nanos < u64::MAX as f64) {
        return Err(format!("duration '{text}' is too long"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses the value of a duration flag: stout's form (`5secs`, `250ms`,
/// `10mins`, `1hrs`, `3days`, `1weeks`) as Mesos's flags take it, or a bare
/// number of seconds (`15`, `0.5`).
pub fn parse_flag(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        // try_: a number of seconds too large for a Duration is an error, not a panic.
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration '{text}': {e}")),
        Err(_) => parse(text),
    }
}

/// Examples of what a duration flag takes, with their values: every stout
/// unit, a fraction and bare seconds (for the flag parsers' tests).
pub const FLAG_EXAMPLES: [(&str, Duration); 9] = [
    ("2secs", Duration::from_secs(2)),
    ("10mins", Duration::from_secs(600)),
    ("500ms", Duration::from_millis(500)),
    ("1hrs", Duration::from_secs(3600)),
    ("3days", Duration::from_secs(3 * 86400)),
    ("1weeks", Duration::from_secs(7 * 86400)),
    ("1.5secs", Duration::from_millis(1500)),
    ("15", Duration::from_secs(15)),
    ("0.5", Duration::from_millis(500)),
];

/// Formats a duration as stout does (Mesos's flags and `GET_FLAGS`): in the
/// largest unit it reaches (`5secs`, `1mins`, `6hrs`), or one unit smaller
/// when that gives a whole number and the larger does not (`90secs`,
/// `1500ms`), else as a fraction of the larger (`1.0005secs`).
pub fn format(d: Duration) -> String {
    const UNITS: [(u128, &str); 8] = [
        (1, "ns"),
        (1_000, "us"),
        (1_000_000, "ms"),
        (1_000_000_000, "secs"),
        (60_000_000_000, "mins"),
        (3_600_000_000_000, "hrs"),
        (86_400_000_000_000, "days"),
        (604_800_000_000_000, "weeks"),
    ];
    let ns = d.as_nanos();
    let bucket = UNITS.iter().rposition(|(size, _)| ns >= *size).unwrap_or(0);
    let (size, name) = UNITS[bucket];
    if bucket > 0 && !ns.is_multiple_of(size) {
        let (smaller, smaller_name) = UNITS[bucket - 1];
        if ns.is_multiple_of(smaller) {
            return format!("{}{smaller_name}", ns / smaller);
        }
    }
    if ns.is_multiple_of(size) {
        format!("{}{name}", ns / size)
    } else {
        format!("{}{name}", ns as f64 / size as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for d in [Duration::from_secs(5), Duration::from_millis(1500), Duration::from_secs(900), Duration::from_secs(6 * 3600)] {
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
        // stout's choices of unit, as Mesos's GET_FLAGS shows them.
        let cases = [
            (Duration::from_secs(60), "1mins"),
            (Duration::from_secs(90), "90secs"),
            (Duration::from_secs(5), "5secs"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(6 * 3600), "6hrs"),
            (Duration::from_secs(15 * 60), "15mins"),
            (Duration::from_secs(7 * 86400), "1weeks"),
            (Duration::from_secs(10 * 86400), "10days"),
            (Duration::from_millis(1_000_500), "16.675mins"),
            (Duration::from_micros(1_000_500), "1.0005secs"),
            (Duration::from_nanos(1_000_000_500), "1.0000005secs"),
            (Duration::ZERO, "0ns"),
        ];
        for (d, text) in cases {
            assert_eq!(format(d), text, "{d:?}");
        }
        assert!(parse("5").is_err());
        assert!(parse("5parsecs").is_err());
    }

    /// Found writing the fuzz target `flags`: a duration too long for a u64 of
    /// nanoseconds silently became 584 years instead of an error.
    #[test]
    fn too_long_is_an_error_not_584_years() {
        let err = parse("20000000000secs").unwrap_err();
        assert!(err.contains("too long"), "{err}");
        assert!(parse("99999999999999999999999weeks").is_err());
        assert_eq!(parse("10000000000secs").unwrap(), Duration::from_secs(10_000_000_000));
    }

    #[test]
    fn flags_take_stout_forms_and_bare_seconds() {
        for (text, want) in FLAG_EXAMPLES {
            assert_eq!(parse_flag(text).unwrap(), want, "{text}");
        }
        for bad in ["abc", "5parsecs", "secs", "", "1e20", "-1", "NaN"] {
            assert!(parse_flag(bad).is_err(), "{bad}");
        }
    }
}
