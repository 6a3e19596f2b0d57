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
    for _ in 0..200 {
        grant::authorize(&full, &pk, &req)?;
    }
    let mut times = Vec::with_capacity(a.iterations);
    let t0 = Instant::now();
    for _ in 0..a.iterations {
        let t = Instant::now();
        grant::authorize(&full, &pk, &req)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mean = t0.elapsed().as_secs_f64() * 1e6 / a.iterations as f64;
    times.sort_by(f64::total_cmp);
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    // Baseline: one ed25519 verification of a message as long as the token.
    let msg = vec![7u8; full.len()];
    let sig = platform.sign(&msg);
    let t1 = Instant::now();
    for _ in 0..a.iterations {
        if !pk.verify(&msg, &sig) {
            anyhow::bail!("baseline signature did not verify");
        }
    }
    let base = t1.elapsed().as_secs_f64() * 1e6 / a.iterations as f64;
    println!(
        "token {} bytes (authority block + provider third-party block), {} iterations",
        full.len(),
        a.iterations
    );
    println!("authorize per request: mean {mean:.1} µs, p99 {p99:.1} µs");
    println!(
        "baseline one ed25519 verification: {base:.1} µs; ratio {:.1}x",
        mean / base
    );
    Ok(())
}
