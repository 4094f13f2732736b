//! The docs.kie.ai webhook signature scheme against vectors computed outside this code with
//! `openssl`, the tolerance window at its exact edges, key rotation, malformed headers, and
//! redaction of secrets in Debug output. Plus the shared-token verifier.

use std::time::Duration;

use suno_callbacks::signature::{
    DEFAULT_TOLERANCE, HmacKey, HmacVerifier, SignatureError, TokenError, TokenVerifier, VerifierConfigError, sign,
};

/// (key, task id, timestamp header as sent, expected signature)
const VECTORS: [(&str, &str, &str, &str); 3] = [
    // printf '%s' '3e63b4cc88d52611159371f6af5571e7.1700000000' | openssl dgst -sha256 -hmac 'test-hmac-key' -binary | base64
    ("test-hmac-key", "3e63b4cc88d52611159371f6af5571e7", "1700000000", "fyAhRw87Mm2WhPBWHy9YpqukNgwBwwkl95+RMaqnO1c="),
    // printf '%s' '2fac****9f72.1753958521' | openssl dgst -sha256 -hmac 'rotated-key-2' -binary | base64
    ("rotated-key-2", "2fac****9f72", "1753958521", "Vhew6IvwUpm6Ow7upuQYhEgtsjl+lri8hwDqfpdERn8="),
    // The header is signed as sent, leading zeros included:
    // printf '%s' 'e649edb7abfd759285bd41a47a634b10.0001753958521' | openssl dgst -sha256 -hmac 'k' -binary | base64
    ("k", "e649edb7abfd759285bd41a47a634b10", "0001753958521", "abQ0Fi8HhUoZyxNcBTwbfa8fYsCpU9pXLymNmqLCVCI="),
];

/// The docs.kie.ai page's sample signature (its key and inputs are not published): used to
/// check that the documented format is read as a well-formed signature.
const DOCS_SAMPLE_SIGNATURE: &str = "KxDlpbbq0GDOKqm0+FuJpJWTzY8baHSjhEt4kwElqQI=";

fn verifier(keys: &[&str]) -> HmacVerifier {
    HmacVerifier::new(keys.iter().map(|k| HmacKey::new(*k))).unwrap()
}

#[test]
fn known_answer_vectors_verify_and_sign() {
    for (key, task, timestamp, expected) in VECTORS {
        let now: i64 = timestamp.parse().unwrap();
        assert_eq!(verifier(&[key]).verify(task, Some(timestamp), Some(expected), now), Ok(()), "{task}");
        if !timestamp.starts_with('0') {
            assert_eq!(sign(key.as_bytes(), task, now), expected, "{task}");
        }
    }
}

#[test]
fn the_documented_sample_is_well_formed_but_matches_no_key_of_ours() {
    let result =
        verifier(&["test-hmac-key"]).verify("any", Some("1700000000"), Some(DOCS_SAMPLE_SIGNATURE), 1_700_000_000);
    assert_eq!(result, Err(SignatureError::NoKeyMatches));
}

#[test]
fn tolerance_is_inclusive_in_both_directions() {
    let (key, task, timestamp, signature) = VECTORS[0];
    let sent: i64 = timestamp.parse().unwrap();
    let v = verifier(&[key]).with_tolerance(Duration::from_secs(120));
    let at = |now| v.verify(task, Some(timestamp), Some(signature), now);
    assert_eq!(at(sent + 120), Ok(()));
    assert_eq!(at(sent - 120), Ok(()));
    assert_eq!(at(sent + 121), Err(SignatureError::TooOld { age_secs: 121, tolerance_secs: 120 }));
    assert_eq!(at(sent - 121), Err(SignatureError::TooFarInFuture { ahead_secs: 121, tolerance_secs: 120 }));
    // Extreme clocks do not overflow.
    assert!(matches!(at(i64::MAX), Err(SignatureError::TooOld { .. })));
    assert!(matches!(at(i64::MIN), Err(SignatureError::TooFarInFuture { .. })));
}

/// Outside the window the MAC still tells a key's signature from any other: the vectors
/// verify whatever their age, a wrong task id, key or malformed header does not.
#[test]
fn a_signature_verifies_at_any_age_on_request() {
    for (key, task, timestamp, signature) in VECTORS {
        assert_eq!(verifier(&[key]).signed_at(task, Some(timestamp), Some(signature)).map(drop), Ok(()), "{task}");
        let other = verifier(&["another-key"]).signed_at(task, Some(timestamp), Some(signature)).map(drop);
        assert_eq!(other, Err(SignatureError::NoKeyMatches));
        let moved = verifier(&[key]).signed_at("another-task", Some(timestamp), Some(signature)).map(drop);
        assert_eq!(moved, Err(SignatureError::NoKeyMatches));
    }
    let (key, task, timestamp, signature) = VECTORS[0];
    let v = verifier(&[key]);
    assert_eq!(v.signed_at(task, None, Some(signature)).map(drop), Err(SignatureError::MissingTimestamp));
    assert_eq!(v.signed_at(task, Some("-1"), Some(signature)).map(drop), Err(SignatureError::MalformedTimestamp));
    assert_eq!(v.signed_at(task, Some(timestamp), Some("abc")).map(drop), Err(SignatureError::MalformedSignature));
}

