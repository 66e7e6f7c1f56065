//! Timestamps as the fleet documents carry them: RFC 3339 in UTC
//! (`2026-11-28T02:00:00Z`), parsed from what Resource Manager writes
//! (`2026-11-27T02:00:00.1234567+00:00`, other offsets too).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as `2026-11-28T02:00:00Z`.
pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Now, as [`format`] writes it.
pub fn now() -> String {
    format(SystemTime::now())
}

/// Parses an RFC 3339 time with `Z` or a `±hh:mm` offset, fractions of a
/// second allowed (at most nine digits are kept). A date alone
/// (`2026-11-27`) is midnight UTC.
pub fn parse(s: &str) -> Result<SystemTime, String> {
    let t = s.trim();
    let bad = |why: &str| format!("{s:?}: {why} (expected e.g. 2026-11-27T02:00:00Z)");
    if t.len() == 10 {
        return parse(&format!("{t}T00:00:00Z"));
    }
    let (body, offset_secs) = if let Some(b) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
        (b, 0i64)
    } else if t.len() > 6 && matches!(&t.as_bytes()[t.len() - 6], b'+' | b'-') {
        let (b, off) = t.split_at(t.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..]
            .split_once(':')
            .ok_or_else(|| bad("offset is not ±hh:mm"))?;
        let h: i64 = h.parse().map_err(|_| bad("offset hours"))?;
        let m: i64 = m.parse().map_err(|_| bad("offset minutes"))?;
        (b, sign * (h * 3600 + m * 60))
    } else {
        return Err(bad("no time zone"));
    };
    // humantime takes at most nine fraction digits.
    let body = match body.split_once('.') {
        Some((whole, frac)) => format!("{whole}.{}", &frac[..frac.len().min(9)]),
        None => body.to_string(),
    };
    let local = humantime::parse_rfc3339(&format!("{body}Z")).map_err(|e| bad(&e.to_string()))?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    // A positive offset is ahead of UTC: subtract it.
    let utc = if offset_secs >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    };
    utc.ok_or_else(|| bad("out of range"))
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_offsets_apply() {
        let t = parse("2026-11-27T02:00:00Z").unwrap();
        assert_eq!(format(t), "2026-11-27T02:00:00Z");
        let frac = parse("2026-11-27T03:30:00.1234567891+01:30").unwrap();
        assert_eq!(unix(frac), unix(t));
        assert_eq!(
            parse("2026-11-26T23:00:00-03:00").unwrap(),
            parse("2026-11-27T02:00:00+00:00").unwrap()
        );
        assert_eq!(format(parse("2026-11-27").unwrap()), "2026-11-27T00:00:00Z");
        assert!(parse("2026-11-27T02:00:00").is_err());
        assert!(parse("yesterday").is_err());
    }
}
