//! Recognising Vietnamese text decoded with the wrong encoding (pure), for `kho-agent check`.
//!
//! Legacy text read as Windows-1252 or Latin-1 has a typical look: TCVN3 "Sơn La" becomes
//! "S¬n La", VNI "Xin chào các bạn" becomes "Xin chaøo caùc baïn", UTF-8 read as Windows-1252
//! becomes "SÆ¡n La". A value is suspect when it holds characters that are neither Vietnamese
//! letters nor common punctuation; it is *recognised* when turning those characters back into
//! their Windows-1252 bytes and decoding them with some encoding gives text made only of ASCII and
//! Vietnamese letters. When both TCVN3 and VNI would give such text, VNI wins if its decoding
//! joined a vowel with a following diacritic byte (the way VNI writes every toned vowel; TCVN3
//! text rarely has a toned letter straight after a plain vowel byte that VNI would read as a mark).
//! It is a heuristic for Vietnamese data: text in other Latin-1 languages ("Zürich") can look like
//! TCVN3, since almost every high byte is a Vietnamese letter there — `check` only warns.

use std::collections::BTreeMap;

use super::{Encoding, decode_bytes, is_vietnamese_letter, normalize, to_cp1252_bytes};

/// Values examined per column by `check`.
pub const SAMPLE_VALUES: usize = 2_000;

/// What a mis-decoded value really was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Misread {
    /// Bytes in this legacy encoding, read as Windows-1252: set this encoding.
    Legacy(Encoding),
    /// UTF-8 bytes read as Windows-1252 by a driver or a database with the wrong character set.
    Utf8AsCp1252,
}

impl Misread {
    /// What the operator should do.
    pub fn advice(self) -> String {
        match self {
            Misread::Legacy(e) => format!("set encoding = \"{}\" in [dataset.text] (or for this column)", e.as_str()),
            Misread::Utf8AsCp1252 => {
                "the text is UTF-8 that was decoded as Windows-1252 before it reached the agent; fix the \
                 character set of the database connection or column"
                    .to_string()
            }
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Misread::Legacy(Encoding::Tcvn3) => "TCVN3 read as Windows-1252",
            Misread::Legacy(Encoding::Vni) => "VNI read as Windows-1252",
            Misread::Legacy(Encoding::Windows1258) => "Windows-1258 read as Windows-1252",
            Misread::Legacy(Encoding::Utf8) | Misread::Utf8AsCp1252 => "UTF-8 read as Windows-1252",
        }
    }
}

/// Punctuation and symbols that ordinary Vietnamese text contains.
fn is_common_symbol(c: char) -> bool {
    matches!(c, '–' | '—' | '“' | '”' | '‘' | '’' | '…' | '°' | '€' | '«' | '»' | '·' | '•' | '\u{a0}' | '×' | '²' | '³' | '№')
        // Combining diacritics (decomposed text) are letters, not noise.
        || ('\u{300}'..='\u{36f}').contains(&c)
}

/// Characters that are neither ASCII, Vietnamese letters nor common symbols.
fn strange(s: &str) -> usize {
    s.chars()
        .filter(|&c| {
            if c.is_ascii() {
                c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r')
            } else {
                !is_vietnamese_letter(c) && !is_common_symbol(c)
            }
        })
        .count()
}

fn has_vietnamese(s: &str) -> bool {
    s.chars().any(is_vietnamese_letter)
}

/// Whether VNI decoding of `raw` used a vowel + diacritic pair.
fn vni_pairs(raw: &[u8]) -> bool {
    let mut single = String::new();
    super::vni::decode(raw, &mut single);
    single.chars().count() < raw.len()
}

/// How `s` was mis-decoded and what it should read, if it looks mis-decoded.
pub fn diagnose(s: &str) -> Option<(Misread, String)> {
    if strange(s) == 0 {
        return None;
    }
    let raw = to_cp1252_bytes(s)?;
    if let Ok(u) = std::str::from_utf8(&raw)
        && !u.is_ascii()
        && strange(u) == 0
        && has_vietnamese(u)
    {
        return Some((Misread::Utf8AsCp1252, normalize(u.into()).into_owned()));
    }
    let mut found: Vec<(Misread, String)> = Vec::new();
    for enc in [Encoding::Vni, Encoding::Tcvn3, Encoding::Windows1258] {
        let fixed = normalize(decode_bytes(enc, &raw).into()).into_owned();
        if strange(&fixed) == 0 && has_vietnamese(&fixed) {
            found.push((Misread::Legacy(enc), fixed));
        }
    }
    if found.len() > 1 && !vni_pairs(&raw) {
        found.retain(|(m, _)| *m != Misread::Legacy(Encoding::Vni));
    }
    found.into_iter().next()
}

/// What a column's sample showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub misread: Misread,
    /// Values recognised as this misreading, of `sampled` non-ASCII values.
    pub count: usize,
    pub sampled: usize,
    /// One value as read and as it should be.
    pub example: (String, String),
}

/// Collects a column's values and judges them.
#[derive(Debug, Default)]
pub struct ColumnSample {
    sampled: usize,
    hits: BTreeMap<Misread, (usize, (String, String))>,
}

