//! Every setting of a driver binary, declared once.
//!
//! A `declare_settings!` block declares each setting with its field, type, default,
//! environment variable, flag, parser and help line. From that one declaration come the
//! settings struct and its `Default`, the table that [`load`] reads the environment and the
//! command line through, the clap arguments with their `--help` text, and the defaults that
//! help shows. The parsers below are the only ones: one per kind of value.
//!
//! Precedence is flag, then environment variable, then default; a value is only parsed when it
//! is the one that counts, so a bad variable that a flag overrides is not an error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A setting has a value it cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting} {value:?}: {reason}")]
pub struct ConfigError {
    /// Where the value came from: the environment variable, the flag (`--concurrency`) or the
    /// setter (`concurrency`).
    pub setting: String,
    /// The value as given.
    pub value: String,
    /// What a valid value looks like.
    pub reason: String,
}

pub(crate) fn invalid_value(setting: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// One setting of a settings struct `C`: how it is named in each source, how its text is
/// parsed into `C`, and how its current value is shown.
pub(crate) struct Setting<C> {
    /// The field and setter name, e.g. `concurrency`.
    pub(crate) key: &'static str,
    /// The environment variable, e.g. `CONVEYOR_CONCURRENCY`.
    pub(crate) env: &'static str,
    /// The long flag without its dashes, e.g. `concurrency`.
    pub(crate) flag: &'static str,
    /// The flag's value name in `--help`; `None` for a switch (`--create-streams`).
    pub(crate) value_name: Option<&'static str>,
    /// The help line.
    pub(crate) help: &'static str,
    /// What `--help` says when the default is unset.
    pub(crate) unset: &'static str,
    /// Parses `text` into the setting's field, or says what a valid value looks like.
    pub(crate) apply: fn(&mut C, &str) -> Result<(), String>,
    /// The setting's value in `C`, for `--help`; `None` when unset.
    pub(crate) show: fn(&C) -> Option<String>,
    /// For a secret (or a value holding one), how its text is shown anywhere: in `--help`,
    /// errors and `Debug`. `None`: as written.
    pub(crate) redact: Option<fn(&str) -> String>,
}

impl<C> Setting<C> {
    /// `text`, a value of this setting, as it may be shown: redacted for a secret.
    pub(crate) fn shown(&self, text: &str) -> String {
        self.redact
            .map_or_else(|| text.to_owned(), |redact| redact(text))
    }
}

impl<C: Default> Setting<C> {
    /// The clap argument: a global long flag whose value is checked by the setting's parser.
    /// A bad value's error shows it through [`shown`](Self::shown), so no secret reaches the
    /// terminal (clap's own message would quote it as given).
    pub(crate) fn arg(&'static self) -> clap::Arg {
        let default = (self.show)(&C::default())
            .map(|text| self.shown(&text))
            .unwrap_or_else(|| self.unset.to_owned());
        let default = if default.is_empty() {
            String::new()
        } else {
            format!(" [default: {default}]")
        };
        let arg = clap::Arg::new(self.key)
            .long(self.flag)
            .global(true)
            .help(format!("{} [env: {}]{default}", self.help, self.env));
        match self.value_name {
            Some(value_name) => arg.value_name(value_name).value_parser(Check(self)),
            None => arg.action(clap::ArgAction::SetTrue),
        }
    }

    /// The value given on the command line, if any (a switch gives `true`).
    pub(crate) fn given(&self, matches: &clap::ArgMatches) -> Option<String> {
        match self.value_name {
            Some(_) => matches.get_one::<String>(self.key).cloned(),
            None => matches.get_flag(self.key).then(|| "true".to_owned()),
        }
    }
}

/// The value parser of a setting's flag: the setting's own parser, with an error that shows
/// the value the way the setting shows it.
struct Check<C: 'static>(&'static Setting<C>);

impl<C> Clone for Check<C> {
    fn clone(&self) -> Self {
        Self(self.0)
    }
}

