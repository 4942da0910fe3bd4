//! Tests of sealing: the round trip, what binds a value to its row and its
//! master key, rotation, and what configuration is refused.

use super::*;

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn master(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; MASTER_KEY_BYTES])
}

fn ring(byte: u8) -> Keyring {
    Keyring::new(master(byte), Vec::new())
}

fn secret() -> SigningSecret {
    SigningSecret::generate().unwrap()
}

#[test]
fn a_sealed_secret_opens_for_its_row() {
    let keyring = ring(1);
    let secret = secret();
    let sealed = keyring.seal(&secret, HASH_A).unwrap();
    assert_eq!(keyring.open(&sealed, HASH_A).unwrap(), secret);
    // The stored text names its version and master key, and holds no plaintext.
    let text = sealed.as_str();
    assert!(
        text.starts_with(&format!("v1:{}:", master(1).id())),
        "{text}"
    );
    assert!(!text.contains(secret.expose()), "{text}");
    assert!(!text.contains(&secret.expose()[4..20]), "{text}");
    assert!(text.len() <= 255, "fits the column: {}", text.len());
    // A fresh nonce each time: the same secret seals differently.
    let again = keyring.seal(&secret, HASH_A).unwrap();
    assert_ne!(sealed, again);
    let nonce = |s: &SealedSecret| s.as_str().split(':').nth(2).unwrap().to_string();
    assert_ne!(nonce(&sealed), nonce(&again));
    assert_eq!(URL_SAFE_NO_PAD.decode(nonce(&sealed)).unwrap().len(), 12);
}

#[test]
fn a_value_copied_to_another_row_does_not_open() {
    let keyring = ring(1);
    let sealed = keyring.seal(&secret(), HASH_A).unwrap();
    let error = keyring.open(&sealed, HASH_B).unwrap_err();
    assert!(matches!(error, SealError::NotAuthentic { .. }), "{error:?}");
}

#[test]
fn a_wrong_master_key_does_not_open() {
    let sealed = ring(1).seal(&secret(), HASH_A).unwrap();
    // Another master key: named by id, so it is not even tried.
    let error = ring(2).open(&sealed, HASH_A).unwrap_err();
    assert_eq!(
        error,
        SealError::UnknownMasterKey {
            id: master(1).id().to_string()
        }
    );
    assert!(error.to_string().contains(master(1).id()), "{error}");
    // No master key at all.
    assert_eq!(
        Keyring::empty().open(&sealed, HASH_A).unwrap_err(),
        SealError::NoMasterKey
    );
    assert_eq!(
        Keyring::empty().seal(&secret(), HASH_A).unwrap_err(),
        SealError::NoMasterKey
    );
    // A wrong key that claims the right id is caught by the tag.
    let forged_id = Keyring::new(
        MasterKey {
            id: master(1).id().to_string(),
            key: [2; MASTER_KEY_BYTES],
        },
        Vec::new(),
    );
    assert!(matches!(
        forged_id.open(&sealed, HASH_A).unwrap_err(),
        SealError::NotAuthentic { .. }
    ));
}

#[test]
fn corrupt_values_are_refused_not_opened_as_empty() {
    let keyring = ring(1);
    let sealed = keyring.seal(&secret(), HASH_A).unwrap();
    let text = sealed.as_str().to_string();
    let mut flipped = text.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (bad, malformed) in [
        (String::new(), true),
        ("v1:x".to_string(), true),
        (text.replacen("v1:", "v2:", 1), true),
        (format!("{text}:extra"), true),
        (text.replacen(master(1).id(), "ZZ", 1), true),
        (flipped, false),
    ] {
        let error = keyring
            .open(&SealedSecret::from_stored(bad.clone()), HASH_A)
            .unwrap_err();
        assert_eq!(
            matches!(error, SealError::Malformed(_)),
            malformed,
            "{bad:?}: {error:?}"
        );
    }
}

#[test]
fn rotation_opens_with_either_key_and_reseals_under_the_new_one() {
    let secret = secret();
    let old = ring(1);
    let sealed_old = old.seal(&secret, HASH_A).unwrap();
    let rotating = Keyring::new(master(2), vec![master(1)]);
    // While rotating, both open.
    assert_eq!(rotating.open(&sealed_old, HASH_A).unwrap(), secret);
    let resealed = rotating.reseal(&sealed_old, HASH_A).unwrap().unwrap();
    assert_eq!(resealed.master_key_id(), Some(master(2).id()));
    assert_eq!(rotating.reseal(&resealed, HASH_A).unwrap(), None);
    // After it, the new master key alone opens the resealed value.
    let new = ring(2);
    assert_eq!(new.open(&resealed, HASH_A).unwrap(), secret);
    assert!(matches!(
        new.open(&sealed_old, HASH_A),
        Err(SealError::UnknownMasterKey { .. })
    ));
    // Resealing keeps the row binding.
    assert!(rotating.open(&resealed, HASH_B).is_err());
    // A value the keyring cannot open is not resealed.
    assert!(new.reseal(&sealed_old, HASH_A).is_err());
}

#[test]
fn master_keys_are_64_hex_digits_and_errors_never_echo_them() {
    let hex = "0123456789abcdef".repeat(4);
    let parsed = MasterKey::parse(&hex, MASTER_KEY_ENV).unwrap();
    assert_eq!(parsed.id().len(), 16);
    assert_eq!(
        MasterKey::parse(&hex.to_uppercase(), "x").unwrap().id(),
        parsed.id()
    );
    assert_eq!(
        MasterKey::parse(&format!(" {hex}\n"), "x").unwrap().id(),
        parsed.id()
    );
    let shown = format!("{parsed:?}");
    assert!(!shown.contains(&hex), "{shown}");
    for bad in [
        "too-short-secret-value".to_string(),
        hex[..62].to_string(),
        format!("{hex}00"),
        "g".repeat(64),
        format!("0x{}", &hex[..62]),
    ] {
        let error = Keyring::from_values(Some(&bad), None).unwrap_err();
        assert!(error.contains(MASTER_KEY_ENV), "{error}");
        assert!(error.contains("64 hex digits"), "{error}");
        assert!(!error.contains(&bad), "the value was echoed: {error}");
    }
    let error =
        Keyring::from_values(Some(&hex), Some(&format!("{hex},nope-not-a-key"))).unwrap_err();
    assert!(
        error.contains("entry 2 of TOLLGATE_PREVIOUS_MASTER_KEY"),
        "{error}"
    );
    assert!(!error.contains("nope-not-a-key"), "{error}");
    let error = Keyring::from_values(None, Some(&hex)).unwrap_err();
    assert!(error.contains("TOLLGATE_MASTER_KEY is not"), "{error}");
    assert!(Keyring::from_values(Some(""), Some(""))
        .unwrap()
        .current()
        .is_none());
}

#[test]
fn the_keyring_is_described_by_ids_only() {
    let hex = "ab".repeat(32);
    let keyring = Keyring::from_values(Some(&hex), Some(&"cd".repeat(32))).unwrap();
    let shown = keyring.describe();
    assert!(shown.starts_with("set (id "), "{shown}");
    assert!(shown.contains("previous ids "), "{shown}");
    assert!(!shown.contains(&hex), "{shown}");
    assert!(!format!("{keyring:?}").contains(&hex));
    assert_eq!(Keyring::empty().describe(), "not set");
    let sealed = ring(1).seal(&secret(), HASH_A).unwrap();
    assert_eq!(
        format!("{sealed:?}"),
        format!("SealedSecret(v1, master key {})", master(1).id())
    );
}
