//! VNI (the "VNI-Windows" font encoding), widespread in Vietnamese offices before Unicode (pure).
//!
//! VNI is not a character set but a font trick: a toned vowel is its ASCII base letter followed
//! by one byte that the VNI fonts draw as the diacritics (`á` = `a` 0xF9, `ấ` = `a` 0xE1,
//! `ắ` = `a` 0xE9), so most Vietnamese letters take two bytes. A few letters are one byte of
//! their own: `ơ` 0xF4, `ư` 0xF6 (which take tone bytes after them like a vowel), `đ` 0xF1, the
//! toned `i` (0xEC 0xED 0xE6 0xF3 0xF2) and `ỵ` 0xEE. Capitals use their own set of diacritic
//! bytes (0xC0–0xDC). The table below is built from that structure, the layout of the VNI font
//! table. Decoding is greedy: a known two-byte pair first, then a known single byte, then ASCII;
//! any other byte is taken as its Windows-1252 character (what the VNI fonts draw there).

use std::collections::HashMap;
use std::sync::LazyLock;

/// Tones in the order of the tables below: none, sắc (acute), huyền (grave), hỏi (hook above),
/// ngã (tilde), nặng (dot below), as Unicode combining marks.
const TONES: [Option<char>; 6] =
    [None, Some('\u{301}'), Some('\u{300}'), Some('\u{309}'), Some('\u{303}'), Some('\u{323}')];

/// Diacritic bytes after a plain vowel (a e o u y, and ơ ư), per tone; lower then upper case.
const PLAIN: [[Option<u8>; 6]; 2] = [
    [None, Some(0xF9), Some(0xF8), Some(0xFB), Some(0xF5), Some(0xEF)],
    [None, Some(0xD9), Some(0xD8), Some(0xDB), Some(0xD5), Some(0xCF)],
];
/// Circumflex (â ê ô) with each tone.
const CIRCUMFLEX: [[Option<u8>; 6]; 2] = [
    [Some(0xE2), Some(0xE1), Some(0xE0), Some(0xE5), Some(0xE3), Some(0xE4)],
    [Some(0xC2), Some(0xC1), Some(0xC0), Some(0xC5), Some(0xC3), Some(0xC4)],
];
/// Breve (ă) with each tone.
const BREVE: [[Option<u8>; 6]; 2] = [
    [Some(0xEA), Some(0xE9), Some(0xE8), Some(0xFA), Some(0xFC), Some(0xEB)],
    [Some(0xCA), Some(0xC9), Some(0xC8), Some(0xDA), Some(0xDC), Some(0xCB)],
];
/// The toned `i` are single bytes (none, acute, grave, hook, tilde, dot).
const I_TONED: [[u8; 6]; 2] = [[b'i', 0xED, 0xEC, 0xE6, 0xF3, 0xF2], [b'I', 0xCD, 0xCC, 0xC6, 0xD3, 0xD2]];

