//! `huitong run`: opens the store, registers the views on the feeds, starts the network event
//! loop (with the audit's gossip judge), the agent, the data server, the audit appender and
//! watcher, the housekeeping and the admin API, and shuts them down in order on Ctrl-C or SIGTERM so the store is
//! left consistent.
//!
//! Files in the node directory: `huitong.toml`, `node.key`, `db/` (RocksDB), `chunks/` (dataset
//! chunks, see [`crate::chunks`]), `audit/` (the hub's audit log, see
//! [`crate::audit_log::tiles`]), `rejects/` (reports of cells refused at publication),
//! `exchange/` (files people signed in to the API pull and publish; `storage.exchange_dir`),
//! `api.token` (0600), `api.addr` (written once the API is bound,
//! removed at shutdown), and optionally `charter.cbor`, a signed charter imported at first start.
//!
//! Layering: near the top (only the CLI names it): the one place that wires the layers together
//! — the views into the feeds, the audit services into the network.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use huitong_config::{keyfile, Config, NODE_KEY_FILE};
use libp2p::Multiaddr;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{API_ADDR_FILE, API_TOKEN_FILE, GATEWAY_ADDR_FILE, PORTAL_ADDR_FILE};
use crate::feeds::{self, Feeds};
use crate::net::{self, Client, EventLoop};
use crate::state::NodeState;
use crate::store::Store;
use crate::supervise::Tasks;

/// A charter to import at first start.
pub const CHARTER_FILE: &str = "charter.cbor";

fn parse_addrs(key: &'static str, list: &[String]) -> Result<Vec<Multiaddr>, net::NetError> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|e: libp2p::multiaddr::Error| net::NetError::Address {
                    key,
                    addr: a.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

fn token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(API_TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path) {
        if t.trim().len() >= 32 {
            return Ok(t.trim().to_owned());
        }
    }
    let t = hex::encode(rand::random::<[u8; 32]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut f, t.as_bytes())?;
    Ok(t)
}

/// Keeps freed chunk buffers from inflating the resident set: glibc raises its mmap threshold
/// after large frees, after which multi-MiB chunk buffers come from (and stay in) the heap of
/// whichever blocking thread freed them. A fixed threshold keeps them as mmaps, returned at once.
fn bound_allocator_retention() {
    // M_ARENA_MAX is -8 in glibc's malloc.h.
    const M_ARENA_MAX: libc::c_int = -8;
    // SAFETY: mallopt only changes allocator parameters; called once before the node starts
    // its worker threads.
    unsafe {
        libc::mallopt(M_ARENA_MAX, 2);
    }
}

/// The views built from the feeds, in the order each entry is applied to them: the catalogue
/// first (the others read it), the audit queue last (it logs what the others judged).
fn views(search: &Arc<crate::catalogue::search::Search>) -> Vec<Box<dyn feeds::View>> {
    vec![
        Box::new(crate::catalogue::View {
            search: Some(search.clone()),
        }),
        Box::new(crate::dataset::records::View),
        Box::new(crate::applications::View),
        Box::new(crate::receipts::View),
        Box::new(crate::call_anchors::View),
        Box::new(crate::audit::View),
    ]
}

/// `path` from the configuration, relative to the node directory unless absolute.
fn resolve(dir: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// The catalogue's search index in the node directory (derived data, rebuilt at start).
pub const SEARCH_DIR: &str = "search";

/// Where `huitong restore` copies a backup's store before renaming it to `db/`.
pub const RESTORING_DB: &str = "db.restoring";

/// The exit status of a node that refuses to start because of its configuration (`EX_CONFIG`
/// of sysexits.h): starting it again cannot help, so the systemd unit does not restart it
/// (`RestartPreventExitStatus=78`), while any other failure is retried.
pub const EXIT_CONFIG: i32 = 78;

/// A node that cannot start as configured: a wrong `node.org_code`, authority key, address or
/// `HUITONG_HOUSEKEEPING` setting, an unreadable `huitong.toml`. Fix the configuration, then
/// start the node again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn config_error(e: impl std::fmt::Display) -> anyhow::Error {
    ConfigError(e.to_string()).into()
}