#[test]
fn default_tolerance_is_300_seconds() {
    let (key, task, timestamp, signature) = VECTORS[0];
    let sent: i64 = timestamp.parse().unwrap();
    let v = verifier(&[key]);
    assert_eq!(v.tolerance(), DEFAULT_TOLERANCE);
    assert_eq!(DEFAULT_TOLERANCE, Duration::from_secs(300));
    assert_eq!(v.verify(task, Some(timestamp), Some(signature), sent + 300), Ok(()));
    assert_eq!(v.verify(task, Some(timestamp), Some(signature), sent - 300), Ok(()));
    assert!(matches!(v.verify(task, Some(timestamp), Some(signature), sent + 301), Err(SignatureError::TooOld { .. })));
    assert!(matches!(
        v.verify(task, Some(timestamp), Some(signature), sent - 301),
        Err(SignatureError::TooFarInFuture { .. })
    ));
}

#[test]
fn any_configured_key_may_match() {
    let (key, task, timestamp, signature) = VECTORS[1];
    let now = timestamp.parse().unwrap();
    assert_eq!(verifier(&["old-key", key]).verify(task, Some(timestamp), Some(signature), now), Ok(()));
    assert_eq!(verifier(&[key, "old-key"]).verify(task, Some(timestamp), Some(signature), now), Ok(()));
    assert_eq!(
        verifier(&["old-key", "other"]).verify(task, Some(timestamp), Some(signature), now),
        Err(SignatureError::NoKeyMatches)
    );
}

/// Which key signed: its place among the keys (the first of equal ones), so an operator can
/// tell when an old key stops being used.
#[test]
fn the_key_that_signed_is_named_by_its_place() {
    let (key, task, timestamp, signature) = VECTORS[1];
    let now = timestamp.parse().unwrap();
    let by = |keys: &[&str]| verifier(keys).verify_by(task, Some(timestamp), Some(signature), now);
    assert_eq!(by(&[key]), Ok(1));
    assert_eq!(by(&["old-key", key]), Ok(2));
    assert_eq!(by(&["a", "b", key, key]), Ok(3));
    assert_eq!(by(&["a", "b"]), Err(SignatureError::NoKeyMatches));
    assert_eq!(
        verifier(&[key]).verify_by(task, Some(timestamp), Some(signature), now + 301).unwrap_err().to_string(),
        SignatureError::TooOld { age_secs: 301, tolerance_secs: 300 }.to_string()
    );
}

#[test]
fn a_signature_is_bound_to_its_task_id_and_timestamp() {
    let (key, task, timestamp, signature) = VECTORS[0];
    let now: i64 = timestamp.parse().unwrap();
    let v = verifier(&[key]);
    assert_eq!(v.verify("2fac****9f72", Some(timestamp), Some(signature), now), Err(SignatureError::NoKeyMatches));
    assert_eq!(v.verify(task, Some("1700000001"), Some(signature), now), Err(SignatureError::NoKeyMatches));
    // The same instant written differently is a different signed string.
    assert_eq!(v.verify(task, Some("01700000000"), Some(signature), now), Err(SignatureError::NoKeyMatches));
}

#[test]
fn missing_and_malformed_headers_are_told_apart() {
    let (key, task, timestamp, signature) = VECTORS[0];
    let now: i64 = timestamp.parse().unwrap();
    let v = verifier(&[key]);
    assert_eq!(v.verify(task, None, Some(signature), now), Err(SignatureError::MissingTimestamp));
    assert_eq!(v.verify(task, Some(""), Some(signature), now), Err(SignatureError::MissingTimestamp));
    assert_eq!(v.verify(task, None, None, now), Err(SignatureError::MissingTimestamp));
    assert_eq!(v.verify(task, Some(timestamp), None, now), Err(SignatureError::MissingSignature));
    assert_eq!(v.verify(task, Some(timestamp), Some(""), now), Err(SignatureError::MissingSignature));
    for bad in [
        "-1700000000",
        "+1700000000",
        "1700000000.5",
        " 1700000000",
        "1700000000 ",
        "17e8",
        "abc",
        "１７",
        "9999999999999999",
        "99999999999999999999999",
    ] {
        assert_eq!(v.verify(task, Some(bad), Some(signature), now), Err(SignatureError::MalformedTimestamp), "{bad:?}");
    }
    let unpadded = signature.trim_end_matches('=');
    let url_safe = "fyAhRw87Mm2WhPBWHy9YpqukNgwBwwkl95-RMaqnO1c=";
    let short = "c2hvcnQ=";
    let long = "A".repeat(4096);
    for bad in
        [unpadded, url_safe, short, "not base64!", long.as_str(), " fyAhRw87Mm2WhPBWHy9YpqukNgwBwwkl95+RMaqnO1c="]
    {
        assert_eq!(v.verify(task, Some(timestamp), Some(bad), now), Err(SignatureError::MalformedSignature), "{bad:?}");
    }
    // Hex of the right digest is not the documented encoding either.
    let hex = "7f2021470f3b326d9684f0561f2f58a6aba4360c01c30925f79f9131aaa73b57";
    assert_eq!(v.verify(task, Some(timestamp), Some(hex), now), Err(SignatureError::MalformedSignature));
}

