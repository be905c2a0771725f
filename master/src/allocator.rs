//! The allocator: turns unused agent resources into offers, and takes them
//! back on DECLINE, ACCEPT, rescission and failover.
//!
//! One outstanding offer per agent at a time, offered to the eligible
//! framework that has received the fewest offers so far.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_proto::mesos::v1::scheduler::{call, event, Event};
use mezzo_proto::mesos::v1::{Address, AgentId, ExecutorId, Offer, OfferId, Url};

use crate::master::{framework_id, Master, OfferFilter, OfferRecord, Shared};
use crate::resources::Resources;

/// Mesos's default `--min_allocatable_resources` is `cpus:0.01|mem:32`:
/// leftovers smaller than both are not worth an offer.
fn allocatable(free: &Resources) -> bool {
    free.scalar("cpus") >= 0.01 || free.scalar("mem") >= 32.0
}

/// Splits `host:port`; the port defaults to the agent's `AgentInfo.port`.
pub(crate) fn split_endpoint(endpoint: &str, default_port: i32) -> (String, i32) {
    match endpoint.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port.parse().unwrap_or(default_port),
        ),
        None => (endpoint.to_string(), default_port),
    }
}

impl Master {
    /// One allocation cycle: offers every allocatable agent to a framework.
    pub(crate) fn allocate(&mut self, now: Instant) {
        for fw in self.frameworks.values_mut() {
            fw.filters.retain(|f| f.expires > now);
        }
        let mut batches: BTreeMap<String, Vec<Offer>> = BTreeMap::new();
        let agent_ids: Vec<String> = self.agents.keys().cloned().collect();
        for agent_id in agent_ids {
            let Some(agent) = self.agents.get(&agent_id) else {
                continue;
            };
            if agent.offer_id.is_some() {
                continue;
            }
            let free = agent.available();
            if free.is_empty() || !allocatable(&free) {
                continue;
            }
            let chosen = self
                .frameworks
                .values()
                .filter(|fw| fw.subscription.is_some() && !fw.suppressed)
                .filter(|fw| {
                    !fw.filters
                        .iter()
                        .any(|f| f.agent_id == agent_id && f.resources.contains(&free))
                })
                .min_by_key(|fw| fw.offers_sent)
                .map(|fw| fw.id.clone());
            let Some(fid) = chosen else {
                continue;
            };
            let offer_id = format!("{}-O{}", self.id, self.next_offer);
            self.next_offer += 1;
            let (host, port) = split_endpoint(&agent.endpoint, agent.info.port.unwrap_or(5051));
            let offer = Offer {
                id: OfferId {
                    value: offer_id.clone(),
                },
                framework_id: framework_id(&fid),
                agent_id: AgentId {
                    value: agent_id.clone(),
                },
                hostname: agent.info.hostname.clone(),
                url: Some(Url {
                    scheme: "http".to_string(),
                    address: Address {
                        hostname: Some(agent.info.hostname.clone()),
                        ip: Some(host),
                        port,
                    },
                    path: Some("/slave(1)".to_string()),
                    ..Default::default()
                }),
                resources: free.to_protos(),
                // The framework's executors already running there, as Mesos offers them.
                executor_ids: agent
                    .executors
                    .keys()
                    .filter(|(f, _)| f == &fid)
                    .map(|(_, e)| ExecutorId { value: e.clone() })
                    .collect(),
                attributes: agent.info.attributes.clone(),
                ..Default::default()
            };
            tracing::debug!(%offer_id, framework_id = %fid, %agent_id, resources = %free, "offering");
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.offered.add(&free);
                agent.offer_id = Some(offer_id.clone());
            }
            if let Some(fw) = self.frameworks.get_mut(&fid) {
                fw.offers_sent += 1;
            }
            self.counters.offers_sent += 1;
            self.offers.insert(
                offer_id,
                OfferRecord {
                    offer: offer.clone(),
                    framework_id: fid.clone(),
                    agent_id,
                    resources: free,
                },
            );
            batches.entry(fid).or_default().push(offer);
        }
        for (fid, offers) in batches {
            if let Some(fw) = self.frameworks.get(&fid) {
                fw.send(Event {
                    r#type: Some(event::Type::Offers as i32),
                    offers: Some(event::Offers { offers }),
                    ..Default::default()
                });
            }
        }
    }

    /// Removes an offer and returns its resources to the agent's pool.
    pub(crate) fn remove_offer(&mut self, offer_id: &str) -> Option<OfferRecord> {
        let record = self.offers.remove(offer_id)?;
        if let Some(agent) = self.agents.get_mut(&record.agent_id) {
            agent.offered.subtract(&record.resources);
            if agent.offer_id.as_deref() == Some(offer_id) {
                agent.offer_id = None;
            }
        }
        Some(record)
    }

    /// Removes an offer and tells its framework with a RESCIND event.
    pub(crate) fn rescind_offer(&mut self, offer_id: &str) {
        if let Some(record) = self.remove_offer(offer_id) {
            self.counters.offers_rescinded += 1;
            if let Some(fw) = self.frameworks.get(&record.framework_id) {
                fw.send(Event {
                    r#type: Some(event::Type::Rescind as i32),
                    rescind: Some(event::Rescind {
                        offer_id: record.offer.id.clone(),
                    }),
                    ..Default::default()
                });
            }
        }
    }

    /// Removes every offer of a framework, optionally telling it.
    pub(crate) fn remove_offers_of(&mut self, framework_id: &str, rescind: bool) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework_id == framework_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if rescind {
                self.rescind_offer(&id);
            } else {
                self.remove_offer(&id);
            }
        }
    }

    /// Refuses `resources` of `agent_id` to a framework for `refuse_seconds`.
    pub(crate) fn add_filter(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: Resources,
        refuse_seconds: Option<f64>,
    ) {
        let seconds = refuse_seconds.unwrap_or(self.config.default_refuse_seconds);
        // Mesos ignores non-positive filters and caps huge ones (a year).
        if !(seconds.is_finite() && seconds > 0.0) || resources.is_empty() {
            return;
        }
        let duration = Duration::from_secs_f64(seconds.min(365.0 * 24.0 * 3600.0));
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            fw.filters.push(OfferFilter {
                agent_id: agent_id.to_string(),
                resources,
                expires: Instant::now() + duration,
            });
        }
    }

    /// Handles DECLINE: the offers' resources go back, filtered for this framework.
    pub(crate) fn decline(&mut self, framework_id: &str, decline: &call::Decline) {
        let refuse = decline.filters.as_ref().and_then(|f| f.refuse_seconds);
        for offer_id in &decline.offer_ids {
            let belongs = self
                .offers
                .get(&offer_id.value)
                .is_some_and(|o| o.framework_id == framework_id);
            if !belongs {
                tracing::warn!(offer_id = %offer_id.value, %framework_id, "ignoring decline of unknown offer");
                continue;
            }
            if let Some(record) = self.remove_offer(&offer_id.value) {
                self.counters.offers_declined += 1;
                self.add_filter(framework_id, &record.agent_id, record.resources, refuse);
            }
        }
        self.wake_allocator();
    }
}

/// Runs allocation cycles every `interval` and whenever something changed,
/// and removes agents that stopped pinging.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.allocation_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.allocation_wanted.notified() => {}
        }
        let now = Instant::now();
        let mut master = shared.lock();
        master.remove_silent_agents(now);
        master.allocate(now);
    }
}
