//! Template macros: `{{greeting}}` says good morning/afternoon/evening in the contact's language,
//! `{{format_date value}}` writes a date the way the contact's language does.

use ferrydesk_sdk::prelude::*;

struct Greeting;

/// The language to write in: the hash's `lang`, the contact's, the operator's, English.
fn language(ctx: &Ctx, hash: &Json, context: &Json) -> String {
    let lang = hash
        .get("lang")
        .and_then(Json::as_str)
        .or_else(|| context.pointer("/contact/locale").and_then(Json::as_str))
        .unwrap_or(&ctx.locale);
    lang.split(['-', '_']).next().unwrap_or("en").to_lowercase()
}

/// Minutes east of UTC: the hash's `utc_offset`, the admin's setting, 0.
fn utc_offset(ctx: &Ctx, hash: &Json) -> i64 {
    hash.get("utc_offset")
        .and_then(Json::as_i64)
        .or_else(|| ctx.config("utc_offset").and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The greeting for a local hour.
pub fn greeting_for(lang: &str, hour: i64) -> &'static str {
    let part = match hour {
        5..=11 => 0,
        12..=17 => 1,
        _ => 2,
    };
    match (lang, part) {
        ("ru", 0) => "Доброе утро",
        ("ru", 1) => "Добрый день",
        ("ru", _) => "Добрый вечер",
        (_, 0) => "Good morning",
        (_, 1) => "Good afternoon",
        (_, _) => "Good evening",
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of an RFC 3339 date-time (`2026-11-25T12:48:12.51Z`, `…+03:00`) or date.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    let mut ms = days_from_civil(y, mo as u32, d as u32) * 86_400_000;
    if s.len() > 10 {
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        ms += (h * 3600 + mi * 60 + sec) * 1000;
        let rest = &s[19..];
        let rest = match rest.strip_prefix('.') {
            Some(frac) => {
                let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
                let scaled = format!("{digits:0<3}");
                ms += scaled[..3].parse::<i64>().ok()?;
                &frac[digits.len()..]
            }
            None => rest,
        };
        match rest {
            "Z" | "z" | "" => {}
            tz => {
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                let oh: i64 = tz.get(1..3)?.parse().ok()?;
                let om: i64 = tz.get(4..6)?.parse().ok()?;
                ms -= sign * (oh * 60 + om) * 60_000;
            }
        }
    }
    Some(ms)
}

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_RU: [&str; 12] = [
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
];

/// Formats unix milliseconds (already shifted to local time) in `lang`, `style` short or long.
pub fn format_date(ms: i64, lang: &str, style: &str) -> String {
    let (y, m, d) = civil(ms.div_euclid(86_400_000));
    match (lang, style) {
        ("ru", "long") => format!("{d} {} {y}", MONTHS_RU[m as usize - 1]),
        ("ru", _) => format!("{d:02}.{m:02}.{y}"),
        (_, "long") => format!("{} {d}, {y}", MONTHS_EN[m as usize - 1]),
        (_, _) => format!("{y}-{m:02}-{d:02}"),
    }
}

impl Helpers for Greeting {
    fn render(
        ctx: &Ctx,
        helper: &str,
        params: &[Json],
        hash: &Json,
        context: &Json,
    ) -> PluginResult<String> {
        let lang = language(ctx, hash, context);
        let offset = utc_offset(ctx, hash) * 60_000;
        match helper {
            "greeting" => {
                let hour = (now_ms() + offset).div_euclid(3_600_000).rem_euclid(24);
                Ok(greeting_for(&lang, hour).to_owned())
            }
            "format_date" => {
                let ms = match params.first() {
                    None | Some(Json::Null) => now_ms(),
                    Some(Json::Number(n)) => n.as_i64().ok_or_else(|| {
                        PluginError::invalid_input(
                            "format_date: the date must be unix milliseconds",
                        )
                    })?,
                    Some(other) => {
                        return Err(PluginError::invalid_input(format!(
                            "format_date: expected unix milliseconds, got {other}"
                        )));
                    }
                };
                let style = hash.get("style").and_then(Json::as_str).unwrap_or("short");
                Ok(format_date(ms + offset, &lang, style))
            }
            other => Err(PluginError::new(
                "unknown_helper",
                format!("no helper `{other}` in this plugin"),
            )),
        }
    }
}

export_helpers!(Greeting);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_hour_and_language() {
        assert_eq!(greeting_for("ru", 9), "Доброе утро");
        assert_eq!(greeting_for("en", 14), "Good afternoon");
        assert_eq!(greeting_for("en", 23), "Good evening");
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(
            parse_rfc3339("2026-11-25T00:00:00Z"),
            Some(1_795_564_800_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T03:00:00.5+03:00"),
            Some(1_795_564_800_500)
        );
        assert_eq!(parse_rfc3339("2026-11-25"), Some(1_795_564_800_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn formats_dates() {
        // 2026-11-25T00:00:00Z
        let ms = 1_795_564_800_000;
        assert_eq!(format_date(ms, "en", "short"), "2026-11-25");
        assert_eq!(format_date(ms, "ru", "long"), "25 ноября 2026");
    }
}
