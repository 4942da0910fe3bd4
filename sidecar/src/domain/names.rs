//! The one rule for names people give things in the sidecar (a key's name
//! and a team's): not blank, not too long, and no character that
//! is invisible or changes how the text around it is shown.
//!
//! Names are shown to operators in `keys list` and the console. A bidi
//! control such as U+202E (right-to-left override) makes `evil\u{202E}cod.exe`
//! read as `evilexe.doc`; a zero-width space makes two names that look alike
//! differ. So a name may hold no control (general category `Cc`), no
//! format character (`Cf`: the bidi embeddings, overrides and isolates, the
//! zero-width characters, the soft hyphen, tag characters...) and no line
//! or paragraph separator (`Zl`, `Zp`: U+2028, U+2029).
//!
//! The general category comes from `unicode-properties` (the unicode-rs
//! crate, tables generated from the Unicode Character Database; already in
//! the build through sqlx), rather than a table of our own: `Cf` grows with
//! Unicode versions, and a hand-kept list would silently fall behind. The
//! tests below check its `Cf`, `Zl` and `Zp` against Python's
//! `unicodedata.category` (Unicode 14.0), code point by code point.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `c` may not appear in a name: a control, a format character,
/// or a line or paragraph separator.
pub fn is_forbidden_in_names(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Checks the name of a `thing` ("key", "team"): trimmed, not blank, at
/// most `max_chars` characters, no character [`is_forbidden_in_names`].
/// Answers the trimmed name; the error is a message that names the thing
/// and, for a forbidden character, its code point.
pub fn validate_name(thing: &str, name: &str, max_chars: usize) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("the {thing} name must not be empty"));
    }
    if name.chars().count() > max_chars {
        return Err(format!(
            "the {thing} name is longer than {max_chars} characters"
        ));
    }
    if let Some(c) = name.chars().find(|c| is_forbidden_in_names(*c)) {
        return Err(format!(
            "the {thing} name must not contain control, format or bidi characters \
             (it contains U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code point of general category `Cf`, `Zl` or `Zp` in Python
    /// 3.11's `unicodedata` (Unicode 14.0), as inclusive ranges, made by:
    /// `[c for c in range(0x110000) if unicodedata.category(chr(c)) in
    /// ("Cf", "Zl", "Zp")]`, joined into runs.
    const PYTHON_UNICODE_14: [(u32, u32); 23] = [
        (0xAD, 0xAD),
        (0x600, 0x605),
        (0x61C, 0x61C),
        (0x6DD, 0x6DD),
        (0x70F, 0x70F),
        (0x890, 0x891),
        (0x8E2, 0x8E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x2028, 0x2028),
        (0x2029, 0x2029),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x13438),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];

    /// Format characters Unicode assigned after 14.0, which Python 3.11
    /// does not know: the Egyptian hieroglyph format controls of 15.0.
    const ADDED_SINCE_14: [(u32, u32); 1] = [(0x13439, 0x1343F)];

    fn in_ranges(ranges: &[(u32, u32)], c: u32) -> bool {
        ranges
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&c))
    }

    #[test]
    fn format_characters_and_separators_are_exactly_those_of_the_unicode_database() {
        let mut differences = Vec::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let ours = is_forbidden_in_names(c) && !c.is_control();
            let code = u32::from(c);
            let theirs = in_ranges(&PYTHON_UNICODE_14, code) || in_ranges(&ADDED_SINCE_14, code);
            if ours != theirs {
                differences.push(format!("U+{code:04X}: ours {ours}, Unicode {theirs}"));
            }
        }
        assert!(differences.is_empty(), "{differences:?}");
    }

    #[test]
    fn names_refuse_controls_format_characters_and_separators() {
        for c in [
            '\u{0}',
            '\n',
            '\u{7F}',
            '\u{85}',
            '\u{AD}',
            '\u{200B}',
            '\u{200D}',
            '\u{200E}',
            '\u{2028}',
            '\u{2029}',
            '\u{202A}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{E0041}',
        ] {
            let name = format!("a{c}b");
            let err = validate_name("key", &name, 200).unwrap_err();
            assert!(
                err.contains(&format!("U+{:04X}", u32::from(c))),
                "{name:?}: {err}"
            );
            assert!(err.starts_with("the key name"), "{err}");
        }
        for fine in ["demo", "ключ", "名前", "café", "a b", "emoji 🦀", "ﷺ"] {
            assert_eq!(validate_name("key", fine, 200).unwrap(), fine);
        }
        assert_eq!(validate_name("team", " t ", 200).unwrap(), "t");
        assert!(validate_name("team", "  ", 200)
            .unwrap_err()
            .contains("team name must not be empty"));
        assert!(validate_name("key", "abc", 2)
            .unwrap_err()
            .contains("longer"));
    }
}
