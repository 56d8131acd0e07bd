//! Sizes and durations as people write and read them: parsed from options (`32M`, `500ms`)
//! and printed in reports (`1.5 GiB`).
use std::time::Duration;

const BYTE_UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// Bytes in binary units, like `free -h`: "0 B", "4.0 KiB", "1.5 GiB".
pub fn bytes(n: u64) -> String {
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < BYTE_UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", BYTE_UNITS[unit])
    }
}

/// A change in bytes with its sign: "+4.0 KiB", "-1.0 MiB".
pub fn signed_bytes(delta: i128) -> String {
    let sign = if delta < 0 { "-" } else { "+" };
    format!("{sign}{}", bytes(delta.unsigned_abs() as u64))
}

/// A size: a number of bytes, or one with a binary suffix (`K`, `M`, `G`, `T`, with or
/// without `iB` or `B`, any case: `32M`, `64KiB`, `1g`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (a number of bytes, or e.g. 32M, 64KiB)"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown size unit `{suffix}` (use K, M, G or T)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration: seconds, or a number with a unit (`ns`, `us`, `ms`, `s`, `m`, `h`): `10`,
/// `2.5s`, `500ms`, `5m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 10, 2.5s, 500ms, 5m)"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "`{text}`: unknown time unit `{other}` (use ns, us, ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|e| format!("`{text}`: {e}"))
}

/// A duration from `min` to `max`, both included.
pub fn parse_duration_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if (min..=max).contains(&d) {
        Ok(d)
    } else {
        Err(format!(
            "`{text}` is out of range: give a duration from {} to {}",
            duration(min),
            duration(max)
        ))
    }
}

/// A duration as one would type it, in its largest unit that divides it: `100ms`, `1h`.
pub fn duration(d: Duration) -> String {
    const UNITS: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let ns = d.as_nanos();
    let (per, unit) = UNITS
        .into_iter()
        .find(|(per, _)| ns >= *per && ns.is_multiple_of(*per))
        .unwrap_or((1, "s"));
    format!("{}{unit}", ns / per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
        assert_eq!(signed_bytes(-4096), "-4.0 KiB");
        assert_eq!(signed_bytes(0), "+0 B");
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("32M"), Ok(32 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes(" 2 GB "), Ok(2 << 30));
        assert!(parse_bytes("1.5M").is_err());
        assert!(
            parse_bytes("12X")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_bytes("").is_err());
        assert!(
            parse_bytes("99999999999T")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn durations_default_to_seconds() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("20us"), Ok(Duration::from_micros(20)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("1e400").is_err());
        assert!(
            parse_duration("3 days")
                .unwrap_err()
                .contains("unknown time unit")
        );
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn durations_out_of_range_name_the_range() {
        let (min, max) = (Duration::from_millis(1), Duration::from_secs(3600));
        assert_eq!(
            parse_duration_within("1ms", min, max),
            Ok(Duration::from_millis(1))
        );
        assert_eq!(parse_duration_within("1h", min, max), Ok(max));
        for text in ["0", "1us", "2h", "288230376151711744"] {
            assert_eq!(
                parse_duration_within(text, min, max),
                Err(format!(
                    "`{text}` is out of range: give a duration from 1ms to 1h"
                ))
            );
        }
        assert!(
            parse_duration_within("soon", min, max)
                .unwrap_err()
                .contains("is not a duration")
        );
    }

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_nanos(1)), "1ns");
        assert_eq!(duration(Duration::from_micros(20)), "20us");
        assert_eq!(duration(Duration::from_millis(100)), "100ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(365 * 86400)), "8760h");
    }
}
