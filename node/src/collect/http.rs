//! An HTTP/JSON API source: the records of each page (a JSON array at the source's `records`
//! pointer) become CSV rows whose header is the entry's 信息项, sent page by page to the
//! publisher — one page in memory at a time, never the whole resource.
//!
//! Each 信息项 reads the record's field of the same name, or the one `columns` maps it to; a
//! missing field or `null` is an empty cell, strings are taken as they are, numbers and booleans
//! as their JSON text, and a nested object or array is refused with the record's place. Pages
//! follow each other by number (`?page=N&size=S`), by offset (`?offset=K&limit=S`) — both end at
//! an empty page or one shorter than an earlier page (an API may serve fewer records per page
//! than asked: a short first page is not taken as the end) — or by the link or cursor each page
//! names (`next`). The headers the API expects (a token) come from the secrets file, never the
//! config. Every run is bounded: [`REQUEST_TIMEOUT`] per page, [`MAX_PAGE_BYTES`], [`MAX_PAGES`],
//! [`RUN_DEADLINE`], no redirects, a next link only to the same host; a page equal to an earlier
//! one stops the run (an API that ignores the paging parameter, or a cycle of links) — except a
//! short last page served again for a page past the end, which ends it.
//!
//! Layering: a leaf of [`crate::collect`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use huitong_config::{Paging, PagingStyle, SourceConfig};
use huitong_protocol::catalogue::Item;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::stream::{Layout, Sink};
use super::{CollectError, SEND_AT};

/// Longest wait for one page.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest page read.
pub const MAX_PAGE_BYTES: usize = 16 << 20;
/// Longest run.
pub const RUN_DEADLINE: Duration = Duration::from_secs(2 * 3600);
/// Most pages of one run.
pub const MAX_PAGES: u64 = 100_000;

/// A page's place in the sequence.
#[derive(Debug)]
enum Next {
    /// Ask for this URL, adding the paging parameters (`None`: the source's).
    Url(Option<String>, Vec<(String, String)>),
    /// The last page was read.
    Done,
}

/// The origin (`https://host:port`) of a URL: scheme and authority.
fn origin(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &url[..url.len() - rest.len() + end]
}

