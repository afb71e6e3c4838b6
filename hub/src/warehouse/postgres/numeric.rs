//! Decimal text → PostgreSQL's binary `numeric` (what `numeric_recv` reads). Pure.
//!
//! A `numeric` is a sign, a *weight* (the power of 10,000 of its first digit), a *display scale*
//! (digits shown after the point) and base-10,000 digits. The source's digits are kept exactly —
//! never an f64 round trip — and the display scale is what `numeric_in` would give the same text
//! (`1.50` has scale 2; `1.5E+3` is 1500, scale 0), so a value reads back as it would have through
//! PostgreSQL's own text input.
//!
//! Text PostgreSQL would refuse is refused here (so a `COPY` never fails on one cell): a scale
//! above 16,383 or a weight beyond ±32,767, which `make_result` reports as "value overflows
//! numeric format".

/// A number in PostgreSQL's binary `numeric` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numeric {
    sign: u16,
    weight: i16,
    dscale: u16,
    digits: Vec<i16>,
}

const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;
const NAN: u16 = 0xC000;
const PLUS_INFINITY: u16 = 0xD000;
const MINUS_INFINITY: u16 = 0xF000;
/// `NUMERIC_DSCALE_MAX`.
const MAX_SCALE: i64 = 0x3FFF;
/// Beyond this an exponent overflows whatever the digits (and the arithmetic stays in i64).
const MAX_EXPONENT: i64 = 1 << 20;

