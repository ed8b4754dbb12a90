use super::*;

const EPOCH: u64 = 42;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn id_of(k: &SigningKey) -> String {
    node_id_from_public_key(k.verifying_key().as_bytes())
}

fn backend(id: &str, error: Option<&str>) -> BackendValidation {
    BackendValidation {
        backend_id: id.into(),
        model: "smollm2".into(),
        infer_ms: 120,
        tokens: 16,
        error: error.map(str::to_string),
    }
}

fn result_for(k: &SigningKey, epoch: u64) -> ValidationResult {
    ValidationResult::from_backends(id_of(k), epoch, vec![backend("b1", None)], 1_000)
}

fn signed(seed: u8, epoch: u64) -> SignedValidation {
    let k = key(seed);
    sign(result_for(&k, epoch), &k)
}

#[test]
fn node_id_matches_known_vector() {
    // sha256 of 32 zero bytes starts 66687aadf862bd77.
    assert_eq!(node_id_from_public_key(&[0; 32]), "66687aadf862bd77");
    let id = id_of(&key(1));
    assert_eq!(id.len(), 16);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}

#[test]
fn honest_result_verifies_and_survives_json() {
    let s = signed(1, EPOCH);
    assert_eq!(s.public_key.len(), 64);
    assert_eq!(s.signature.len(), 128);
    assert_eq!(verify(&s, &id_of(&key(1)), EPOCH), Ok(&s.result));
    let wire = serde_json::to_string(&s).unwrap();
    let back: SignedValidation = serde_json::from_str(&wire).unwrap();
    assert_eq!(back, s);
    assert!(verify(&back, &id_of(&key(1)), EPOCH).is_ok());
    // Non-ASCII and escapes must re-encode to the same signed bytes.
    let k = key(2);
    let mut r = result_for(&k, EPOCH);
    r.backends[0].model = "模型 \"q4\"\n\u{1}é".into();
    let s = sign(r, &k);
    let back: SignedValidation = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
    assert!(verify(&back, &id_of(&k), EPOCH).is_ok());
}

