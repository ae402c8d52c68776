//! The `Decimal` scalar: exact money as a string in plain decimal notation
//! ("9.99", "-1", "40"), never a float. async-graphql's own decimal scalar
//! takes whatever `rust_decimal` parses ("+5", ".5", "1_000", "1e10") and
//! floats; this one refuses them, so an amount has one spelling.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use rust_decimal::Decimal;

/// Longer than any amount the domain takes, short enough to refuse junk early.
const MAX_DIGITS: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Money(pub Decimal);

/// Whether `text` is plain decimal notation: an optional minus, digits, and
/// optionally a point followed by digits.
fn plain(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    text.len() <= MAX_DIGITS && digits(whole) && fraction.is_none_or(digits)
}

fn refused() -> InputValueError<Money> {
    InputValueError::custom(
        "money is a string in plain decimal notation, like \"9.99\", or a whole number (no exponent, plus sign or separators)",
    )
}

#[Scalar(name = "Decimal")]
impl ScalarType for Money {
    fn parse(value: Value) -> InputValueResult<Self> {
        let text = match &value {
            Value::String(s) => s.clone(),
            // An integer literal is exact; a float is not money.
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => return Err(refused()),
        };
        if !plain(&text) {
            return Err(refused());
        }
        Decimal::from_str_exact(&text)
            .map(Money)
            .map_err(|_| refused())
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_decimal_notation_is_money() {
        for fine in ["9.99", "40", "-1", "0.001", "1000000.00"] {
            assert!(plain(fine), "{fine}");
        }
        for bad in [
            "+5", ".5", "5.", "1_000", "1e10", "1E2", "", "-", "1.2.3", " 1", "NaN", "٣",
        ] {
            assert!(!plain(bad), "{bad}");
        }
        assert!(Money::parse(Value::from(1.5)).is_err());
        assert_eq!(
            Money::parse(Value::from(7)).unwrap(),
            Money(Decimal::from(7))
        );
        let huge = "79228162514264337593543950336";
        assert!(
            Money::parse(Value::from(huge)).is_err(),
            "over Decimal's range"
        );
    }
}
