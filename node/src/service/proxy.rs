//! Proxied services: a 接口 resource answered by the department's own HTTP/JSON backend behind
//! this node, like an X-Road security server in front of a provider system.
//!
//! - The backend is configured in the node (`[[services.backends]]`: code, base URL, timeout,
//!   largest answer); its credentials (headers) are in the node's secrets file
//!   ([`crate::secrets`]), never in the catalogue.
//! - The operations a consumer may call are those of the service's **OpenAPI description**,
//!   published as the entry's dataset version (a JSON file: `huitong dataset publish CODE
//!   --from openapi.json --file`), so it is signed, versioned and the same on every node. A path and
//!   method not in its `paths` is refused before anything reaches the backend.
//! - A call waits at most the backend's timeout and takes at most its largest answer: a slow
//!   backend or a larger answer is cut off with an error that says so. Redirects are not
//!   followed and no proxy from the environment is used.
//! - A grant that masks 信息项 masks them in a JSON answer wherever an object has a key of that
//!   name; an answer that is not JSON cannot be masked and is refused under such a grant.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use huitong_config::BackendConfig;
use huitong_protocol::call::{Outcome, Query};
use huitong_protocol::dataset::{Body, ChunkHash, DatasetVersion, SignedManifest};
use huitong_protocol::wire::RefusalKind;
use huitong_protocol::ResourceCode;

use crate::access::Refusal;
use crate::dataset::records;
use crate::state::NodeState;

/// Largest OpenAPI description read.
pub const MAX_DESCRIPTION_BYTES: u64 = 1024 * 1024;
/// Descriptions kept parsed.
const KEPT: usize = 16;
/// Calls forwarded at once, over all backends: each holds a blocking thread while its backend
/// answers, so a slow backend cannot take all of them.
pub const AT_ONCE: usize = 32;

/// One segment of an operation's path template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param,
}

/// The operations of one description: (method, path template).
#[derive(Debug, Default)]
pub struct Operations(Vec<(String, Vec<Segment>)>);

impl Operations {
    /// The operations of an OpenAPI (3.x or Swagger 2) JSON document: every method under every
    /// path of `paths`.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let doc: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| format!("the OpenAPI description is not JSON: {e}"))?;
        if doc.get("openapi").is_none() && doc.get("swagger").is_none() {
            return Err("the OpenAPI description names no `openapi` version".into());
        }
        let paths = doc
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or("the OpenAPI description has no `paths` object")?;
        let mut ops = Vec::new();
        for (template, item) in paths {
            // A template is a path from `/`; anything else (which would match other paths
            // once split) is no operation.
            let (true, Some(item)) = (template.starts_with('/'), item.as_object()) else {
                continue;
            };
            let segments: Vec<Segment> = template
                .split('/')
                .skip(1)
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') {
                        Segment::Param
                    } else {
                        Segment::Literal(s.to_string())
                    }
                })
                .collect();
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.contains_key(method) {
                    ops.push((method.to_ascii_uppercase(), segments.clone()));
                }
            }
        }
        Ok(Self(ops))
    }

    /// Whether `method path` is one of the operations.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        self.0.iter().any(|(m, template)| {
            m == method
                && template.len() == segs.len()
                && template.iter().zip(&segs).all(|(t, s)| match t {
                    Segment::Literal(l) => l == s,
                    Segment::Param => !s.is_empty(),
                })
        })
    }
}

