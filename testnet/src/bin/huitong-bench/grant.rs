//! `huitong-bench grant`: the cost of authorizing one chunk request with a grant token (what a
//! provider does on every request of a 有条件共享 pull), against one plain ed25519 signature
//! verification of a message of the same size measured in the same run.

use std::time::Instant;

use huitong_protocol::grant::{self, GrantFacts, Request};
use huitong_protocol::SecretKey;

/// Grant benchmark options.
#[derive(clap::Args, Debug)]
pub(crate) struct GrantArgs {
    /// Authorizations to time.
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
}

fn key() -> SecretKey {
    SecretKey::from_bytes(rand::random())
}

pub(crate) fn grant(a: GrantArgs) -> anyhow::Result<()> {
    let (platform, provider, consumer) = (key(), key(), key());
    let facts = GrantFacts {
        id: "5f0e8a1c2b3d4e5f60718293a4b5c6d7".into(),
        code: "101001/000001".into(),
        provider: provider.public(),
        consumer: consumer.public(),
        fields: ["姓名", "公民身份号码", "性别", "出生日期", "户籍地址"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        expires: 4_000_000_000,
    };
    let token = grant::mint(&platform, &facts)?;
    let block = grant::endorse(&provider, &token, &facts)?;
    let full = grant::assemble(&token, &block)?;
    let me = consumer.public();
    let serving = provider.public();
    let req = Request {
        requester: &me,
        provider: &serving,
        code: "101001/000001",
        column: Some("性别"),
        now: 1_800_000_000,
    };
    let pk = platform.public();
    // First request of a pull: parse, verify the three signatures, run the datalog.
    let first = time(a.iterations, || {
        Ok(grant::authorize(&full, &pk, &req).map(drop)?)
    })?;
    // Every further request: the provider's cache holds the verified token; datalog only.
    let cache = grant::TokenCache::default();
    let cached = time(a.iterations, || {
        Ok(cache
            .authorize(&grant::Presented::new(&full, &pk), &req)
            .map(drop)?)
    })?;
    // Baseline: one ed25519 verification of a message as long as the token.
    let msg = vec![7u8; full.len()];
    let sig = platform.sign(&msg);
    let base = time(a.iterations, || {
        if pk.verify(&msg, &sig) {
            Ok(())
        } else {
            Err(anyhow::anyhow!("baseline signature did not verify"))
        }
    })?;
    println!(
        "token {} bytes (authority block + provider third-party block), {} iterations",
        full.len(),
        a.iterations
    );
    println!(
        "baseline one ed25519 verification: mean {:.1} µs",
        base.mean
    );
    for (what, t) in [
        ("first request (verify + datalog)", first),
        ("later requests (cached token, datalog)", cached),
    ] {
        println!(
            "{what}: mean {:.1} µs, p99 {:.1} µs; ratio {:.1}x the baseline",
            t.mean,
            t.p99,
            t.mean / base.mean
        );
    }
    Ok(())
}

/// Mean and 99th percentile of one call, in µs.
#[derive(Clone, Copy)]
struct Timing {
    mean: f64,
    p99: f64,
}

/// Times `n` calls of `f` after 200 warm-up calls.
fn time(n: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Timing> {
    for _ in 0..200 {
        f()?;
    }
    let mut times = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mean = t0.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    times.sort_by(f64::total_cmp);
    let p99 = times
        .get((times.len() * 99 / 100).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    Ok(Timing { mean, p99 })
}
