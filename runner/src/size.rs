//! Parsing of memory sizes given on the command line (`--mem 256M`).

use anyhow::{Context, Result, bail};

/// Parses a guest memory size into MiB.
///
/// Accepts a plain number (MiB, as QEMU does) or a number with a suffix
/// `K`, `M`, `G` (optionally followed by `iB`/`B`, any case). The result
/// must be a whole, non-zero number of MiB.
pub fn parse_mem_mib(text: &str) -> Result<u64> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(digits_end);
    if digits.is_empty() {
        bail!("memory size {text:?}: expected a number such as 256M or 1G");
    }
    let value: u64 = digits
        .parse()
        .with_context(|| format!("memory size {text:?}: number too large"))?;
    let kib_per_unit: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1024,
        "g" | "gb" | "gib" => 1024 * 1024,
        "k" | "kb" | "kib" => 1,
        other => bail!("memory size {text:?}: unknown unit {other:?} (use K, M or G)"),
    };
    let kib = value
        .checked_mul(kib_per_unit)
        .with_context(|| format!("memory size {text:?}: too large"))?;
    if kib == 0 {
        bail!("memory size {text:?}: must be more than zero");
    }
    if kib % 1024 != 0 {
        bail!("memory size {text:?}: must be a whole number of MiB");
    }
    Ok(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::parse_mem_mib;

    #[test]
    fn accepts_plain_and_suffixed_sizes() {
        assert_eq!(parse_mem_mib("128").unwrap(), 128);
        assert_eq!(parse_mem_mib("256M").unwrap(), 256);
        assert_eq!(parse_mem_mib("256mib").unwrap(), 256);
        assert_eq!(parse_mem_mib("1G").unwrap(), 1024);
        assert_eq!(parse_mem_mib("2GiB").unwrap(), 2048);
        assert_eq!(parse_mem_mib("4096K").unwrap(), 4);
        assert_eq!(parse_mem_mib(" 64M ").unwrap(), 64);
    }

    #[test]
    fn rejects_bad_sizes_with_a_message() {
        for bad in [
            "",
            "M",
            "-1",
            "12X",
            "0",
            "0G",
            "1000K",
            "1.5G",
            "99999999999999999999G",
        ] {
            let err = parse_mem_mib(bad).expect_err(bad);
            assert!(err.to_string().contains("memory size"), "{bad}: {err}");
        }
    }
}
