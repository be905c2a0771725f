//! The `mezzo` command line: run a task through the master like
//! `mesos-execute`, and inspect the master's state.

pub mod execute;
pub mod scheduler;
pub mod state;
pub mod task;
