//! Frame time at 1,000 nodes on a 200×60 terminal; the budget is 16 ms (60 fps).
//!
//! Each iteration is one full `Terminal::draw`: layout, the tab's widgets and ratatui's buffer
//! diff, which is what the operator waits for on every tick.

use criterion::{criterion_group, criterion_main, Criterion};
use infermesh_deck::fixtures;
use infermesh_deck::model::Tab;
use infermesh_deck::render;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn bench(c: &mut Criterion) {
    // 1,001 nodes × 10 lines = 10,010 merged log lines to filter every frame.
    let base = fixtures::model(1_000, 10);
    let mut g = c.benchmark_group("render_1000_nodes_200x60");
    for (name, tab) in [
        ("nodes", Tab::Nodes),
        ("logs", Tab::Logs),
        ("topology", Tab::Topology),
    ] {
        let mut m = base.clone();
        m.tab = tab;
        let mut term = Terminal::new(TestBackend::new(200, 60)).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                // Tick the clock so "seen" ages change and the diff has real work each frame.
                m.now_ms += 1_000;
                term.draw(|f| render(&m, f)).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
