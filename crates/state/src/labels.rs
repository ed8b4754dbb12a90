//! The words a human reads for each wire word. API bodies keep the wire words (machines match
//! on them); the deck and the dashboard show these, taken from here so both say the same.

use crate::backend_state::BackendState;
use crate::participation::Participation;

/// Every wire word that has a label of its own, with that label.
pub fn all() -> Vec<(&'static str, &'static str)> {
    let parts = Participation::ALL.map(|p| (p.as_str(), p.label()));
    let backends = BackendState::ALL.map(|s| (s.as_str(), s.label()));
    parts.into_iter().chain(backends).collect()
}

/// The label for `wire`; a word without one (a node state such as `serving`, a newer peer's
/// word) is shown with `_` as spaces, never hidden.
pub fn human(wire: &str) -> String {
    all()
        .into_iter()
        .find(|(w, _)| *w == wire)
        .map_or_else(|| wire.replace('_', " "), |(_, l)| l.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_human_and_unique_per_word() {
        let all = all();
        assert_eq!(
            all.len(),
            Participation::ALL.len() + BackendState::ALL.len()
        );
        for (wire, label) in &all {
            assert!(!label.contains('_'), "{wire}: {label}");
            assert_eq!(&human(wire), label);
            assert_eq!(all.iter().filter(|(w, _)| w == wire).count(), 1, "{wire}");
        }
        assert_eq!(human("inactive_waiting"), "Inactive — waiting for round");
        assert_eq!(human("test_failed"), "test failed");
        assert_eq!(human("some_new_word"), "some new word");
    }
}
