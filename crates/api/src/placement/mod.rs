//! The mesh places work: workload groups (operator-signed, replicated in every record), a
//! placement every node computes identically (`infermesh_state::placement`), demand-driven extra
//! replicas (`infermesh_state::demand`) and the start/drain of one replica that releases and
//! live migrations are made of. What placement keeps lives in [`crate::workloads`], which the
//! app holds; this module only acts on it.

pub mod replica;
pub mod run;
pub mod view;
