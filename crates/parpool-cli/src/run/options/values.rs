//! Parsers for option values: durations, delimiters, job slots.

use std::time::Duration;

/// `-d`'s value: one byte, or an escape (`\n`, `\t`, `\0`, `\\`).
pub(crate) fn parse_delimiter(v: &str) -> Result<u8, String> {
    match v.as_bytes() {
        [b] => Ok(*b),
        b"\\n" => Ok(b'\n'),
        b"\\t" => Ok(b'\t'),
        b"\\0" => Ok(0),
        b"\\\\" => Ok(b'\\'),
        _ => Err(format!(
            "`{v}`: the delimiter is one character (or \\n, \\t, \\0)"
        )),
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (e.g. 10, 1.5s, 500ms, 2m, 1m30s, 1d)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    // A number alone is seconds; else numbers with units, summed, as GNU
    // parallel reads them (`1d3.5h16.6m4s`).
    let mut secs = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            // A number alone is seconds; after another, it needs a unit
            // (GNU parallel refuses `1m30`).
            "" if num_len == rest.len() && secs == 0.0 => 1.0,
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
        };
        secs += n * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// How many jobs run at once, from `-j`.
pub(crate) fn job_slots(spec: &str, cores: usize) -> anyhow::Result<usize> {
    let bad = || anyhow::anyhow!("-j {spec}: expected N, N%, +N or -N");
    let n = if let Some(p) = spec.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| bad())?;
        (cores as f64 * p / 100.0).floor() as i64
    } else if let Some(d) = spec.strip_prefix('+') {
        cores as i64 + d.parse::<i64>().map_err(|_| bad())?
    } else if let Some(d) = spec.strip_prefix('-') {
        cores as i64 - d.parse::<i64>().map_err(|_| bad())?
    } else {
        match spec.parse::<i64>().map_err(|_| bad())? {
            // GNU parallel: as many as possible.
            0 => 1024,
            n => n,
        }
    };
    Ok(n.clamp(1, 1024) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_slots_follow_gnu_parallel() {
        assert_eq!(job_slots("3", 8).unwrap(), 3);
        assert_eq!(job_slots("50%", 8).unwrap(), 4);
        assert_eq!(job_slots("200%", 2).unwrap(), 4);
        assert_eq!(job_slots("+2", 2).unwrap(), 4);
        assert_eq!(job_slots("-5", 2).unwrap(), 1);
        assert!(job_slots("x", 2).is_err());
    }

    #[test]
    fn durations_are_read_as_gnu_parallel_reads_them() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5y").is_err());
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration("1.5h2m").unwrap(),
            Duration::from_secs(5_520)
        );
        assert!(parse_duration("1m30").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }
}