/// Every Vietnamese letter VNI encodes differently from ASCII, with its bytes.
fn letters() -> Vec<(char, Vec<u8>)> {
    let mut out = Vec::new();
    let compose = |base: char, marks: &[char]| -> char {
        use unicode_normalization::UnicodeNormalization;
        let s: String = std::iter::once(base).chain(marks.iter().copied()).nfc().collect();
        s.chars().next().unwrap_or(base)
    };
    for upper in [false, true] {
        let case = usize::from(upper);
        let cased = |c: char| if upper { c.to_ascii_uppercase() } else { c };
        // (base char, base byte(s), diacritic table, modifier mark)
        let horn_o: (char, u8) = if upper { ('Ơ', 0xD4) } else { ('ơ', 0xF4) };
        let horn_u: (char, u8) = if upper { ('Ư', 0xD6) } else { ('ư', 0xF6) };
        for (t, tone) in TONES.iter().enumerate() {
            let tone: Vec<char> = tone.iter().copied().collect();
            for v in ['a', 'e', 'o', 'u', 'y'] {
                let base = cased(v);
                if let Some(b) = PLAIN[case][t]
                    && !(v == 'y' && t == 5)
                {
                    out.push((compose(base, &tone), vec![base as u8, b]));
                }
                if matches!(v, 'a' | 'e' | 'o')
                    && let Some(b) = CIRCUMFLEX[case][t]
                {
                    let marks: Vec<char> = std::iter::once('\u{302}').chain(tone.iter().copied()).collect();
                    out.push((compose(base, &marks), vec![base as u8, b]));
                }
                if v == 'a'
                    && let Some(b) = BREVE[case][t]
                {
                    let marks: Vec<char> = std::iter::once('\u{306}').chain(tone.iter().copied()).collect();
                    out.push((compose(base, &marks), vec![base as u8, b]));
                }
            }
            for (c, b) in [horn_o, horn_u] {
                let mut bytes = vec![b];
                bytes.extend(PLAIN[case][t]);
                out.push((compose(c, &tone), bytes));
            }
            if t > 0 {
                out.push((compose(cased('i'), &tone), vec![I_TONED[case][t]]));
            }
        }
        out.push((compose(cased('y'), &['\u{323}']), vec![if upper { 0xCE } else { 0xEE }]));
        out.push((if upper { 'Đ' } else { 'đ' }, vec![if upper { 0xD1 } else { 0xF1 }]));
    }
    out
}

struct Tables {
    pairs: HashMap<[u8; 2], char>,
    singles: HashMap<u8, char>,
    encode: HashMap<char, Vec<u8>>,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let mut t = Tables { pairs: HashMap::new(), singles: HashMap::new(), encode: HashMap::new() };
    for (c, bytes) in letters() {
        match bytes.as_slice() {
            [a, b] => {
                t.pairs.insert([*a, *b], c);
            }
            [a] => {
                t.singles.insert(*a, c);
            }
            _ => {}
        }
        t.encode.insert(c, bytes);
    }
    t
});

/// Decodes VNI bytes into `out`.
pub fn decode(bytes: &[u8], out: &mut String) {
    let t = &*TABLES;
    out.reserve(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(pair) = bytes.get(i..i + 2)
            && let Some(&c) = t.pairs.get(&[pair[0], pair[1]])
        {
            out.push(c);
            i += 2;
            continue;
        }
        let b = bytes[i];
        match t.singles.get(&b) {
            Some(&c) => out.push(c),
            None if b.is_ascii() => out.push(char::from(b)),
            None => out.push(super::cp1252_char(b)),
        }
        i += 1;
    }
}

/// Appends the VNI bytes of `c` (an NFC character), or returns false when VNI cannot write it.
pub fn encode_char(c: char, out: &mut Vec<u8>) -> bool {
    if let Some(bytes) = TABLES.encode.get(&c) {
        out.extend_from_slice(bytes);
        true
    } else if c.is_ascii() {
        out.push(c as u8);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(b: &[u8]) -> String {
        let mut s = String::new();
        decode(b, &mut s);
        s
    }

    #[test]
    fn published_positions() {
        // "Xin chào các bạn" as VNI-Windows text shows in a Latin-1 font as "Xin chaøo caùc baïn".
        assert_eq!(dec(b"Xin cha\xf8o ca\xf9c ba\xefn"), "Xin chào các bạn");
        assert_eq!(dec(b"S\xf4n La \xd1ie\xe4n Bie\xe2n"), "Sơn La Điện Biên");
        assert_eq!(dec(b"NGUY\xc4N"), "NGUYÄN", "a capital letter followed by a byte that is not one of its marks");
        assert_eq!(dec(b"NGUYE\xc3N"), "NGUYỄN");
        assert_eq!(dec(b"ng\xf6\xf4\xf8i"), "người");
        assert_eq!(dec(b"\xf0"), "ð", "unmapped bytes are their Windows-1252 character");
        assert_eq!(
            TABLES.encode.len(),
            2 * (12 * 6 - 6 + 1),
            "every vowel but the six plain ASCII ones, and đ, in both cases"
        );
    }
}
