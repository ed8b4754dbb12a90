//! One model served by several nodes together, with llama.cpp's RPC backend: the host runs
//! `llama-server --rpc` over its workers' `rpc-server`s, each reached through the mesh's
//! authenticated, encrypted peer channel. The decisions (who hosts, who carries which layers,
//! the flags, the sentences) are `infermesh_state::split` and `split_role`; this module runs
//! them.

pub mod host;
pub mod tunnel;
pub mod worker;
