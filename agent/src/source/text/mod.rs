//! Vietnamese text as Kho stores it (pure, no I/O): legacy encodings decoded, Unicode normalised.
//!
//! Department data carries Vietnamese in four shapes: UTF-8, Windows-1258 (decoded with
//! `encoding_rs`), TCVN3 ([`tcvn3`]) and VNI ([`vni`]) — the last two have no maintained crate, so
//! their tables live here. `[dataset.text]` names the encoding of a whole source and of single
//! columns ([`TextConfig`]). Every text value then goes through [`convert`]:
//!
//! 1. **Decode.** Where text arrives as bytes (CSV files, SQLite), the bytes are decoded with the
//!    column's encoding; UTF-8 must be valid (bad bytes are an error, never replaced). Where text
//!    arrives already as Unicode (XLSX cells, PostgreSQL, MySQL, ODBC, JSON), a legacy value has
//!    been read by the driver or Excel as Windows-1252/Latin-1 — that is how TCVN3 "S¬n La" and VNI
//!    "Sôn La" end up in modern systems — so those characters are turned back into their bytes and
//!    decoded. A value that holds characters outside Windows-1252 is already real Unicode and is
//!    kept as it is (a column being migrated can mix both).
//! 2. **Normalise to NFC** (on by default, `nfc = false` turns it off), so "Sơn La" typed
//!    decomposed (NFD, as macOS and some input methods produce) and precomposed is one value in
//!    the warehouse and joins as one.
//!
//! [`mojibake`] recognises text that was decoded with the wrong encoding, for `kho-agent check`.

pub mod mojibake;
pub mod tcvn3;
pub mod vni;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// A text encoding a source or column may declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "windows-1258", alias = "cp1258")]
    Windows1258,
    /// TCVN 5712:1993 (".VnTime", "ABC").
    #[serde(rename = "tcvn3", alias = "abc")]
    Tcvn3,
    /// VNI-Windows.
    #[serde(rename = "vni")]
    Vni,
}

impl Encoding {
    pub const ALL: [Encoding; 4] = [Encoding::Utf8, Encoding::Windows1258, Encoding::Tcvn3, Encoding::Vni];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Windows1258 => "windows-1258",
            Encoding::Tcvn3 => "tcvn3",
            Encoding::Vni => "vni",
        }
    }
}

/// Whether NFC normalisation is on when the config does not say: Vietnamese typed on different
/// systems differs only in composition, and values that look equal must join.
pub const DEFAULT_NFC: bool = true;

fn default_nfc() -> bool {
    DEFAULT_NFC
}

/// `[dataset.text]`: the encoding of the source's text and whether it is normalised.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Encoding of every text column (`utf-8` by default).
    #[serde(default)]
    pub encoding: Encoding,
    /// Per-column encodings, overriding `encoding` (`columns = { ten_cu = "tcvn3" }`).
    #[serde(default)]
    pub columns: BTreeMap<String, Encoding>,
    /// Normalise every text value to Unicode NFC.
    #[serde(default = "default_nfc")]
    pub nfc: bool,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig { encoding: Encoding::Utf8, columns: BTreeMap::new(), nfc: DEFAULT_NFC }
    }
}

impl TextConfig {
    /// The encoding of `column`.
    pub fn encoding_of(&self, column: &str) -> Encoding {
        self.columns.get(column).copied().unwrap_or(self.encoding)
    }

    /// Problems as `(field, problem)`; `field` prefixes the names.
    pub fn validate(&self, field: &str) -> Vec<(String, String)> {
        self.columns
            .keys()
            .filter(|c| c.trim().is_empty())
            .map(|_| (format!("{field}.columns"), "column names must not be empty".to_string()))
            .collect()
    }

    /// Whether every value passes through unchanged (UTF-8 everywhere, no normalisation).
    pub fn is_identity(&self) -> bool {
        !self.nfc && self.encoding == Encoding::Utf8 && self.columns.values().all(|e| *e == Encoding::Utf8)
    }
}

