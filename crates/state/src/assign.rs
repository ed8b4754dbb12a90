//! Which model a node started without `--model` should serve: the one the mesh needs most among
//! those already on its disk (no download, no operator choice needed).

use std::collections::BTreeMap;

/// The choice and the sentence the node logs to explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub model: String,
    pub reason: String,
}

/// Picks from `on_disk` the model with the fewest serving replicas in the mesh (`replicas`; a
/// model absent from it has none), ties broken by name so every node decides the same way.
/// `None` when nothing is on disk.
pub fn choose_model(on_disk: &[String], replicas: &BTreeMap<String, u32>) -> Option<Assignment> {
    let count = |m: &String| replicas.get(m).copied().unwrap_or(0);
    let model = on_disk
        .iter()
        .min_by(|a, b| count(a).cmp(&count(b)).then(a.cmp(b)))?;
    let reason = match count(model) {
        0 => format!("serving {model}: needed by the mesh (no node serves it), already on disk"),
        n => format!(
            "serving {model}: needed by the mesh (least replicated, {n} replica{} elsewhere), already on disk",
            if n == 1 { "" } else { "s" }
        ),
    };
    Some(Assignment {
        model: model.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn reps(v: &[(&str, u32)]) -> BTreeMap<String, u32> {
        v.iter().map(|(m, n)| (m.to_string(), *n)).collect()
    }

    #[test]
    fn nothing_on_disk_means_no_choice() {
        assert_eq!(choose_model(&[], &reps(&[("a", 0)])), None);
    }

    #[test]
    fn an_unserved_model_wins() {
        let a = choose_model(&names(&["b", "a", "c"]), &reps(&[("a", 2), ("c", 1)])).unwrap();
        assert_eq!(a.model, "b");
        assert!(a.reason.contains("needed by the mesh") && a.reason.contains("already on disk"));
        assert!(a.reason.contains("no node serves it"));
    }

    #[test]
    fn otherwise_the_least_replicated_then_by_name() {
        let a = choose_model(&names(&["b", "a"]), &reps(&[("a", 2), ("b", 1)])).unwrap();
        assert_eq!(a.model, "b");
        assert!(a.reason.contains("1 replica elsewhere"), "{}", a.reason);
        let a = choose_model(&names(&["b", "a"]), &reps(&[("a", 3), ("b", 3)])).unwrap();
        assert_eq!(a.model, "a");
        assert!(a.reason.contains("3 replicas"));
        let a = choose_model(&names(&["z", "y"]), &BTreeMap::new()).unwrap();
        assert_eq!(a.model, "y");
    }
}