#[test]
fn signed_bytes_are_domain_separated_and_ordered() {
    let r = result_for(&key(1), 3);
    let bytes = signed_bytes(&r);
    let text = String::from_utf8(bytes).unwrap();
    let body = text.strip_prefix("infermesh-validation-v1\n").unwrap();
    let order = ["node_id", "epoch", "passed", "backends", "at_ms"];
    let pos: Vec<usize> = order
        .iter()
        .map(|f| body.find(&format!("\"{f}\"")).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{body}");
    // A bare signature over the JSON alone (no domain) must not verify.
    let k = key(1);
    let mut s = sign(r.clone(), &k);
    s.signature = hex::encode(k.sign(&serde_json::to_vec(&r).unwrap()).to_bytes());
    assert_eq!(verify(&s, &id_of(&k), 3), Err(Rejection::BadSignature));
}

#[test]
fn tampered_result_is_bad_signature() {
    let id = id_of(&key(1));
    type Tamper = fn(&mut ValidationResult);
    let tampers: [(&str, Tamper); 7] = [
        ("epoch", |r| r.epoch += 1),
        ("passed", |r| r.passed = !r.passed),
        ("infer_ms", |r| r.backends[0].infer_ms = 1),
        ("error", |r| r.backends[0].error = Some("x".into())),
        ("extra backend", |r| r.backends.push(backend("b2", None))),
        ("no backends", |r| r.backends.clear()),
        ("at_ms", |r| r.at_ms += 1),
    ];
    for (what, tamper) in tampers {
        let mut s = signed(1, EPOCH);
        tamper(&mut s.result);
        // Verify against the tampered epoch too, so only the signature can reject it.
        let epoch = s.result.epoch;
        assert_eq!(
            verify(&s, &id, epoch),
            Err(Rejection::BadSignature),
            "{what}"
        );
    }
}

#[test]
fn tampered_signature_is_bad_signature() {
    let id = id_of(&key(1));
    for byte in [0, 31, 32, 63] {
        let s = signed(1, EPOCH);
        let mut sig = hex::decode(&s.signature).unwrap();
        sig[byte] ^= 0x01;
        let s = SignedValidation {
            signature: hex::encode(sig),
            ..s
        };
        assert_eq!(
            verify(&s, &id, EPOCH),
            Err(Rejection::BadSignature),
            "byte {byte}"
        );
    }
}

#[test]
fn signed_by_another_key_is_rejected() {
    let me = key(1);
    let other = key(2);
    let my_id = id_of(&me);

    // Claims my key, signed by another: the signature does not verify.
    let mut forged = sign(result_for(&me, EPOCH), &other);
    forged.public_key = hex::encode(me.verifying_key().as_bytes());
    assert_eq!(verify(&forged, &my_id, EPOCH), Err(Rejection::BadSignature));

    // Honest signature by another key over a result naming me: the key is not mine.
    let theirs = sign(result_for(&me, EPOCH), &other);
    assert_eq!(
        verify(&theirs, &my_id, EPOCH),
        Err(Rejection::NodeIdMismatch {
            expected: my_id.clone(),
            key_id: id_of(&other),
            result_id: my_id.clone(),
        })
    );

    // Another node's complete, valid result replayed in my record.
    let replayed = signed(2, EPOCH);
    assert!(matches!(
        verify(&replayed, &my_id, EPOCH),
        Err(Rejection::NodeIdMismatch { .. })
    ));
    assert!(verify(&replayed, &id_of(&other), EPOCH).is_ok());
}

#[test]
fn wrong_node_id_is_rejected() {
    let k = key(1);
    // Signed honestly by the right key, but the result names someone else.
    let mut r = result_for(&k, EPOCH);
    r.node_id = "0000000000000000".into();
    let s = sign(r, &k);
    assert_eq!(
        verify(&s, &id_of(&k), EPOCH),
        Err(Rejection::NodeIdMismatch {
            expected: id_of(&k),
            key_id: id_of(&k),
            result_id: "0000000000000000".into(),
        })
    );
    // Published under a gossip id the key does not hash to.
    let s = signed(1, EPOCH);
    assert!(matches!(
        verify(&s, "ffffffffffffffff", EPOCH),
        Err(Rejection::NodeIdMismatch { .. })
    ));
}

#[test]
fn stale_or_future_epoch_is_wrong_epoch() {
    let id = id_of(&key(1));
    for (got, want) in [(EPOCH - 1, EPOCH), (0, EPOCH), (EPOCH + 1, EPOCH)] {
        let s = signed(1, got);
        assert_eq!(
            verify(&s, &id, want),
            Err(Rejection::WrongEpoch { got, want })
        );
        assert!(Rejection::WrongEpoch { got, want }
            .to_string()
            .contains(&want.to_string()));
    }
}

#[test]
fn malformed_key_or_signature() {
    let id = id_of(&key(1));
    let good = signed(1, EPOCH);
    let bad_hex = [
        ("", false),
        ("zz", false),
        ("ab", false),
        (&"0".repeat(63), false),
        (&"g".repeat(64), false),
        (&"0".repeat(66), false),
    ];
    for (k, _) in bad_hex {
        let s = SignedValidation {
            public_key: k.to_string(),
            ..good.clone()
        };
        assert!(
            matches!(verify(&s, &id, EPOCH), Err(Rejection::Malformed(_))),
            "key {k:?}"
        );
        let s = SignedValidation {
            signature: k.to_string(),
            ..good.clone()
        };
        assert!(
            matches!(verify(&s, &id, EPOCH), Err(Rejection::Malformed(_))),
            "sig {k:?}"
        );
    }
    // 32 bytes that are not a curve point.
    let not_a_point = (0u8..=255)
        .map(|b| [b; 32])
        .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
        .expect("some constant byte string is off the curve");
    let s = SignedValidation {
        public_key: hex::encode(not_a_point),
        ..good
    };
    let err = verify(&s, &id, EPOCH).unwrap_err();
    assert!(matches!(err, Rejection::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("malformed"));
}

#[test]
fn passing_follows_backends() {
    let k = key(1);
    let id = id_of(&k);
    let mixed = ValidationResult::from_backends(
        id.clone(),
        1,
        vec![backend("b1", Some("timeout")), backend("b2", None)],
        0,
    );
    assert!(mixed.passed && mixed.is_passing());
    let admitted: Vec<_> = mixed
        .admitted_backends()
        .map(|b| b.backend_id.as_str())
        .collect();
    assert_eq!(admitted, ["b2"]);
    let failed = ValidationResult::from_backends(id.clone(), 1, vec![backend("b1", Some("x"))], 0);
    assert!(!failed.passed && !failed.is_passing());
    let empty = ValidationResult::from_backends(id.clone(), 1, vec![], 0);
    assert!(!empty.passed);
    let lying = ValidationResult {
        passed: true,
        ..failed
    };
    assert!(
        !lying.is_passing(),
        "a claimed pass needs a backend that answered"
    );
}

#[test]
fn validation_due_only_in_round_once_per_epoch() {
    let spec = ScheduleSpec {
        genesis_ms: 1_000,
        epoch_ms: 100,
        round_ms: 10,
    };
    let cases: [(i64, Option<u64>, Option<u64>); 8] = [
        (999, None, None),
        (1_000, None, Some(0)),
        (1_009, None, Some(0)),
        (1_009, Some(0), None),
        (1_010, None, None),
        (1_050, None, None),
        (1_100, Some(0), Some(1)),
        (1_105, Some(1), None),
    ];
    for (now, published, want) in cases {
        assert_eq!(
            validation_due(Some(&spec), now, published),
            want,
            "now={now}"
        );
    }
    assert_eq!(validation_due(None, 1_000, None), None);
    let invalid = ScheduleSpec {
        round_ms: 100,
        ..spec
    };
    assert_eq!(validation_due(Some(&invalid), 1_000, None), None);
}
