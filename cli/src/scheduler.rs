//! A minimal client of the Mesos v1 scheduler API: one SUBSCRIBE stream
//! of events, other calls on their own requests with the stream id.

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use mezzo_proto::codec::{decode, encode, ContentType};
use mezzo_proto::mesos::v1::scheduler::{call, Call, Event};
use mezzo_proto::mesos::v1::{FrameworkId, FrameworkInfo};
use std::time::Duration;
use tokio::sync::mpsc;

/// Header carrying the subscription's id on every later call.
pub const STREAM_ID_HEADER: &str = "Mesos-Stream-Id";
/// Largest event accepted on the stream.
const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;
/// Bound on each non-streaming request.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// `http://host:port` for a `--master` value given as `host:port`,
/// `host` (port 5050) or a URL.
pub fn master_base_url(master: &str) -> String {
    let trimmed = master.trim().trim_end_matches('/');
    let without_scheme = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .unwrap_or(trimmed);
    let scheme = if trimmed.starts_with("https://") { "https" } else { "http" };
    if without_scheme.contains(':') {
        format!("{scheme}://{without_scheme}")
    } else {
        format!("{scheme}://{without_scheme}:5050")
    }
}

/// A `--master` value: `host:port`, a URL, `zk://host:port[,host:port]/path`
/// (the leader of a master group) or a `file://` path holding one of those.
pub enum MasterSource {
    Fixed(String),
    Zk(mezzo_zk::Detector),
}

impl MasterSource {
    /// Parses `--master`; for a group, starts following its leader.
    pub fn new(master: &str) -> Result<MasterSource> {
        Ok(match mezzo_zk::MasterAddress::parse("master", master)? {
            mezzo_zk::MasterAddress::Fixed(address) => MasterSource::Fixed(master_base_url(&address)),
            mezzo_zk::MasterAddress::Zk(url) => MasterSource::Zk(mezzo_zk::Detector::start(url, mezzo_zk::DEFAULT_SESSION_TIMEOUT)),
        })
    }

    /// Whether the master is a group (its leader may change).
    pub fn is_group(&self) -> bool {
        matches!(self, MasterSource::Zk(_))
    }

    /// `http://host:port` of the (leading) master, waiting up to `timeout` for a group to have a leader.
    pub async fn base_url(&self, timeout: Duration) -> Result<String> {
        match self {
            MasterSource::Fixed(url) => Ok(url.clone()),
            MasterSource::Zk(detector) => match detector.wait_for_leader(timeout).await {
                Some(info) => Ok(format!("http://{}", mezzo_zk::master_endpoint(&info))),
                None => bail!("no master leads the group (ZooKeeper named none within {timeout:?})"),
            },
        }
    }
}

/// A subscribed framework's connection to the master.
pub struct Scheduler {
    http: reqwest::Client,
    url: String,
    stream_id: String,
    framework_id: FrameworkId,
}

/// What the stream task hands to the caller.
pub type EventResult = Result<Event, String>;

impl Scheduler {
    /// Subscribes `framework` at the master; returns the connection (once
    /// SUBSCRIBED arrived) and the receiver of every later event. The stream
    /// ends with an `Err` describing why it broke.
    pub async fn subscribe(
        base_url: &str,
        framework: FrameworkInfo,
        timeout: Duration,
    ) -> Result<(Scheduler, mpsc::UnboundedReceiver<EventResult>)> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let url = format!("{base_url}/api/v1/scheduler");
        let call = Call {
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe { framework_info: framework, ..Default::default() }),
            ..Default::default()
        };
        let response = tokio::time::timeout(
            timeout,
            http.post(&url)
                .header("Content-Type", ContentType::Json.mime())
                .header("Accept", ContentType::Json.mime())
                .body(encode(&call, ContentType::Json))
                .send(),
        )
        .await
        .with_context(|| format!("no answer from {url} within {timeout:?}"))?
        .with_context(|| format!("SUBSCRIBE to {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("master answered {status} to SUBSCRIBE: {}", body.trim());
        }
        let stream_id = response
            .headers()
            .get(STREAM_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .context("master sent no Mesos-Stream-Id header")?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(read_events(response, tx));
        // The first event says whether the subscription took.
        let first = tokio::time::timeout(timeout, rx.recv())
            .await
            .with_context(|| format!("no SUBSCRIBED event within {timeout:?}"))?
            .context("subscription stream closed before SUBSCRIBED")?
            .map_err(anyhow::Error::msg)?;
        use mezzo_proto::mesos::v1::scheduler::event::Type;
        let framework_id = match first.r#type() {
            Type::Subscribed => first.subscribed.context("SUBSCRIBED event without payload")?.framework_id,
            Type::Error => bail!(
                "master refused the subscription: {}",
                first.error.map(|e| e.message).unwrap_or_default()
            ),
            other => bail!("expected SUBSCRIBED as the first event, got {}", other.as_str_name()),
        };
        Ok((Scheduler { http, url, stream_id, framework_id }, rx))
    }

    /// The id the master gave this framework.
    pub fn framework_id(&self) -> &FrameworkId {
        &self.framework_id
    }

    /// The subscription's stream id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Sends a call of `kind` with the payload set by `fill`; the master must
    /// answer 2xx (202 Accepted for everything `mezzo` sends).
    pub async fn send(&self, kind: call::Type, fill: impl FnOnce(&mut Call)) -> Result<()> {
        let mut call = Call {
            framework_id: Some(self.framework_id.clone()),
            r#type: Some(kind as i32),
            ..Default::default()
        };
        fill(&mut call);
        let response = self
            .http
            .post(&self.url)
            .header("Content-Type", ContentType::Json.mime())
            .header(STREAM_ID_HEADER, &self.stream_id)
            .timeout(CALL_TIMEOUT)
            .body(encode(&call, ContentType::Json))
            .send()
            .await
            .with_context(|| format!("{} call to {}", kind.as_str_name(), self.url))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("master answered {status} to {}: {}", kind.as_str_name(), body.trim());
        }
        Ok(())
    }
}

async fn read_events(response: reqwest::Response, tx: mpsc::UnboundedSender<EventResult>) {
    let mut decoder = mezzo_proto::recordio::Decoder::new(MAX_EVENT_BYTES);
    let mut chunks = response.bytes_stream();
    let end = loop {
        let Some(chunk) = chunks.next().await else {
            break "master closed the subscription stream".to_string();
        };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => break format!("subscription stream broke: {e}"),
        };
        decoder.feed(&chunk);
        loop {
            match decoder.next_record() {
                Ok(Some(record)) => match decode::<Event>(&record, ContentType::Json) {
                    Ok(event) => {
                        if tx.send(Ok(event)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("undecodable event: {e}")));
                        return;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(format!("broken event stream: {e}")));
                    return;
                }
            }
        }
    };
    let _ = tx.send(Err(end));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_sources() {
        assert!(matches!(MasterSource::new("127.0.0.1:5050").unwrap(), MasterSource::Fixed(u) if u == "http://127.0.0.1:5050"));
        let e = MasterSource::new("zk://h:notaport/mesos").err().unwrap();
        assert!(e.to_string().contains("invalid --master"), "{e}");
    }

    #[test]
    fn master_addresses_become_base_urls() {
        assert_eq!(master_base_url("127.0.0.1:5050"), "http://127.0.0.1:5050");
        assert_eq!(master_base_url("master"), "http://master:5050");
        assert_eq!(master_base_url("http://10.0.0.1:5051/"), "http://10.0.0.1:5051");
        assert_eq!(master_base_url("https://m:443"), "https://m:443");
    }
}
