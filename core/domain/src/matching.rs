//! Contact matching for duplicate rules (S18): normalised keys (phone in E.164, email
//! case-folded, names transliterated from Cyrillic and reduced to sorted tokens) and a fuzzy name
//! comparison. Pure functions, shared by the desk and the duplicate benchmark.

/// A phone number in E.164 (`+` and digits), or `None` when it cannot be one. Russian trunk
/// notation (`8 9xx …`, eleven digits) becomes `+7…`; ten digits without a country code take
/// `default_country` (digits only, e.g. `"7"`); `00` is the international prefix.
pub fn phone_e164(raw: &str, default_country: &str) -> Option<String> {
    let t = raw.trim();
    let plus = t.starts_with('+');
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let digits = if !plus && digits.starts_with("00") {
        digits[2..].to_owned()
    } else if !plus && digits.len() == 11 && digits.starts_with('8') {
        format!("7{}", &digits[1..])
    } else if !plus && digits.len() == 10 {
        format!("{default_country}{digits}")
    } else {
        digits
    };
    // E.164: at most 15 digits; fewer than 8 is a short or partial number.
    if (8..=15).contains(&digits.len()) && !digits.starts_with('0') {
        Some(format!("+{digits}"))
    } else {
        None
    }
}

/// An email address case-folded and trimmed, or `None` when it is not one.
pub fn email_key(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    if local.is_empty() || !domain.contains('.') || e.contains(char::is_whitespace) {
        return None;
    }
    Some(e)
}

/// Latin transliteration of one Cyrillic letter (a simple, ICAO-like table: what people type
/// when they write their Russian name in Latin letters).
fn translit(c: char) -> Option<&'static str> {
    Some(match c {
        'а' => "a",
        'б' => "b",
        'в' => "v",
        'г' => "g",
        'д' => "d",
        'е' | 'ё' | 'э' => "e",
        'ж' => "zh",
        'з' => "z",
        'и' | 'й' | 'ы' => "i",
        'к' => "k",
        'л' => "l",
        'м' => "m",
        'н' => "n",
        'о' => "o",
        'п' => "p",
        'р' => "r",
        'с' => "s",
        'т' => "t",
        'у' => "u",
        'ф' => "f",
        'х' => "kh",
        'ц' => "ts",
        'ч' => "ch",
        'ш' => "sh",
        'щ' => "shch",
        'ъ' | 'ь' => "",
        'ю' => "iu",
        'я' => "ia",
        'і' => "i",
        'ї' => "i",
        'є' => "e",
        'ґ' => "g",
        _ => return None,
    })
}

/// Latin spellings that mean the same sound, folded to one (`yu`/`ju`/`iu` → `iu`, …), so that
/// "Yuri" and "Юрий" meet.
fn fold_spelling(token: &str) -> String {
    let mut t = token.to_owned();
    for (from, to) in [
        ("yu", "iu"),
        ("ju", "iu"),
        ("ya", "ia"),
        ("ja", "ia"),
        ("yo", "e"),
        ("jo", "e"),
        ("ks", "x"),
        ("ff", "v"),
        ("w", "v"),
        ("y", "i"),
        ("j", "i"),
    ] {
        t = t.replace(from, to);
    }
    // Russian surnames spelled with a final "-off" are "-ov".
    if let Some(stem) = t.strip_suffix("of") {
        t = format!("{stem}ov");
    }
    t
}

/// A name as sorted, lower-case Latin tokens: «Иванов Иван» and "Ivan  IVANOV" both become
/// `["ivan", "ivanov"]`.
pub fn name_tokens(raw: &str) -> Vec<String> {
    let mut latin = String::with_capacity(raw.len());
    for c in raw.chars().flat_map(char::to_lowercase) {
        match translit(c) {
            Some(s) => latin.push_str(s),
            None if c.is_alphanumeric() => latin.push(c),
            None => latin.push(' '),
        }
    }
    let mut tokens: Vec<String> = latin
        .split_whitespace()
        .filter(|t| !t.is_empty())
        .map(fold_spelling)
        .collect();
    tokens.sort();
    tokens.dedup();
    tokens
}

/// The name as one key (tokens joined by a space), for exact matching and blocking.
pub fn name_key(raw: &str) -> Option<String> {
    let t = name_tokens(raw);
    (!t.is_empty()).then(|| t.join(" "))
}

/// Levenshtein similarity of two strings: 1.0 equal, 0.0 nothing in common.
pub fn similarity(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    1.0 - prev[b.len()] as f64 / longest as f64
}

/// How alike two names are (0.0–1.0): every token of the shorter name is paired with its most
/// similar token of the other, and the weakest pair decides — so a shared first name does not
/// make "Ivan Petrov" match "Ivan Ivanov". Names with different token counts pair only the
/// shorter one's tokens (a middle name may be missing), at a small cost.
pub fn name_similarity(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut used = vec![false; long.len()];
    let mut weakest: f64 = 1.0;
    for s in short {
        let mut best = (0.0, usize::MAX);
        for (j, l) in long.iter().enumerate() {
            if used[j] {
                continue;
            }
            let sim = similarity(s, l);
            if sim > best.0 {
                best = (sim, j);
            }
        }
        if best.1 == usize::MAX {
            return 0.0;
        }
        used[best.1] = true;
        weakest = weakest.min(best.0);
    }
    // A missing middle name costs little; a lone first name against a full name costs more
    // ("Ivan" is not "Ivan Ivanov" at the default threshold).
    let per_missing = if short.len() >= 2 { 0.05 } else { 0.2 };
    let missing = (long.len() - short.len()) as f64 * per_missing;
    (weakest - missing).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_become_e164() {
        assert_eq!(
            phone_e164("+7 (912) 345-67-89", "7").as_deref(),
            Some("+79123456789")
        );
        assert_eq!(
            phone_e164("8 912 345 67 89", "7").as_deref(),
            Some("+79123456789")
        );
        assert_eq!(
            phone_e164("9123456789", "7").as_deref(),
            Some("+79123456789")
        );
        assert_eq!(
            phone_e164("0049 30 1234567", "7").as_deref(),
            Some("+49301234567")
        );
        assert_eq!(phone_e164("123", "7"), None);
        assert_eq!(phone_e164("call me", "7"), None);
    }

    #[test]
    fn emails_are_case_folded() {
        assert_eq!(
            email_key(" Anna@Example.COM ").as_deref(),
            Some("anna@example.com")
        );
        assert_eq!(email_key("not an email"), None);
    }

    #[test]
    fn cyrillic_and_latin_names_meet() {
        let a = name_tokens("Иванов Иван");
        let b = name_tokens("Ivan Ivanov");
        let c = name_tokens("Ivan Petrov");
        assert_eq!(a, vec!["ivan", "ivanov"]);
        assert_eq!(a, b);
        assert!(name_similarity(&a, &b) >= 0.99);
        assert!(name_similarity(&a, &c) < 0.8, "{}", name_similarity(&a, &c));
        assert!(name_similarity(&name_tokens("Юрий Гагарин"), &name_tokens("Yuri Gagarin")) >= 0.8);
        assert!(name_similarity(&name_tokens("Ivan Ivanoff"), &b) >= 0.99);
        assert!(name_similarity(&name_tokens("Ivan I. Ivanov"), &b) >= 0.8);
        assert!(name_similarity(&name_tokens("Ivan"), &b) < 0.85);
        assert_eq!(name_key("  "), None);
    }
}
