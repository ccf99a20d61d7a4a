//! Settings of `sediment serve`: built-in defaults, then a TOML file, then `SEDIMENT_*`
//! environment variables, then flags, each layer overriding the previous one. Every key is
//! documented in `docs/operations.md`; an unknown key or a bad value stops start-up with a
//! message naming the setting.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use sediment_archive::ArchiveSettings;
use sediment_broker::group::GroupConfig;
use sediment_broker::{BrokerConfig, LogDefaults};
use serde::{Deserialize, Serialize};

/// Everything `sediment serve` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where partition logs and metadata live.
    pub data_dir: PathBuf,
    /// This broker's id (Kafka `node.id`).
    pub node_id: i32,
    /// Cluster id to adopt on first start (default: generated).
    pub cluster_id: Option<String>,
    /// What this process runs, as Kafka's `process.roles`: `controller` (a metadata voter
    /// only), `broker` (a broker whose metadata is in the quorum of
    /// `controller.quorum_voters`), or `broker,controller` (both in one process). Unset: one
    /// complete node with its metadata in-process.
    pub process_roles: Option<String>,
    /// The metadata quorum (`controller.*`).
    pub controller: ControllerSettings,
    /// Kafka listener.
    pub kafka: KafkaSettings,
    /// Admin HTTP listener.
    pub admin: AdminSettings,
    /// Defaults of topic configs (Kafka's `log.*` broker settings) and the retention interval.
    pub log: LogDefaults,
    /// Consumer groups (Kafka's `group.*` broker settings).
    pub group: GroupConfig,
    /// Tiered storage: where sealed segments are archived as Parquet, and how.
    pub archive: ArchiveSettings,
    /// Process logging.
    pub logging: LoggingSettings,
}

/// `[kafka]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Address to listen on for Kafka clients.
    pub listen: String,
    /// `host:port` given to clients in Metadata (default: the listen address, with the machine's
    /// hostname when listening on all interfaces).
    pub advertised_listener: Option<String>,
    /// Address of the TLS listener (Kafka's `SSL` listener); unset: no TLS listener.
    pub tls_listen: Option<String>,
    /// `host:port` given to clients of the TLS listener (default: as `advertised_listener`
    /// derives it from the listen address). Behind an OpenShift Route: the Route's host, 443.
    pub tls_advertised_listener: Option<String>,
    /// PEM certificate chain of the TLS listener, the broker's certificate first.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to; set, clients without a
    /// valid certificate are refused (Kafka's `ssl.client.auth=required`).
    pub tls_client_ca_file: Option<PathBuf>,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `num.partitions` of auto-created topics.
    pub num_partitions: i32,
    /// `socket.request.max.bytes`.
    pub socket_request_max_bytes: u64,
    /// Largest size one produced batch may inflate to during validation.
    pub max_decompressed_batch_bytes: u64,
    /// `max.connections`.
    pub max_connections: usize,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Time given to in-flight requests on shutdown.
    pub shutdown_timeout_ms: u64,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address of the admin HTTP server (metrics, health).
    pub listen: String,
}

/// `[controller]`: the Raft metadata quorum, named as in KRaft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerSettings {
    /// Address the metadata node listens on (Raft between voters, and the metadata API).
    pub listen: String,
    /// The initial voters, `id@host:port` separated by commas (Kafka's
    /// `controller.quorum.voters`); the same on every voter and broker.
    pub quorum_voters: String,
    /// A broker that has not heartbeated to the metadata leader for this long is fenced
    /// (Kafka's `broker.session.timeout.ms`). A voter setting.
    pub broker_session_timeout_ms: u64,
    /// How often a broker heartbeats to the metadata leader (Kafka's
    /// `broker.heartbeat.interval.ms`). A broker setting.
    pub broker_heartbeat_interval_ms: u64,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9093".into(),
            quorum_voters: String::new(),
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
        }
    }
}

