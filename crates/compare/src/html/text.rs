//! Text for the page: HTML escaping, and numbers, durations and dates as people read them.

use std::fmt;

/// HTML-escapes a string for text and attribute values. C0 control characters (but tab and line
/// breaks) become their visible Unicode pictures, C1 controls the replacement character.
pub(crate) struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                '\t' | '\n' | '\r' => f.write_char(c)?,
                '\0'..='\u{1f}' => {
                    // Always a valid char: U+2400..U+241F are the control pictures.
                    f.write_char(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'))?
                }
                '\u{7f}' => f.write_char('\u{2421}')?,
                '\u{80}'..='\u{9f}' => f.write_char('\u{fffd}')?,
                _ => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A printable text (captured bytes with `\r`, `\n`, `\\` escapes) with a line break after
/// each escaped `\n`, so that a sample reads line by line while its bytes stay visible.
pub(super) fn with_breaks(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 16);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push_str("n\n"),
                Some(next) => out.push(next),
                None => {}
            }
        }
    }
    out
}

/// An integer with thin spaces between thousands: `12 345 678`.
pub(super) fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// `part` as a percentage of `whole`, or a dash when `whole` is zero.
pub(super) fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".to_string()
    } else {
        format!("{:.2} %", 100.0 * part as f64 / whole as f64)
    }
}

/// Microseconds in the unit that reads best: `850 µs`, `1.25 ms`, `2.5 s`.
pub(super) fn us(v: u64) -> String {
    match v {
        0..=999 => format!("{v} µs"),
        1_000..=999_999 => format!("{} ms", trim(v as f64 / 1e3)),
        _ => format!("{} s", trim(v as f64 / 1e6)),
    }
}

pub(super) fn signed_us(v: f64) -> String {
    if !v.is_finite() {
        return "—".to_string();
    }
    let sign = if v < 0.0 { "−" } else { "+" };
    format!("{sign}{}", us(v.abs().round() as u64))
}

/// At most three significant digits, trailing zeros dropped.
pub(super) fn trim(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A count per second for an axis: `950`, `12k`, `1.5M`.
pub(super) fn compact(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// Seconds since the start as a clock: `0:05`, `12:30`, `1:02:03`.
pub(super) fn clock(v: f64) -> String {
    let t = v.max(0.0).round() as u64;
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A run's length: `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub(super) fn duration(secs: f64) -> String {
    if !(secs >= 0.0 && secs.is_finite()) {
        return "an unknown time".to_string();
    }
    let t = secs.round() as u64;
    match t {
        0..=59 => format!("{} s", trim(secs)),
        60..=3599 => format!("{} min {:02} s", t / 60, t % 60),
        _ => format!("{} h {:02} min", t / 3600, t / 60 % 60),
    }
}

/// Unix seconds as `2026-12-06 18:53:23 UTC`.
pub(super) fn utc(unix_s: f64) -> String {
    let t = unix_s.floor() as i64;
    let (days, rest) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (proleptic Gregorian, eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_control_bytes() {
        let s = Esc("<a href=\"x\">'&'</a>\u{1}\u{7f}\u{85}\r\n").to_string();
        assert_eq!(
            s,
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\u{2401}\u{2421}\u{fffd}\r\n"
        );
    }

    #[test]
    fn escaped_line_feeds_break_lines_but_an_escaped_backslash_does_not() {
        assert_eq!(with_breaks("a\\r\\nb\\\\nc\\n"), "a\\r\\n\nb\\\\nc\\n\n");
        assert_eq!(with_breaks("plain\\"), "plain\\");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(int(0), "0");
        assert_eq!(int(1234567), "1\u{202f}234\u{202f}567");
        assert_eq!(us(850), "850 µs");
        assert_eq!(us(1250), "1.25 ms");
        assert_eq!(us(15_000), "15 ms");
        assert_eq!(us(2_500_000), "2.5 s");
        assert_eq!(signed_us(-1500.0), "−1.5 ms");
        assert_eq!(pct(1, 3), "33.33 %");
        assert_eq!(pct(1, 0), "—");
        assert_eq!(compact(12_000.0), "12k");
        assert_eq!(clock(3723.0), "1:02:03");
        assert_eq!(duration(125.0), "2 min 05 s");
    }

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_582_003.5), "2026-12-06 18:33:23 UTC");
    }
}
