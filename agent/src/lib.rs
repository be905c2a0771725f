//! mezzo-agent: registers with the master, runs each task in a container
//! through the composing containerizer, supervises its executor, and
//! forwards every status update to the master until it is acknowledged.

pub mod backends;
pub mod checkpoint;
pub mod containers;
pub mod executor_auth;
pub mod fetcher;
pub mod files;
pub mod flags;
pub mod gc;
pub mod http;
pub mod http_auth;
pub mod master_link;
pub mod metrics;
pub mod operator;
pub mod ownership;
pub mod paths;
pub mod process;
pub mod recovery;
pub mod resources;
pub mod agent;
pub mod executor;
pub mod executor_calls;
pub mod runner;
pub mod status_update_manager;
pub mod translate;

pub use flags::Flags;
pub use agent::{run, Agent};
#[cfg(test)]
mod core_tests;