/// What the API sent, for an error message: quoted (no control characters reach a terminal
/// or the portal) and at most [`CLIP_CHARS`] characters.
fn clip(text: &str) -> String {
    let mut out: String = format!("{:?}", text.chars().take(CLIP_CHARS).collect::<String>());
    if text.chars().nth(CLIP_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Characters of the API's text an error message quotes at most.
const CLIP_CHARS: usize = 200;

/// The paging parameters of the first page.
fn first(p: &Paging) -> Vec<(String, String)> {
    let mut q = Vec::new();
    match p.style {
        PagingStyle::Page => q.push((p.param().to_owned(), p.first.unwrap_or(1).to_string())),
        PagingStyle::Offset => q.push((p.param().to_owned(), "0".into())),
        PagingStyle::Next | PagingStyle::None => {}
    }
    if let (Some(size), PagingStyle::Page | PagingStyle::Offset) = (p.size_param(), p.style) {
        q.push((size.to_owned(), p.size().to_string()));
    }
    q
}

/// What follows page number `n` (0-based), which held `records` records, after `query`; the
/// earlier pages held at most `most` records each.
fn after(
    src: &SourceConfig,
    p: &Paging,
    (n, records, most, query): (u64, usize, usize, &[(String, String)]),
    page: &Value,
) -> Result<Next, String> {
    let short = records < most;
    let with = |value: String| {
        let mut q: Vec<(String, String)> = query.to_vec();
        if let Some(slot) = q.iter_mut().find(|(k, _)| k == p.param()) {
            slot.1 = value;
        }
        q
    };
    Ok(match p.style {
        PagingStyle::None => Next::Done,
        PagingStyle::Page | PagingStyle::Offset if short || records == 0 => Next::Done,
        PagingStyle::Page => Next::Url(None, with((p.first.unwrap_or(1) + n + 1).to_string())),
        PagingStyle::Offset => {
            let offset: u64 = query
                .iter()
                .find(|(k, _)| k == p.param())
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            Next::Url(None, with((offset + records as u64).to_string()))
        }
        PagingStyle::Next => match page.pointer(p.next()) {
            None | Some(Value::Null) => Next::Done,
            Some(Value::String(s)) if s.is_empty() => Next::Done,
            Some(Value::String(s)) if s.starts_with("http://") || s.starts_with("https://") => {
                if origin(s) != origin(&src.url) {
                    return Err(format!(
                        "page {} names its next page on another host ({}); only {} is read",
                        n + 1,
                        clip(origin(s)),
                        origin(&src.url)
                    ));
                }
                Next::Url(Some(s.clone()), Vec::new())
            }
            Some(Value::String(cursor)) => {
                Next::Url(None, vec![(p.param().to_owned(), cursor.clone())])
            }
            Some(Value::Number(cursor)) => {
                Next::Url(None, vec![(p.param().to_owned(), cursor.to_string())])
            }
            Some(other) => {
                return Err(format!(
                    "page {}: {} is {}, neither a link nor a cursor; set paging.next to the JSON pointer of the next page's link or cursor",
                    n + 1,
                    p.next(),
                    clip(&other.to_string())
                ))
            }
        },
    })
}

/// Reads one page's body, at most [`MAX_PAGE_BYTES`].
async fn body(mut resp: reqwest::Response, n: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(piece) = resp
        .chunk()
        .await
        .map_err(|e| format!("page {n}: the answer broke off: {e}"))?
    {
        if out.len() + piece.len() > MAX_PAGE_BYTES {
            return Err(format!(
                "page {n} is larger than {} MiB; ask for fewer records per page (paging.size)",
                MAX_PAGE_BYTES >> 20
            ));
        }
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// The CSV rows of one page's records, in the order of `items`.
fn rows_of(
    src: &SourceConfig,
    items: &[Item],
    (n, page): (u64, &mut Value),
    csv: &mut csv::Writer<Vec<u8>>,
) -> Result<usize, String> {
    let pointer = src.records.as_deref().unwrap_or("");
    let records = match page.pointer_mut(pointer) {
        Some(Value::Array(a)) => std::mem::take(a),
        Some(other) => {
            let kind = match other {
                Value::Object(_) => "an object",
                Value::Null => "null",
                _ => "not an array",
            };
            return Err(format!(
                "page {n}: the records at {pointer:?} are {kind}; set records to the JSON pointer of the array of records (e.g. \"/data/list\")"
            ));
        }
        None => {
            return Err(format!(
                "page {n} has nothing at {pointer:?}; set records to the JSON pointer of the array of records (e.g. \"/data/list\")"
            ))
        }
    };
    let count = records.len();
    for (r, record) in records.into_iter().enumerate() {
        let Value::Object(mut fields) = record else {
            return Err(format!("page {n}, record {}: not a JSON object", r + 1));
        };
        let mut cells = Vec::with_capacity(items.len());
        for item in items {
            let field = src.columns.get(&item.name).unwrap_or(&item.name);
            let cell =
                crate::dataset::input::json_cell(fields.remove(field).unwrap_or(Value::Null))
                    .map_err(|e| format!("page {n}, record {}, field {field:?}: {e}", r + 1))?;
            cells.push(cell);
        }
        csv.write_record(&cells).map_err(|e| e.to_string())?;
    }
    Ok(count)
}

/// Reads the API of `src` page by page into `out`, adding the bytes read to `bytes`.
pub async fn extract(
    src: &SourceConfig,
    headers: HeaderMap,
    items: &[Item],
    out: &Sink,
    bytes: &AtomicU64,
) -> Result<(), CollectError> {
    let code = src.code.clone();
    let fail = |why: String| CollectError::Source {
        code: code.clone(),
        why,
    };
    super::check_mapping(src, items).map_err(&fail)?;
    if let Some(k) = src
        .key
        .iter()
        .find(|k| !items.iter().any(|i| &i.name == *k))
    {
        return Err(fail(format!(
            "key names {k:?}, which is not a 信息项 of the entry"
        )));
    }
    // Plain http needs no trust store: the system's is loaded only for https (and a machine
    // without one can still read http sources).
    let builder = if src.url.starts_with("http://") {
        crate::plain_http::builder()
            .map_err(|e| fail(format!("cannot make an HTTP client: {e}")))?
    } else {
        reqwest::Client::builder()
    };
    // The department's API is reached directly, never through a proxy of the environment.
    let mut client = builder
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers);
    if let Some(ca) = &src.ca {
        client = client.tls_certs_only(authorities(ca).await.map_err(&fail)?);
    }
    let client = client.build().map_err(|e| {
        fail(format!(
            "cannot make an HTTP client: {}{}",
            describe(e, src.ca.is_some()),
            if src.ca.is_none() {
                "; for https the node needs the system's trust store (Debian: apt-get install ca-certificates), or set ca on the source"
            } else {
                ""
            }
        ))
    })?;
    let paging = src.paging.clone().unwrap_or_default();
    out.layout(Layout {
        key: src.key.clone(),
        ..Layout::default()
    });
    let mut csv = csv::Writer::from_writer(Vec::with_capacity(SEND_AT + 4096));
    csv.write_record(items.iter().map(|i| i.name.as_str()))
        .map_err(|e| fail(e.to_string()))?;
    let mut next = Next::Url(None, first(&paging));
    let mut seen: std::collections::HashSet<blake3::Hash> = std::collections::HashSet::new();
    let (mut previous, mut last_records, mut most) = (None, 0usize, 0usize);
    let started = std::time::Instant::now();
    let mut n = 0u64;
    while let Next::Url(link, query) = next {
        n += 1;
        if n > MAX_PAGES {
            return Err(fail(format!(
                "more than {MAX_PAGES} pages; ask for more records per page (paging.size)"
            )));
        }
        if started.elapsed() > RUN_DEADLINE {
            return Err(fail(format!(
                "the API was read for more than {} hours; ask for more records per page (paging.size) or collect less often",
                RUN_DEADLINE.as_secs() / 3600
            )));
        }
        let url = link.as_deref().unwrap_or(&src.url);
        let resp = client
            .get(url)
            .query(&query)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| CollectError::Connect {
                code: code.clone(),
                at: origin(&src.url).to_owned(),
                why: format!("page {n}: {}", describe(e, src.ca.is_some())),
            })?;
        let status = resp.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => "; check the headers in secrets.toml [sources.\"CODE\"] headers",
                404 => "; check the url",
                _ => "",
            };
            return Err(fail(format!("page {n}: the API answered {status}{hint}")));
        }
        let text = body(resp, n).await.map_err(&fail)?;
        bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        let hash = blake3::hash(&text);
        if !seen.insert(hash) {
            // A short last page served again for a page past the end: the end.
            if previous == Some(hash) && last_records < paging.size() as usize {
                break;
            }
            return Err(fail(format!(
                "page {n} is the same as an earlier page: the API seems to ignore the paging parameter {:?}, or its links go round; set paging (style, param) as the API expects",
                paging.param()
            )));
        }
        previous = Some(hash);
        let mut page: Value = serde_json::from_slice(&text)
            .map_err(|e| fail(format!("page {n} is not JSON: {e}")))?;
        drop(text);
        let records = rows_of(src, items, (n, &mut page), &mut csv).map_err(&fail)?;
        next = after(src, &paging, (n - 1, records, most, &query), &page).map_err(&fail)?;
        (last_records, most) = (records, most.max(records));
        if csv.get_ref().len() >= SEND_AT {
            send(&mut csv, out, &code).await?;
        }
    }
    send(&mut csv, out, &code).await
}