/// The HTTP client and the parsed descriptions of this node's proxied services.
#[derive(Default)]
pub struct Proxy {
    client: OnceLock<Result<reqwest::Client, String>>,
    described: Mutex<Vec<(ChunkHash, Arc<Operations>)>>,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// One forwarded call's place among [`AT_ONCE`].
struct Turn<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn refused(kind: RefusalKind, message: String) -> Refusal {
    (kind, message)
}

fn unavailable(code: &ResourceCode, what: &str, e: &dyn std::fmt::Display) -> Refusal {
    tracing::warn!(%code, error = %e, "proxied call: {what}");
    refused(
        RefusalKind::Unavailable,
        format!("the provider cannot forward calls on {code} just now ({what}); try again later or tell the provider"),
    )
}

impl Proxy {
    /// A place among the calls forwarded at once, or a refusal when all are taken.
    fn turn(&self, code: &ResourceCode) -> Result<Turn<'_>, Refusal> {
        use std::sync::atomic::Ordering;
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let turn = Turn(&self.in_flight);
        if n >= AT_ONCE {
            return Err(refused(
                RefusalKind::Unavailable,
                format!("{code}: the provider is forwarding {AT_ONCE} calls to its backends already; try again shortly"),
            ));
        }
        Ok(turn)
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                crate::plain_http::builder()
                    .map_err(|e| e.to_string())?
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The operations of version `dv` (this node's OpenAPI description file), parsed once.
    fn operations(
        &self,
        state: &NodeState,
        dv: &DatasetVersion,
    ) -> Result<Arc<Operations>, Refusal> {
        let code = &dv.code;
        if let Some((_, ops)) = self
            .described
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(m, _)| *m == dv.manifest)
        {
            return Ok(ops.clone());
        }
        let stored = records::manifest(&state.store, &dv.manifest)
            .map_err(|e| unavailable(code, "reading its description", &e))?
            .filter(|m| m.complete)
            .ok_or_else(|| {
                unavailable(code, "its description is not held complete", &"incomplete")
            })?;
        let signed = SignedManifest::open(&stored.envelope, &state.id(), dv)
            .map_err(|e| unavailable(code, "reading its description", &e))?;
        // A missing or bad description is the provider's to fix: the caller hears it is
        // unavailable, the provider's log says why.
        let not_described = || {
            unavailable(
                code,
                "no OpenAPI description",
                &"publish it as the resource's dataset version: huitong dataset publish CODE --from openapi.json --file",
            )
        };
        let Body::File { chunks, .. } = &signed.manifest.body else {
            return Err(not_described());
        };
        let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        if total > MAX_DESCRIPTION_BYTES {
            return Err(unavailable(
                code,
                "its OpenAPI description is too large",
                &format!("{total} bytes, more than {MAX_DESCRIPTION_BYTES}"),
            ));
        }
        let mut json = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for c in chunks {
            let b = state
                .chunks
                .read_verified(&c.hash)
                .map_err(|e| unavailable(code, "reading its description", &e))?;
            json.extend_from_slice(&b);
        }
        let ops = Arc::new(
            Operations::parse(&json)
                .map_err(|why| unavailable(code, "its OpenAPI description is not valid", &why))?,
        );
        let mut all = self.described.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= KEPT {
            all.remove(0);
        }
        all.push((dv.manifest, ops.clone()));
        Ok(ops)
    }

    /// Forwards `query` (an HTTP request) to `backend`, if the description `dv` has the
    /// operation: the backend's answer, masked as `masked` says. Blocking: call it off the
    /// async workers (it waits on the runtime for the backend).
    pub fn forward(
        &self,
        state: &NodeState,
        backend: &BackendConfig,
        dv: &DatasetVersion,
        query: &Query,
        masked: &[String],
    ) -> Result<Outcome, Refusal> {
        let code = &dv.code;
        let Query::Http {
            method,
            path,
            query: qs,
            content_type,
            body,
        } = query
        else {
            return Err(refused(
                RefusalKind::Invalid,
                format!("{code} is a proxied service: call …/call/PATH with the operations of its OpenAPI description, not …/lookup or …/verify"),
            ));
        };
        let ops = self.operations(state, dv)?;
        if !ops.allows(method, path) {
            return Err(refused(
                RefusalKind::NotFound,
                format!("{code}: {method} {path} is not an operation of the service's OpenAPI description"),
            ));
        }
        // A masked grant reads only: a write's answer may not be JSON (204, text), and it could
        // not be masked after the backend had already acted.
        if !masked.is_empty() && method != "GET" {
            return Err(refused(
                RefusalKind::NotShared,
                format!(
                    "{code}: the grant masks {}, so it allows GET calls only",
                    masked.join(",")
                ),
            ));
        }
        let headers = crate::secrets::backend_headers(&state.dir, code.as_str())
            .map_err(|e| unavailable(code, "its backend's credentials", &e))?;
        let client = self
            .client()
            .map_err(|e| unavailable(code, "its HTTP client", &e))?;
        let base = backend.base_url.trim_end_matches('/');
        let mut url = format!("{base}{path}");
        if !qs.is_empty() {
            url.push('?');
            url.push_str(qs);
        }
        // The URL as the client will send it must be the base and the path unchanged: nothing
        // resolved, normalised or re-rooted on the way.
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            refused(
                RefusalKind::Invalid,
                format!("{code}: {method} {path}: {e}"),
            )
        })?;
        let base_path = reqwest::Url::parse(base)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        if parsed.path() != format!("{base_path}{path}") {
            return Err(refused(
                RefusalKind::Invalid,
                format!("{code}: the path {path} does not stay below the service"),
            ));
        }
        let _turn = self.turn(code)?;
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| refused(RefusalKind::Invalid, e.to_string()))?;
        let mut req = client.request(m, parsed).headers(headers);
        if let Some(t) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, t.as_str());
        }
        if !body.is_empty() {
            req = req.body(body.clone());
        }
        let (limit, timeout) = (backend.max_response(), backend.timeout());
        let exchange = async {
            let mut resp = req.send().await.map_err(Cut::Failed)?;
            if resp.content_length().is_some_and(|n| n > limit as u64) {
                return Err(Cut::TooLarge);
            }
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(128).collect::<String>());
            let mut out = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(Cut::Failed)? {
                if out.len() + chunk.len() > limit {
                    return Err(Cut::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
            Ok((status, ct, out))
        };
        let done = tokio::runtime::Handle::current()
            .block_on(async { tokio::time::timeout(timeout, exchange).await });
        let (status, content_type, body) = match done {
            Ok(Ok(answer)) => answer,
            Err(_) => return Err(cut_slow(code, timeout)),
            Ok(Err(Cut::TooLarge)) => {
                return Err(refused(
                    RefusalKind::Unavailable,
                    format!(
                        "{code}: the provider's backend answered more than {} KiB; cut off (ask for less, or the provider raises max_response_kib)",
                        limit / 1024
                    ),
                ))
            }
            Ok(Err(Cut::Failed(e))) if e.is_timeout() => return Err(cut_slow(code, timeout)),
            Ok(Err(Cut::Failed(e))) => {
                return Err(unavailable(code, "its backend cannot be reached", &e.without_url()))
            }
        };
        let body = if masked.is_empty() || body.is_empty() {
            body
        } else {
            mask_json(&body, masked).ok_or_else(|| {
                refused(
                    RefusalKind::NotShared,
                    format!("{code}: the grant masks {}, but the backend's answer is not JSON, so it cannot be masked; the call is refused", masked.join(",")),
                )
            })?
        };
        Ok(Outcome::Http {
            status,
            content_type,
            body,
        })
    }
}

