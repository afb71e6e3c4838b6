#![allow(clippy::unwrap_used)]
use super::*;

fn conv(enc: Encoding, origin: Origin, bytes: &[u8]) -> String {
    convert(enc, origin, true, bytes).unwrap().into_owned()
}

#[test]
fn the_alphabet_is_complete() {
    let a = alphabet();
    // 12 vowels × 6 tones + 17 consonants, in both cases.
    assert_eq!(a.len(), 2 * (12 * 6 + 17));
    assert_eq!(a.iter().filter(|c| !c.is_ascii()).count(), 2 * (12 * 6 - 6 + 1));
    for c in ["ặ", "Ặ", "ỹ", "Ỹ", "ự", "Ự", "ờ", "Ờ", "đ", "Đ"] {
        assert!(a.contains(&c.chars().next().unwrap()), "{c}");
    }
}

#[test]
fn every_letter_with_every_tone_round_trips_through_every_encoding() {
    for enc in Encoding::ALL {
        for c in alphabet() {
            let s = c.to_string();
            let bytes = encode(enc, &s).unwrap_or_else(|bad| panic!("{} cannot encode {bad:?}", enc.as_str()));
            assert_eq!(conv(enc, Origin::Bytes, &bytes), s, "{} {c:?} as {bytes:02x?}", enc.as_str());
            // The same bytes read as Windows-1252 by a driver or Excel come back too.
            if enc == Encoding::Utf8 {
                continue;
            }
            let misread: String = bytes.iter().map(|&b| cp1252_char(b)).collect();
            assert_eq!(conv(enc, Origin::Unicode, misread.as_bytes()), s, "{} {c:?} via Unicode", enc.as_str());
        }
        let text = "Ủy ban nhân dân tỉnh Sơn La: Nguyễn Thị Hường, 12 Lò Văn Giá, Thuận Châu";
        let bytes = encode(enc, text).unwrap();
        assert_eq!(conv(enc, Origin::Bytes, &bytes), text, "{}", enc.as_str());
    }
}

#[test]
fn legacy_bytes_match_the_published_tables() {
    assert_eq!(encode(Encoding::Tcvn3, "Việt Nam").unwrap(), b"Vi\xd6t Nam");
    assert_eq!(encode(Encoding::Vni, "Việt Nam").unwrap(), b"Vie\xe4t Nam");
    // Windows-1258: ê, then the combining dot below.
    assert_eq!(encode(Encoding::Windows1258, "Việt Nam").unwrap(), b"Vi\xea\xf2t Nam");
    assert_eq!(conv(Encoding::Windows1258, Origin::Bytes, b"Vi\xea\xf2t Nam"), "Việt Nam");
    assert_eq!(conv(Encoding::Tcvn3, Origin::Bytes, b"\xa7\xb5 N\xb5ng"), "Đà Nàng");
}

#[test]
fn decomposed_text_is_normalised_unless_turned_off() {
    let nfd = "So\u{31b}n La, Vie\u{323}\u{302}t";
    assert_eq!(conv(Encoding::Utf8, Origin::Bytes, nfd.as_bytes()), "Sơn La, Việt");
    let kept = convert(Encoding::Utf8, Origin::Bytes, false, nfd.as_bytes()).unwrap();
    assert_eq!(kept, nfd);
    assert!(matches!(convert(Encoding::Utf8, Origin::Bytes, true, b"plain"), Ok(Cow::Borrowed(_))));
}

#[test]
fn utf8_must_be_valid_and_unicode_values_are_kept() {
    assert_eq!(convert(Encoding::Utf8, Origin::Bytes, true, b"S\xacn"), Err(NotUtf8));
    // A column declared TCVN3 that already holds real Unicode (outside Windows-1252) is kept.
    assert_eq!(conv(Encoding::Tcvn3, Origin::Unicode, "Sơn La".as_bytes()), "Sơn La");
    assert_eq!(conv(Encoding::Tcvn3, Origin::Unicode, "S¬n La".as_bytes()), "Sơn La");
    // TCVN3 capitals live in control codes: ASCII-looking bytes are still decoded.
    assert_eq!(conv(Encoding::Tcvn3, Origin::Bytes, b"\x01"), "Ú");
}

#[test]
fn config_defaults_and_overrides() {
    let c: TextConfig =
        toml::from_str("encoding = \"tcvn3\"\ncolumns = { ghi_chu = \"vni\", ma = \"utf-8\" }").unwrap();
    assert!(c.nfc);
    assert_eq!(c.encoding_of("ten"), Encoding::Tcvn3);
    assert_eq!(c.encoding_of("ghi_chu"), Encoding::Vni);
    assert_eq!(c.encoding_of("ma"), Encoding::Utf8);
    assert!(toml::from_str::<TextConfig>("encoding = \"latin9\"").is_err());
    assert!(TextConfig { nfc: false, ..TextConfig::default() }.is_identity());
    assert!(!TextConfig::default().is_identity());
}

/// The fast path of `normalize` claims strings made only of its blocks are NFC: every character
/// of those blocks is checked against the Unicode tables (quick check Yes, combining class 0,
/// its own NFC form), and random strings of them are NFC by the full algorithm too.
#[test]
fn the_fast_nfc_blocks_hold_only_characters_that_are_their_own_nfc_and_compose_with_nothing() {
    use unicode_normalization::char::canonical_combining_class;
    let blocks = ['\0'..='\u{2FF}', '\u{1E00}'..='\u{1EFF}', '\u{2010}'..='\u{2027}'];
    let chars: Vec<char> = blocks.iter().flat_map(|r| r.clone()).collect();
    for &c in &chars {
        let s = c.to_string();
        assert!(plainly_nfc(&s), "{c:?}");
        assert_eq!(is_nfc_quick(s.chars()), IsNormalized::Yes, "{c:?}");
        assert_eq!(canonical_combining_class(c), 0, "{c:?}");
        assert_eq!(s.nfc().collect::<String>(), s, "{c:?}");
    }
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2_000 {
        let s: String = (0..rng.usize(1..12)).map(|_| chars[rng.usize(..chars.len())]).collect();
        assert_eq!(s.nfc().collect::<String>(), s, "{s:?}");
    }
    // Outside the blocks the full check still runs: decomposed Vietnamese is composed.
    assert!(!plainly_nfc("Nguye\u{302}\u{303}n"));
    assert_eq!(normalize(Cow::Borrowed("Nguye\u{302}\u{303}n")), "Nguyễn");
    assert!(matches!(normalize(Cow::Borrowed("Hồ sơ “đúng hạn” – Sơn La")), Cow::Borrowed(_)));
}