/// Sends the CSV text gathered in `csv` to the publisher.
async fn send(csv: &mut csv::Writer<Vec<u8>>, out: &Sink, code: &str) -> Result<(), CollectError> {
    let full = std::mem::replace(csv, csv::Writer::from_writer(Vec::new()));
    let text = full.into_inner().map_err(|e| CollectError::Source {
        code: code.to_owned(),
        why: e.to_string(),
    })?;
    out.send(text)
        .await
        .map_err(|_| CollectError::Stream("the publisher stopped reading".into()))
}

/// Largest `ca` file read.
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// Longest a `ca` file is read for.
const CA_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate authorities in the PEM file at `path` (the source's `ca`), each checked as
/// a trust anchor.
async fn authorities(path: &str) -> Result<Vec<reqwest::Certificate>, String> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read ca {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "ca {path} is not a regular file; it should be a PEM file of certificates"
        ));
    }
    let read = async {
        let file = tokio::fs::File::open(path).await?;
        let mut pem = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(
            &mut tokio::io::AsyncReadExt::take(file, MAX_CA_BYTES + 1),
            &mut pem,
        )
        .await?;
        Ok::<_, std::io::Error>(pem)
    };
    let pem = tokio::time::timeout(CA_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            format!(
                "ca {path} was not read within {} s",
                CA_READ_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot read ca {path}: {e}"))?;
    if pem.len() as u64 > MAX_CA_BYTES {
        return Err(format!(
            "ca {path} is larger than {} KiB; it should hold the PEM certificates of a few authorities",
            MAX_CA_BYTES / 1024
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut certs = Vec::new();
    for (n, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der = der.map_err(|e| format!("ca {path} is not a PEM file of certificates: {e}"))?;
        roots
            .add(der.clone())
            .map_err(|e| format!("certificate {} in ca {path} is not valid: {e}", n + 1))?;
        certs.push(
            reqwest::Certificate::from_der(&der)
                .map_err(|e| format!("certificate {} in ca {path}: {e}", n + 1))?,
        );
    }
    if certs.is_empty() {
        return Err(format!(
            "ca {path} holds no certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// The client's error with its causes, without the URL (its query may hold what the operator
/// set); with `ca`, whether the source names its own authorities.
fn describe(e: reqwest::Error, ca: bool) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
    }
    let mut why = crate::error_chain::describe(&e.without_url());
    // No authority of the certificate's issuer is trusted, or one of its name is but did not
    // sign it.
    if ["UnknownIssuer", "unknown issuer", "BadSignature"]
        .iter()
        .any(|w| why.contains(w))
    {
        why.push_str(if ca {
            "; the API's certificate is not signed by the authorities in the source's ca file"
        } else {
            "; if a department's own authority signs the API's certificate, set ca = \"/path/ca.pem\" on the source"
        });
    } else if why.contains("peer certificate") {
        why.push_str("; the API's certificate does not fit (expired, or not for the url's host): ask its operator to renew it, or fix the url's host");
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_config::SourceKind;

    fn source(paging: Paging) -> SourceConfig {
        SourceConfig {
            columns: [("编号".to_owned(), "id".to_owned())].into(),
            records: Some("/data/list".into()),
            paging: Some(paging),
            ..SourceConfig::new(
                "301001/000001",
                SourceKind::Http,
                "http://10.0.0.7:8080/api/people?type=1",
            )
        }
    }

    #[test]
    fn pages_follow_by_number_offset_or_link_and_end_at_a_short_page() {
        assert_eq!(origin("http://h:1/a?b"), "http://h:1");
        assert_eq!(origin("https://h/a"), "https://h");
        assert_eq!(clip("a\u{1b}[31mb"), "\"a\\u{1b}[31mb\"");
        assert_eq!(clip(&"x".repeat(500)).chars().count(), CLIP_CHARS + 3);
        let by_page = Paging {
            size: Some(2),
            ..Paging::default()
        };
        let src = source(by_page.clone());
        let q = first(&by_page);
        assert_eq!(
            q,
            [("page".into(), "1".into()), ("size".into(), "2".into())]
        );
        let Next::Url(None, q2) = after(&src, &by_page, (0, 2, 0, &q), &Value::Null).unwrap()
        else {
            panic!("a full page is followed by the next");
        };
        assert_eq!(q2[0], ("page".into(), "2".into()));
        assert!(matches!(
            after(&src, &by_page, (1, 1, 2, &q2), &Value::Null),
            Ok(Next::Done)
        ));
        let by_offset = Paging {
            style: PagingStyle::Offset,
            size: Some(2),
            ..Paging::default()
        };
        let q = first(&by_offset);
        let Next::Url(None, q2) = after(&src, &by_offset, (0, 2, 0, &q), &Value::Null).unwrap()
        else {
            panic!("offsets go on");
        };
        assert_eq!(
            q2,
            [("offset".into(), "2".into()), ("limit".into(), "2".into())]
        );
        let linked = Paging {
            style: PagingStyle::Next,
            ..Paging::default()
        };
        let page = serde_json::json!({"next": "http://10.0.0.7:8080/api/people?after=9"});
        assert!(matches!(
            after(&src, &linked, (0, 5, 0, &[]), &page),
            Ok(Next::Url(Some(_), _))
        ));
        let away = serde_json::json!({"next": "http://evil.example/x"});
        assert!(after(&src, &linked, (0, 5, 0, &[]), &away)
            .unwrap_err()
            .contains("another host"));
        let mut tls = src.clone();
        tls.url = "https://10.0.0.7:8080/api/people".into();
        let down = serde_json::json!({"next": "http://10.0.0.7:8080/api/people?after=9"});
        assert!(
            after(&tls, &linked, (0, 5, 0, &[]), &down).is_err(),
            "an https source never follows a link to plain http"
        );
        let cursor = serde_json::json!({"next": "abc"});
        let Ok(Next::Url(None, q)) = after(&src, &linked, (0, 5, 0, &[]), &cursor) else {
            panic!("a cursor is sent back");
        };
        assert_eq!(q, [("cursor".into(), "abc".into())]);
        assert!(matches!(
            after(
                &src,
                &linked,
                (0, 5, 0, &[]),
                &serde_json::json!({"next": null})
            ),
            Ok(Next::Done)
        ));
    }

    #[test]
    fn records_become_rows_in_item_order_and_nested_values_are_refused() {
        let src = source(Paging::default());
        let items: Vec<Item> = serde_json::from_value(serde_json::json!([
            {"name": "编号", "data_type": "I", "length": 10},
            {"name": "姓名", "data_type": "C", "length": 50}
        ]))
        .unwrap();
        let mut csv = csv::Writer::from_writer(Vec::new());
        let mut page = serde_json::json!({"data": {"list": [
            {"id": 1, "姓名": "张三", "extra": true},
            {"id": 2, "姓名": null}
        ]}});
        assert_eq!(rows_of(&src, &items, (1, &mut page), &mut csv).unwrap(), 2);
        assert_eq!(
            String::from_utf8(csv.into_inner().unwrap()).unwrap(),
            "1,张三\n2,\n"
        );
        let mut csv = csv::Writer::from_writer(Vec::new());
        let mut nested = serde_json::json!({"data": {"list": [{"id": {"v": 1}}]}});
        let e = rows_of(&src, &items, (3, &mut nested), &mut csv).unwrap_err();
        assert!(e.contains("page 3, record 1, field \"id\""), "{e}");
        let mut wrong = serde_json::json!({"data": {"rows": []}});
        assert!(rows_of(&src, &items, (1, &mut wrong), &mut csv)
            .unwrap_err()
            .contains("records"));
    }
}
