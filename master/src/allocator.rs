//! The allocator: turns unused agent resources into offers, and takes them
//! back on DECLINE, ACCEPT, rescission and failover.
//!
//! One outstanding offer per agent at a time, offered to the eligible
//! framework that has received the fewest offers so far.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_proto::mesos::v1::scheduler::{call, event, Event};
use mezzo_proto::mesos::v1::{Address, AgentId, ExecutorId, Offer, OfferId, Url};

use crate::master::{framework_id, Agent, Master, OfferFilter, OfferRecord, Shared};
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

/// The agents the next allocation run looks at (Mesos's allocation
/// candidates): every agent after a change that may concern any, else only
/// those whose free resources changed. The periodic run looks at every agent.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    pub(crate) all: bool,
    pub(crate) agents: HashSet<String>,
}

/// A framework that may receive offers in this allocation run.
struct Eligible<'a> {
    id: &'a str,
    /// Offers sent so far, counting this run's.
    offers_sent: u64,
    filters: &'a [OfferFilter],
    /// Its filters by agent, built when the run looks at many agents.
    refused: Option<HashMap<&'a str, Vec<&'a Resources>>>,
}

impl Eligible<'_> {
    fn refuses(&self, agent_id: &str, free: &Resources) -> bool {
        match &self.refused {
            Some(index) => index.get(agent_id).is_some_and(|rs| rs.iter().any(|r| r.contains(free))),
            None => self.filters.iter().any(|f| f.agent_id == agent_id && f.resources.contains(free)),
        }
    }
}

impl Master {
    /// One allocation run over every agent (`all`, the periodic run) or over
    /// the candidates events named: offers each allocatable agent to the
    /// eligible framework that has received the fewest offers.
    /// Returns how many offers it made.
    pub(crate) fn allocate(&mut self, now: Instant, all: bool) -> usize {
        let candidates = std::mem::take(&mut self.allocation_candidates);
        let all = all || candidates.all;
        for fw in self.frameworks.values_mut() {
            fw.filters.retain(|f| f.expires > now);
        }
        // First, with shared borrows only, who gets what.
        let decisions: Vec<(String, Resources, String)> = {
            let looked_at = if all { self.agents.len() } else { candidates.agents.len() };
            let mut eligible: Vec<Eligible> = self
                .frameworks
                .values()
                .filter(|fw| fw.subscription.is_some() && !fw.suppressed)
                .map(|fw| Eligible {
                    id: &fw.id,
                    offers_sent: fw.offers_sent,
                    filters: &fw.filters,
                    // Indexing costs O(filters): worth it only over many agents.
                    refused: (looked_at > 8).then(|| {
                        let mut index: HashMap<&str, Vec<&Resources>> = HashMap::new();
                        for f in &fw.filters {
                            index.entry(f.agent_id.as_str()).or_default().push(&f.resources);
                        }
                        index
                    }),
                })
                .collect();
            if eligible.is_empty() {
                return 0;
            }
            let agents: Box<dyn Iterator<Item = &Agent>> = if all {
                Box::new(self.agents.values())
            } else {
                Box::new(candidates.agents.iter().filter_map(|id| self.agents.get(id)))
            };
            let mut decisions = Vec::new();
            for agent in agents {
                if agent.offer_id.is_some() {
                    continue;
                }
                let free = agent.available();
                if free.is_empty() || !allocatable(&free) {
                    continue;
                }
                let chosen = eligible.iter_mut().filter(|e| !e.refuses(&agent.id, &free)).min_by_key(|e| e.offers_sent);
                if let Some(chosen) = chosen {
                    chosen.offers_sent += 1;
                    decisions.push((agent.id.clone(), free, chosen.id.to_string()));
                }
            }
            decisions
        };
        let mut batches: BTreeMap<String, Vec<Offer>> = BTreeMap::new();
        let made = decisions.len();
        for (agent_id, free, fid) in decisions {
            let Some(agent) = self.agents.get(&agent_id) else {
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
        made
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
                self.wake_allocator_for(&record.agent_id);
                self.add_filter(framework_id, &record.agent_id, record.resources, refuse);
            }
        }
    }
}

/// How often, at most, the allocator looks for agents that stopped pinging.
const SILENCE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How many recent allocation runs the `allocation_run_ms` timer keeps.
const ALLOCATION_TIMER_WINDOW: usize = 1000;

/// Durations of recent allocation runs, Mesos's `allocator/mesos/allocation_run_ms` timer.
#[derive(Debug, Default)]
pub(crate) struct AllocationTimer {
    runs: u64,
    recent_ms: std::collections::VecDeque<f64>,
    /// The latest run that made offers: how long it took and how many it made.
    last_offering: Option<(f64, usize)>,
}