impl Numeric {
    /// Parses `[+-]digits[.digits][(e|E)[+-]digits]` (at least one digit before the exponent),
    /// `NaN`, `Infinity`, `+Infinity` or `-Infinity` (PostgreSQL ≥ 14).
    pub fn parse(s: &str) -> Option<Numeric> {
        let special = |sign| Some(Numeric { sign, weight: 0, dscale: 0, digits: Vec::new() });
        match s {
            "NaN" => return special(NAN),
            "Infinity" | "+Infinity" => return special(PLUS_INFINITY),
            "-Infinity" => return special(MINUS_INFINITY),
            _ => {}
        }
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], Some(&body[i + 1..])),
            None => (body, None),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let exponent = match exponent {
            None => 0,
            Some(e) => {
                let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                if unsigned.is_empty() || !all_digits(unsigned) {
                    return None;
                }
                // Leading zeros do not make an exponent larger; too many digits do.
                let value = unsigned.trim_start_matches('0');
                if value.len() > 7 {
                    return None;
                }
                let n: i64 = value.parse().unwrap_or(0);
                if n > MAX_EXPONENT {
                    return None;
                }
                if e.starts_with('-') { -n } else { n }
            }
        };
        let frac_len = i64::try_from(frac.len()).ok()?;
        let dscale = (frac_len - exponent).max(0);
        if dscale > MAX_SCALE {
            return None;
        }
        // The significant digits, and the power of ten just above the first of them.
        let all = int.bytes().chain(frac.bytes());
        let leading = all.clone().take_while(|&b| b == b'0').count();
        let digits: Vec<u8> = all.skip(leading).collect();
        let significant = digits.len() - digits.iter().rev().take_while(|&&b| b == b'0').count();
        let digits = &digits[..significant];
        let dscale = u16::try_from(dscale).ok()?;
        if digits.is_empty() {
            return Some(Numeric { sign: POSITIVE, weight: 0, dscale, digits: Vec::new() });
        }
        let point = i64::try_from(int.len()).ok()? - i64::try_from(leading).ok()? + exponent;
        let len = i64::try_from(digits.len()).ok()?;
        // Decimal digit at power of ten `pow`, zero outside the significant digits.
        let digit_at = |pow: i64| -> i16 {
            let idx = point - 1 - pow;
            if (0..len).contains(&idx) { i16::from(digits[idx as usize] - b'0') } else { 0 }
        };
        let high = (point - 1).div_euclid(4);
        let low = (point - len).div_euclid(4);
        let weight = i16::try_from(high).ok()?;
        let groups = (low..=high).rev().map(|w| (0..4).rev().fold(0i16, |acc, j| acc * 10 + digit_at(4 * w + j)));
        let mut out: Vec<i16> = groups.collect();
        while out.last() == Some(&0) {
            out.pop();
        }
        Some(Numeric { sign: if negative { NEGATIVE } else { POSITIVE }, weight, dscale, digits: out })
    }

    /// Appends the binary form (without the field's length).
    pub fn write_binary(&self, out: &mut Vec<u8>) {
        // At most (32,767 + 16,383 / 4 + 2) digits: always fits the u16 count.
        let n = u16::try_from(self.digits.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&self.weight.to_be_bytes());
        out.extend_from_slice(&self.sign.to_be_bytes());
        out.extend_from_slice(&self.dscale.to_be_bytes());
        for d in &self.digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(sign: u16, weight: i16, dscale: u16, digits: &[i16]) -> Option<Numeric> {
        Some(Numeric { sign, weight, dscale, digits: digits.to_vec() })
    }

    #[test]
    fn digits_group_by_ten_thousand_around_the_point() {
        assert_eq!(Numeric::parse("12345.678"), num(POSITIVE, 1, 3, &[1, 2345, 6780]));
        assert_eq!(Numeric::parse("10000"), num(POSITIVE, 1, 0, &[1]));
        assert_eq!(Numeric::parse("0.0001"), num(POSITIVE, -1, 4, &[1]));
        assert_eq!(Numeric::parse("0.00012"), num(POSITIVE, -1, 5, &[1, 2000]));
        assert_eq!(Numeric::parse("-1.50"), num(NEGATIVE, 0, 2, &[1, 5000]));
        assert_eq!(Numeric::parse("+007"), num(POSITIVE, 0, 0, &[7]));
        assert_eq!(Numeric::parse(".5"), num(POSITIVE, -1, 1, &[5000]));
        assert_eq!(Numeric::parse("5."), num(POSITIVE, 0, 0, &[5]));
        assert_eq!(
            Numeric::parse("12345678901234567890.123456789"),
            num(POSITIVE, 4, 9, &[1234, 5678, 9012, 3456, 7890, 1234, 5678, 9000])
        );
        assert_eq!(Numeric::parse("100000000"), num(POSITIVE, 2, 0, &[1]));
    }

    #[test]
    fn exponents_move_the_point_and_the_scale() {
        assert_eq!(Numeric::parse("-1.5E+3"), num(NEGATIVE, 0, 0, &[1500]));
        assert_eq!(Numeric::parse("1e3"), num(POSITIVE, 0, 0, &[1000]));
        assert_eq!(Numeric::parse("1.25e-2"), num(POSITIVE, -1, 4, &[125]));
        assert_eq!(Numeric::parse("1e300"), num(POSITIVE, 75, 0, &[1]));
        assert_eq!(Numeric::parse("1e-0003"), num(POSITIVE, -1, 3, &[10]));
    }

    #[test]
    fn zeros_and_specials() {
        assert_eq!(Numeric::parse("0"), num(POSITIVE, 0, 0, &[]));
        assert_eq!(Numeric::parse("-0.000"), num(POSITIVE, 0, 3, &[]));
        assert_eq!(Numeric::parse("0e5"), num(POSITIVE, 0, 0, &[]));
        assert_eq!(Numeric::parse("NaN"), num(NAN, 0, 0, &[]));
        assert_eq!(Numeric::parse("Infinity"), num(PLUS_INFINITY, 0, 0, &[]));
        assert_eq!(Numeric::parse("-Infinity"), num(MINUS_INFINITY, 0, 0, &[]));
    }

    #[test]
    fn what_postgresql_refuses_is_refused() {
        for bad in ["", "-", ".", "1.2.3", "12abc", "1e", "1e+", "e5", "1 000", "0x10", "inf", "--1", "1e99999999999"] {
            assert_eq!(Numeric::parse(bad), None, "{bad:?}");
        }
        // Beyond the storage format: scale above 16,383, weight above 32,767.
        assert!(Numeric::parse("1e-16383").is_some());
        assert_eq!(Numeric::parse("1e-16384"), None);
        assert_eq!(Numeric::parse("0e-16384"), None, "zero keeps its scale, and its limit");
        assert!(Numeric::parse("1e131071").is_some());
        assert_eq!(Numeric::parse("1e131072"), None);
    }

    #[test]
    fn binary_form_is_count_weight_sign_scale_digits() {
        let mut out = Vec::new();
        Numeric::parse("-12345.6").expect("number").write_binary(&mut out);
        assert_eq!(out, [0, 3, 0, 1, 0x40, 0, 0, 1, 0, 1, 0x09, 0x29, 0x17, 0x70]);
    }
}
