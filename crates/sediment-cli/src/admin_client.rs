//! Talking to a running broker's admin API (`--admin`, default `http://localhost:9644`).

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

/// Where the broker's admin API is, and how to print.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// The broker's admin HTTP address.
    #[arg(
        long,
        env = "SEDIMENT_ADMIN_URL",
        default_value = "http://localhost:9644",
        value_name = "URL"
    )]
    pub(crate) admin: String,
    /// Print the admin API's JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn get(
    admin: &str,
    path: &str,
    query: &[(&str, String)],
    post: bool,
) -> Result<Value> {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let request = if post {
        client.post(&url)
    } else {
        client.get(&url)
    };
    send(request.query(query), &url).await
}

/// POSTs `body` as JSON to `path` and returns the JSON answer.
pub(crate) async fn post_json(admin: &str, path: &str, body: &Value) -> Result<Value> {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    send(reqwest::Client::new().post(&url).json(body), &url).await
}

/// Sends a request and reads its JSON answer; a non-2xx answer is an error carrying the API's
/// message.
async fn send(request: reqwest::RequestBuilder, url: &str) -> Result<Value> {
    let response = request.send().await.with_context(|| {
        format!("cannot reach the admin API at {url} (is the broker running? see --admin)")
    })?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .with_context(|| format!("unreadable answer from {url}"))?;
    if !status.is_success() {
        let message = answer["error"].as_str().unwrap_or("request failed");
        bail!("{message} ({status})");
    }
    Ok(answer)
}
