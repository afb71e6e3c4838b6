//! TCVN3 (TCVN 5712:1993), the Vietnamese national 8-bit code of the ".Vn" / "ABC" fonts (pure).
//!
//! The table is the standard's full VN1 repertoire as published in glibc's `TCVN5712-1` charmap:
//! ASCII, with the capital letters carrying tone marks placed in unused C0 control positions
//! (0x01, 0x02, 0x04–0x06, 0x11–0x17) and 0x80–0xA0, the lower-case letters in 0xA8–0xFE, and
//! the five combining tone marks at 0xB0–0xB4. The VN3 subset that "ABC" fonts use (lower-case
//! toned letters only; capitals drawn by a separate font from the same codes) sits at the same
//! positions, so VN3 files decode with this table too — but capitals typed in an "H" font
//! (.VnTimeH) are stored as the lower-case codes and come out lower case: the bytes do not say
//! otherwise. Every byte maps to one character, so
//! decoding never fails; a letter stored as base letter + combining mark comes out decomposed and
//! is composed by NFC normalisation later.

/// The character of each byte.
#[rustfmt::skip]
pub const TABLE: [char; 256] = [
    '\u{0000}', '\u{00DA}', '\u{1EE4}', '\u{0003}', '\u{1EEA}', '\u{1EEC}', '\u{1EEE}', '\u{0007}', // 0x00
    '\u{0008}', '\u{0009}', '\u{000A}', '\u{000B}', '\u{000C}', '\u{000D}', '\u{000E}', '\u{000F}', // 0x08
    '\u{0010}', '\u{1EE8}', '\u{1EF0}', '\u{1EF2}', '\u{1EF6}', '\u{1EF8}', '\u{00DD}', '\u{1EF4}', // 0x10
    '\u{0018}', '\u{0019}', '\u{001A}', '\u{001B}', '\u{001C}', '\u{001D}', '\u{001E}', '\u{001F}', // 0x18
    '\u{0020}', '\u{0021}', '\u{0022}', '\u{0023}', '\u{0024}', '\u{0025}', '\u{0026}', '\u{0027}', // 0x20
    '\u{0028}', '\u{0029}', '\u{002A}', '\u{002B}', '\u{002C}', '\u{002D}', '\u{002E}', '\u{002F}', // 0x28
    '\u{0030}', '\u{0031}', '\u{0032}', '\u{0033}', '\u{0034}', '\u{0035}', '\u{0036}', '\u{0037}', // 0x30
    '\u{0038}', '\u{0039}', '\u{003A}', '\u{003B}', '\u{003C}', '\u{003D}', '\u{003E}', '\u{003F}', // 0x38
    '\u{0040}', '\u{0041}', '\u{0042}', '\u{0043}', '\u{0044}', '\u{0045}', '\u{0046}', '\u{0047}', // 0x40
    '\u{0048}', '\u{0049}', '\u{004A}', '\u{004B}', '\u{004C}', '\u{004D}', '\u{004E}', '\u{004F}', // 0x48
    '\u{0050}', '\u{0051}', '\u{0052}', '\u{0053}', '\u{0054}', '\u{0055}', '\u{0056}', '\u{0057}', // 0x50
    '\u{0058}', '\u{0059}', '\u{005A}', '\u{005B}', '\u{005C}', '\u{005D}', '\u{005E}', '\u{005F}', // 0x58
    '\u{0060}', '\u{0061}', '\u{0062}', '\u{0063}', '\u{0064}', '\u{0065}', '\u{0066}', '\u{0067}', // 0x60
    '\u{0068}', '\u{0069}', '\u{006A}', '\u{006B}', '\u{006C}', '\u{006D}', '\u{006E}', '\u{006F}', // 0x68
    '\u{0070}', '\u{0071}', '\u{0072}', '\u{0073}', '\u{0074}', '\u{0075}', '\u{0076}', '\u{0077}', // 0x70
    '\u{0078}', '\u{0079}', '\u{007A}', '\u{007B}', '\u{007C}', '\u{007D}', '\u{007E}', '\u{007F}', // 0x78
    '\u{00C0}', '\u{1EA2}', '\u{00C3}', '\u{00C1}', '\u{1EA0}', '\u{1EB6}', '\u{1EAC}', '\u{00C8}', // 0x80
    '\u{1EBA}', '\u{1EBC}', '\u{00C9}', '\u{1EB8}', '\u{1EC6}', '\u{00CC}', '\u{1EC8}', '\u{0128}', // 0x88
    '\u{00CD}', '\u{1ECA}', '\u{00D2}', '\u{1ECE}', '\u{00D5}', '\u{00D3}', '\u{1ECC}', '\u{1ED8}', // 0x90
    '\u{1EDC}', '\u{1EDE}', '\u{1EE0}', '\u{1EDA}', '\u{1EE2}', '\u{00D9}', '\u{1EE6}', '\u{0168}', // 0x98
    '\u{00A0}', '\u{0102}', '\u{00C2}', '\u{00CA}', '\u{00D4}', '\u{01A0}', '\u{01AF}', '\u{0110}', // 0xA0
    '\u{0103}', '\u{00E2}', '\u{00EA}', '\u{00F4}', '\u{01A1}', '\u{01B0}', '\u{0111}', '\u{1EB0}', // 0xA8
    '\u{0300}', '\u{0309}', '\u{0303}', '\u{0301}', '\u{0323}', '\u{00E0}', '\u{1EA3}', '\u{00E3}', // 0xB0
    '\u{00E1}', '\u{1EA1}', '\u{1EB2}', '\u{1EB1}', '\u{1EB3}', '\u{1EB5}', '\u{1EAF}', '\u{1EB4}', // 0xB8
    '\u{1EAE}', '\u{1EA6}', '\u{1EA8}', '\u{1EAA}', '\u{1EA4}', '\u{1EC0}', '\u{1EB7}', '\u{1EA7}', // 0xC0
    '\u{1EA9}', '\u{1EAB}', '\u{1EA5}', '\u{1EAD}', '\u{00E8}', '\u{1EC2}', '\u{1EBB}', '\u{1EBD}', // 0xC8
    '\u{00E9}', '\u{1EB9}', '\u{1EC1}', '\u{1EC3}', '\u{1EC5}', '\u{1EBF}', '\u{1EC7}', '\u{00EC}', // 0xD0
    '\u{1EC9}', '\u{1EC4}', '\u{1EBE}', '\u{1ED2}', '\u{0129}', '\u{00ED}', '\u{1ECB}', '\u{00F2}', // 0xD8
    '\u{1ED4}', '\u{1ECF}', '\u{00F5}', '\u{00F3}', '\u{1ECD}', '\u{1ED3}', '\u{1ED5}', '\u{1ED7}', // 0xE0
    '\u{1ED1}', '\u{1ED9}', '\u{1EDD}', '\u{1EDF}', '\u{1EE1}', '\u{1EDB}', '\u{1EE3}', '\u{00F9}', // 0xE8
    '\u{1ED6}', '\u{1EE7}', '\u{0169}', '\u{00FA}', '\u{1EE5}', '\u{1EEB}', '\u{1EED}', '\u{1EEF}', // 0xF0
    '\u{1EE9}', '\u{1EF1}', '\u{1EF3}', '\u{1EF7}', '\u{1EF9}', '\u{00FD}', '\u{1EF5}', '\u{1ED0}', // 0xF8
];

/// Decodes TCVN3 bytes into `out`.
pub fn decode(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len());
    out.extend(bytes.iter().map(|&b| TABLE[usize::from(b)]));
}

/// The byte of `c`, if the table has it.
pub fn encode_char(c: char) -> Option<u8> {
    if c.is_ascii() && TABLE[c as usize] == c {
        return Some(c as u8);
    }
    TABLE.iter().position(|&t| t == c).and_then(|i| u8::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_positions() {
        let mut s = String::new();
        decode(b"S\xacn La \xa7i\xd6n Bi\xaan", &mut s);
        assert_eq!(s, "Sơn La Điện Biên");
        // Capitals with tones in the C0 area, combining marks at 0xB0-0xB4.
        assert_eq!(TABLE[0x01], 'Ú');
        assert_eq!(TABLE[0x17], 'Ỵ');
        assert_eq!(TABLE[0xB3], '\u{301}');
        assert_eq!(TABLE[0xFE], 'ỵ');
        assert_eq!(encode_char('ơ'), Some(0xAC));
        assert_eq!(encode_char('A'), Some(b'A'));
        assert_eq!(encode_char('€'), None);
    }
}
