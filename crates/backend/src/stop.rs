//! Turning a stream of token bytes into text that is safe to emit.
//!
//! Two things make naive streaming wrong: a token can end in the middle of a UTF-8 character, and
//! a stop sequence can span several tokens. [`TextGate`] holds back exactly the bytes that might
//! still turn out to be part of either, and nothing more, so streamed and non-streamed output are
//! byte-identical.

/// Outcome of feeding one token's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Text that can be sent to the client now.
    pub emit: String,
    /// A stop sequence was completed: generation must end (the sequence itself is not emitted).
    pub stopped: bool,
}

#[derive(Debug, Default)]
pub struct TextGate {
    stops: Vec<String>,
    /// Undecoded bytes (an incomplete UTF-8 sequence at the end).
    bytes: Vec<u8>,
    /// Decoded text not yet emitted because it could be the start of a stop sequence.
    held: String,
}

impl TextGate {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Default::default()
        }
    }

    pub fn feed(&mut self, piece: &[u8]) -> Feed {
        self.bytes.extend_from_slice(piece);
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            // An invalid byte that is not merely an incomplete tail will never decode: replace it
            // rather than hold it (and everything after it) forever.
            Err(e) if e.error_len().is_some() => {
                let text = String::from_utf8_lossy(&self.bytes).into_owned();
                self.bytes.clear();
                return self.push_text(&text);
            }
            Err(e) => e.valid_up_to(),
        };
        let text =
            String::from_utf8(self.bytes.drain(..valid).collect()).expect("validated utf-8 prefix");
        self.push_text(&text)
    }

    fn push_text(&mut self, text: &str) -> Feed {
        self.held.push_str(text);
        if let Some(pos) = self.earliest_stop() {
            let emit = self.held[..pos].to_string();
            self.held.clear();
            return Feed {
                emit,
                stopped: true,
            };
        }
        let keep = self.longest_stop_prefix_suffix();
        let cut = self.held.len() - keep;
        let emit = self.held[..cut].to_string();
        self.held.drain(..cut);
        Feed {
            emit,
            stopped: false,
        }
    }

    /// Everything still held, at the end of generation.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.bytes)));
        out
    }

    fn earliest_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.held.find(s)).min()
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop sequence,
    /// measured at a char boundary.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            for (i, _) in self.held.char_indices() {
                let suffix = &self.held[i..];
                if suffix.len() > best && suffix.len() < stop.len() && stop.starts_with(suffix) {
                    best = suffix.len();
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut g = TextGate::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let f = g.feed(p);
            out.push_str(&f.emit);
            if f.stopped {
                return (out, true);
            }
        }
        out.push_str(&g.finish());
        (out, false)
    }

    #[test]
    fn plain_text_passes_through() {
        assert_eq!(
            run(&[], &[b"Hello", b", ", b"world"]),
            ("Hello, world".into(), false)
        );
    }

    #[test]
    fn split_utf8_is_held_until_complete() {
        let euro = "€".as_bytes();
        let mut g = TextGate::new(&[]);
        assert_eq!(g.feed(&euro[..1]).emit, "");
        assert_eq!(g.feed(&euro[1..2]).emit, "");
        assert_eq!(g.feed(&euro[2..]).emit, "€");
    }

    #[test]
    fn stop_across_tokens_is_cut_and_not_emitted() {
        assert_eq!(
            run(&["END"], &[b"abc E", b"N", b"D tail"]),
            ("abc ".into(), true)
        );
    }

    #[test]
    fn partial_stop_prefix_is_released_when_it_diverges() {
        let stops = vec!["END".to_string()];
        let mut g = TextGate::new(&stops);
        assert_eq!(g.feed(b"x E").emit, "x ");
        assert_eq!(g.feed(b"Nx").emit, "ENx");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["b", "a"], &[b"xxab"]), ("xx".into(), true));
    }

    #[test]
    fn invalid_bytes_do_not_block_the_stream() {
        let (out, _) = run(&[], &[&[0xff], b"ok"]);
        assert_eq!(out, "\u{fffd}ok");
    }

    #[test]
    fn streamed_equals_whole_for_every_split() {
        let text = "héllo STOP wörld";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                run(&["STOP"], &[a, b]),
                ("héllo ".into(), true),
                "cut {cut}"
            );
        }
    }
}
