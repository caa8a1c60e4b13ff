//! Parsing of size strings such as `64K`, `1G` or `1.5M` (QEMU's `size` property syntax).

/// Parses a size: a non-negative number with an optional binary suffix
/// (`B`, `K`, `M`, `G`, `T`, `P`, `E`, case-insensitive; no suffix means bytes).
/// A fraction is allowed with a suffix other than `B` when the result is a whole
/// number of bytes.
///
/// ```
/// use vmkit_qom::parse_size;
/// assert_eq!(parse_size("64K"), Ok(65536));
/// assert_eq!(parse_size("1.5k"), Ok(1536));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// assert!(parse_size("1Q").is_err());
/// assert!(parse_size("16E").is_err()); // does not fit in 64 bits
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty size".into());
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() {
        return Err(format!("'{text}' does not start with a number"));
    }
    let shift: u32 = match suffix {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return Err(format!("unknown size suffix '{suffix}' in '{text}'")),
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    if whole.is_empty() || frac.is_some_and(|f| f.is_empty() || f.contains('.')) {
        return Err(format!("'{text}' is not a valid number"));
    }
    let whole: u64 = whole.parse().map_err(|_| format!("'{text}' is too large"))?;
    let base = whole
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' does not fit in 64 bits"))?;
    let Some(frac) = frac else {
        return Ok(base);
    };
    if shift == 0 {
        return Err(format!("'{text}': a fraction of a byte is not a size"));
    }
    // frac_value / 10^digits * 2^shift must be whole: compute exactly in u128.
    if frac.len() > 18 {
        return Err(format!("'{text}' has too many fraction digits"));
    }
    let digits = u32::try_from(frac.len()).map_err(|_| format!("'{text}' has too many fraction digits"))?;
    let numer: u128 = u128::from(
        frac.parse::<u64>()
            .map_err(|_| format!("'{text}' is not a valid number"))?,
    ) << shift;
    let denom: u128 = 10u128.pow(digits);
    if numer % denom != 0 {
        return Err(format!("'{text}' is not a whole number of bytes"));
    }
    let extra = u64::try_from(numer / denom).map_err(|_| format!("'{text}' does not fit in 64 bits"))?;
    base.checked_add(extra)
        .ok_or_else(|| format!("'{text}' does not fit in 64 bits"))
}

/// Formats a size the way QEMU prints one in `info` output (`64 KiB`, `1 GiB`, `1.5 MiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut scaled = bytes as f64;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let number = format!("{scaled:.3}");
    let number = number.trim_end_matches('0').trim_end_matches('.');
    format!("{number} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_fractions() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1B"), Ok(1));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.25G"), Ok((1 << 30) + (1 << 28)));
        assert_eq!(parse_size("15E"), Ok(15 << 60));
        assert_eq!(parse_size(" 8k "), Ok(8192));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "K",
            "-1",
            "1.5",
            "1.5B",
            "1..5K",
            "1.K",
            ".5K",
            "1KB",
            "99999999999999999999",
            "16E",
            "0.1K",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(64 << 10), "64 KiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
    }
}
