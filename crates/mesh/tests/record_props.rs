//! Property tests of the gossip record decoder: whatever a peer (another build, a buggy or hostile
//! writer, a corrupted datagram) puts under the record key, decoding never panics; garbage is
//! dropped (`None`); a record this build wrote comes back equal. Case counts are bounded so the
//! suite stays fast in CI (`PROPTEST_CASES` overrides).

use infermesh_mesh::{decode_record, NodeRecord};
use infermesh_state::{NodeState, ScheduleSpec};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field name a record has, or any other.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "v",
            "node_id",
            "name",
            "api_addr",
            "state",
            "role",
            "models",
            "vram_gb",
            "ram_gb",
            "version",
            "load",
            "validation",
            "schedule",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,10}",
    ]
}

/// Objects shaped like records, with each field's value of any type.
fn record_like() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(field(), any_json(), 0..14)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn state() -> impl Strategy<Value = NodeState> {
    prop::sample::select(NodeState::ALL.to_vec())
}

/// Records this build publishes (finite floats; validation results have their own tests).
fn record() -> impl Strategy<Value = NodeRecord> {
    (
        (".{0,16}", ".{0,16}", ".{0,24}", state()),
        (
            prop::option::of(prop::sample::select(vec!["client", "worker"])),
            prop::collection::vec(".{0,12}", 0..4),
            -1.0e6f32..1.0e6,
            0.0f32..1.0e6,
        ),
        (
            ".{0,8}",
            any::<u32>(),
            prop::option::of(any::<(i64, i64, i64)>()),
        ),
    )
        .prop_map(
            |(
                (node_id, name, api_addr, state),
                (role, models, vram_gb, ram_gb),
                (version, load, schedule),
            )| {
                NodeRecord {
                    node_id,
                    name,
                    api_addr,
                    state: Some(state),
                    role: role.map(str::to_string),
                    models,
                    vram_gb,
                    ram_gb,
                    version,
                    load,
                    schedule: schedule.map(|(genesis_ms, epoch_ms, round_ms)| ScheduleSpec {
                        genesis_ms,
                        epoch_ms,
                        round_ms,
                    }),
                    ..NodeRecord::default()
                }
            },
        )
}

/// 256 cases per property unless `PROPTEST_CASES` says otherwise (a longer local run).
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = decode_record(&s);
    }

    #[test]
    fn arbitrary_bytes_read_lossily_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
        // chitchat hands us a String; a peer's bytes arrive as whatever UTF-8 they make.
        let _ = decode_record(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn json_that_is_not_an_object_is_dropped(v in any_json()) {
        let r = decode_record(&v.to_string());
        if !v.is_object() {
            prop_assert_eq!(r, None);
        }
    }

    /// Any object decodes or is dropped without panicking, and what decodes always has a state
    /// and re-encodes to a record that decodes to itself.
    #[test]
    fn record_shaped_objects_decode_to_a_fixed_point(v in record_like()) {
        if let Some(r) = decode_record(&v.to_string()) {
            prop_assert!(r.state.is_some());
            prop_assert!(r.vram_gb.is_finite() && r.ram_gb.is_finite());
            let again = decode_record(&r.encode());
            prop_assert_eq!(again.as_ref(), Some(&r), "{}", r.encode());
        }
    }

    #[test]
    fn records_round_trip(r in record()) {
        prop_assert_eq!(decode_record(&r.encode()), Some(r));
    }

    /// A record damaged in transit (cut short, a byte flipped) never panics the reader.
    #[test]
    fn damaged_records_never_panic(r in record(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let s = r.encode();
        let mut bytes = s.clone().into_bytes();
        let i = flip.0.index(bytes.len());
        bytes[i] ^= flip.1;
        let _ = decode_record(&String::from_utf8_lossy(&bytes));
        let end = cut.index(s.len() + 1);
        let _ = decode_record(&String::from_utf8_lossy(&s.as_bytes()[..end]));
    }
}

/// A number outside f32's range must not decode as infinity: it would show as `null` in
/// `/api/status` and be summed into capacity as unbounded.
#[test]
fn decoded_floats_are_finite() {
    for raw in [r#"{"vram_gb": -1e39}"#, r#"{"ram_gb": 1e300}"#] {
        let r = decode_record(raw).expect("a record");
        assert!(
            r.vram_gb.is_finite() && r.ram_gb.is_finite(),
            "{raw} → vram_gb {} ram_gb {}",
            r.vram_gb,
            r.ram_gb
        );
    }
}