impl AllocationTimer {
    /// Records a run that took `took` and made `offers` offers.
    pub(crate) fn record(&mut self, took: Duration, offers: usize) {
        if offers > 0 {
            self.last_offering = Some((took.as_secs_f64() * 1000.0, offers));
        }
        self.runs += 1;
        if self.recent_ms.len() == ALLOCATION_TIMER_WINDOW {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(took.as_secs_f64() * 1000.0);
    }

    /// The metrics as Mesos names them: `allocator/mesos/allocation_runs` and
    /// the timer `allocator/mesos/allocation_run_ms` (the latest run) with its
    /// `/count`, `/min`, `/max`, `/p50`, `/p90`, `/p99` over recent runs.
    pub(crate) fn metrics(&self) -> Vec<(String, f64)> {
        const KEY: &str = "allocator/mesos/allocation_run_ms";
        let mut out = vec![("allocator/mesos/allocation_runs".to_string(), self.runs as f64)];
        // Ours: most runs an event asks for offer nothing; this is the one that did.
        if let Some((ms, offers)) = self.last_offering {
            out.push(("mezzo/master/allocation_last_offering_run_ms".to_string(), ms));
            out.push(("mezzo/master/allocation_last_offering_run_offers".to_string(), offers as f64));
        }
        let Some(&latest) = self.recent_ms.back() else {
            return out;
        };
        let mut sorted: Vec<f64> = self.recent_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let pick = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        out.push((KEY.to_string(), latest));
        out.push((format!("{KEY}/count"), sorted.len() as f64));
        out.push((format!("{KEY}/min"), sorted[0]));
        out.push((format!("{KEY}/max"), sorted[sorted.len() - 1]));
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            out.push((format!("{KEY}/{name}"), pick(q)));
        }
        out
    }
}

