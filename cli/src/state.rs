//! `mezzo state`: the master's `/state` document, pretty-printed.

use crate::scheduler::MasterSource;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Fetches `/state` from the (leading) master and returns it pretty-printed.
pub async fn fetch_state(master: &str, timeout: Duration) -> Result<String> {
    let url = format!("{}/state", MasterSource::new(master)?.base_url(timeout).await?);
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url}: master answered {status}");
    }
    let body = response.bytes().await.with_context(|| format!("GET {url}: reading the body"))?;
    let state: serde_json::Value = serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
    Ok(serde_json::to_string_pretty(&state)?)
}
