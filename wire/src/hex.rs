//! Lowercase hex, the one spelling of a digest in the contract (key hashes,
//! `body_sha256`, request ids).

/// Lowercase hex of some bytes (a SHA-256 digest gives 64 characters).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            let digit = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
            out.push(char::from(digit));
        }
    }
    out
}

/// Parses exactly 64 lowercase hex digits into a digest. Uppercase hex,
/// base64, or any other spelling is refused: the contract names one format,
/// and accepting several would make a signed claim ambiguous.
pub fn parse_lower_hex(text: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        match pair {
            [hi, lo] => *slot = (nibble(*hi)? << 4) | nibble(*lo)?,
            _ => return None,
        }
    }
    Some(out)
}

/// Whether `text` is 64 lowercase hex digits (a key hash on the wire).
pub fn is_lower_hex_digest(text: &str) -> bool {
    parse_lower_hex(text).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_only_lowercase_is_accepted() {
        let digest: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        let hex = to_hex(&digest);
        assert_eq!(hex.len(), 64);
        assert_eq!(parse_lower_hex(&hex), Some(digest));
        assert_eq!(parse_lower_hex(&hex.to_uppercase()), None);
        assert_eq!(parse_lower_hex(&hex[..63]), None);
        assert_eq!(parse_lower_hex(&format!("{hex}0")), None);
        assert_eq!(parse_lower_hex(&"g".repeat(64)), None);
        // Non-ASCII whose byte length is 64 must not be mistaken for hex.
        assert_eq!(parse_lower_hex(&"é".repeat(32)), None);
        assert!(is_lower_hex_digest(&hex));
        assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