#[test]
fn empty_configuration_is_refused() {
    assert_eq!(HmacVerifier::new(Vec::new()).unwrap_err(), VerifierConfigError::NoKeys);
    assert_eq!(
        HmacVerifier::new(vec![HmacKey::new("a"), HmacKey::new("")]).unwrap_err(),
        VerifierConfigError::EmptyKey { position: 2 }
    );
    assert_eq!(TokenVerifier::new("").unwrap_err(), VerifierConfigError::EmptyToken);
    assert_eq!(TokenVerifier::any_of(Vec::<String>::new()).unwrap_err(), VerifierConfigError::NoTokens);
    assert_eq!(
        TokenVerifier::any_of(["new-token", ""]).unwrap_err(),
        VerifierConfigError::EmptyTokenAt { position: 2 }
    );
}

#[test]
fn debug_and_errors_never_show_secrets() {
    let secret = "super-secret-key-material";
    let key = HmacKey::new(secret);
    assert_eq!(format!("{key:?}"), "HmacKey(<redacted>)");
    let v = verifier(&[secret, "second-secret"]);
    let shown = format!("{v:?} {v:#?}");
    assert!(!shown.contains(secret) && !shown.contains("second-secret"), "{shown}");
    assert!(!shown.contains(&format!("{:?}", secret.as_bytes())), "{shown}");
    let token = TokenVerifier::new(secret).unwrap();
    let shown = format!("{token:?} {token:#?}");
    assert!(!shown.contains(secret), "{shown}");
    let tokens = TokenVerifier::any_of([secret, "second-secret"]).unwrap();
    let shown = format!("{tokens:?} {tokens:#?}");
    assert!(!shown.contains(secret) && !shown.contains("second-secret"), "{shown}");

    let (_, task, timestamp, signature) = VECTORS[0];
    let now: i64 = timestamp.parse().unwrap();
    for result in [
        v.verify(task, Some(timestamp), Some(signature), now),
        v.verify(task, Some("x"), Some(signature), now),
        v.verify(task, Some(timestamp), Some("x"), now),
        v.verify(task, Some(timestamp), Some(signature), now + 10_000),
    ] {
        let message = result.unwrap_err().to_string();
        assert!(!message.contains(secret) && !message.contains(signature), "{message}");
    }
}

#[test]
fn tokens_compare_whole() {
    let t = TokenVerifier::new("s3cr3t-token").unwrap();
    assert_eq!(t.verify(Some("s3cr3t-token")), Ok(()));
    assert_eq!(t.verify(None), Err(TokenError::Missing));
    assert_eq!(t.verify(Some("")), Err(TokenError::Missing));
    for wrong in ["s3cr3t-toke", "s3cr3t-token ", "S3CR3T-TOKEN", "s3cr3t-tokenx", "x"] {
        assert_eq!(t.verify(Some(wrong)), Err(TokenError::Mismatch), "{wrong:?}");
    }
}

#[test]
fn any_listed_token_is_accepted() {
    // Rotation: tasks submitted with the old token still call back to it.
    let t = TokenVerifier::any_of(["new-s3cr3t-token", "old-s3cr3t-token"]).unwrap();
    assert_eq!(t.verify(Some("new-s3cr3t-token")), Ok(()));
    assert_eq!(t.verify(Some("old-s3cr3t-token")), Ok(()));
    assert_eq!(t.verify(None), Err(TokenError::Missing));
    assert_eq!(t.verify(Some("")), Err(TokenError::Missing));
    for wrong in ["third-s3cr3t-token", "new-s3cr3t-toke", "old-s3cr3t-token ", "OLD-S3CR3T-TOKEN", "x"] {
        assert_eq!(t.verify(Some(wrong)), Err(TokenError::Mismatch), "{wrong:?}");
    }
    // The order does not matter, and a list of one is the single token.
    let reversed = TokenVerifier::any_of(vec![String::from("old-s3cr3t-token"), String::from("new-s3cr3t-token")]);
    assert_eq!(reversed.unwrap().verify(Some("new-s3cr3t-token")), Ok(()));
    let one = TokenVerifier::any_of(["s3cr3t-token"]).unwrap();
    assert_eq!(one.verify(Some("s3cr3t-token")), Ok(()));
    assert_eq!(one.verify(Some("new-s3cr3t-token")), Err(TokenError::Mismatch));
    // Which one: its place in the list.
    assert_eq!(t.verify_by(Some("new-s3cr3t-token")), Ok(1));
    assert_eq!(t.verify_by(Some("old-s3cr3t-token")), Ok(2));
    assert_eq!(t.verify_by(Some("x")), Err(TokenError::Mismatch));
}
