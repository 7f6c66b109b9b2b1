//! The canonical form of every free-form field of an exchange: the
//! official's id, the purpose and the data subject.
//!
//! One set of rules, applied at both ends: the consumer's server brings
//! what an information system sends into canonical form (or refuses it),
//! and the provider's server accepts an envelope only if every field is
//! *already* canonical — so the two ends accept exactly the same values,
//! and a citizen's trace finds every lookup of the same person under one
//! spelling.
//!
//! * Free text ([`canonical_text`]): Unicode NFC; no characters of the
//!   categories Cc (controls), Cf (format: zero-width spaces, bidi
//!   overrides such as U+202E), Co (private use), Cs (surrogates), Zl, Zp
//!   (line and paragraph separators) or Cn (unassigned); at most a
//!   documented number of characters. Vietnamese (precomposed or not), Thai,
//!   Han, Cyrillic… all pass.
//! * Data subject ([`DataSubjectFormats::canonical`]): exactly one of the
//!   instance's formats, as given — no spaces, no full-width digits, no
//!   case folding. The formats are an instance setting carried in the
//!   global configuration; with none set, [`DataSubjectFormats::DEFAULT`]
//!   (the Vietnamese citizen ID, CCCD: 12 ASCII digits) applies.

use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::UnicodeNormalization;

/// Longest official id (`lt-user-id`), in characters.
pub const MAX_USER_ID: usize = 255;
/// Longest purpose (`lt-purpose`), in characters.
pub const MAX_PURPOSE: usize = 1000;
/// Longest data subject, in bytes (every format is ASCII).
pub const MAX_DATA_SUBJECT: usize = 64;
/// Most data-subject formats an instance may define.
pub const MAX_FORMATS: usize = 16;

/// Why a field is not in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains {what} (U+{code:04X}), which is not allowed in text")]
    Forbidden {
        field: &'static str,
        what: &'static str,
        code: u32,
    },
    #[error("{field} is not in Unicode normal form C (NFC)")]
    NotNfc { field: &'static str },
    #[error("data subject {shown} matches none of the instance's formats ({formats})")]
    Subject { shown: String, formats: String },
    #[error("data-subject format {0}")]
    BadFormat(String),
}

/// Why a character is refused in free text, if it is.
fn forbidden(c: char) -> Option<&'static str> {
    use GeneralCategory as G;
    Some(match get_general_category(c) {
        G::Control => "a control character",
        G::Format => "an invisible formatting character",
        G::PrivateUse => "a private-use character",
        G::Surrogate => "a surrogate",
        G::LineSeparator => "a line separator",
        G::ParagraphSeparator => "a paragraph separator",
        G::Unassigned => "an unassigned character",
        _ => return None,
    })
}

