//! `sediment serve`: load settings, bind the listeners, open the broker, serve until SIGTERM or
//! SIGINT, then shut down gracefully (stop accepting, answer in-flight requests, fsync, exit 0).

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use sediment_broker::{
    AdminState, Broker, BrokerError, Health, KafkaListener, MetaStores, Metrics, OpenMeta,
    serve_admin, serve_kafka, tls_acceptor,
};
use sediment_log::SystemClock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::ServeArgs;
use crate::settings::{
    FlagOverrides, Roles, Settings, ignored_env_vars, parse_addr, parse_voters, process_env,
};

pub(crate) fn run(args: ServeArgs) -> Result<()> {
    let flags = FlagOverrides {
        data_dir: args.data_dir,
        node_id: args.node_id,
        kafka_listen: args.kafka_listen,
        advertised_listener: args.advertised_listener,
        tls_listen: args.tls_listen,
        tls_advertised_listener: args.tls_advertised_listener,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        admin_listen: args.admin_listen,
        archive_url: args.archive_url,
        process_roles: args.process_roles,
        controller_listen: args.controller_listen,
        controller_quorum_voters: args.controller_quorum_voters,
    };
    let settings = Settings::load(args.config.as_deref(), &process_env(), &flags)?;
    if args.check_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&settings.redacted_json())?
        );
        eprintln!("sediment: configuration is valid");
        return Ok(());
    }
    init_tracing(&settings);
    let ignored = ignored_env_vars(&process_env());
    if !ignored.is_empty() {
        tracing::warn!(variables = ?ignored, "SEDIMENT_* environment variables that match no setting were ignored");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sediment")
        .build()
        .context("cannot start the async runtime")?;
    let roles = settings.roles()?;
    match roles {
        Roles::Controller => runtime.block_on(serve_controller(settings, args.listeners_file)),
        _ => runtime.block_on(serve(settings, args.listeners_file, roles)),
    }
}

/// A running metadata voter.
struct Controller {
    meta: sediment_meta::MetaService,
    bound: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: CancellationToken,
}

impl Controller {
    /// Opens the voter (its Raft log and snapshots under `<data_dir>/meta`) and serves Raft
    /// and the metadata API on `controller.listen`, on the current runtime.
    async fn start(settings: &Settings) -> Result<Self> {
        let voters = parse_voters(&settings.controller.quorum_voters)?;
        let listen = parse_addr("controller.listen", &settings.controller.listen)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on controller.listen={listen}"))?;
        let bound = listener.local_addr()?;
        let node_id = u64::try_from(settings.node_id).context("node_id must not be negative")?;
        let dir = settings.data_dir.join("meta");
        if !voters.contains_key(&node_id) {
            tracing::info!(
                node_id,
                "this node is not among controller.quorum_voters: it starts as a new node and \
                 waits to be added (sediment meta add-learner, then add-voter)"
            );
        }
        let options = sediment_meta::MetaOptions {
            broker_session_timeout: std::time::Duration::from_millis(
                settings.controller.broker_session_timeout_ms,
            ),
            ..Default::default()
        };
        let meta = sediment_meta::MetaService::open_cluster(&dir, node_id, &voters, options)
            .await
            .with_context(|| format!("cannot open the metadata log in {}", dir.display()))?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(meta.clone().serve(listener, {
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        }));
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            node_id,
            controller = %bound,
            voters = ?voters,
            data_dir = %dir.display(),
            "metadata node started"
        );
        Ok(Self {
            meta,
            bound,
            server,
            shutdown,
        })
    }

    async fn stop(self) {
        tracing::info!("shutting down the metadata node");
        self.shutdown.cancel();
        if let Err(e) = self.meta.shutdown().await {
            tracing::error!(error = %e, "metadata node shutdown failed");
        }
        let _ = self.server.await;
    }
}

