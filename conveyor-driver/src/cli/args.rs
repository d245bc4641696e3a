//! The command line of a driver binary: its commands, and one flag per setting, each declared
//! once (in [`Config`] for the Driver Manager's, here for the local output's).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Command, FromArgMatches, Subcommand, ValueEnum};
use tracing_subscriber::filter::Targets;

use crate::config::Config;
use crate::settings::{self, declare_settings, duration, ConfigError, Setting};

/// A parsed command line: the command and the flags that were given. Settings resolve in
/// [`into_config`](Self::into_config): a flag beats its `CONVEYOR_*` variable, which beats the
/// default.
///
/// ```
/// use conveyor_driver::cli::{Args, Mode};
///
/// let args = Args::try_parse_from(["my-driver", "describe", "--concurrency", "8"])?;
/// assert_eq!(args.mode(), &Mode::Describe);
/// let config = args.into_config()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Args {
    mode: Mode,
    matches: clap::ArgMatches,
}

/// The command and the settings given on the command line, secrets redacted (the parsed
/// matches would show them as typed).
impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut given = Vec::new();
        self.given_shown(Config::SETTINGS, &mut given);
        self.given_shown(Output::SETTINGS, &mut given);
        f.debug_struct("Args")
            .field("mode", &self.mode)
            .field("given", &given)
            .finish()
    }
}

/// The commands of a driver binary.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
#[non_exhaustive]
pub enum Mode {
    /// Consume and reconcile events until SIGTERM (the default)
    Run,
    /// Reconcile one event from a file (or `-` for stdin) without NATS
    Invoke {
        /// A DriverMessage or a bare Resource, as JSON; `-` reads standard input
        #[arg(value_name = "FILE")]
        input: PathBuf,
        /// Which driver reconciles it, in a binary of several drivers
        #[arg(long, value_name = "NAME")]
        driver: Option<String>,
    },
    /// Print what the driver does on the wire, as JSON, without connecting
    Describe,
    /// Create or update the driver's durable consumer, then exit
    Register {
        /// Give up (exit 1) when NATS or the `messages` stream is not there within this time,
        /// e.g. 2m [default: wait as long as it takes]
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        timeout: Option<Duration>,
    },
}

/// Format of a driver's local output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl settings::Value for LogFormat {
    type Parsed = Self;
    fn set(&mut self, parsed: Self) {
        *self = parsed;
    }
    fn show(&self) -> Option<String> {
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
    }
}

fn log_format(text: &str) -> Result<LogFormat, String> {
    LogFormat::from_str(text.trim(), true).map_err(|_| "expected human or json".to_owned())
}

/// A `RUST_LOG`-style target filter, checked.
fn targets(text: &str) -> Result<String, String> {
    match text.trim().parse::<Targets>() {
        Ok(_) => Ok(text.trim().to_owned()),
        Err(err) => Err(format!(
            "expected targets such as my_driver=debug,reqwest=info ({err})"
        )),
    }
}

declare_settings! {
    /// The settings of the local output, beside the Driver Manager's.
    #[derive(Clone, PartialEq, Eq)]
    pub(crate) struct Output {
        /// Format of the local output: human or json
        log_format: LogFormat = LogFormat::Human,
            env "CONVEYOR_LOG_FORMAT", flag "log-format" = "FORMAT", parse log_format;
        /// tracing events bridged into run logs, e.g. `my_driver=debug,reqwest=info` or `off`
        run_log: Option<String> = None,
            env "CONVEYOR_RUN_LOG", flag "run-log" = "FILTER", parse targets,
            unset "INFO and above from the driver's crate";
    }
}

impl Output {
    /// The `--run-log` filter, when one is set.
    pub(crate) fn run_log_filter(&self) -> Option<Targets> {
        self.run_log.as_deref().and_then(|text| text.parse().ok())
    }
}

impl Args {
    /// The command line's definition: the commands and every setting's flag.
    pub fn command() -> Command {
        let command = Command::new("conveyor-driver")
            .disable_help_subcommand(true)
            .args(Config::SETTINGS.iter().map(Setting::arg))
            .args(Output::SETTINGS.iter().map(Setting::arg));
        Mode::augment_subcommands(command)
    }