impl<C: Default + 'static> clap::builder::TypedValueParser for Check<C> {
    type Value = String;

    fn parse_ref(
        &self,
        command: &clap::Command,
        _: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let setting = self.0;
        let fail = |reason: &str| {
            let shown = setting.shown(&value.to_string_lossy());
            let value_name = setting.value_name.unwrap_or_default();
            let message = format!(
                "invalid value '{shown}' for '--{} <{value_name}>': {reason}\n",
                setting.flag
            );
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(command)
        };
        let text = value.to_str().ok_or_else(|| fail("not UTF-8"))?;
        (setting.apply)(&mut C::default(), text)
            .map(|()| text.to_owned())
            .map_err(|reason| fail(&reason))
    }
}

/// The settings struct `C` from its sources: for each setting, the command-line value that
/// `flag` gives, else the environment variable that `env` gives (blank counts as unset), else
/// the default. An error names the flag or the variable whose value is wrong.
pub(crate) fn load<'a, C: Default + 'a>(
    table: impl IntoIterator<Item = &'a Setting<C>>,
    flag: impl Fn(&Setting<C>) -> Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<C, ConfigError> {
    let mut settings = C::default();
    for setting in table {
        let (source, text) = match flag(setting) {
            Some(text) => (format!("--{}", setting.flag), text),
            None => match env(setting.env).filter(|text| !text.trim().is_empty()) {
                Some(text) => (setting.env.to_owned(), text),
                None => continue,
            },
        };
        (setting.apply)(&mut settings, &text)
            .map_err(|reason| invalid_value(&source, &setting.shown(&text), reason))?;
    }
    Ok(settings)
}

/// The process environment: the one place that reads `CONVEYOR_*` variables.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Declares a settings struct: each field (optionally behind one `#[cfg(…)]`) with its doc
/// line, type and default, and, for the
/// fields that are settings, `env "VAR", flag "name" = "VALUE", parse parser` (a flag without
/// `= "VALUE"` is a switch), optionally `unset "text"` for `--help`, and optionally `redact f`
/// for a secret: `f` (such as [`hidden`] or [`redact_urls`]) shows its text wherever it is
/// shown. Generates the struct, its `Default`, a `Debug` that shows every secret through its
/// `redact` (so that no log line or panic message holds one), and `SETTINGS`, the table of
/// its settings.
macro_rules! declare_settings {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[cfg($cfg:meta)])?
                #[doc = $help:literal]
                $field:ident: $ty:ty = $default:expr
                $(, env $env:literal, flag $flag:literal $(= $value_name:literal)?,
                    parse $parse:path $(, unset $unset:literal)? $(, redact $redact:path)?)?;
            )*
        }
    ) => {
        $(#[$attr])*
        $vis struct $name {
            $($(#[cfg($cfg)])? #[doc = $help] pub(crate) $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($(#[cfg($cfg)])? $field: $default,)* }
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let mut debug = f.debug_struct(stringify!($name));
                $(
                    $(#[cfg($cfg)])?
                    debug.field(
                        stringify!($field),
                        $crate::settings::declare_settings!(@debug self.$field $($(, $redact)?)?),
                    );
                )*
                debug.finish()
            }
        }

        impl $name {
            /// Every setting of this struct, in `--help` order.
            pub(crate) const SETTINGS: &'static [$crate::settings::Setting<$name>] =
                $crate::settings::declare_settings!(@table [] $(
                    [$(#[cfg($cfg)])?] [$help] $field
                    $(, $env, $flag, [$($value_name)?], $parse, [$($unset)?], [$($redact)?])?;
                )*);
        }
    };
    // The table, one entry at a time, so that an entry's `cfg` can go on its element.
    (@table [$($done:tt)*]) => { &[$($done)*] };
    (@table [$($done:tt)*] [$($cfg:tt)*] [$help:literal] $field:ident; $($rest:tt)*) => {
        $crate::settings::declare_settings!(@table [$($done)*] $($rest)*)
    };
    (@table [$($done:tt)*] [$($cfg:tt)*] [$help:literal] $field:ident, $env:literal,
        $flag:literal, [$($value_name:literal)?], $parse:path, [$($unset:literal)?],
        [$($redact:path)?];
        $($rest:tt)*) => {
        $crate::settings::declare_settings!(@table [$($done)* $($cfg)* $crate::settings::Setting {
            key: stringify!($field),
            env: $env,
            flag: $flag,
            value_name: $crate::settings::declare_settings!(@option $($value_name)?),
            help: $help.trim_ascii(),
            unset: $crate::settings::declare_settings!(@unset $($unset)?),
            apply: |settings, text| {
                $crate::settings::Value::set(&mut settings.$field, $parse(text)?);
                Ok(())
            },
            show: |settings| $crate::settings::Value::show(&settings.$field),
            redact: $crate::settings::declare_settings!(@redact $($redact)?),
        },] $($rest)*)
    };
    (@redact) => { None };
    (@redact $redact:path) => { Some($redact) };
    (@debug $value:expr) => { &$value };
    (@debug $value:expr, $redact:path) => {
        &$crate::settings::Redacted($crate::settings::Value::show(&$value).map(|text| $redact(&text)))
    };
    (@option) => { None };
    (@option $value:literal) => { Some($value) };
    (@unset) => { "" };
    (@unset $text:literal) => { $text };
}
pub(crate) use declare_settings;

/// A secret setting's value in `Debug`: its redacted text, or `None` when unset.
pub(crate) struct Redacted(pub(crate) Option<String>);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(text) => text.fmt(f),
            None => f.write_str("None"),
        }
    }
}

/// How a secret such as a token or a password is shown: never, whatever it is.
pub(crate) fn hidden(_: &str) -> String {
    "***".to_owned()
}

/// A comma-separated list of NATS URLs as it may be shown: the password of each
/// (`nats://user:***@host`) and a token in the user's place (`nats://***@host`) hidden. Works on
/// the text, so that a URL too broken to parse is hidden as well.
pub(crate) fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(redact_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_len = url[authority_start..]
        .find(['/', '?', '#'])
        .unwrap_or(url.len() - authority_start);
    let authority = &url[authority_start..authority_start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = match authority[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!(
        "{}{userinfo}{}",
        &url[..authority_start],
        &url[authority_start + at..]
    )
}

/// The type of a setting's field: what its parser gives, and how `--help` shows it.
pub(crate) trait Value {
    /// What the parser gives: the type itself, or `T` for an `Option<T>`.
    type Parsed;
    /// Sets the field to a parsed value.
    fn set(&mut self, parsed: Self::Parsed);
    /// The value as `--help` shows it; `None` when unset.
    fn show(&self) -> Option<String>;
}

/// `Value` for types shown as they display.
macro_rules! value_by_display {
    ($($ty:ty),*) => {$(
        impl Value for $ty {
            type Parsed = Self;
            fn set(&mut self, parsed: Self) {
                *self = parsed;
            }
            fn show(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

value_by_display!(String, usize, u32, bool, SocketAddr);

impl Value for Duration {
    type Parsed = Self;
    fn set(&mut self, parsed: Self) {
        *self = parsed;
    }
    fn show(&self) -> Option<String> {
        Some(humantime::format_duration(*self).to_string())
    }
}

impl Value for PathBuf {
    type Parsed = Self;
    fn set(&mut self, parsed: Self) {
        *self = parsed;
    }
    fn show(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

impl<T: Value<Parsed = T>> Value for Option<T> {
    type Parsed = T;
    fn set(&mut self, parsed: T) {
        *self = Some(parsed);
    }
    fn show(&self) -> Option<String> {
        self.as_ref().and_then(Value::show)
    }
}

// The parsers: one per kind of value. Each takes the text as given and says what a valid value
// looks like when it is not one.

/// A whole number, at least 1.
pub(crate) fn count<T: std::str::FromStr + PartialOrd + From<u8>>(text: &str) -> Result<T, String> {
    match text.trim().parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err("expected a whole number of at least 1".to_owned()),
    }
}

/// `500ms`, `30s`, `2m`, …; a bare number is seconds.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|err| format!("expected a duration such as 500ms, 30s or 2m ({err})"))
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
pub(crate) fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected 1/true/yes/on or 0/false/no/off".to_owned()),
    }
}

/// Text, trimmed.
pub(crate) fn text(text: &str) -> Result<String, String> {
    Ok(text.trim().to_owned())
}

/// A file path.
pub(crate) fn path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text.trim()))
}

/// A socket address such as `0.0.0.0:9090`.
#[cfg(feature = "metrics")]
pub(crate) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected an address such as 0.0.0.0:9090".to_owned())
}

/// One or more NATS server URLs, comma separated; kept as written.
pub(crate) fn nats_urls(text: &str) -> Result<String, String> {
    server_addrs(text)?;
    Ok(text.trim().to_owned())
}

/// The servers of a comma-separated list of NATS URLs.
pub(crate) fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|err| format!("{:?} is not a NATS URL ({err})", redact_url(url)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err("expected one or more NATS URLs".to_owned());
    }
    Ok(addrs)
}

/// An `http://` or `https://` URL; kept as written.
#[cfg(feature = "client")]
pub(crate) fn http_url(text: &str) -> Result<String, String> {
    base_url(text)?;
    Ok(text.trim().to_owned())
}

/// The API's base URL, with a trailing `/` so that paths join below it; the reason when it is
/// not an `http://` or `https://` URL. The API client builds its URLs on it.
#[cfg(feature = "client")]
pub(crate) fn base_url(text: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(text.trim()).map_err(|err| err.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err("expected http:// or https://".to_owned());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Shows a list of settings as the Markdown table of the [`Config`](crate::Config) docs, for
/// the test that keeps those docs true.
#[cfg(test)]
pub(crate) fn markdown_rows<C: Default>(table: &[Setting<C>]) -> String {
    use std::fmt::Write;
    let mut rows = String::new();
    for setting in table {
        let default = (setting.show)(&C::default()).unwrap_or_else(|| setting.unset.to_owned());
        let _ = writeln!(
            rows,
            "| `{}` | `{}` | `--{}` | {} |",
            setting.key, setting.env, setting.flag, default
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    declare_settings! {
        #[derive(PartialEq)]
        struct Sample {
            /// A count
            n: usize = 4, env "T_N", flag "n" = "N", parse count;
            /// A wait
            wait: Duration = Duration::from_secs(30), env "T_WAIT", flag "wait" = "DURATION", parse duration;
            /// A switch
            on: bool = false, env "T_ON", flag "on", parse boolean;
            /// An address
            addr: Option<SocketAddr> = None, env "T_ADDR", flag "addr" = "ADDR", parse socket_addr, unset "none";
            /// A secret
            key: Option<String> = None, env "T_KEY", flag "key" = "KEY", parse secret_or_fail, unset "none", redact hidden;
            /// URLs
            urls: String = "nats://u:default@h".to_owned(), env "T_URLS", flag "urls" = "URL", parse nats_urls, redact redact_urls;
            /// Not a setting
            code_only: bool = true;
        }
    }

    /// Text, except `bad…`: an error that must not show the value.
    fn secret_or_fail(text: &str) -> Result<String, String> {
        match text.starts_with("bad") {
            true => Err("not a key".to_owned()),
            false => Ok(text.to_owned()),
        }
    }

    fn command() -> clap::Command {
        clap::Command::new("t").args(Sample::SETTINGS.iter().map(Setting::arg))
    }

    fn load_from(args: &[&str], env: &[(&str, &str)]) -> Result<Sample, ConfigError> {
        let matches = command()
            .try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap();
        load(
            Sample::SETTINGS,
            |setting| setting.given(&matches),
            |name| {
                env.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            },
        )
    }

    #[test]
    fn flag_beats_environment_beats_default() {
        let sample = load_from(&[], &[]).unwrap();
        assert_eq!(sample, Sample::default());
        let sample = load_from(&[], &[("T_N", "7"), ("T_ON", "yes")]).unwrap();
        assert_eq!((sample.n, sample.on), (7, true));
        let sample = load_from(&["--n", "9"], &[("T_N", "7")]).unwrap();
        assert_eq!(sample.n, 9);
        // A bad variable that a flag overrides is never parsed.
        let sample = load_from(&["--n", "9"], &[("T_N", "abc")]).unwrap();
        assert_eq!(sample.n, 9);
        // Blank is unset.
        assert_eq!(load_from(&[], &[("T_N", " ")]).unwrap().n, 4);
        let sample = load_from(&["--addr", "127.0.0.1:1"], &[]).unwrap();
        assert_eq!(sample.addr, Some(([127, 0, 0, 1], 1).into()));
    }

    #[test]
    fn errors_name_the_source_of_the_value() {
        let err = load_from(&[], &[("T_N", "abc")]).unwrap_err();
        assert_eq!(err.setting, "T_N");
        assert_eq!(
            err.to_string(),
            "invalid T_N \"abc\": expected a whole number of at least 1"
        );
        let err = command()
            .try_get_matches_from(["t", "--wait", "soon"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--wait") && err.contains("expected a duration"),
            "{err}"
        );
    }

    #[test]
    fn help_shows_variable_and_default_once() {
        let help = command().render_help().to_string();
        assert!(help.contains("A count [env: T_N] [default: 4]"), "{help}");
        assert!(
            help.contains("A wait [env: T_WAIT] [default: 30s]"),
            "{help}"
        );
        assert!(
            help.contains("An address [env: T_ADDR] [default: none]"),
            "{help}"
        );
        assert!(
            !help.contains("code_only") && !help.contains("code-only"),
            "{help}"
        );
    }

    #[test]
    fn urls_show_no_password_or_token() {
        for (url, shown) in [
            ("nats://alice:s3cret@h:4222", "nats://alice:***@h:4222"),
            ("nats://s3cret@h", "nats://***@h"),
            ("alice:s3cret@h:4222", "alice:***@h:4222"),
            ("tls://a:s3c@ret@h/x?y=a@b", "tls://a:***@h/x?y=a@b"),
            ("nats://h:4222", "nats://h:4222"),
            ("nats://a:s3cret@h:port", "nats://a:***@h:port"),
            (
                "nats://a:s3cret@h1, nats://b:s3cret@h2",
                "nats://a:***@h1, nats://b:***@h2",
            ),
        ] {
            assert_eq!(redact_urls(url), shown);
        }
        let err = server_addrs("nats://a:s3cret@h:port").unwrap_err();
        assert!(
            err.contains("nats://a:***@h:port") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_help_errors_and_debug() {
        // `--help` shows the default through the redaction.
        let help = command().render_help().to_string();
        assert!(help.contains("[default: nats://u:***@h]"), "{help}");
        assert!(!help.contains("default@"), "{help}");
        // A bad value's error, from a flag or a variable, does not quote it.
        let err = command()
            .try_get_matches_from(["t", "--key", "bad-s3cret"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--key") && err.contains("not a key"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = command()
            .try_get_matches_from(["t", "--urls", "nats://a:s3cret@h:port"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nats://a:***@h:port") && !err.contains("s3cret"),
            "{err}"
        );
        let err = load_from(&[], &[("T_KEY", "bad-s3cret")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("T_KEY") && !err.contains("s3cret"), "{err}");
        // Debug shows the other fields as they are.
        let sample = load_from(&["--key", "s3cret", "--urls", "nats://a:s3cret@h"], &[]).unwrap();
        let debug = format!("{sample:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains(r#"key: "***""#), "{debug}");
        assert!(debug.contains(r#"urls: "nats://a:***@h""#), "{debug}");
        assert!(
            debug.contains("n: 4") && debug.contains("addr: None"),
            "{debug}"
        );
        assert!(format!("{:?}", Sample::default()).contains("key: None"));
    }

    #[test]
    fn parsers() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration(" 7 "), Ok(Duration::from_secs(7)));
        assert!(duration("soon").is_err());
        assert_eq!(count::<u32>("1"), Ok(1));
        assert!(count::<u32>("0").is_err() && count::<u32>("-1").is_err());
        assert_eq!(boolean("ON"), Ok(true));
        assert_eq!(boolean("off"), Ok(false));
        assert!(boolean("maybe").is_err());
        assert_eq!(
            server_addrs("nats://a:4222, nats://b:4223").unwrap().len(),
            2
        );
        assert!(server_addrs(" , ").is_err() && server_addrs("nats://a:port").is_err());
    }
}
