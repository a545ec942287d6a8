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
    fn formats_dates() {
        // 2026-11-25T00:00:00Z
        let ms = 1_795_564_800_000;
        assert_eq!(format_date(ms, "en", "short"), "2026-11-25");
        assert_eq!(format_date(ms, "ru", "long"), "25 ноября 2026");
    }
}