    /// Parses `args` (the first is the program name).
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::from_matches(Self::command().try_get_matches_from(args)?)
    }

    /// The arguments of a command line parsed by (a customized) [`command`](Self::command).
    pub(crate) fn from_matches(matches: clap::ArgMatches) -> Result<Self, clap::Error> {
        let mode = match matches.subcommand() {
            Some(_) => Mode::from_arg_matches(&matches)?,
            None => Mode::Run,
        };
        Ok(Self { mode, matches })
    }

    /// The command; `run` when none was given.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The [`Config`]: each setting from its flag, else its `CONVEYOR_*` variable, else its
    /// default. A bad value that another source overrides is not read at all; an error names
    /// the flag or variable whose value is wrong.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.config_with(settings::process_env)
    }

    fn config_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let config = self.load(Config::SETTINGS, env)?;
        config.validate()?;
        Ok(config)
    }

    /// The local output's settings, resolved as [`into_config`](Self::into_config) does.
    pub(crate) fn output(&self) -> Result<Output, ConfigError> {
        self.load(Output::SETTINGS, settings::process_env)
    }

    /// Each setting of `table` given on the command line, as `(flag, value as shown)`.
    fn given_shown<C: Default>(
        &self,
        table: &[Setting<C>],
        into: &mut Vec<(&'static str, String)>,
    ) {
        for setting in table {
            if let Some(text) = self.given(setting) {
                into.push((setting.flag, setting.shown(&text)));
            }
        }
    }

    /// The value of `setting` on the command line, if given.
    fn given<C: Default>(&self, setting: &Setting<C>) -> Option<String> {
        // The settings' flags are global: a flag given after the subcommand is found there.
        let sub = self.matches.subcommand().map(|(_, sub)| sub);
        sub.and_then(|sub| setting.given(sub))
            .or_else(|| setting.given(&self.matches))
    }

    fn load<C: Default>(
        &self,
        table: &[Setting<C>],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<C, ConfigError> {
        settings::load(table, |setting| self.given(setting), env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("driver").chain(args.iter().copied()))
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_override_the_config() {
        let args = parse(&[
            "--nats-url",
            "nats://10.1.1.1:4222",
            "--concurrency",
            "8",
            "--prefetch",
            "16",
            "--ack-wait",
            "45s",
            "--max-deliver",
            "3",
            "--max-ack-pending",
            "9",
            "--retry-backoff",
            "2s",
            "--retry-backoff-max",
            "10s",
            "--shutdown-timeout",
            "2m",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
            "--create-streams",
            "--log-format",
            "json",
            "--api-url",
            "https://conveyor.internal:8443",
            "--metrics-addr",
            "127.0.0.1:9090",
        ])
        .unwrap();
        assert_eq!(args.output().unwrap().log_format, LogFormat::Json);
        let config = args.config_with(env(&[])).unwrap();
        let expected = Config::default()
            .nats_url("nats://10.1.1.1:4222")
            .concurrency(8)
            .prefetch(16)
            .ack_wait(Duration::from_secs(45))
            .max_deliver(3)
            .max_ack_pending(9)
            .retry_backoff(Duration::from_secs(2), Duration::from_secs(10))
            .shutdown_timeout(Duration::from_secs(120))
            .tls("c.pem", "k.pem")
            .tls_ca("ca.pem")
            .create_streams(true)
            .api_url("https://conveyor.internal:8443")
            .metrics_addr(([127, 0, 0, 1], 9090).into());
        assert_eq!(config, expected);
    }

    #[test]
    fn a_flag_beats_a_bad_variable_and_a_bad_variable_alone_is_named() {
        let bad = [("CONVEYOR_CONCURRENCY", "abc")];
        let config = parse(&["--concurrency", "4"])
            .unwrap()
            .config_with(env(&bad))
            .unwrap();
        assert_eq!(config.concurrency, 4);
        // After the subcommand too.
        let config = parse(&["describe", "--concurrency", "5"])
            .unwrap()
            .config_with(env(&bad))
            .unwrap();
        assert_eq!(config.concurrency, 5);
        let err = parse(&[]).unwrap().config_with(env(&bad)).unwrap_err();
        assert_eq!(err.setting, "CONVEYOR_CONCURRENCY");
        assert_eq!(
            err.to_string(),
            "invalid CONVEYOR_CONCURRENCY \"abc\": expected a whole number of at least 1"
        );
        // The environment beats the default.
        let config = parse(&[])
            .unwrap()
            .config_with(env(&[("CONVEYOR_CONCURRENCY", "6")]))
            .unwrap();
        assert_eq!(config.concurrency, 6);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (flag, value) in [
            ("--concurrency", "0"),
            ("--concurrency", "many"),
            ("--prefetch", "some"),
            ("--ack-wait", "soon"),
            ("--max-deliver=-1", ""),
            ("--log-format", "xml"),
            ("--api-url", "nats://127.0.0.1:4222"),
            ("--run-log", "a=notalevel"),
        ] {
            let args: Vec<&str> = [flag, value]
                .into_iter()
                .filter(|a| !a.is_empty())
                .collect();
            let err = parse(&args).unwrap_err().to_string();
            let flag = flag.split('=').next().unwrap();
            assert!(err.contains(flag), "{flag} {value}: {err}");
        }
        // A certificate without its key is caught when the settings are checked.
        let err = parse(&["--tls-cert", "c.pem"])
            .unwrap()
            .config_with(env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONVEYOR_TLS_KEY"), "{err}");
    }

    #[test]
    fn help_shows_each_variable_and_default_from_the_declaration() {
        let help = Args::command().render_help().to_string();
        for setting in Config::SETTINGS {
            assert!(help.contains(&format!("--{}", setting.flag)), "{help}");
            assert!(help.contains(&format!("[env: {}]", setting.env)), "{help}");
        }
        assert!(
            help.contains("[env: CONVEYOR_CONCURRENCY] [default: 4]"),
            "{help}"
        );
        assert!(
            help.contains("[env: CONVEYOR_LOG_FORMAT] [default: human]"),
            "{help}"
        );
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.mode(), &Mode::Run);
        assert_eq!(args.output().unwrap(), Output::default());
        assert_eq!(args.config_with(env(&[])).unwrap(), Config::default());
        let args = parse(&["register", "--timeout", "250ms"]).unwrap();
        assert_eq!(
            args.mode(),
            &Mode::Register {
                timeout: Some(Duration::from_millis(250))
            }
        );
    }
}
