//! firma-transportd as a library: `run(config, shutdown)` wires the tasks; tests call it too.

pub mod config;
pub mod store;
