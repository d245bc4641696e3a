//! The attribute's arguments: parsing, and the checks that need nothing but them (names are
//! single NATS subject tokens, a timeout is a duration, a crate path is a path).

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::punctuated::Punctuated;
use syn::{Ident, LitBool, LitStr, Token};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(resources);
    syn::custom_keyword!(events);
    syn::custom_keyword!(main);
    syn::custom_keyword!(driver);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(state);
}

const KEYS: &[&str] = &[
    "name",
    "resources",
    "events",
    "main",
    "driver",
    "timeout",
    "state",
    "crate",
];

const CRATE_EXAMPLE: &str = "crate = \"my_sdk::conveyor_driver\"";

/// The attribute's arguments as written, each with the span of its key.
#[derive(Default)]
pub(crate) struct RawArgs {
    name: Option<LitStr>,
    resources: Option<(Span, Vec<LitStr>)>,
    events: Option<(Span, Vec<LitStr>)>,
    pub(crate) main: Option<LitBool>,
    driver: Option<Ident>,
    timeout: Option<(LitStr, u64)>,
    state: Option<syn::Path>,
    krate: Option<syn::Path>,
}

/// The checked configuration.
pub(crate) struct DriverConfig {
    pub(crate) name: LitStr,
    pub(crate) resources: Vec<LitStr>,
    pub(crate) events: Option<Vec<LitStr>>,
    pub(crate) main: bool,
    pub(crate) type_name: Ident,
    /// `timeout = "…"` in milliseconds.
    pub(crate) timeout: Option<u64>,
    /// `state = hook`: the path of the start-up hook.
    pub(crate) state: Option<syn::Path>,
    pub(crate) krate: CratePath,
}

/// Where the expansion reaches conveyor-driver: `crate = "…"`, or `::conveyor_driver`.
pub(crate) struct CratePath(Option<syn::Path>);

