//! Master configuration, filled from flags by the binary and directly by tests.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::acls::Acls;
use crate::credentials::Credentials;
use crate::registrar::FencedHook;
use crate::registry::{InMemoryStore, RegistryStore};

/// Tunables of a master; `Default` gives Mesos's values.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Hostname advertised in `MasterInfo` and `/state`; the IP when unset.
    pub hostname: Option<String>,
    /// IP advertised in `MasterInfo`; the listener's IP when unset (127.0.0.1
    /// when the listener is bound to the unspecified address).
    pub advertise_ip: Option<IpAddr>,
    /// Interval of HEARTBEAT events on scheduler streams (Mesos: 15 s).
    pub heartbeat_interval: Duration,
    /// `--agent_ping_timeout`: the ping period (Mesos: 15 s). Our agents
    /// ping the master; each period without a ping is a missed ping.
    pub agent_ping_timeout: Duration,
    /// `--max_agent_ping_timeouts`: after this many missed pings in a row an
    /// agent is marked unreachable (Mesos: 5).
    pub max_agent_ping_timeouts: u32,
    /// `--agent_reregister_timeout`: after a failover, how long the master
    /// waits for the agents of its registry to re-register before it marks
    /// those that did not unreachable (Mesos: 10 mins).
    pub agent_reregister_timeout: Duration,
    /// How often the allocator runs even when nothing changed.
    pub allocation_interval: Duration,
    /// Default `Filters.refuse_seconds` for DECLINE and ACCEPT (Mesos: 5 s).
    pub default_refuse_seconds: f64,
    /// Timeout of one message delivery attempt to an agent.
    pub agent_request_timeout: Duration,
    /// Delivery attempts per message to an agent before it is dropped.
    pub agent_send_attempts: u32,
    /// `--credentials`: principals and secrets agents (and, with the flags
    /// that ask for it, frameworks and operators) authenticate with.
    pub credentials: Option<Arc<Credentials>>,
    /// `--authenticate_agents`: only agents presenting one of `credentials`
    /// may register (Mesos: false).
    pub authenticate_agents: bool,
    /// `--authenticate_frameworks` / `--authenticate_http_frameworks`: the
    /// scheduler API needs HTTP basic credentials from `credentials`, and
    /// `FrameworkInfo.principal` must be the authenticated principal
    /// (Mesos: false).
    pub authenticate_frameworks: bool,
    /// `--authenticate_http_readwrite`: endpoints that change state
    /// (`/teardown`) need credentials (Mesos: false).
    pub authenticate_http_readwrite: bool,
    /// `--authenticate_http_readonly`: `/state`, `/frameworks`, `/slaves`,
    /// `/tasks`, `/flags` and `/metrics/snapshot` need credentials (Mesos:
    /// false). `/version` and `/health` stay open.
    pub authenticate_http_readonly: bool,
    /// `--acls`: the local authorizer's ACLs; `None` allows everything, as
    /// Mesos without `--acls`.
    pub acls: Option<Arc<Acls>>,
    /// Where the registry lives (`--registry`, `--work_dir`, `--zk`); in
    /// memory by default, as `--registry=in_memory`.
    pub registry: Arc<dyn RegistryStore>,
    /// Called when the registry says another master leads now; the binary
    /// exits, as Mesos's master does.
    pub on_fenced: FencedHook,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            hostname: None,
            advertise_ip: None,
            heartbeat_interval: Duration::from_secs(15),
            agent_ping_timeout: Duration::from_secs(15),
            max_agent_ping_timeouts: 5,
            agent_reregister_timeout: Duration::from_secs(600),
            allocation_interval: Duration::from_secs(1),
            default_refuse_seconds: 5.0,
            agent_request_timeout: Duration::from_secs(5),
            agent_send_attempts: 5,
            credentials: None,
            authenticate_agents: false,
            authenticate_frameworks: false,
            authenticate_http_readwrite: false,
            authenticate_http_readonly: false,
            acls: None,
            registry: Arc::new(InMemoryStore::default()),
            on_fenced: FencedHook::default(),
        }
    }
}