/// Runs allocation cycles every `interval` and whenever something changed,
/// and removes agents that stopped pinging.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.allocation_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut silence_checked = Instant::now();
    loop {
        // The periodic run looks at every agent; a run an event asked for, at
        // the agents it named (or all, when it named none).
        let periodic = tokio::select! {
            _ = tick.tick() => true,
            _ = shared.allocation_wanted.notified() => false,
        };
        let now = Instant::now();
        let mut master = shared.lock();
        // Looking for silent agents costs O(agents): at most every
        // SILENCE_CHECK_INTERVAL, not at every event (thousands a second
        // while frameworks launch), which is finer than any ping timeout.
        if periodic || now.saturating_duration_since(silence_checked) >= SILENCE_CHECK_INTERVAL {
            silence_checked = now;
            master.remove_silent_agents(now);
        }
        let offers = master.allocate(now, periodic);
        master.allocation_timer.record(now.elapsed(), offers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_link::{AgentLink, LinkTarget};
    use crate::config::MasterConfig;
    use crate::master::{Framework, Subscription};
    use crate::resources::scalar;
    use mezzo_proto::mesos::v1::{AgentInfo, FrameworkInfo, MasterInfo};
    use tokio::sync::mpsc;

    fn master() -> Master {
        let (reports, _) = mpsc::unbounded_channel();
        Master::new("M".into(), MasterInfo::default(), MasterConfig::default(), reqwest::Client::new(), reports)
    }

    fn add_agent(master: &mut Master, id: &str) {
        let total = Resources::from_protos(&[scalar("cpus", 2.0), scalar("mem", 1024.0)]).unwrap();
        let (reports, _) = mpsc::unbounded_channel();
        let target = LinkTarget {
            agent_id: id.into(),
            endpoint: "127.0.0.1:9".into(),
            token: "t".into(),
            timeout: Duration::from_secs(1),
            attempts: 1,
        };
        let agent = Agent {
            id: id.into(),
            info: AgentInfo { hostname: id.into(), ..Default::default() },
            endpoint: "127.0.0.1:9".into(),
            total,
            used: Resources::new(),
            executors: Default::default(),
            offered: Resources::new(),
            offer_id: None,
            last_ping: Instant::now(),
            registered_time: 0.0,
            link: AgentLink::spawn(reqwest::Client::new(), target, reports),
            token_hash: [0; 32],
        };
        master.agents.insert(id.into(), agent);
    }

    fn subscribe(master: &mut Master, id: &str) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        let framework = Framework {
            id: id.into(),
            info: FrameworkInfo::default(),
            subscription: Some(Subscription { stream_id: "s".into(), tx }),
            suppressed: false,
            filters: Vec::new(),
            tasks: Default::default(),
            completed_tasks: Default::default(),
            registered_time: 0.0,
            unregistered_time: None,
            offers_sent: 0,
            epoch: 0,
        };
        master.frameworks.insert(id.into(), framework);
        rx
    }

    fn offered_agents(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<String> {
        let mut agents = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            agents.extend(ev.offers.into_iter().flat_map(|o| o.offers).map(|o| o.agent_id.value));
        }
        agents.sort();
        agents
    }

    #[tokio::test]
    async fn a_run_an_event_asks_for_looks_at_its_agents_only() {
        let mut m = master();
        let mut rx = subscribe(&mut m, "f");
        for id in ["a", "b"] {
            add_agent(&mut m, id);
        }
        // An event named agent a: b, although free, waits for a periodic run.
        m.wake_allocator_for("a");
        assert_eq!(m.allocate(Instant::now(), false), 1);
        assert_eq!(offered_agents(&mut rx), ["a"]);
        // Nothing named: nothing looked at.
        m.allocate(Instant::now(), false);
        assert!(offered_agents(&mut rx).is_empty());
        m.allocate(Instant::now(), true);
        assert_eq!(offered_agents(&mut rx), ["b"]);
        // A change that concerns everyone (wake_allocator) looks at every agent.
        let offer = m.agents["a"].offer_id.clone().unwrap();
        m.remove_offer(&offer);
        m.wake_allocator_for("b");
        m.wake_allocator();
        m.allocate(Instant::now(), false);
        assert_eq!(offered_agents(&mut rx), ["a"]);
    }

    #[tokio::test]
    async fn filters_hold_whether_or_not_they_are_indexed() {
        let mut m = master();
        let mut rx = subscribe(&mut m, "f");
        let ids: Vec<String> = (0..12).map(|i| format!("a{i:02}")).collect();
        for id in &ids {
            add_agent(&mut m, id);
        }
        let all = Resources::from_protos(&[scalar("cpus", 2.0), scalar("mem", 1024.0)]).unwrap();
        m.add_filter("f", "a03", all.clone(), Some(60.0));
        m.add_filter("f", "a07", all.clone(), Some(60.0));
        // A filter that has expired refuses nothing.
        m.add_filter("f", "a05", all, Some(1e-9));
        std::thread::sleep(Duration::from_millis(2));
        // Over many agents the filters are indexed by agent...
        m.allocate(Instant::now(), true);
        let offered = offered_agents(&mut rx);
        assert_eq!(offered.len(), 10, "{offered:?}");
        assert!(!offered.contains(&"a03".to_string()) && !offered.contains(&"a07".to_string()));
        assert!(offered.contains(&"a05".to_string()));
        // ...over a few they are scanned; the answer is the same.
        m.wake_allocator_for("a03");
        m.wake_allocator_for("a07");
        m.allocate(Instant::now(), false);
        assert!(offered_agents(&mut rx).is_empty());
    }

    #[test]
    fn the_allocation_timer_reports_mesos_names() {
        let mut timer = AllocationTimer::default();
        assert_eq!(timer.metrics(), vec![("allocator/mesos/allocation_runs".to_string(), 0.0)]);
        for (ms, offers) in [(3u64, 5), (1, 0), (2, 0)] {
            timer.record(Duration::from_millis(ms), offers);
        }
        let m: std::collections::HashMap<String, f64> = timer.metrics().into_iter().collect();
        assert_eq!(m["allocator/mesos/allocation_runs"], 3.0);
        assert_eq!(m["allocator/mesos/allocation_run_ms"], 2.0);
        assert_eq!(m["allocator/mesos/allocation_run_ms/count"], 3.0);
        assert_eq!(m["allocator/mesos/allocation_run_ms/min"], 1.0);
        assert_eq!(m["allocator/mesos/allocation_run_ms/max"], 3.0);
        assert_eq!(m["allocator/mesos/allocation_run_ms/p50"], 2.0);
        assert_eq!(m["mezzo/master/allocation_last_offering_run_ms"], 3.0);
        assert_eq!(m["mezzo/master/allocation_last_offering_run_offers"], 5.0);
        for _ in 0..ALLOCATION_TIMER_WINDOW {
            timer.record(Duration::from_millis(5), 0);
        }
        let m: std::collections::HashMap<String, f64> = timer.metrics().into_iter().collect();
        assert_eq!(m["allocator/mesos/allocation_run_ms/count"], ALLOCATION_TIMER_WINDOW as f64);
        assert_eq!(m["allocator/mesos/allocation_run_ms/min"], 5.0);
        assert_eq!(m["allocator/mesos/allocation_runs"], (ALLOCATION_TIMER_WINDOW + 3) as f64);
    }
}