impl CratePath {
    /// The path to use in front of `::Driver`, `::__private::…`. The default one takes `span`,
    /// as if written there; a configured one keeps the span of its string literal, so that a
    /// path that does not resolve is reported on the literal.
    pub(crate) fn at(&self, span: Span) -> TokenStream {
        match &self.0 {
            Some(path) => path.to_token_stream(),
            None => quote_spanned!(span=> ::conveyor_driver),
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, key_span: Span, key: &str, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            key_span,
            format!("duplicate `{key}` argument"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

pub(crate) fn parse_args(input: ParseStream<'_>, args: &mut RawArgs) -> syn::Result<()> {
    while !input.is_empty() {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::name) {
            let key = input.parse::<kw::name>()?;
            input.parse::<Token![=]>()?;
            let value = parse_string(input, "name", "name = \"builder\"")?;
            set_once(&mut args.name, key.span, "name", value)?;
        } else if lookahead.peek(kw::resources) {
            let key = input.parse::<kw::resources>()?;
            input.parse::<Token![=]>()?;
            let value = parse_list(input, "resources", "resources = [\"build\", \"release\"]")?;
            set_once(&mut args.resources, key.span, "resources", value)?;
        } else if lookahead.peek(kw::events) {
            let key = input.parse::<kw::events>()?;
            input.parse::<Token![=]>()?;
            let value = parse_list(input, "events", "events = [\"create\", \"update\"]")?;
            set_once(&mut args.events, key.span, "events", value)?;
        } else if lookahead.peek(kw::main) {
            let key = input.parse::<kw::main>()?;
            input.parse::<Token![=]>()?;
            let value: LitBool = input.parse().map_err(|err| {
                syn::Error::new(
                    err.span(),
                    "`main` must be `true` or `false`, e.g. main = false",
                )
            })?;
            set_once(&mut args.main, key.span, "main", value)?;
        } else if lookahead.peek(kw::driver) {
            let key = input.parse::<kw::driver>()?;
            input.parse::<Token![=]>()?;
            let value: Ident = input.parse().map_err(|err| {
                syn::Error::new(
                    err.span(),
                    "`driver` must be a type name, e.g. driver = BuildDriver",
                )
            })?;
            set_once(&mut args.driver, key.span, "driver", value)?;
        } else if lookahead.peek(kw::timeout) {
            let key = input.parse::<kw::timeout>()?;
            input.parse::<Token![=]>()?;
            let value = parse_string(input, "timeout", "timeout = \"30m\"")?;
            let millis = parse_timeout(&value)?;
            set_once(&mut args.timeout, key.span, "timeout", (value, millis))?;
        } else if lookahead.peek(kw::state) {
            let key = input.parse::<kw::state>()?;
            input.parse::<Token![=]>()?;
            let value = parse_hook(input)?;
            set_once(&mut args.state, key.span, "state", value)?;
        } else if lookahead.peek(Token![crate]) {
            let key = input.parse::<Token![crate]>()?;
            let eq = input.parse::<Token![=]>()?;
            let value = parse_string(input, "crate", CRATE_EXAMPLE)?;
            let path = parse_crate_path(&value)?;
            if args.krate.is_some() {
                // On the whole `crate = "…"`: the key, as for the other keys, and the value.
                return Err(syn::Error::new_spanned(
                    quote!(#key #eq #value),
                    "duplicate `crate` argument",
                ));
            }
            args.krate = Some(path);
        } else if input.peek(Ident::peek_any) {
            let key = Ident::parse_any(input)?;
            let unknown = key.to_string();
            let message = match suggest(&unknown) {
                Some(known) => format!("unknown argument `{unknown}`; did you mean `{known}`?"),
                None => format!(
                    "unknown argument `{unknown}`; expected one of {}",
                    KEYS.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(syn::Error::new(key.span(), message));
        } else {
            return Err(lookahead.error());
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

fn parse_string(input: ParseStream<'_>, key: &str, example: &str) -> syn::Result<LitStr> {
    input.parse::<LitStr>().map_err(|err| {
        syn::Error::new(
            err.span(),
            format!("`{key}` must be a string literal, e.g. {example}"),
        )
    })
}

/// The hook in `state = …`: the path of a function, unquoted.
fn parse_hook(input: ParseStream<'_>) -> syn::Result<syn::Path> {
    let expected = |span| {
        syn::Error::new(
            span,
            "`state` must name the start-up hook, an `async fn(config: &Config) -> Result<T, E>`, e.g. state = connect (without quotes)",
        )
    };
    if input.peek(LitStr) {
        return Err(expected(input.span()));
    }
    input
        .call(syn::Path::parse_mod_style)
        .map_err(|err| expected(err.span()))
}

/// The duration in `timeout = "…"` (`30m`, `1h 30m`, `90s`), in milliseconds; checked here so
/// that a typo is a compile error, not a driver that never times out.
fn parse_timeout(value: &LitStr) -> syn::Result<u64> {
    let invalid = |reason: String| {
        syn::Error::new(
            value.span(),
            format!(
                "`timeout` must be a duration such as \"30m\", \"1h 30m\" or \"90s\": {reason}"
            ),
        )
    };
    let duration =
        humantime::parse_duration(value.value().trim()).map_err(|err| invalid(err.to_string()))?;
    if duration.is_zero() {
        return Err(invalid(
            "leave it out for the default; `0` would mean no limit, which only the operator may choose (--reconcile-timeout 0)".to_owned(),
        ));
    }
    u64::try_from(duration.as_millis()).map_err(|_| invalid("too long".to_owned()))
}

/// The path in `crate = "…"`, its tokens spanned on the literal. Module style: no generic
/// arguments (`a::b`, `::a::b`, `crate::a`, `self::a`, `super::a`).
fn parse_crate_path(value: &LitStr) -> syn::Result<syn::Path> {
    value.parse_with(syn::Path::parse_mod_style).map_err(|_| {
        syn::Error::new(
            value.span(),
            format!(
                "`crate` must be the path of the conveyor-driver crate, e.g. {CRATE_EXAMPLE} or crate = \"cd\"; {:?} is not a path",
                value.value()
            ),
        )
    })
}

fn parse_list(
    input: ParseStream<'_>,
    key: &str,
    example: &str,
) -> syn::Result<(Span, Vec<LitStr>)> {
    let expected = || format!("`{key}` must be a list of string literals, e.g. {example}");
    if !input.peek(syn::token::Bracket) {
        return Err(syn::Error::new(input.span(), expected()));
    }
    let content;
    let bracket = syn::bracketed!(content in input);
    let items = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)
        .map_err(|err| syn::Error::new(err.span(), expected()))?;
    Ok((bracket.span.join(), items.into_iter().collect()))
}

/// The known key closest to a misspelt one.
fn suggest(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "resource" | "resource_types" | "types" | "kinds" => Some("resources"),
        "event" | "on" => Some("events"),
        "no_main" | "generate_main" | "bin" => Some("main"),
        "type" | "ident" | "struct" | "driver_type" => Some("driver"),
        "driver_name" | "id" => Some("name"),
        "krate" | "crate_name" | "crate_path" | "path" | "sdk" => Some("crate"),
        "deadline" | "reconcile_timeout" | "time_limit" => Some("timeout"),
        "hook" | "setup" | "init" | "start" | "startup" | "on_start" | "context" | "ctx"
        | "shared" | "with_state" => Some("state"),
        _ => None,
    };
    alias.or_else(|| {
        KEYS.iter()
            .map(|key| (edit_distance(&lower, key), *key))
            .filter(|(distance, _)| *distance <= 2)
            .min()
            .map(|(_, key)| key)
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Why `value` is not a single NATS subject token, if it is not.
fn token_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty".to_owned());
    }
    value
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        .map(|c| format!("must be a single NATS subject token, but contains {c:?}"))
}

fn check_names(what: &str, list: &[LitStr], errors: &mut Vec<syn::Error>) {
    let mut seen: Vec<String> = Vec::new();
    for lit in list {
        let value = lit.value();
        if let Some(problem) = token_problem(&value) {
            errors.push(syn::Error::new(
                lit.span(),
                format!("invalid {what} {value:?}: {problem}"),
            ));
        } else if seen.contains(&value) {
            errors.push(syn::Error::new(
                lit.span(),
                format!("duplicate {what} {value:?}"),
            ));
        }
        seen.push(value);
    }
}

/// `build-tools` → `BuildToolsDriver`.
pub(crate) fn default_type_name(name: &str) -> Option<String> {
    let mut camel = String::new();
    for word in name.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            camel.push(first.to_ascii_uppercase());
            camel.extend(chars);
        }
    }
    if camel.is_empty() || camel.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    camel.push_str("Driver");
    Some(camel)
}

impl RawArgs {
    pub(crate) fn check(self) -> Result<DriverConfig, syn::Error> {
        let mut errors = Vec::new();
        let name = match self.name {
            Some(name) => {
                if let Some(problem) = token_problem(&name.value()) {
                    errors.push(syn::Error::new(
                        name.span(),
                        format!("invalid driver name {:?}: {problem}", name.value()),
                    ));
                }
                Some(name)
            }
            None => {
                errors.push(syn::Error::new(
                    Span::call_site(),
                    "missing `name` argument: #[driver(name = \"...\", resources = [\"...\"])]",
                ));
                None
            }
        };
        let resources = match self.resources {
            Some((span, resources)) => {
                if resources.is_empty() {
                    errors.push(syn::Error::new(
                        span,
                        "`resources` must name at least one resource type",
                    ));
                }
                check_names("resource", &resources, &mut errors);
                resources
            }
            None => {
                errors.push(syn::Error::new(
                    Span::call_site(),
                    "missing `resources` argument: the resource types this driver reconciles, e.g. resources = [\"build\"]",
                ));
                Vec::new()
            }
        };
        let events = self.events.map(|(span, events)| {
            if events.is_empty() {
                errors.push(syn::Error::new(
                    span,
                    "`events` must name at least one event; leave it out to handle all events",
                ));
            }
            check_names("event", &events, &mut errors);
            events
        });
        let type_name = match (&self.driver, &name) {
            (Some(ident), _) => Some(ident.clone()),
            (None, Some(name)) => match default_type_name(&name.value()) {
                Some(type_name) => Some(Ident::new(&type_name, name.span())),
                None => {
                    errors.push(syn::Error::new(
                        name.span(),
                        "cannot make a type name from this driver name; name the generated type with `driver = SomeName`",
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        let mut errors = errors.into_iter();
        if let Some(mut first) = errors.next() {
            first.extend(errors);
            return Err(first);
        }
        match (name, type_name) {
            (Some(name), Some(type_name)) => Ok(DriverConfig {
                name,
                resources,
                events,
                main: self.main.is_none_or(|main| main.value),
                type_name,
                timeout: self.timeout.map(|(_, millis)| millis),
                state: self.state,
                krate: CratePath(self.krate),
            }),
            // Unreachable: a missing name or type name is reported above.
            _ => Err(syn::Error::new(
                Span::call_site(),
                "missing `name` argument",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("nmae"), Some("name"));
        assert_eq!(suggest("resource"), Some("resources"));
        assert_eq!(suggest("event"), Some("events"));
        assert_eq!(suggest("no_main"), Some("main"));
        assert_eq!(suggest("completely_else"), None);
        assert_eq!(suggest("krate"), Some("crate"));
        assert_eq!(suggest("crat"), Some("crate"));
        assert_eq!(suggest("crate_path"), Some("crate"));
        assert_eq!(suggest("deadline"), Some("timeout"));
        assert_eq!(suggest("hook"), Some("state"));
        assert_eq!(suggest("stat"), Some("state"));
    }

    #[test]
    fn type_names() {
        assert_eq!(
            default_type_name("builder").as_deref(),
            Some("BuilderDriver")
        );
        assert_eq!(
            default_type_name("build-tools_x").as_deref(),
            Some("BuildToolsXDriver")
        );
        assert_eq!(default_type_name("9lives"), None);
        assert_eq!(default_type_name("--"), None);
    }
}