/// How text reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The bytes as stored (CSV files, SQLite).
    Bytes,
    /// Unicode text from a driver or a workbook, which read legacy bytes as Windows-1252.
    Unicode,
}

/// Text that is not valid UTF-8 in a column declared UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

/// The text Kho stores for a value read as `bytes` (see the module doc).
pub fn convert(enc: Encoding, origin: Origin, nfc: bool, bytes: &[u8]) -> Result<Cow<'_, str>, NotUtf8> {
    let decoded: Cow<'_, str> = match (enc, origin) {
        (Encoding::Utf8, _) => Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| NotUtf8)?),
        (_, _) if plain_ascii(enc, bytes) => Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| NotUtf8)?),
        (_, Origin::Bytes) => Cow::Owned(decode_bytes(enc, bytes)),
        (_, Origin::Unicode) => match std::str::from_utf8(bytes) {
            Ok(s) => match to_cp1252_bytes(s) {
                Some(raw) => Cow::Owned(decode_bytes(enc, &raw)),
                None => Cow::Borrowed(s),
            },
            Err(_) => Cow::Owned(decode_bytes(enc, bytes)),
        },
    };
    Ok(if nfc { normalize(decoded) } else { decoded })
}

/// `s` in NFC, borrowed when it already is (the common case costs one scan).
pub fn normalize(s: Cow<'_, str>) -> Cow<'_, str> {
    // ASCII is always NFC, and `is_ascii` is far cheaper than the per-character quick check;
    // so is a range compare per character for NFC Vietnamese (see `plainly_nfc`).
    if s.is_ascii() || plainly_nfc(&s) || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        s
    } else {
        Cow::Owned(s.nfc().collect())
    }
}

/// Whether every character of `s` lies in a block where each character is its own NFC form and
/// composes with nothing before it (NFC_Quick_Check = Yes, canonical combining class 0), which
/// makes the string NFC: everything below U+0300 (ASCII, Latin-1, Latin Extended-A/B, IPA), Latin
/// Extended Additional (U+1E00–U+1EFF, every precomposed Vietnamese letter) and the dashes,
/// quotes and dots of General Punctuation (U+2010–U+2027). Vietnamese typed in NFC stays in these
/// blocks, and checking them is a compare per character instead of the quick check's two table
/// lookups (which were ~7 % of the agent's CPU on a Vietnamese initial sync).
fn plainly_nfc(s: &str) -> bool {
    s.chars().all(|c| c < '\u{300}' || ('\u{1E00}'..='\u{1EFF}').contains(&c) || ('\u{2010}'..='\u{2027}').contains(&c))
}

/// Whether `bytes` mean the same in `enc` as in ASCII (TCVN3 puts capitals in control codes).
fn plain_ascii(enc: Encoding, bytes: &[u8]) -> bool {
    match enc {
        Encoding::Tcvn3 => bytes.iter().all(|&b| (0x20..0x80).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r')),
        _ => bytes.is_ascii(),
    }
}

/// Decodes legacy bytes (UTF-8 is decoded lossily here; [`convert`] validates it instead).
pub fn decode_bytes(enc: Encoding, bytes: &[u8]) -> String {
    match enc {
        Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        Encoding::Windows1258 => encoding_rs::WINDOWS_1258.decode_without_bom_handling(bytes).0.into_owned(),
        Encoding::Tcvn3 => {
            let mut s = String::new();
            tcvn3::decode(bytes, &mut s);
            s
        }
        Encoding::Vni => {
            let mut s = String::new();
            vni::decode(bytes, &mut s);
            s
        }
    }
}

/// Windows-1252's characters for 0x80–0x9F (the C1 controls where the code page has none).
const CP1252_HIGH: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž', '\u{8F}', '\u{90}', '‘', '’',
    '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}', 'ž', 'Ÿ',
];

