//! Integer fields of request bodies, read the way JSON means them.
//!
//! JSON has one kind of number: `5` and `5.0` are the same value, and JSON Schema's `integer`
//! (which the OpenAPI document declares) admits both. serde's integer types refuse `5.0`;
//! these deserializers take an integer written with a zero fraction too, and still refuse any
//! other fraction and any value out of the field's range.

use serde::de::Error;
use serde::{Deserialize, Deserializer};
use serde_json::Number;

fn from_number<T: TryFrom<i64>, E: Error>(n: &Number) -> Result<T, E> {
    let whole = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        // The range check keeps the cast exact: every integral f64 in it is an i64.
        (None, Some(f)) if f.fract() == 0.0 && (-9.0e15..=9.0e15).contains(&f) => Some(f as i64),
        _ => None,
    };
    whole
        .and_then(|i| T::try_from(i).ok())
        .ok_or_else(|| E::custom(format!("expected an integer in range, not {n}")))
}

/// `#[serde(deserialize_with = "unhidra_proto::number::integer")]`.
pub fn integer<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    from_number(&Number::deserialize(d)?)
}

/// The same for an optional field (with `#[serde(default)]`): `null` is `None`.
pub fn optional_integer<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<Number>::deserialize(d)?
        .map(|n| from_number(&n))
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::integer")]
        seq: i64,
        #[serde(default, deserialize_with = "super::optional_integer")]
        ttl: Option<u32>,
    }

    fn parse(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integers_may_carry_a_zero_fraction_and_nothing_else() {
        let b = parse(r#"{"seq": 71680394.0, "ttl": 60.0}"#).unwrap();
        assert_eq!((b.seq, b.ttl), (71_680_394, Some(60)));
        let b = parse(r#"{"seq": -3}"#).unwrap();
        assert_eq!((b.seq, b.ttl), (-3, None));
        assert_eq!(parse(r#"{"seq": 1, "ttl": null}"#).unwrap().ttl, None);
        for bad in [
            r#"{"seq": 1.5}"#,
            r#"{"seq": "1"}"#,
            r#"{"seq": 1e300}"#,
            r#"{"seq": 1, "ttl": -1}"#,
            r#"{"seq": 1, "ttl": 4294967296}"#,
            r#"{"seq": 1, "ttl": 0.5}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
