//! The gossip receive path from a key holder's bytes: a datagram is opened (any bytes; almost all
//! fail the tag), and — what an insider can really send — any plaintext is parsed as a packet and
//! its statements applied to a member table. Nothing panics, and the table stays within its caps.
#![no_main]

use std::time::Instant;

use infermesh_mesh::members::Table;
use infermesh_mesh::wire::{Message, Packet, Sealer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(&[7; 32]);
    let _ = sealer.open(data, 1_000_000);
    let Ok(packet) = serde_json::from_slice::<Packet>(data) else {
        return;
    };
    let mut table = Table::new("m".into(), "self".into(), 4, 2);
    let now = Instant::now();
    match packet.msg {
        Message::Update { records, beats } => {
            for r in &records {
                let _ = table.apply_record(r, now);
            }
            for b in &beats {
                let _ = table.apply_beat(b, now);
            }
        }
        Message::Syn { digest, .. } => {
            let _ = table.behind(&digest);
        }
    }
    assert!(table.members.len() <= 4);
});
