//! The CLI's client for the admin API of a running node: reads `api.addr` and `api.token` from
//! the node directory and speaks the typed requests of [`crate::api`].
//!
//! Layering: above `api` (and the leaf `plain_http`) only; the CLI uses it. It never names the
//! server side.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde::{de::DeserializeOwned, Serialize};

use crate::api::{ApiError, API_ADDR_FILE, API_TOKEN_FILE};

/// A client bound to one node directory.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// Connects to the node running in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let addr_file: PathBuf = dir.join(API_ADDR_FILE);
        let addr = std::fs::read_to_string(&addr_file).map_err(|_| {
            anyhow!(
                "no node is running in {} (no {API_ADDR_FILE}); start it with `huitong run --dir {}`",
                dir.display(),
                dir.display()
            )
        })?;
        let token = std::fs::read_to_string(dir.join(API_TOKEN_FILE))
            .with_context(|| format!("cannot read {}", dir.join(API_TOKEN_FILE).display()))?;
        Ok(Self {
            base: format!("http://{}/api/v1", addr.trim()),
            token: token.trim().to_owned(),
            http: crate::plain_http::builder()?.no_proxy().build()?,
        })
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req.bearer_auth(&self.token).send().await.with_context(|| {
            format!(
                "cannot reach the node at {}; is `huitong run` still running?",
                self.base
            )
        })?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&body).context("unexpected answer from the node");
        }
        match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) if e.details.is_empty() => bail!("{}", e.error),
            Ok(e) => {
                let lines: Vec<String> = e.details.iter().map(|d| format!("  {d}")).collect();
                bail!("{}\n{}", e.error, lines.join("\n"))
            }
            Err(_) => bail!("node answered {status}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// GET with a query.
    pub async fn get<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
    ) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    /// POST a JSON body.
    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}
