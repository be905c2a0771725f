//! The `mezzo` command line: run a task through the master like
//! `mesos-execute`, inspect the master's state and its tasks (and read their
//! output), and manage an agent's image store.

pub mod execute;
pub mod image;
pub mod scheduler;
pub mod state;
pub mod task;
pub mod tasks;
