//! Admin request bodies (`POST /admin/v1/nodes`, `PUT /admin/v1/nodes/:id`): decoding never
//! panics, a refusal says why, and an accepted config round-trips.
#![no_main]

use infermesh_state::backend_config::decode_backend as parse_backend;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks POST (no path id) or PUT (path id "x").
    let (path_id, body) = match data.split_first() {
        Some((b, rest)) if b % 2 == 1 => (Some("x"), rest),
        _ => (None, data),
    };
    match parse_backend(body, path_id) {
        Ok(cfg) => {
            let again = parse_backend(&serde_json::to_vec(&cfg).unwrap(), Some(&cfg.id));
            assert_eq!(again, Ok(cfg));
        }
        Err(e) => assert!(!e.trim().is_empty()),
    }
});
