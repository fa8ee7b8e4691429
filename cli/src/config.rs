//! Configuration: the embedded defaults (`config/lakehouse.example.toml`), then the `--config`
//! file, then `LAKEHOUSE__SECTION__KEY` environment variables, then command-line flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use lakehouse_lake::{BusinessCalendar, LakeConfig};
use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("../../config/lakehouse.example.toml");

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) lake: LakeConfig,
    #[serde(default)]
    pub(crate) kafka: KafkaConfig,
    #[serde(default)]
    pub(crate) calendar: CalendarConfig,
    #[serde(default)]
    pub(crate) log: LogConfig,
    #[serde(default)]
    pub(crate) ingest: lakehouse_ingest::IngestConfig,
    #[serde(default)]
    pub(crate) simulate: lakehouse_simulator::SimConfig,
    #[serde(default)]
    pub(crate) speed: lakehouse_speed::SpeedConfig,
    #[serde(default)]
    pub(crate) batch: lakehouse_batch::BatchConfig,
    #[serde(default)]
    pub(crate) serving: lakehouse_serving::ServingConfig,
    #[serde(default)]
    pub(crate) up: UpConfig,
    /// Whether `[kafka] brokers` came from the file, the environment or a flag rather than the
    /// defaults (`up` starts a local broker when not).
    #[serde(skip)]
    pub(crate) brokers_configured: bool,
}

/// `[up]`: every role in one process.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct UpConfig {
    /// Where the local broker listens (when no brokers are configured).
    pub(crate) broker_listen: String,
    /// The local broker's data directory (default: beside a `file://` lake, `<lake>.kafka`).
    #[serde(default)]
    pub(crate) broker_data: Option<PathBuf>,
    /// Prometheus metrics of the roles: http://ADDR/metrics.
    pub(crate) metrics_listen: String,
}

impl Default for UpConfig {
    fn default() -> Self {
        UpConfig {
            broker_listen: "127.0.0.1:9092".into(),
            broker_data: None,
            metrics_listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct KafkaConfig {
    pub(crate) brokers: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct CalendarConfig {
    pub(crate) time_zone: String,
    pub(crate) cut_off: String,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            time_zone: "UTC".into(),
            cut_off: "00:00".into(),
        }
    }
}

impl CalendarConfig {
    /// The business calendar; an unknown time zone or a bad cut-off is an error.
    pub(crate) fn calendar(&self) -> Result<BusinessCalendar> {
        Ok(BusinessCalendar::new(&self.time_zone, &self.cut_off)?)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct LogConfig {
    pub(crate) format: LogFormat,
    pub(crate) level: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Flags that override the file.
#[derive(Default, Serialize)]
pub(crate) struct Overrides {
    pub(crate) lake_root: Option<String>,
    pub(crate) brokers: Option<String>,
    pub(crate) listen: Option<String>,
}

/// Loads the configuration. `file`, when given, must exist.
pub(crate) fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
    load_with_env(file, overrides, Env::prefixed("LAKEHOUSE__"))
}

fn load_with_env(file: Option<&Path>, overrides: &Overrides, env: Env) -> Result<Config> {
    let mut fig = Figment::new().merge(Toml::string(DEFAULTS));
    if let Some(path) = file {
        anyhow::ensure!(
            path.is_file(),
            "config file {} does not exist",
            path.display()
        );
        fig = fig.merge(Toml::file_exact(path));
    }
    // LAKEHOUSE__LAKE__S3__ALLOW_HTTP -> lake.s3.allow-http
    fig = fig.merge(env.map(|k| {
        k.as_str()
            .split("__")
            .map(|part| part.replace('_', "-"))
            .collect::<Vec<_>>()
            .join(".")
            .into()
    }));
    if let Some(root) = &overrides.lake_root {
        fig = fig.merge(Serialized::default("lake.root", root));
    }
    if let Some(brokers) = &overrides.brokers {
        fig = fig.merge(Serialized::default("kafka.brokers", brokers));
    }
    if let Some(listen) = &overrides.listen {
        fig = fig.merge(Serialized::default("serving.listen", listen));
    }
    let source = file.map_or_else(|| PathBuf::from("<defaults>"), Path::to_path_buf);
    let defaults = figment::Provider::metadata(&Toml::string(DEFAULTS)).name;
    let brokers_configured = fig
        .find_metadata("kafka.brokers")
        .is_some_and(|m| m.name != defaults);
    let mut cfg: Config = fig
        .extract::<Config>()
        .map_err(|e| anyhow::anyhow!(describe(e)))
        .with_context(|| format!("invalid configuration ({})", source.display()))?;
    cfg.brokers_configured = brokers_configured;
    // checked here, once, so a typo fails every command at start-up
    cfg.calendar
        .calendar()
        .with_context(|| format!("invalid configuration ({}): [calendar]", source.display()))?;
    cfg.ingest
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration ({}): {e}", source.display()))?;
    cfg.speed
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration ({}): {e}", source.display()))?;
    cfg.simulate
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration ({}): {e}", source.display()))?;
    Ok(cfg)
}

/// Figment's errors as one readable line each: the problem, the key, and where it came from.
fn describe(err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!(" at key `{}`", e.path.join("."))
            };
            let from = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" in {src}"),
                    None => format!(" in {}", m.name),
                })
                .unwrap_or_default();
            format!("{}{key}{from}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> Env {
        Env::prefixed("LAKEHOUSE_TEST_UNSET_PREFIX__")
    }