/// Binds a site of its own (`site`: the portal, the gateway's listener) on `addr`: HTTPS when
/// given a certificate and key (read first, so a bad one stops the start with a clear error);
/// `hint` ends the error when the address is taken. The listener, its bound address and its
/// base URL.
async fn bind_site(
    dir: &Path,
    addr: std::net::SocketAddr,
    (site, hint): (&'static str, &str),
    (cert, key): (&Option<std::path::PathBuf>, &Option<std::path::PathBuf>),
) -> anyhow::Result<(crate::http::PortalListener, std::net::SocketAddr, String)> {
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(
            crate::http::tls::acceptor(site, &resolve(dir, cert), &resolve(dir, key))
                .map_err(config_error)?,
        ),
        _ => None,
    };
    let (l, at) = crate::http::bind(addr).await.with_context(|| {
        format!("cannot bind {addr} ({site}.listen); is another node or program using it? {hint}")
    })?;
    Ok(match tls {
        Some(acceptor) => (
            crate::http::PortalListener::Tls(l, acceptor),
            at,
            format!("https://{at}"),
        ),
        None => (
            crate::http::PortalListener::Plain(l),
            at,
            format!("http://{at}"),
        ),
    })
}

/// Runs a node until shutdown.
pub async fn run(dir: &Path, config: Config) -> anyhow::Result<()> {
    bound_allocator_retention();
    keep_private(dir);
    // Held for the node's life: no restore or offline backup runs under it (and it starts
    // only once they are done).
    let _dir_lock = crate::dirlock::DirLock::acquire(dir, "run")?;
    if dir.join(RESTORING_DB).exists() {
        return Err(config_error(format!(
            "{} holds {RESTORING_DB}: a `huitong restore` was cut short, so db/ may not be the backup's; run the same `huitong restore --from … --force` again before starting the node",
            dir.display()
        )));
    }
    let key = keyfile::read(&dir.join(NODE_KEY_FILE))?;
    let authority = config
        .authority_key()
        .map_err(|(k, m)| config_error(format!("{k}: {m}")))?;
    let store = Arc::new(Store::open(&dir.join("db"))?);
    let charters = crate::charter::load(&store, authority)?;
    let chunks = crate::chunks::ChunkStore::open(
        &dir.join("chunks"),
        store.clone(),
        config.storage.small_chunk_bytes(),
    )?;
    let state = Arc::new(NodeState::new(
        dir,
        store,
        chunks,
        key,
        config.clone(),
        authority,
        charters,
    ));
    let exchange = crate::http::paths::exchange_dir(&state);
    {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&exchange)
        {
            warn!(dir = %exchange.display(), error = %e, "cannot create the exchange directory (storage.exchange_dir): people signed in to the API can neither pull nor publish files until it exists");
        }
    }
    if let Ok(fs) = crate::outfile::space::statvfs(dir) {
        let floor = state.space.floor().bytes(fs.size);
        info!(
            keep_free_bytes = floor,
            available_bytes = fs.available,
            "pulls, exports and publishes keep this much free on the node directory's file system (storage.keep_free_mib)"
        );
        if fs.available < floor {
            warn!(keep_free_bytes = floor, available_bytes = fs.available, "the node directory's file system has less free than it keeps back: every pull and publish will be refused until space is freed (`huitong gc`, or lower storage.keep_free_mib)");
        }
    }
    if state.charter().is_none() && dir.join(CHARTER_FILE).exists() {
        let bytes = std::fs::read(dir.join(CHARTER_FILE))?;
        match state.offer_charter(&bytes) {
            Ok(_) => info!(version = state.charter_version(), "imported {CHARTER_FILE}"),
            Err(e) => {
                return Err(config_error(format!(
                    "{}: {e}",
                    dir.join(CHARTER_FILE).display()
                )))
            }
        }
    }
    if state.charter().is_none() {
        warn!("no charter yet: this node will talk to nobody until one is imported (`huitong charter import FILE`)");
    }
    check_org_code(&state)?;
    if let Some(mark) = state.store.catch_up_mark()? {
        state.catch_up.begin(mark.own_seq);
        warn!(own_seq = state.store.head(&state.id())?.seq, backup_seq = mark.own_seq, "restored from a backup: catching up on this node's own feed from its peers before appending to it");
    }

    {
        let state = state.clone();
        tokio::task::spawn_blocking(move || crate::catalogue::warm_up(&state.store)).await??;
    }
    let listen = parse_addrs("network.listen", &config.network.listen).map_err(config_error)?;
    let bootstrap =
        parse_addrs("network.bootstrap", &config.network.bootstrap).map_err(config_error)?;
    let hook_state = state.clone();
    let hook: net::sync_codec::RejectHook = Arc::new(move |label| hook_state.reject(label));
    let is_hub = state.is_hub() || config.node.role == "hub";
    let mut swarm = net::build_swarm(&state.key, Duration::from_secs(3600), Some(hook), is_hub)?;
    let mut control = swarm.behaviour().stream.new_control();
    let incoming = control
        .accept(libp2p::StreamProtocol::new(
            huitong_protocol::wire::DATA_PROTOCOL,
        ))
        .context("cannot register the data protocol")?;
    let bulk_addr = crate::link::bulk::listen_addr(config.network.data_listen.as_deref(), &listen)
        .map_err(config_error)?;
    for a in listen {
        swarm
            .listen_on(a.clone())
            .map_err(|e| net::NetError::Listen {
                addr: a.to_string(),
                reason: crate::error_chain::describe(&e),
            })?;
    }
    // The ranked search index: derived from the catalogue, rebuilt at every start.
    let search = Arc::new(crate::catalogue::search::Search::new(&dir.join(SEARCH_DIR)));
    let feeds = Arc::new(Feeds::new(state.clone(), views(&search)));
    {
        let feeds = feeds.clone();
        // Entries past a feed closure (a crash before they were dropped), and a view rebuild a
        // crash interrupted.
        tokio::task::spawn_blocking(move || feeds.enforce_closures())
            .await?
            .context("dropping entries past a feed closure and rebuilding the views")?;
    }
    let (client, commands) = Client::channel();
    let shutdown = CancellationToken::new();
    let judge = Arc::new(crate::auditor::GossipJudge::new(feeds.clone()));
    let event_loop = EventLoop::new(swarm, feeds.clone(), judge, commands, bootstrap);
    let mut tasks = Tasks::default();
    {
        // Its own thread: building and committing the index is blocking work, and a failure
        // only sends searches back to the unranked scan (it is logged), so it is no task
        // whose end stops the node.
        let (search, state, shutdown) = (search.clone(), state.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("search-index".into())
            .spawn(move || search.run(&state, &shutdown))
            .context("cannot start the search index thread")?;
    }
    tasks.spawn("network", event_loop.run(shutdown.clone()));
    tasks.spawn_infallible(
        "agent",
        crate::agent::run(feeds.clone(), client.clone(), shutdown.clone()),
    );
    if state.config.notify.webhook.is_some() {
        tasks.spawn_infallible(
            "notifier",
            crate::notify::run(state.clone(), shutdown.clone()),
        );
    }
    let housekeeping = crate::housekeeping::Settings::from_env().map_err(config_error)?;
    // A proxied service's credentials: checked now, so a mistake is heard of before a call.
    if !config.services.backends.is_empty() {
        crate::secrets::check(&state.dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        let given =
            crate::secrets::backend_codes(&state.dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        for b in &config.services.backends {
            reqwest::Url::parse(&b.base_url).map_err(|e| {
                anyhow::anyhow!(
                    "services.backends: {}: base_url {:?} is not a URL: {e}",
                    b.code,
                    b.base_url
                )
            })?;
            if !given.contains(&b.code) {
                warn!(code = %b.code, "services.backends: {} has no credentials in {}; calls reach its backend without any", b.code, crate::secrets::SECRETS_FILE);
            }
        }
    }
    tasks.spawn_infallible(
        "housekeeping",
        crate::housekeeping::run(feeds.clone(), housekeeping, shutdown.clone()),
    );
    // Today's call counts read back from the call log, off the async workers; a log that
    // cannot be read costs the counts, not the start.
    let services = {
        let st = state.clone();
        let read =
            tokio::task::spawn_blocking(move || crate::service::provider::Services::restored(&st))
                .await;
        match read {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(error = %e, "call quotas: cannot read today's counts back from the call log; they start at 0 (check the store with `huitong audit calls`)");
                crate::service::provider::Services::default()
            }
            Err(e) => {
                warn!(error = %e, "call quotas: reading today's counts back stopped; they start at 0");
                crate::service::provider::Services::default()
            }
        }
    };
    let services = Arc::new(services);
    // The bulk data port (TCP + TLS 1.3 with the node key): chunk transfers beside libp2p.
    let bulk_tls = Arc::new(crate::link::bulk::BulkTls::new(net::keypair(&state.key))?);
    let (bulk_tx, bulk_rx) = tokio::sync::mpsc::channel(crate::link::bulk::MAX_HANDSHAKES);
    let bulk_listening = match bulk_addr {
        None => {
            info!("no bulk data port (network.data_listen = \"off\"): chunks go over the libp2p connections");
            None
        }
        Some(addr) => {
            let net = client.clone();
            let admit: crate::link::bulk::Admit = Arc::new(move |ip| {
                let net = net.clone();
                Box::pin(async move { net.has_direct_ip(ip).await })
            });
            let listener =
                crate::link::bulk::BulkListener::bind(addr, bulk_tls.clone(), admit).await?;
            let bound = listener.local_addr()?;
            info!(addr = %bound, "bulk data port (TCP, TLS 1.3 with the node key) listening");
            tasks.spawn_infallible("bulk data port", listener.run(bulk_tx, shutdown.clone()));
            Some(bound)
        }
    };
    let data_server = crate::transfer::server::Server::new(
        feeds.clone(),
        client.clone(),
        services.clone(),
        bulk_listening.map(|a| a.port()),
    );
    tasks.spawn_infallible(
        "transfer log",
        crate::transfer::served::run(
            feeds.clone(),
            data_server.served(),
            client.clone(),
            shutdown.clone(),
        ),
    );
    tasks.spawn_infallible(
        "data server",
        data_server.run(incoming, bulk_rx, shutdown.clone()),
    );
    tasks.spawn_infallible(
        "call log anchors",
        crate::call_anchors::run(
            feeds.clone(),
            client.clone(),
            config.services.anchor_every(),
            shutdown.clone(),
        ),
    );
    // Collection: every source's schedule checked now, its password at each run.
    crate::collect::task::check(&config.collect).map_err(config_error)?;
    if !config.collect.sources.is_empty() {
        crate::secrets::check(&state.dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let collector = Arc::new(crate::collect::Collector::new(
        feeds.clone(),
        client.clone(),
    ));
    tasks.spawn_infallible(
        "collection",
        crate::collect::task::run(collector.clone(), shutdown.clone()),
    );
    let transport = crate::link::Transport {
        net: client.clone(),
        control,
        bulk: bulk_tls,
        bulk_listening,
    };
    let pulls: Arc<crate::transfer::pull::Pulls> = Arc::default();
    let subscriber = Arc::new(crate::subscribe::task::Subscriber::new(
        feeds.clone(),
        transport.clone(),
        pulls.clone(),
    ));
    tasks.spawn_infallible("subscriptions", subscriber.clone().run(shutdown.clone()));

    tasks.spawn_infallible(
        "audit appender",
        crate::audit::appender::run(state.clone(), shutdown.clone()),
    );
    tasks.spawn_infallible(
        "audit watch",
        crate::auditor::watch::run(state.clone(), transport.clone(), shutdown.clone()),
    );

    let api_addr = config
        .api_addr()
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let (listener, bound) = crate::http::bind(api_addr)
        .await
        .with_context(|| format!("cannot bind the admin API on {api_addr} (api.listen); is another node using it? use port 0 to pick a free one"))?;
    // Each site's address file is written once every listener is bound (a failed start leaves
    // none pointing at a closed port).
    let mut addr_files = vec![(API_ADDR_FILE, bound)];
    let portal = match config
        .portal_addr()
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?
    {
        Some(addr) => {
            let p = &config.portal;
            let hint = "use port 0 to pick a free one, or \"off\"";
            let (l, at, url) =
                bind_site(dir, addr, ("portal", hint), (&p.tls_cert, &p.tls_key)).await?;
            addr_files.push((PORTAL_ADDR_FILE, at));
            info!(portal = %format!("{url}/"), public = ?p.public_origin, "sharing portal listening");
            Some(l)
        }
        None => {
            let _ = std::fs::remove_file(dir.join(PORTAL_ADDR_FILE));
            None
        }
    };
    let gateway_at = match config
        .gateway_addr()
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?
    {
        Some(addr) => {
            let g = &config.gateway;
            let hint = "the department's systems call this address: free it, or choose another port and tell them";
            let (l, at, url) =
                bind_site(dir, addr, ("gateway", hint), (&g.tls_cert, &g.tls_key)).await?;
            addr_files.push((GATEWAY_ADDR_FILE, at));
            info!(gateway = %format!("{url}/svc/"), "service gateway listening");
            Some(l)
        }
        None => {
            let _ = std::fs::remove_file(dir.join(GATEWAY_ADDR_FILE));
            None
        }
    };
    let token = token(dir)?;
    let accounts = Arc::new(crate::accounts::Accounts::new(state.clone()));
    for (file, at) in addr_files {
        std::fs::write(dir.join(file), at.to_string())?;
    }
    if crate::faults::COMPILED {
        warn!("this binary was built with the test-only `fault-injection` feature (cargo test or --all-targets): do not deploy it; rebuild with `cargo build --release --workspace`");
    }
    info!(api = %bound, relay = is_hub, peer_id = %net::peer_id(&state.id()).map(|p| p.to_string()).unwrap_or_default(), name = %config.node.name, "node running");
    tasks.spawn(
        "admin API",
        crate::http::serve(
            (listener, portal, gateway_at),
            feeds,
            transport,
            token,
            crate::http::Backends {
                accounts,
                search,
                services,
                collector,
                subscriber,
                pulls,
            },
            shutdown.clone(),
        ),
    );

    let failed = tokio::select! {
        _ = wait_for_signal() => None,
        why = tasks.first_end() => Some(why),
    };
    info!("shutting down");
    shutdown.cancel();
    let _ = std::fs::remove_file(dir.join(API_ADDR_FILE));
    let _ = std::fs::remove_file(dir.join(PORTAL_ADDR_FILE));
    let _ = std::fs::remove_file(dir.join(GATEWAY_ADDR_FILE));
    tasks.stop().await;
    info!("stopped");
    match failed {
        None => Ok(()),
        Some(why) => bail!("{why}; the node stopped (a service manager restarts it)"),
    }
}

/// Makes the node directory the node's alone (mode 0700): it holds the store, the key and the
/// backup staging, and its files are created group-readable under the unit's `UMask=0027` (for
/// the outputs in the exchange directory). An older install made it 0750.
fn keep_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(mode) = std::fs::metadata(dir).map(|m| m.permissions().mode()) else {
        return;
    };
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        Ok(()) => {
            warn!(dir = %dir.display(), was = format!("{:o}", mode & 0o7777), "the node directory was open to other users; it is now 0700")
        }
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "the node directory is open to other users and cannot be made 0700; make it so (chmod 700)")
        }
    }
}

/// Refuses to start when the charter admits this node's key under another USCC than
/// `node.org_code`: the node would sign entries for a department the federation does not
/// know it as (every peer would refuse its catalogue entries).
fn check_org_code(state: &NodeState) -> anyhow::Result<()> {
    match state.org_code_problem() {
        Some(problem) => Err(config_error(problem)),
        None => Ok(()),
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
