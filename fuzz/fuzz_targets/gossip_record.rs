//! Whatever a peer gossips under the record key: decoding never panics, and a record that
//! decodes re-encodes to one that decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // chitchat hands the value over as a String.
    let s = String::from_utf8_lossy(data);
    if let Some(r) = infermesh_mesh::decode_record(&s) {
        assert!(r.state.is_some());
        assert!(infermesh_mesh::decode_record(&r.encode()).is_some());
    }
});