/// `value` safe to print on a terminal or a page: every character free
/// text may not hold (controls such as ESC, bidi overrides, zero-width and
/// unassigned characters…) written as `\u{XXXX}`; everything else,
/// Vietnamese included, as it is. Whatever a record, a configuration or a
/// peer says passes through this before it is shown.
pub fn printable(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(|c| forbidden(c).is_some()) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if forbidden(c).is_some() {
            out.push_str(&format!("\\u{{{:04X}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `value` in canonical form (NFC), or why it cannot be: a forbidden
/// character, or more than `max` characters once normalised.
pub fn canonical_text(field: &'static str, value: &str, max: usize) -> Result<String, FieldError> {
    // Bound the work before normalising: a character of text, decomposed,
    // is a base and a few combining marks of at most 4 bytes each.
    if value.len() > max.saturating_mul(12).saturating_add(16) {
        return Err(FieldError::TooLong { field, max });
    }
    if let Some((c, what)) = value.chars().find_map(|c| forbidden(c).map(|w| (c, w))) {
        return Err(FieldError::Forbidden {
            field,
            what,
            code: c as u32,
        });
    }
    // Almost every value is already NFC: no second string for it.
    let nfc: String = if unicode_normalization::is_nfc(value) {
        value.to_owned()
    } else {
        value.nfc().collect()
    };
    if nfc.chars().count() > max {
        return Err(FieldError::TooLong { field, max });
    }
    Ok(nfc)
}

/// Whether `value` is already canonical text: what the provider requires
/// of a signed envelope.
pub fn check_canonical_text(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), FieldError> {
    // The provider's path: already canonical text is checked without
    // building a copy of it.
    if value.len() <= max.saturating_mul(12).saturating_add(16)
        && unicode_normalization::is_nfc(value)
        && !value.chars().any(|c| forbidden(c).is_some())
        && value.chars().count() <= max
    {
        return Ok(());
    }
    let canonical = canonical_text(field, value, max)?;
    if canonical == value {
        Ok(())
    } else {
        Err(FieldError::NotNfc { field })
    }
}

/// One accepted form of personal id: a name for people and a mask in
/// which `#` stands for an ASCII digit, `@` for an ASCII capital letter,
/// and any other character (`A-Z 0-9 -`) for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSubjectFormat {
    pub name: String,
    pub mask: String,
}

impl DataSubjectFormat {
    /// A format, if its name and mask are well formed.
    pub fn new(name: &str, mask: &str) -> Result<Self, FieldError> {
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(FieldError::BadFormat(format!(
                "name {:?} must be 1..=64 of A-Z a-z 0-9 - _ .",
                excerpt(name)
            )));
        }
        let mask_ok = !mask.is_empty()
            && mask.len() <= MAX_DATA_SUBJECT
            && mask.chars().all(|c| {
                matches!(c, '#' | '@' | '-') || c.is_ascii_uppercase() || c.is_ascii_digit()
            });
        if !mask_ok {
            return Err(FieldError::BadFormat(format!(
                "mask {:?} must be 1..={MAX_DATA_SUBJECT} of # (digit), @ (capital letter), A-Z, 0-9, -",
                excerpt(mask)
            )));
        }
        Ok(DataSubjectFormat {
            name: name.to_owned(),
            mask: mask.to_owned(),
        })
    }

    fn matches(&self, value: &str) -> bool {
        value.len() == self.mask.len()
            && value.bytes().zip(self.mask.bytes()).all(|(v, m)| match m {
                b'#' => v.is_ascii_digit(),
                b'@' => v.is_ascii_uppercase(),
                m => v == m,
            })
    }
}

/// The data-subject formats of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSubjectFormats(Vec<DataSubjectFormat>);

impl DataSubjectFormats {
    /// With no formats set: the Vietnamese citizen ID (CCCD), 12 digits.
    pub const DEFAULT: (&'static str, &'static str) = ("VN-CCCD", "############");

    /// The formats a configuration lists, or the default when it lists none.
    pub fn new(formats: Vec<DataSubjectFormat>) -> Result<Self, FieldError> {
        if formats.len() > MAX_FORMATS {
            return Err(FieldError::BadFormat(format!(
                "list has {} entries; at most {MAX_FORMATS}",
                formats.len()
            )));
        }
        if formats.is_empty() {
            return Ok(Self::default());
        }
        Ok(DataSubjectFormats(formats))
    }

    pub fn formats(&self) -> &[DataSubjectFormat] {
        &self.0
    }

    /// `value` if it is exactly one of the formats. Nothing is trimmed or
    /// folded: a personal id is either canonical or refused, so that every
    /// lookup of one person is logged under one spelling.
    pub fn canonical<'v>(&self, value: &'v str) -> Result<&'v str, FieldError> {
        if self.0.iter().any(|f| f.matches(value)) {
            return Ok(value);
        }
        Err(FieldError::Subject {
            shown: shown(value),
            formats: self
                .0
                .iter()
                .map(|f| format!("{} {}", f.name, f.mask))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

impl Default for DataSubjectFormats {
    fn default() -> Self {
        let (name, mask) = Self::DEFAULT;
        DataSubjectFormats(vec![DataSubjectFormat {
            name: name.into(),
            mask: mask.into(),
        }])
    }
}

/// A value as it may appear in an error message: escaped, and cut short.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(24).collect();
    let more = if cut.len() < value.len() { "…" } else { "" };
    format!("{}{more}", cut.escape_debug())
}

fn excerpt(s: &str) -> String {
    s.chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_passes_every_script_and_refuses_invisible_characters() {
        for ok in [
            "",
            "hồ sơ 2026/114 — kiểm tra đăng ký kinh doanh",
            "Überprüfung",
            "ตรวจสอบ",
            "审核",
            "проверка",
            "case 7: a\u{00A0}b",
        ] {
            assert!(canonical_text("purpose", ok, MAX_PURPOSE).is_ok(), "{ok:?}");
        }
        for (bad, what) in [
            ("a\u{1b}[31mred", "control"),
            ("tab\there", "control"),
            ("new\nline", "control"),
            ("ad\u{202E}nimda", "formatting"),
            ("a\u{200B}b", "formatting"),
            ("bom\u{FEFF}", "formatting"),
            ("p\u{E000}", "private-use"),
            ("a\u{2028}b", "line separator"),
            ("a\u{2029}b", "paragraph separator"),
            ("a\u{0378}b", "unassigned"),
        ] {
            let e = canonical_text("lt-user-id", bad, MAX_USER_ID).unwrap_err();
            assert!(e.to_string().contains(what), "{bad:?}: {e}");
            assert!(e.to_string().contains("lt-user-id"), "{e}");
        }
    }

    #[test]
    fn text_is_normalised_to_nfc_and_the_provider_requires_nfc() {
        // "Việt" with combining marks (NFD) becomes the precomposed form.
        let nfd = "Vie\u{0323}\u{0302}t";
        let nfc = canonical_text("purpose", nfd, 10).unwrap();
        assert_eq!(nfc, "Vi\u{1EC7}t");
        assert!(check_canonical_text("purpose", &nfc, 10).is_ok());
        assert_eq!(
            check_canonical_text("purpose", nfd, 10),
            Err(FieldError::NotNfc { field: "purpose" })
        );
    }

    #[test]
    fn length_counts_characters_after_normalisation() {
        assert!(canonical_text("purpose", &"ệ".repeat(1000), 1000).is_ok());
        assert!(canonical_text("purpose", &"ệ".repeat(1001), 1000).is_err());
        // Decomposed input longer than the limit in code points, but not in
        // characters once composed.
        assert!(canonical_text("purpose", &"e\u{0323}\u{0302}".repeat(300), 300).is_ok());
        assert!(canonical_text("purpose", &"x".repeat(5000), 1000).is_err());
        assert!(canonical_text("lt-user-id", &"x".repeat(3000), 255).is_err());
    }

    #[test]
    fn data_subjects_have_one_spelling() {
        let f = DataSubjectFormats::default();
        assert_eq!(f.canonical("001099012345"), Ok("001099012345"));
        for bad in [
            "",
            " 001099012345",
            "001099012345 ",
            "0010990\u{200B}12345",
            "００１０９９０１２３４５",
            "00109901234",
            "0010990123456",
            "00109901234a",
            &"9".repeat(10_000),
        ] {
            let e = f.canonical(bad).unwrap_err();
            assert!(e.to_string().contains("VN-CCCD ############"), "{e}");
        }
        let several = DataSubjectFormats::new(vec![
            DataSubjectFormat::new("VN-CCCD", "############").unwrap(),
            DataSubjectFormat::new("passport", "@#######").unwrap(),
            DataSubjectFormat::new("tax", "TIN-##########").unwrap(),
        ])
        .unwrap();
        assert!(several.canonical("B1234567").is_ok());
        assert!(several.canonical("TIN-0123456789").is_ok());
        assert!(several.canonical("b1234567").is_err(), "no case folding");
        assert!(several.canonical("TAX-0123456789").is_err());
    }

    #[test]
    fn formats_are_checked() {
        assert!(DataSubjectFormat::new("ok", "@@##-##").is_ok());
        for (name, mask) in [
            ("", "#"),
            ("a b", "#"),
            ("x", ""),
            ("x", "#a"),
            ("x", "# "),
            ("x", &"#".repeat(65)),
        ] {
            assert!(
                DataSubjectFormat::new(name, mask).is_err(),
                "{name:?} {mask:?}"
            );
        }
        let many = vec![DataSubjectFormat::new("x", "#").unwrap(); MAX_FORMATS + 1];
        assert!(DataSubjectFormats::new(many).is_err());
        assert_eq!(
            DataSubjectFormats::new(vec![]).unwrap(),
            DataSubjectFormats::default()
        );
    }

    #[test]
    fn printable_escapes_what_text_may_not_hold() {
        assert_eq!(printable("Bộ Công an"), "Bộ Công an");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{001B}[2Jb");
        assert_eq!(printable("x\u{202E}y"), "x\\u{202E}y");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn error_messages_never_carry_raw_control_characters() {
        let e = DataSubjectFormats::default()
            .canonical("\u{1b}[2J0123")
            .unwrap_err();
        assert!(!e.to_string().chars().any(char::is_control), "{e}");
    }
}