    #[test]
    fn defaults_load_without_a_file() {
        let cfg = load_with_env(None, &Overrides::default(), no_env()).unwrap();
        assert_eq!(cfg.lake.root, "./lake");
        assert_eq!(cfg.kafka.brokers, "127.0.0.1:9092");
        assert!(!cfg.brokers_configured, "the defaults configure no broker");
        assert_eq!(cfg.lake.s3.conditional_put.as_deref(), Some("etag"));
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[lake]\nroot = \"/tmp/x\"\nroots = \"typo\"").unwrap();
        let err = load_with_env(Some(f.path()), &Overrides::default(), no_env()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("roots"), "{text}");
        assert!(text.contains(&f.path().display().to_string()), "{text}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error
    fn file_then_env_then_flags() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[lake]\nroot = \"/from/file\"\n[kafka]\nbrokers = \"file:1\""
        )
        .unwrap();
        let cfg = load_with_env(Some(f.path()), &Overrides::default(), no_env()).unwrap();
        assert_eq!(cfg.lake.root, "/from/file");
        assert_eq!(cfg.kafka.brokers, "file:1");
        assert!(cfg.brokers_configured);

        figment::Jail::expect_with(|jail| {
            jail.set_env("LKTEST__LAKE__S3__ALLOW_HTTP", "true");
            jail.set_env("LKTEST__KAFKA__BROKERS", "env:2");
            let cfg = load_with_env(
                Some(f.path()),
                &Overrides::default(),
                Env::prefixed("LKTEST__"),
            )
            .unwrap();
            assert!(cfg.lake.s3.allow_http);
            assert_eq!(cfg.kafka.brokers, "env:2");
            let flags = Overrides {
                lake_root: Some("memory:///".into()),
                brokers: Some("flag:3".into()),
                listen: None,
            };
            let cfg = load_with_env(Some(f.path()), &flags, Env::prefixed("LKTEST__")).unwrap();
            assert_eq!(cfg.lake.root, "memory:///");
            assert_eq!(cfg.kafka.brokers, "flag:3");
            Ok(())
        });
    }

    #[test]
    fn bad_calendar_is_an_error_naming_the_section() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[calendar]\ntime-zone = \"Europe/Londres\"").unwrap();
        let err = load_with_env(Some(f.path()), &Overrides::default(), no_env()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("[calendar]") && text.contains("Europe/Londres"),
            "{text}"
        );
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(
            load_with_env(
                Some(Path::new("/nonexistent/lh.toml")),
                &Overrides::default(),
                no_env()
            )
            .is_err()
        );
    }
}
