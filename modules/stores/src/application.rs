//! Application layer: command handling (load, decide, append, project,
//! publish) and the read-side queries.

pub(crate) mod commands;
pub mod queries;