/// Why a backend exchange stopped.
enum Cut {
    TooLarge,
    Failed(reqwest::Error),
}

fn cut_slow(code: &ResourceCode, timeout: Duration) -> Refusal {
    refused(
        RefusalKind::Unavailable,
        format!(
            "{code}: the provider's backend did not answer within {} s; cut off (try again later)",
            timeout.as_secs()
        ),
    )
}

/// `body` as JSON with every value under a key named in `masked` masked; `None` when it is not
/// JSON.
fn mask_json(body: &[u8], masked: &[String]) -> Option<Vec<u8>> {
    fn walk(v: &mut serde_json::Value, masked: &[String]) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if masked.iter().any(|n| n == k) {
                        let masked = match &*v {
                            serde_json::Value::String(s) => super::mask::mask(k, s).into(),
                            serde_json::Value::Null => serde_json::Value::Null,
                            other => super::mask::mask(k, &other.to_string()).into(),
                        };
                        *v = masked;
                    } else {
                        walk(v, masked);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| walk(v, masked)),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    walk(&mut v, masked);
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_come_from_the_description_paths() {
        let doc = br#"{"openapi":"3.0.3","paths":{
            "/persons/{id}":{"get":{}},
            "/persons":{"post":{},"parameters":[]},
            "/slow":{"get":{}}}}"#;
        let ops = Operations::parse(doc).unwrap();
        assert!(ops.allows("GET", "/persons/320684"));
        assert!(ops.allows("POST", "/persons"));
        assert!(!ops.allows("DELETE", "/persons/1"));
        assert!(!ops.allows("GET", "/persons/1/2"));
        assert!(!ops.allows("GET", "/persons/"));
        assert!(!ops.allows("GET", "/admin"));
        // A template not from `/` opens nothing.
        let loose =
            Operations::parse(br#"{"openapi":"3.0.3","paths":{"x/{id}":{"get":{}}}}"#).unwrap();
        assert!(!loose.allows("GET", "/admin") && !loose.allows("GET", "/x/1"));
        assert!(Operations::parse(b"{}").is_err());
        assert!(Operations::parse(b"not json").is_err());
    }

    #[test]
    fn masking_reaches_nested_keys_and_refuses_what_is_not_json() {
        let body = r#"{"data":[{"姓名":"张三丰","身份证号":"320684199001011234","n":1}]}"#;
        let out = mask_json(body.as_bytes(), &["姓名".into(), "身份证号".into()]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"][0]["姓名"], "张**");
        assert_eq!(v["data"][0]["身份证号"], "320684********1234");
        assert_eq!(v["data"][0]["n"], 1);
        assert!(mask_json(b"<html>", &["姓名".into()]).is_none());
    }
}