/// What a process runs (`process_roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// No `process_roles`: a complete single node (the embedded default).
    Embedded,
    /// `controller`: a metadata voter only.
    Controller,
    /// `broker`: a broker whose metadata is in a quorum of voters elsewhere.
    Broker,
    /// `broker,controller`: a voter and a broker in one process.
    Combined,
}

/// Parses `controller.quorum_voters` (`1@host:port,2@host:port`).
pub fn parse_voters(value: &str) -> Result<std::collections::BTreeMap<u64, String>> {
    let setting = "controller.quorum_voters";
    let mut voters = std::collections::BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('@').with_context(|| {
            format!("invalid setting {setting}={value}: {part:?} is not ID@HOST:PORT")
        })?;
        let id: u64 = id.parse().with_context(|| {
            format!("invalid setting {setting}={value}: {id:?} is not a node id")
        })?;
        let (host, port) = split_host_port(setting, addr)?;
        if host.is_empty() || port == 0 {
            bail!("invalid setting {setting}={value}: {addr:?} needs a host and a non-zero port");
        }
        if voters.insert(id, addr.to_string()).is_some() {
            bail!("invalid setting {setting}={value}: node {id} is listed twice");
        }
    }
    if voters.is_empty() {
        bail!("invalid setting {setting}={value:?}: list the voters as ID@HOST:PORT,...");
    }
    Ok(voters)
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter such as `info` or `sediment_broker=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./sediment-data"),
            node_id: 0,
            cluster_id: None,
            process_roles: None,
            controller: ControllerSettings::default(),
            kafka: KafkaSettings::default(),
            admin: AdminSettings::default(),
            log: LogDefaults::default(),
            group: GroupConfig::default(),
            archive: ArchiveSettings::default(),
            logging: LoggingSettings::default(),
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        let b = BrokerConfig::new(".");
        Self {
            listen: "0.0.0.0:9092".into(),
            advertised_listener: None,
            tls_listen: None,
            tls_advertised_listener: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            auto_create_topics_enable: b.auto_create_topics,
            num_partitions: b.num_partitions,
            socket_request_max_bytes: b.socket_request_max_bytes as u64,
            max_decompressed_batch_bytes: b.max_decompressed_batch_bytes as u64,
            max_connections: b.max_connections,
            rack: None,
            shutdown_timeout_ms: b.shutdown_timeout.as_millis() as u64,
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9644".into(),
        }
    }
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Sections whose keys are reachable as `SEDIMENT_<SECTION>_<KEY>`. `logging` precedes `log` so
/// the longer prefix wins.
const SECTIONS: &[&str] = &[
    "kafka",
    "admin",
    "logging",
    "log",
    "group",
    "archive",
    "controller",
];

/// Maps an environment variable name (without `SEDIMENT_`, lowercased) to a settings key path.
pub fn env_key(var: &str) -> String {
    for section in SECTIONS {
        if let Some(rest) = var.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            return format!("{section}.{rest}");
        }
    }
    var.to_string()
}

/// Flags that override settings; `None` leaves the lower layers' value.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_listener: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_advertised_listener: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_roles: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_quorum_voters: Option<String>,
}

impl FlagOverrides {
    fn figment(&self) -> Figment {
        let mut f = Figment::new();
        if let Some(v) = &self.data_dir {
            f = f.merge(Serialized::default("data_dir", v));
        }
        if let Some(v) = self.node_id {
            f = f.merge(Serialized::default("node_id", v));
        }
        if let Some(v) = &self.kafka_listen {
            f = f.merge(Serialized::default("kafka.listen", v));
        }
        if let Some(v) = &self.advertised_listener {
            f = f.merge(Serialized::default("kafka.advertised_listener", v));
        }
        if let Some(v) = &self.tls_listen {
            f = f.merge(Serialized::default("kafka.tls_listen", v));
        }
        if let Some(v) = &self.tls_advertised_listener {
            f = f.merge(Serialized::default("kafka.tls_advertised_listener", v));
        }
        if let Some(v) = &self.tls_cert_file {
            f = f.merge(Serialized::default("kafka.tls_cert_file", v));
        }
        if let Some(v) = &self.tls_key_file {
            f = f.merge(Serialized::default("kafka.tls_key_file", v));
        }
        if let Some(v) = &self.admin_listen {
            f = f.merge(Serialized::default("admin.listen", v));
        }
        if let Some(v) = &self.archive_url {
            f = f.merge(Serialized::default("archive.url", v));
        }
        if let Some(v) = &self.process_roles {
            f = f.merge(Serialized::default("process_roles", v));
        }
        if let Some(v) = &self.controller_listen {
            f = f.merge(Serialized::default("controller.listen", v));
        }
        if let Some(v) = &self.controller_quorum_voters {
            f = f.merge(Serialized::default("controller.quorum_voters", v));
        }
        f
    }
}

impl Settings {
    /// Loads defaults < `file` < environment (`SEDIMENT_*`, taken from `env`) < `flags`.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &FlagOverrides,
    ) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(env_provider(env));
        figment = figment.merge(flags.figment());
        let settings: Settings = figment.extract().map_err(|e| {
            let mut msg = String::from("invalid configuration:");
            for err in e {
                msg.push_str(&format!("\n  - {err}"));
            }
            anyhow::anyhow!(msg)
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values the types cannot; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        parse_addr("kafka.listen", &self.kafka.listen)?;
        parse_addr("admin.listen", &self.admin.listen)?;
        for (key, adv) in [
            ("kafka.advertised_listener", &self.kafka.advertised_listener),
            (
                "kafka.tls_advertised_listener",
                &self.kafka.tls_advertised_listener,
            ),
        ] {
            if let Some(adv) = adv {
                let (host, port) = split_host_port(key, adv)?;
                if host.is_empty() || port == 0 {
                    bail!("invalid setting {key}={adv}: needs a host and a non-zero port");
                }
            }
        }
        self.validate_tls()?;
        if self.kafka.num_partitions < 1 {
            bail!(
                "invalid setting kafka.num_partitions={}: must be at least 1",
                self.kafka.num_partitions
            );
        }
        let frame = self.kafka.socket_request_max_bytes;
        if !(1024..=i32::MAX as u64).contains(&frame) {
            bail!(
                "invalid setting kafka.socket_request_max_bytes={frame}: must be between 1024 and {}",
                i32::MAX
            );
        }
        if self.kafka.max_decompressed_batch_bytes < 1024 {
            bail!(
                "invalid setting kafka.max_decompressed_batch_bytes={}: must be at least 1024",
                self.kafka.max_decompressed_batch_bytes
            );
        }
        if self.kafka.max_connections == 0 {
            bail!("invalid setting kafka.max_connections=0: must be at least 1");
        }
        self.log
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid setting {e}"))?;
        self.group
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid setting {e}"))?;
        self.archive.validate()?;
        if self.node_id < 0 {
            bail!(
                "invalid setting node_id={}: must not be negative",
                self.node_id
            );
        }
        self.roles()?;
        match self.logging.format.as_str() {
            "text" | "json" => {}
            other => bail!("invalid setting logging.format={other}: must be text or json"),
        }
        tracing_subscriber::EnvFilter::try_new(&self.logging.level)
            .with_context(|| format!("invalid setting logging.level={}", self.logging.level))?;
        Ok(())
    }

    /// The TLS listener needs its address, certificate and key together; its other settings
    /// mean nothing without it. The files are read when the listener starts.
    fn validate_tls(&self) -> Result<()> {
        let k = &self.kafka;
        match &k.tls_listen {
            Some(addr) => {
                parse_addr("kafka.tls_listen", addr)?;
                if k.tls_cert_file.is_none() || k.tls_key_file.is_none() {
                    bail!(
                        "invalid setting kafka.tls_listen={addr}: the TLS listener needs \
                         kafka.tls_cert_file and kafka.tls_key_file (PEM)"
                    );
                }
            }
            None => {
                let stray = [
                    (
                        "kafka.tls_advertised_listener",
                        k.tls_advertised_listener.is_some(),
                    ),
                    ("kafka.tls_cert_file", k.tls_cert_file.is_some()),
                    ("kafka.tls_key_file", k.tls_key_file.is_some()),
                    ("kafka.tls_client_ca_file", k.tls_client_ca_file.is_some()),
                ];
                if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
                    bail!(
                        "invalid setting {key}: it applies to the TLS listener, and kafka.tls_listen is not set"
                    );
                }
            }
        }
        Ok(())
    }

    /// The TLS listener's key material, when it is configured.
    pub fn tls_files(&self) -> Option<sediment_broker::TlsFiles> {
        let k = &self.kafka;
        k.tls_listen.as_ref()?;
        Some(sediment_broker::TlsFiles {
            cert: k.tls_cert_file.clone()?,
            key: k.tls_key_file.clone()?,
            client_ca: k.tls_client_ca_file.clone(),
        })
    }

    /// What this process runs, from `process_roles` (checked against the other settings).
    pub fn roles(&self) -> Result<Roles> {
        let Some(value) = &self.process_roles else {
            return Ok(Roles::Embedded);
        };
        let (mut broker, mut controller) = (false, false);
        for role in value.split(',').map(str::trim) {
            match role {
                "broker" => broker = true,
                "controller" => controller = true,
                other => bail!(
                    "invalid setting process_roles={value}: unknown role {other:?} (broker, controller)"
                ),
            }
        }
        if controller {
            parse_addr("controller.listen", &self.controller.listen)?;
        }
        parse_voters(&self.controller.quorum_voters)?;
        let c = &self.controller;
        if c.broker_heartbeat_interval_ms == 0
            || c.broker_session_timeout_ms <= c.broker_heartbeat_interval_ms
        {
            bail!(
                "invalid settings controller.broker_session_timeout_ms={} and \
                 controller.broker_heartbeat_interval_ms={}: the interval must be positive and \
                 shorter than the timeout",
                c.broker_session_timeout_ms,
                c.broker_heartbeat_interval_ms
            );
        }
        Ok(match (broker, controller) {
            (true, true) => Roles::Combined,
            (true, false) => Roles::Broker,
            _ => Roles::Controller,
        })
    }

    /// The broker's config, given the addresses the Kafka listener and the TLS listener (when
    /// configured) actually bound.
    pub fn broker_config(
        &self,
        bound: SocketAddr,
        tls_bound: Option<SocketAddr>,
    ) -> Result<BrokerConfig> {
        let (advertised_host, advertised_port) = advertised(
            "kafka.advertised_listener",
            self.kafka.advertised_listener.as_deref(),
            bound,
        )?;
        let mut c = BrokerConfig::new(&self.data_dir);
        if let Some(tls_bound) = tls_bound {
            let (host, port) = advertised(
                "kafka.tls_advertised_listener",
                self.kafka.tls_advertised_listener.as_deref(),
                tls_bound,
            )?;
            c.listeners.push(sediment_meta::Endpoint {
                name: sediment_broker::SSL_LISTENER.to_string(),
                host,
                port,
            });
        }
        c.node_id = self.node_id;
        c.cluster_id = self.cluster_id.clone();
        c.advertised_host = advertised_host;
        c.advertised_port = advertised_port;
        c.rack = self.kafka.rack.clone();
        c.auto_create_topics = self.kafka.auto_create_topics_enable;
        c.num_partitions = self.kafka.num_partitions;
        c.socket_request_max_bytes = self.kafka.socket_request_max_bytes as usize;
        c.max_decompressed_batch_bytes = self.kafka.max_decompressed_batch_bytes as usize;
        c.max_connections = self.kafka.max_connections;
        c.log = self.log.clone();
        c.group = self.group.clone();
        c.archive = self.archive.clone();
        c.shutdown_timeout = Duration::from_millis(self.kafka.shutdown_timeout_ms);
        Ok(c)
    }
}

/// The advertised `host:port` of a listener: the setting `key` when given, else the bound
/// address (the machine's hostname when bound to all interfaces).
fn advertised(key: &str, setting: Option<&str>, bound: SocketAddr) -> Result<(String, u16)> {
    Ok(match setting {
        Some(adv) => {
            let (h, p) = split_host_port(key, adv)?;
            (h.to_string(), p)
        }
        None if bound.ip().is_unspecified() => (local_hostname(), bound.port()),
        None => (bound.ip().to_string(), bound.port()),
    })
}

impl Settings {
    /// The settings as JSON with secrets replaced, for `--check-config`.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("settings serialize");
        for key in ["secret_access_key", "session_token"] {
            if let Some(slot) = v["archive"].get_mut(key)
                && !slot.is_null()
            {
                *slot = "<redacted>".into();
            }
        }
        v
    }
}

/// Every settings key as a dotted path (`kafka.listen`, `log.segment_bytes`, ...).
fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    walk(
        "",
        &serde_json::to_value(Settings::default()).expect("settings serialize"),
        &mut out,
    );
    out
}

/// Splits `SEDIMENT_*` variables into (settings key, value) pairs and the names of variables
/// that match no setting. Unknown ones are not an error: Kubernetes injects `<SERVICE>_PORT`-style
/// variables for a Service named `sediment`, and tools use the prefix too; `serve` warns about
/// them instead.
fn env_settings(env: &[(String, String)]) -> (Vec<(String, String)>, Vec<String>) {
    let known = known_keys();
    let (mut settings, mut ignored) = (Vec::new(), Vec::new());
    for (name, value) in env {
        let Some(var) = name.strip_prefix("SEDIMENT_") else {
            continue;
        };
        let key = env_key(&var.to_ascii_lowercase());
        if known.contains(&key) {
            settings.push((key, value.clone()));
        } else if !["CONFIG", "ADMIN_URL", "BOOTSTRAP_CONTROLLER"].contains(&var)
            && !var.starts_with("TEST_")
        {
            // SEDIMENT_CONFIG, SEDIMENT_ADMIN_URL and SEDIMENT_BOOTSTRAP_CONTROLLER are flags'
            // variables; SEDIMENT_TEST_*
            // are fault-injection switches for tests.
            ignored.push(name.clone());
        }
    }
    (settings, ignored)
}

/// `SEDIMENT_*` variables that match no setting.
pub fn ignored_env_vars(env: &[(String, String)]) -> Vec<String> {
    env_settings(env).1
}

fn env_provider(env: &[(String, String)]) -> Figment {
    // Built from an explicit list (not figment's Env, which reads the process environment) so
    // loading is testable. Values are parsed as Env parses them: numbers, booleans, strings.
    let mut f = Figment::new();
    for (key, value) in env_settings(env).0 {
        let parsed: figment::value::Value = value.parse().unwrap_or_else(|_| value.clone().into());
        f = f.merge(Serialized::default(&key, parsed));
    }
    f
}

fn split_host_port<'a>(setting: &str, value: &'a str) -> Result<(&'a str, u16)> {
    let (host, port) = value
        .rsplit_once(':')
        .with_context(|| format!("invalid setting {setting}={value}: expected HOST:PORT"))?;
    let port: u16 = port.parse().with_context(|| {
        format!("invalid setting {setting}={value}: port is not a number between 0 and 65535")
    })?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Resolves a listen address, naming the setting on failure.
pub fn parse_addr(setting: &str, value: &str) -> Result<SocketAddr> {
    split_host_port(setting, value)?;
    value
        .to_socket_addrs()
        .with_context(|| format!("invalid setting {setting}={value}: cannot resolve"))?
        .next()
        .with_context(|| format!("invalid setting {setting}={value}: resolves to no address"))
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The process environment as a list, for [`Settings::load`].
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_docs() {
        let s = Settings::load(None, &[], &FlagOverrides::default()).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("./sediment-data"));
        assert_eq!(s.kafka.listen, "0.0.0.0:9092");
        assert_eq!(s.admin.listen, "0.0.0.0:9644");
        assert!(s.kafka.auto_create_topics_enable);
        assert_eq!(s.log.segment_bytes, 1 << 30);
    }

    #[test]
    fn layers_override_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sediment.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\nnode_id = 3\n[kafka]\nlisten = \"127.0.0.1:1000\"\nnum_partitions = 4\n[log]\nretention_ms = 1000\n",
        )
        .unwrap();
        let e = env(&[
            ("SEDIMENT_KAFKA_LISTEN", "127.0.0.1:2000"),
            ("SEDIMENT_LOG_RETENTION_MS", "2000"),
            ("SEDIMENT_LOGGING_FORMAT", "json"),
            ("SEDIMENT_CONFIG", "/ignored.toml"),
            ("OTHER", "x"),
        ]);
        let flags = FlagOverrides {
            kafka_listen: Some("127.0.0.1:3000".into()),
            ..Default::default()
        };
        let s = Settings::load(Some(&file), &e, &flags).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/from/file"), "file over default");
        assert_eq!(s.node_id, 3);
        assert_eq!(s.kafka.num_partitions, 4);
        assert_eq!(s.log.retention_ms, 2000, "env over file");
        assert_eq!(s.logging.format, "json");
        assert_eq!(s.kafka.listen, "127.0.0.1:3000", "flag over env");
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[log]\nsegmnt_bytes = 5\n").unwrap();
        let e = Settings::load(Some(&file), &[], &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("segmnt_bytes"), "{e}");

        let e = Settings::load(
            None,
            &env(&[("SEDIMENT_LOG_SEGMENT_BYTES", "abc")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("segment_bytes"), "{e}");

        let e = Settings::load(
            None,
            &env(&[("SEDIMENT_LOG_SEGMENT_BYTES", "10")]),
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("log.segment_bytes"), "{e}");

        let flags = FlagOverrides {
            kafka_listen: Some("nonsense".into()),
            ..Default::default()
        };
        let e = Settings::load(None, &[], &flags).unwrap_err().to_string();
        assert!(e.contains("kafka.listen"), "{e}");

        let e = Settings::load(
            Some(Path::new("/no/such.toml")),
            &[],
            &FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/no/such.toml"), "{e}");
    }

    #[test]
    fn advertised_listener_defaults_to_the_bound_address() {
        let s = Settings::default();
        let c = s
            .broker_config("127.0.0.1:41000".parse().unwrap(), None)
            .unwrap();
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 41000)
        );
        let mut s = Settings::default();
        s.kafka.advertised_listener = Some("broker-0.sediment.svc:9092".into());
        let c = s
            .broker_config("0.0.0.0:9092".parse().unwrap(), None)
            .unwrap();
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("broker-0.sediment.svc", 9092)
        );
    }

    #[test]
    fn the_tls_listener_needs_its_certificate_and_key_and_advertises_as_ssl() {
        let load = |vars: &[(&str, &str)]| {
            Settings::load(None, &env(vars), &FlagOverrides::default()).map_err(|e| e.to_string())
        };
        let e = load(&[("SEDIMENT_KAFKA_TLS_LISTEN", "0.0.0.0:9094")]).unwrap_err();
        assert!(
            e.contains("kafka.tls_listen") && e.contains("kafka.tls_cert_file"),
            "{e}"
        );
        let e = load(&[("SEDIMENT_KAFKA_TLS_CERT_FILE", "/tls/tls.crt")]).unwrap_err();
        assert!(
            e.contains("kafka.tls_cert_file") && e.contains("kafka.tls_listen is not set"),
            "{e}"
        );
        let e = load(&[
            ("SEDIMENT_KAFKA_TLS_LISTEN", "0.0.0.0:9094"),
            ("SEDIMENT_KAFKA_TLS_CERT_FILE", "/tls/tls.crt"),
            ("SEDIMENT_KAFKA_TLS_KEY_FILE", "/tls/tls.key"),
            ("SEDIMENT_KAFKA_TLS_ADVERTISED_LISTENER", "no-port"),
        ])
        .unwrap_err();
        assert!(e.contains("kafka.tls_advertised_listener=no-port"), "{e}");

        let s = load(&[
            ("SEDIMENT_KAFKA_TLS_LISTEN", "0.0.0.0:9094"),
            ("SEDIMENT_KAFKA_TLS_CERT_FILE", "/tls/tls.crt"),
            ("SEDIMENT_KAFKA_TLS_KEY_FILE", "/tls/tls.key"),
            (
                "SEDIMENT_KAFKA_TLS_ADVERTISED_LISTENER",
                "sediment-0-sediment.apps.example.com:443",
            ),
        ])
        .unwrap();
        let files = s.tls_files().unwrap();
        assert_eq!(files.cert, PathBuf::from("/tls/tls.crt"));
        assert_eq!(files.client_ca, None);
        let c = s
            .broker_config(
                "127.0.0.1:9092".parse().unwrap(),
                Some("0.0.0.0:9094".parse().unwrap()),
            )
            .unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].name, "SSL");
        assert_eq!(
            (c.listeners[0].host.as_str(), c.listeners[0].port),
            ("sediment-0-sediment.apps.example.com", 443)
        );
        assert!(Settings::default().tls_files().is_none());
    }

    #[test]
    fn unknown_environment_variables_are_ignored_not_fatal() {
        // What Kubernetes injects for a Service named "sediment", plus test tooling variables.
        let e = env(&[
            ("SEDIMENT_PORT", "tcp://10.0.0.1:9092"),
            ("SEDIMENT_SERVICE_HOST", "10.0.0.1"),
            ("SEDIMENT_BIN", "/usr/bin/sediment"),
            ("SEDIMENT_KAFKA_LISTEN", "127.0.0.1:5000"),
            ("SEDIMENT_CONFIG", "/etc/sediment.toml"),
        ]);
        let s = Settings::load(None, &e, &FlagOverrides::default()).unwrap();
        assert_eq!(s.kafka.listen, "127.0.0.1:5000");
        assert_eq!(
            ignored_env_vars(&e),
            vec!["SEDIMENT_PORT", "SEDIMENT_SERVICE_HOST", "SEDIMENT_BIN"]
        );
    }

    #[test]
    fn env_keys_map_to_sections() {
        assert_eq!(env_key("kafka_listen"), "kafka.listen");
        assert_eq!(env_key("logging_level"), "logging.level");
        assert_eq!(env_key("log_segment_bytes"), "log.segment_bytes");
        assert_eq!(
            env_key("group_initial_rebalance_delay_ms"),
            "group.initial_rebalance_delay_ms"
        );
        assert_eq!(env_key("data_dir"), "data_dir");
    }

    #[test]
    fn archive_settings_come_from_flags_env_and_file_and_secrets_are_redacted() {
        let flags = FlagOverrides {
            archive_url: Some("s3://sediment-archive/prod".into()),
            ..Default::default()
        };
        let e = env(&[
            ("SEDIMENT_ARCHIVE_ENDPOINT", "http://minio:9000"),
            ("SEDIMENT_ARCHIVE_SECRET_ACCESS_KEY", "s3cr3t"),
            ("SEDIMENT_ARCHIVE_ACCESS_KEY_ID", "key"),
            ("SEDIMENT_TEST_PAUSE_BEFORE_ARCHIVE_COMMIT", "1"),
            ("SEDIMENT_ADMIN_URL", "http://x:9644"),
        ]);
        let s = Settings::load(None, &e, &flags).unwrap();
        assert_eq!(s.archive.url, "s3://sediment-archive/prod");
        assert_eq!(s.archive.endpoint.as_deref(), Some("http://minio:9000"));
        assert!(
            ignored_env_vars(&e).is_empty(),
            "{:?}",
            ignored_env_vars(&e)
        );
        let shown = s.redacted_json().to_string();
        assert!(
            !shown.contains("s3cr3t") && shown.contains("<redacted>"),
            "{shown}"
        );
        let bad = FlagOverrides {
            archive_url: Some("ftp://x/y".into()),
            ..Default::default()
        };
        let err = Settings::load(None, &[], &bad).unwrap_err().to_string();
        assert!(err.contains("archive.url"), "{err}");
        let half = env(&[("SEDIMENT_ARCHIVE_ACCESS_KEY_ID", "key")]);
        let err = Settings::load(None, &half, &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("archive.access_key_id"), "{err}");
    }

    #[test]
    fn the_example_config_file_holds_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/sediment.toml");
        let s = Settings::load(Some(&path), &[], &FlagOverrides::default()).unwrap();
        assert_eq!(s, Settings::default());
        // Every key of the defaults appears in the example (commented out or not).
        let text = std::fs::read_to_string(&path).unwrap();
        for key in known_keys() {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                text.contains(leaf),
                "deploy/config/sediment.toml lacks {key}"
            );
        }
    }

    #[test]
    fn process_roles_and_quorum_voters_are_checked_with_messages_naming_the_setting() {
        let load =
            |pairs: &[(&str, &str)]| Settings::load(None, &env(pairs), &FlagOverrides::default());
        assert_eq!(load(&[]).unwrap().roles().unwrap(), Roles::Embedded);
        let s = load(&[
            ("SEDIMENT_PROCESS_ROLES", "controller"),
            (
                "SEDIMENT_CONTROLLER_QUORUM_VOTERS",
                "1@a:9093, 2@b:9093,3@[::1]:9093",
            ),
        ])
        .unwrap();
        assert_eq!(s.roles().unwrap(), Roles::Controller);
        for (roles, expected) in [
            ("broker", Roles::Broker),
            ("broker,controller", Roles::Combined),
            ("controller, broker", Roles::Combined),
        ] {
            let mut s = s.clone();
            s.process_roles = Some(roles.into());
            assert_eq!(s.roles().unwrap(), expected, "{roles}");
        }
        let mut short = s.clone();
        short.controller.broker_session_timeout_ms = 1000;
        short.controller.broker_heartbeat_interval_ms = 1000;
        assert!(
            short
                .roles()
                .unwrap_err()
                .to_string()
                .contains("controller.broker_session_timeout_ms=1000")
        );
        let voters = parse_voters(&s.controller.quorum_voters).unwrap();
        assert_eq!(voters[&2], "b:9093");
        assert_eq!(voters[&3], "[::1]:9093");
        for (roles, voters, expected) in [
            ("controller", "", "controller.quorum_voters"),
            ("controller", "1@a:9093,1@b:9093", "node 1 is listed twice"),
            ("controller", "x@a:9093", "is not a node id"),
            ("controller", "1@a", "expected HOST:PORT"),
            ("controller", "1a:9093", "ID@HOST:PORT"),
            ("broker", "", "controller.quorum_voters"),
            ("broker,controller", "1@a:9093,2@:0", "needs a host"),
            ("kraft", "1@a:9093", "unknown role"),
        ] {
            let err = load(&[
                ("SEDIMENT_PROCESS_ROLES", roles),
                ("SEDIMENT_CONTROLLER_QUORUM_VOTERS", voters),
            ])
            .unwrap_err()
            .to_string();
            assert!(err.contains(expected), "{roles} / {voters}: {err}");
        }
    }
}