/// A metadata voter only (`process_roles = "controller"`), until SIGTERM/SIGINT.
async fn serve_controller(
    settings: Settings,
    listeners_file: Option<std::path::PathBuf>,
) -> Result<()> {
    let controller = Controller::start(&settings).await?;
    if let Some(path) = listeners_file {
        write_listeners_file(
            &path,
            &serde_json::json!({ "controller": controller.bound.to_string() }),
        )?;
    }
    wait_for_signal().await;
    controller.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Writes the bound addresses as JSON, atomically (write then rename).
fn write_listeners_file(path: &std::path::Path, json: &serde_json::Value) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json.to_string())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn init_tracing(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&settings.logging.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if settings.logging.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A broker: with `Roles::Embedded` its metadata in a single voter in this process; with
/// `Roles::Broker` in the quorum of `controller.quorum_voters`; with `Roles::Combined` also a
/// voter of that quorum in this process.
async fn serve(
    settings: Settings,
    listeners_file: Option<std::path::PathBuf>,
    roles: Roles,
) -> Result<()> {
    let kafka_addr = parse_addr("kafka.listen", &settings.kafka.listen)?;
    let admin_addr = parse_addr("admin.listen", &settings.admin.listen)?;
    let kafka = TcpListener::bind(kafka_addr)
        .await
        .with_context(|| format!("cannot listen on kafka.listen={kafka_addr}"))?;
    let admin = TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot listen on admin.listen={admin_addr}"))?;
    // The TLS listener: key material read now, so a bad file stops start-up with its name.
    let tls = match (&settings.kafka.tls_listen, settings.tls_files()) {
        (Some(addr), Some(files)) => {
            let acceptor = tls_acceptor(&files)
                .map_err(|e| anyhow::anyhow!("cannot start the TLS listener (kafka.tls_*): {e}"))?;
            let addr = parse_addr("kafka.tls_listen", addr)?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on kafka.tls_listen={addr}"))?;
            Some((listener, acceptor))
        }
        _ => None,
    };
    let kafka_bound = kafka.local_addr()?;
    let admin_bound = admin.local_addr()?;
    let tls_bound = match &tls {
        Some((l, _)) => Some(l.local_addr()?),
        None => None,
    };
    let mut config = settings.broker_config(kafka_bound, tls_bound)?;
    config.pause_before_archive_commit =
        std::env::var_os("SEDIMENT_TEST_PAUSE_BEFORE_ARCHIVE_COMMIT").is_some();
    let default_archive = sediment_archive::default_url(&config.data_dir)?;
    let archive_store = sediment_archive::open_store(&settings.archive, &default_archive, &|k| {
        std::env::var(k).ok()
    })
    .await
    .context("cannot open the archive (archive.url)")?;
    let cache_dir = settings.archive.cache_dir(&config.data_dir);
    let archive_cache =
        sediment_archive::FoyerCache::open(&cache_dir, &settings.archive.cache_sizes())
            .await
            .with_context(|| {
                format!(
                    "cannot open the archive read cache in {} (archive.cache_dir)",
                    cache_dir.display()
                )
            })?;
    let archive_cache: Arc<dyn sediment_archive::ChunkCache> = Arc::new(archive_cache);

    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let broker_cell = Arc::new(OnceLock::new());
    // A broker on a quorum reaches it with this client: each call retries for up to 15 s (the
    // broker waits that long at most, sometimes under its admin lock).
    let quorum_client = if roles == Roles::Embedded {
        None
    } else {
        let voters: Vec<String> = parse_voters(&settings.controller.quorum_voters)?
            .into_values()
            .collect();
        Some(sediment_meta::MetaClient::new(
            voters,
            std::time::Duration::from_secs(15),
        ))
    };
    let admin_task = tokio::spawn(serve_admin(
        admin,
        AdminState {
            metrics: Arc::clone(&metrics),
            health: Arc::clone(&health),
            broker: Arc::clone(&broker_cell),
            meta: quorum_client.clone(),
        },
        shutdown.clone(),
    ));

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %config.data_dir.display(),
        node_id = config.node_id,
        archive = %archive_url_for_log(&settings, &default_archive),
        "starting sediment broker"
    );
    // The metadata service (or the client of the quorum) runs on a runtime of its own: the
    // broker's storage calls wait for metadata writes on the broker's threads (sometimes
    // under a lock other requests want), and those writes must not need a broker thread to
    // finish.
    let meta_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sediment-meta")
        .enable_all()
        .build()
        .context("cannot start the metadata service's runtime")?;
    let controller = if roles == Roles::Combined {
        let settings = settings.clone();
        Some(
            meta_runtime
                .spawn(async move { Controller::start(&settings).await })
                .await
                .context("metadata node start-up task failed")??,
        )
    } else {
        None
    };
    let meta_cell: Arc<OnceLock<sediment_meta::MetaService>> = Arc::new(OnceLock::new());
    let stores_cell: Arc<OnceLock<MetaStores>> = Arc::new(OnceLock::new());
    let open_meta: OpenMeta = if roles == Roles::Embedded {
        let handle = meta_runtime.handle().clone();
        let cell = Arc::clone(&meta_cell);
        let node_id = config.node_id;
        Box::new(move |dir: &std::path::Path| {
            let meta_dir = dir.join("meta");
            let id = u64::try_from(node_id)
                .map_err(|_| BrokerError::InvalidConfig("node_id must not be negative".into()))?;
            let meta = handle
                .block_on(sediment_meta::MetaService::open_single(
                    &meta_dir,
                    id,
                    sediment_meta::MetaOptions::default(),
                ))
                .map_err(|e| {
                    BrokerError::Storage(format!(
                        "cannot open the metadata log in {}: {e}",
                        meta_dir.display()
                    ))
                })?;
            let _ = cell.set(meta.clone());
            Ok(MetaStores::new(meta, node_id))
        })
    } else {
        // A broker of a quorum elsewhere: it follows the voters' metadata.
        let handle = meta_runtime.handle().clone();
        let cell = Arc::clone(&stores_cell);
        let node_id = config.node_id;
        let client = quorum_client.clone().context("a quorum client")?;
        Box::new(move |_dir: &std::path::Path| {
            // At start-up the quorum gets a minute.
            let voters = client.addrs().to_vec();
            let started = std::time::Instant::now();
            let replica = loop {
                match handle.block_on(sediment_meta::MetaReplica::connect(client.clone())) {
                    Ok(r) => break r,
                    Err(e) if started.elapsed() < std::time::Duration::from_secs(60) => {
                        tracing::warn!(error = %e, "waiting for the metadata quorum");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                    Err(e) => {
                        return Err(BrokerError::Storage(format!(
                            "cannot reach the metadata quorum (controller.quorum_voters={}): {e}",
                            voters.join(",")
                        )));
                    }
                }
            };
            replica.follow();
            let stores = MetaStores::remote(replica, node_id);
            let _ = cell.set(stores.clone());
            Ok(stores)
        })
    };
    let broker = {
        let config = config.clone();
        let metrics = Arc::clone(&metrics);
        tokio::task::spawn_blocking(move || {
            Broker::open_with(
                config,
                Arc::new(SystemClock),
                metrics,
                archive_store,
                archive_cache,
                Some(open_meta),
            )
        })
        .await
        .context("broker start-up task failed")?
    };
    let broker = match broker {
        Ok(b) => b,
        Err(e) => {
            meta_runtime.shutdown_background();
            return Err(e.into());
        }
    };
    let _ = broker_cell.set(Arc::clone(&broker));
    if let Some(stores) = stores_cell.get() {
        let me = broker.me();
        let interval =
            std::time::Duration::from_millis(settings.controller.broker_heartbeat_interval_ms);
        let stores = stores.clone();
        let shutdown = shutdown.clone();
        meta_runtime.spawn(async move { stores.run_heartbeats(me, interval, shutdown).await });
    }
    let background = tokio::spawn(Arc::clone(&broker).run_background(shutdown.clone()));
    let kafka_task = tokio::spawn(serve_kafka(
        kafka,
        KafkaListener::plaintext(),
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let tls_task = tls.map(|(listener, acceptor)| {
        tokio::spawn(serve_kafka(
            listener,
            KafkaListener::tls(acceptor),
            Arc::clone(&broker),
            shutdown.clone(),
        ))
    });
    health.set_ready(true);
    tracing::info!(
        kafka = %kafka_bound,
        kafka_tls = ?tls_bound,
        advertised = %broker.me().advertised_listeners(),
        admin = %admin_bound,
        cluster_id = broker.cluster_id(),
        "ready"
    );
    if let Some(path) = listeners_file {
        let mut json = serde_json::json!({
            "kafka": kafka_bound.to_string(),
            "admin": admin_bound.to_string(),
            "advertised": format!("{}:{}", config.advertised_host, config.advertised_port),
        });
        if let Some(bound) = tls_bound {
            json["kafka_tls"] = bound.to_string().into();
        }
        if let Some(c) = &controller {
            json["controller"] = c.bound.to_string().into();
        }
        write_listeners_file(&path, &json)?;
    }

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    health.set_ready(false);
    shutdown.cancel();
    let _ = kafka_task.await;
    if let Some(t) = tls_task {
        let _ = t.await;
    }
    let _ = background.await;
    let flush = {
        let broker = Arc::clone(&broker);
        tokio::task::spawn_blocking(move || broker.flush_all()).await
    };
    match flush {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
        Err(e) => tracing::error!(error = %e, "final flush task failed"),
    }
    if let Some(meta) = meta_cell.get()
        && let Err(e) = meta.shutdown().await
    {
        tracing::error!(error = %e, "metadata service shutdown failed");
    }
    if let Some(c) = controller {
        let _ = meta_runtime.spawn(c.stop()).await;
    }
    meta_runtime.shutdown_background();
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

fn archive_url_for_log(settings: &Settings, default: &str) -> String {
    if settings.archive.url.is_empty() {
        default.to_string()
    } else {
        settings.archive.url.clone()
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}