impl ColumnSample {
    /// Looks at one value (only the first [`SAMPLE_VALUES`] non-ASCII values count).
    pub fn observe(&mut self, s: &str) {
        if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_control() && !matches!(b, b'\t' | b'\n' | b'\r')) {
            return;
        }
        if self.sampled >= SAMPLE_VALUES {
            return;
        }
        self.sampled += 1;
        if let Some((m, fixed)) = diagnose(s) {
            let e = self.hits.entry(m).or_insert_with(|| (0, (s.to_string(), fixed)));
            e.0 += 1;
        }
    }

    /// Looks at one value as stored: text that is not UTF-8 at all (a SQLite column written by a
    /// legacy program) is judged by the legacy encoding it reads as.
    pub fn observe_bytes(&mut self, b: &[u8]) {
        match std::str::from_utf8(b) {
            Ok(s) => self.observe(s),
            Err(_) if self.sampled < SAMPLE_VALUES => {
                self.sampled += 1;
                if let Some(enc) = suggest_for_bytes(b) {
                    let fixed = normalize(decode_bytes(enc, b).into()).into_owned();
                    let shown = String::from_utf8_lossy(b).into_owned();
                    self.hits.entry(Misread::Legacy(enc)).or_insert_with(|| (0, (shown, fixed))).0 += 1;
                }
            }
            Err(_) => {}
        }
    }

    /// The most frequent misreading, if any value showed one.
    pub fn verdict(&self) -> Option<Verdict> {
        let (m, (count, example)) = self.hits.iter().max_by_key(|(_, (n, _))| *n)?;
        Some(Verdict { misread: *m, count: *count, sampled: self.sampled, example: example.clone() })
    }
}

/// A suggestion for a whole byte string that is not valid UTF-8 (a CSV line): the legacy encoding
/// under which it reads as Vietnamese, if one does.
pub fn suggest_for_bytes(raw: &[u8]) -> Option<Encoding> {
    let mut found = Vec::new();
    for enc in [Encoding::Vni, Encoding::Tcvn3, Encoding::Windows1258] {
        let fixed = normalize(decode_bytes(enc, raw).into()).into_owned();
        if strange(&fixed) == 0 && has_vietnamese(&fixed) {
            found.push(enc);
        }
    }
    if found.len() > 1 && !vni_pairs(raw) {
        found.retain(|e| *e != Encoding::Vni);
    }
    found.first().copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::text::encode;

    /// What a Windows-1252 reader shows for `s` written in `enc`.
    fn misread(enc: Encoding, s: &str) -> String {
        encode(enc, s).unwrap().into_iter().map(super::super::cp1252_char).collect()
    }

    #[test]
    fn legacy_text_read_as_cp1252_is_recognised() {
        let samples = ["Sơn La", "Xin chào các bạn", "Ủy ban nhân dân tỉnh Điện Biên", "Nguyễn Thị Hường", "Sở Y tế"];
        for s in samples {
            for enc in [Encoding::Tcvn3, Encoding::Vni] {
                let shown = misread(enc, s);
                // VNI text can look like plain Vietnamese ("Sôn La"); when it is recognised, it is right.
                match diagnose(&shown) {
                    Some((m, fixed)) => assert_eq!((m, fixed.as_str()), (Misread::Legacy(enc), s), "{shown:?}"),
                    None => assert!(enc == Encoding::Vni && strange(&shown) == 0, "{shown:?} not recognised"),
                }
            }
        }
        assert_eq!(misread(Encoding::Tcvn3, "Sơn La"), "S¬n La");
        assert_eq!(diagnose("S¬n La"), Some((Misread::Legacy(Encoding::Tcvn3), "Sơn La".into())));
        assert_eq!(diagnose("Xin chaøo caùc baïn"), Some((Misread::Legacy(Encoding::Vni), "Xin chào các bạn".into())));
        assert_eq!(diagnose("SÆ¡n La"), Some((Misread::Utf8AsCp1252, "Sơn La".into())));
        for fine in ["Sơn La", "Hà Nội – 2026", "Nguyễn Văn A", "100°C", "café"] {
            assert_eq!(diagnose(fine), None, "{fine}");
        }
    }

    #[test]
    fn a_column_sample_names_the_encoding() {
        let mut col = ColumnSample::default();
        for s in ["Nguyễn Văn An", "Lò Thị Hồng", "Điện Biên Phủ", "Mường Thanh"] {
            col.observe(&misread(Encoding::Tcvn3, s));
        }
        col.observe("ASCII only");
        let v = col.verdict().unwrap();
        assert_eq!(v.misread, Misread::Legacy(Encoding::Tcvn3));
        assert_eq!((v.count, v.sampled), (4, 4));
        let mut raw = ColumnSample::default();
        raw.observe_bytes(&encode(Encoding::Vni, "Nguyễn Thị Hường").unwrap());
        assert_eq!(raw.verdict().unwrap().misread, Misread::Legacy(Encoding::Vni));
        assert_eq!(raw.verdict().unwrap().example.1, "Nguyễn Thị Hường");
        let mut good = ColumnSample::default();
        good.observe("Nguyễn Văn An");
        assert_eq!(good.verdict(), None);
        assert_eq!(suggest_for_bytes(&encode(Encoding::Tcvn3, "Lò Thị Hồng, Sơn La").unwrap()), Some(Encoding::Tcvn3));
        assert_eq!(suggest_for_bytes(&encode(Encoding::Vni, "Lò Thị Hồng, Sơn La").unwrap()), Some(Encoding::Vni));
    }
}
