//! mezzo's command executor (Mesos's `mesos-executor` in HTTP mode): it
//! subscribes to the agent's executor API, starts the one task it is given in
//! the container the agent prepared, and reports every state change as a
//! reliable `TaskStatus` update.

pub mod agent_api;
pub mod checks;
pub mod config;
pub mod container_mode;
pub mod executor;
pub mod status;
pub mod wire;

pub use config::Config;
pub use executor::{CommandExecutor, Outcome};
