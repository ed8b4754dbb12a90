//! Whatever a peer gossips under the record key: decoding never panics, and a record that
//! decodes has finite capacities and re-encodes to one that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The record travels as a JSON string inside the signed envelope.
    let s = String::from_utf8_lossy(data);
    if let Some(r) = infermesh_mesh::decode_record(&s) {
        assert!(r.state.is_some());
        assert!(r.vram_gb.is_finite() && r.ram_gb.is_finite());
        assert_eq!(infermesh_mesh::decode_record(&r.encode()).as_ref(), Some(&r));
    }
});