/// The Windows-1252 character of a byte.
pub fn cp1252_char(b: u8) -> char {
    match b {
        0x80..=0x9F => CP1252_HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

/// The bytes a Windows-1252 (or Latin-1) reading turned into `s`; None when `s` holds a
/// character neither has, i.e. `s` is real Unicode text.
pub fn to_cp1252_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars()
        .map(|c| match u32::from(c) {
            0..=0xFF => u8::try_from(u32::from(c)).ok(),
            _ => CP1252_HIGH.iter().position(|&h| h == c).and_then(|i| u8::try_from(0x80 + i).ok()),
        })
        .collect()
}

/// Tone marks as Unicode combining characters, with their TCVN3 bytes.
const TONE_MARKS: [(char, u8); 5] =
    [('\u{300}', 0xB0), ('\u{309}', 0xB1), ('\u{303}', 0xB2), ('\u{301}', 0xB3), ('\u{323}', 0xB4)];

/// A toned letter as its untoned letter (composed: `ế` → `ê`) and the combining tone mark.
fn split_tone(c: char) -> Option<(char, char)> {
    let nfd: Vec<char> = std::iter::once(c).nfd().collect();
    let tone = nfd.iter().copied().find(|m| TONE_MARKS.iter().any(|(t, _)| t == m))?;
    let base: String = nfd.iter().copied().filter(|m| *m != tone).nfc().collect();
    let mut chars = base.chars();
    match (chars.next(), chars.next()) {
        (Some(b), None) => Some((b, tone)),
        _ => None,
    }
}

/// Encodes `s` (normalised to NFC first) in `enc`, as a legacy program would have written it;
/// the first character `enc` cannot represent is the error. For tests and sample data.
pub fn encode(enc: Encoding, s: &str) -> Result<Vec<u8>, char> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.nfc() {
        match enc {
            Encoding::Utf8 => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            Encoding::Tcvn3 => match tcvn3::encode_char(c) {
                Some(b) => out.push(b),
                None => {
                    let (base, tone) = split_tone(c).ok_or(c)?;
                    out.push(tcvn3::encode_char(base).ok_or(c)?);
                    out.push(TONE_MARKS.iter().find(|(t, _)| *t == tone).map(|(_, b)| *b).ok_or(c)?);
                }
            },
            Encoding::Vni => {
                if !vni::encode_char(c, &mut out) {
                    return Err(c);
                }
            }
            Encoding::Windows1258 => {
                let one = |ch: char| -> Option<Vec<u8>> {
                    let mut buf = [0; 4];
                    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1258.encode(ch.encode_utf8(&mut buf));
                    (!unmappable).then(|| bytes.into_owned())
                };
                match one(c) {
                    Some(b) => out.extend(b),
                    None => {
                        // Windows-1258 writes toned letters as letter + combining tone mark.
                        let (base, tone) = split_tone(c).ok_or(c)?;
                        out.extend(one(base).ok_or(c)?);
                        out.extend(one(tone).ok_or(c)?);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Every Vietnamese letter (each vowel with each of the six tones, đ, and the consonants), lower
/// then upper case, in NFC. For tests and for the mojibake detector's notion of a Vietnamese letter.
pub fn alphabet() -> Vec<char> {
    let mut out = Vec::new();
    let vowels = ["a", "ă", "â", "e", "ê", "i", "o", "ô", "ơ", "u", "ư", "y"];
    let tones = ["", "\u{301}", "\u{300}", "\u{309}", "\u{303}", "\u{323}"];
    for upper in [false, true] {
        for v in vowels {
            for t in tones {
                let s: String = format!("{v}{t}").nfc().collect();
                let s = if upper { s.to_uppercase() } else { s };
                out.extend(s.chars());
            }
        }
        let rest = "bcdđghklmnpqrstvx";
        out.extend(if upper { rest.to_uppercase() } else { rest.to_string() }.chars());
    }
    out
}

/// Whether `c` is a Vietnamese letter with a diacritic (any of the non-ASCII letters of [`alphabet`]).
pub fn is_vietnamese_letter(c: char) -> bool {
    static SET: std::sync::LazyLock<std::collections::HashSet<char>> =
        std::sync::LazyLock::new(|| alphabet().into_iter().filter(|c| !c.is_ascii()).collect());
    SET.contains(&c)
}

#[cfg(test)]
mod tests;
