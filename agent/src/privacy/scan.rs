//! `kho-agent check`'s search for personal data a config forgot to declare (pure).
//!
//! Each column's values are sampled (the first [`SAMPLE`] non-empty ones) and matched against
//! shapes of Vietnamese personal data: 12-digit citizen identity numbers (CCCD), mobile phone
//! numbers, e-mail addresses and full names starting with a common family name. A column where
//! at least half of the sampled values match one shape is reported when its class is missing or
//! `public`, so a department does not leak personal data by omission.

use unicode_normalization::UnicodeNormalization;

/// Values sampled per column.
pub const SAMPLE: usize = 1_000;

/// Common Vietnamese family names (lower case, NFC); together they cover most of the population.
const FAMILY_NAMES: &[&str] = &[
    "nguyễn", "trần", "lê", "phạm", "hoàng", "huỳnh", "phan", "vũ", "võ", "đặng", "bùi", "đỗ", "hồ", "ngô", "dương",
    "lý", "đinh", "lò", "lường", "cầm", "quàng", "hà", "mai", "trịnh", "đào", "cao", "lương", "tạ", "vi", "triệu",
    "mạc", "chu", "thái", "giàng", "sùng", "thào", "vàng", "mùa", "tòng", "điêu",
];

/// A shape of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    CitizenId,
    Phone,
    Email,
    FullName,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::CitizenId => "12-digit citizen ID numbers",
            Kind::Phone => "phone numbers",
            Kind::Email => "e-mail addresses",
            Kind::FullName => "Vietnamese full names",
        }
    }
}

const KINDS: [Kind; 4] = [Kind::CitizenId, Kind::Phone, Kind::Email, Kind::FullName];

/// The shape `value` has, if any.
pub fn classify(value: &str) -> Option<Kind> {
    let v = value.trim();
    KINDS.into_iter().find(|k| matches(*k, v))
}

fn matches(kind: Kind, v: &str) -> bool {
    match kind {
        Kind::CitizenId => v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()),
        Kind::Phone => {
            let digits: String = v.chars().filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')')).collect();
            let national = if let Some(rest) = digits.strip_prefix("+84") {
                format!("0{rest}")
            } else if digits.len() == 11 && digits.starts_with("84") {
                format!("0{}", &digits[2..])
            } else {
                digits
            };
            national.len() == 10
                && national.bytes().all(|b| b.is_ascii_digit())
                && matches!(national.as_bytes()[1], b'3' | b'5' | b'7' | b'8' | b'9')
                && national.starts_with('0')
        }
        Kind::Email => match v.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !v.contains(char::is_whitespace)
                    && !domain.contains('@')
                    && domain.split('.').count() >= 2
                    && domain.split('.').all(|p| !p.is_empty())
            }
            None => false,
        },
        Kind::FullName => {
            let nfc: String = v.nfc().collect();
            let words: Vec<&str> = nfc.split_whitespace().collect();
            (2..=5).contains(&words.len())
                && FAMILY_NAMES.contains(&words[0].to_lowercase().as_str())
                && words
                    .iter()
                    .all(|w| w.chars().next().is_some_and(char::is_uppercase) && w.chars().all(char::is_alphabetic))
        }
    }
}

/// Counts of each shape among a column's sampled values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnScan {
    pub sampled: u64,
    counts: [u64; 4],
}

impl ColumnScan {
    /// Looks at one more value (ignored once [`SAMPLE`] values were seen, or when empty).
    pub fn observe(&mut self, value: &str) {
        if self.sampled as usize >= SAMPLE || value.trim().is_empty() {
            return;
        }
        self.sampled += 1;
        if let Some(k) = classify(value) {
            self.counts[KINDS.iter().position(|x| *x == k).unwrap_or(0)] += 1;
        }
    }

    /// The shape most sampled values have, when it is at least half of them: (kind, count).
    pub fn verdict(&self) -> Option<(Kind, u64)> {
        let (i, &n) = self.counts.iter().enumerate().max_by_key(|(_, n)| **n)?;
        (n > 0 && n * 2 >= self.sampled).then_some((KINDS[i], n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_personal_data() {
        assert_eq!(classify("001090012345"), Some(Kind::CitizenId));
        assert_eq!(classify("0010900123"), None);
        assert_eq!(classify("0912 345 678"), Some(Kind::Phone));
        assert_eq!(classify("+84912345678"), Some(Kind::Phone));
        assert_eq!(classify("0212345678"), None, "landline-like prefix 02 is not a mobile number");
        assert_eq!(classify("an.nguyen@sonla.gov.vn"), Some(Kind::Email));
        assert_eq!(classify("a@b"), None);
        assert_eq!(classify("Nguyễn Văn An"), Some(Kind::FullName));
        assert_eq!(classify("LÒ THỊ MAI"), Some(Kind::FullName));
        // Decomposed (NFD) input is normalised first.
        assert_eq!(classify(&"Trần Thị Bình".nfd().collect::<String>()), Some(Kind::FullName));
        assert_eq!(classify("Sở Tài chính"), None);
        assert_eq!(classify("Nguyễn"), None);
        assert_eq!(classify("Hồ sơ đất đai"), None, "lower-case words are not a name");
    }

    #[test]
    fn a_column_is_flagged_when_half_its_values_match() {
        let mut s = ColumnScan::default();
        for v in ["001090012345", "079201000001", "n/a", ""] {
            s.observe(v);
        }
        assert_eq!(s.sampled, 3);
        assert_eq!(s.verdict(), Some((Kind::CitizenId, 2)));
        let mut t = ColumnScan::default();
        for v in ["Thuận Châu", "Mường La", "001090012345"] {
            t.observe(v);
        }
        assert_eq!(t.verdict(), None);
    }
}
