//! `search`: the portal's catalogue search over a large catalogue at N concurrent users, against
//! the same queries answered by the JSON API (`GET /api/v1/catalogue?q=`) in the same run; and
//! the entry page's weight with its assets on a first visit.
//!
//! One department imports the generated catalogue (as `sync` does), a data user signs in, and
//! the bench waits until the portal counts every entry (the search index is built). Then, for
//! each target in turn, `users` clients send the query mix for `seconds` each, one request at
//! a time, reading every answer whole.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

/// Search benchmark options.
#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// Entries in the catalogue.
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Concurrent users.
    #[arg(long, default_value_t = 16)]
    users: usize,
    /// Seconds of load per target.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Working directory (removed first).
    #[arg(long, default_value = "/tmp/huitong-bench-search")]
    dir: PathBuf,
    /// First port to try (keep it below Linux's ephemeral range, 32768–60999).
    #[arg(long, default_value_t = 28700)]
    base_port: u16,
}

/// The query mix: one entry by its number (1 hit), two words over title and abstract (about
/// 1/64 of the catalogue), one word (1/8 of it).
fn queries(entries: usize) -> Vec<String> {
    let mut q: Vec<String> = (0..8)
        .map(|i| {
            let k = (i * 12_347 + 4_242) % entries.max(1);
            let word = [
                "人口", "法人", "工单", "网格", "证照", "医疗", "教育", "交通",
            ][k % 8];
            format!("{word} {k}")
        })
        .collect();
    q.push("医疗 交通".into());
    q.push("网格".into());
    q
}

/// Latencies (ms, sorted) and answers per second of `users` clients sending `urls` in turn
/// for `seconds`, one request at a time each, each request with `header`.
///
/// The clients are tasks on one thread (one async HTTP client, a kept connection per client):
/// the load generator shares the machine with the nodes it measures, and a blocking client per
/// user (a runtime thread each) took about 40 % of both cores at 64 users.
pub(crate) fn load(
    urls: &[String],
    header: (&str, &str),
    users: usize,
    seconds: u64,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(users)
            .timeout(Duration::from_secs(60))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..users)
            .map(|u| {
                let (http, urls) = (http.clone(), urls.to_vec());
                let (k, v) = (header.0.to_string(), header.1.to_string());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut i = u;
                    while Instant::now() < deadline {
                        let url = &urls[i % urls.len()];
                        i += 1;
                        let t = Instant::now();
                        let r = http.get(url).header(&k, &v).send().await?;
                        let status = r.status();
                        let body = r.bytes().await?;
                        if !status.is_success() {
                            bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
                        }
                        out.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    anyhow::Ok(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.context("a load task panicked")??);
        }
        let secs = started.elapsed().as_secs_f64();
        all.sort_by(f64::total_cmp);
        let rate = all.len() as f64 / secs;
        Ok((all, rate))
    })
}

pub fn search(a: SearchArgs) -> anyhow::Result<()> {
    let super::Imported {
        net: mut t,
        provider: node,
        ..
    } = super::imported(&a.dir, a.base_port, a.entries)?;
    let out = t.cli(
        node,
        &[
            "user",
            "add",
            "bench",
            "--name",
            "基准",
            "--role",
            "data_user",
            "--json",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).to_string())?;
    let password = v["generated_password"].as_str().unwrap_or_default();
    let login = t.call(
        node,
        "POST",
        "/login",
        Some(""),
        Some(&json!({"account": "bench", "password": password})),
    )?;
    let token = login.body["token"]
        .as_str()
        .context("no session token")?
        .to_string();
    let portal = t.portal_addr(node).context("no portal address")?;
    let api = t.api_addr(node).context("no API address")?;
    let port = portal.rsplit(':').next().unwrap_or_default().to_string();
    let cookie = format!("huitong_session_{port}={token}");
    let http = reqwest::blocking::Client::builder().no_proxy().build()?;
    // The index is built when the portal counts every entry.
    let total = format!("{}", a.entries)
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let t0 = Instant::now();
    loop {
        let page = http
            .get(format!("http://{portal}/catalogue"))
            .header("cookie", &cookie)
            .send()?
            .text()?;
        if page.contains(&format!("共 {total} 条资源")) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("the portal never counted {total} entries");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "index ready {:.1} s after the import",
        t0.elapsed().as_secs_f64()
    );
    // Only the department's node answers during the load (the hub would be indexing the same
    // catalogue on the same two cores).
    for i in 0..t.nodes.len() {
        if i != node && t.is_running(i) {
            t.stop(i, false)?;
        }
    }
    let qs = queries(a.entries);
    let portal_urls: Vec<String> = qs
        .iter()
        .map(|q| {
            format!(
                "http://{portal}/catalogue?q={}",
                huitong_testnet::percent_encode(q)
            )
        })
        .collect();
    let api_urls: Vec<String> = qs
        .iter()
        .map(|q| {
            format!(
                "http://{api}/api/v1/catalogue?q={}",
                huitong_testnet::percent_encode(q)
            )
        })
        .collect();
    // Hits per query, from the API.
    let mut hits = Vec::new();
    for (q, u) in qs.iter().zip(&api_urls) {
        let v: serde_json::Value = http
            .get(u)
            .header("authorization", format!("Bearer {token}"))
            .send()?
            .json()?;
        hits.push(format!(
            "{q}: {}",
            v["records"].as_array().map_or(0, |r| r.len())
        ));
    }
    println!(
        "entries={} users={} seconds={}",
        a.entries, a.users, a.seconds
    );
    println!("queries (hits): {}", hits.join(" · "));
    let bearer = format!("Bearer {token}");
    let mut rows = Vec::new();
    for (name, urls, header) in [
        (
            "portal /catalogue?q= (page of 20, facets)",
            &portal_urls,
            ("cookie", cookie.as_str()),
        ),
        (
            "JSON API /api/v1/catalogue?q= (all hits)",
            &api_urls,
            ("authorization", bearer.as_str()),
        ),
    ] {
        let (lat, rate) = load(urls, header, a.users, a.seconds)?;
        let p50 = super::percentile(&lat, 50.0);
        let p99 = super::percentile(&lat, 99.0);
        println!(
            "{name}: {} requests, {rate:.0} req/s, p50 {p50:.1} ms, p99 {p99:.1} ms",
            lat.len()
        );
        rows.push((rate, p50, p99));
    }
    if let [(pr, p50, p99), (ar, a50, a99)] = rows[..] {
        println!(
            "portal ÷ API: throughput {:.2}×, p50 {:.2}×, p99 {:.2}×",
            pr / ar,
            p50 / a50,
            p99 / a99
        );
    }
    // The entry page's weight on a first visit: the page and the assets it names.
    let uscc = &t.nodes[node].uscc;
    let page = http
        .get(format!(
            "http://{portal}/entry?code=301001%2F000001&provider={uscc}"
        ))
        .header("cookie", &cookie)
        .send()?
        .bytes()?;
    let mut weight = page.len();
    for asset in ["portal.css", "portal.js"] {
        weight += http
            .get(format!("http://{portal}/assets/{asset}"))
            .send()?
            .bytes()?
            .len();
    }
    println!(
        "entry page weight, first visit: {} bytes (page {} + assets)",
        weight,
        page.len()
    );
    t.stop_all()?;
    Ok(())
}
