//! The expansion of `#[driver]`: argument parsing, checks and code generation, on
//! `proc_macro2` so it can be unit tested.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, LitBool, LitStr, Token};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(resources);
    syn::custom_keyword!(events);
    syn::custom_keyword!(main);
    syn::custom_keyword!(driver);
    syn::custom_keyword!(timeout);
}

const KEYS: &[&str] = &[
    "name",
    "resources",
    "events",
    "main",
    "driver",
    "timeout",
    "crate",
];

const CRATE_EXAMPLE: &str = "crate = \"my_sdk::conveyor_driver\"";

/// The attribute's arguments as written, each with the span of its key.
#[derive(Default)]
struct RawArgs {
    name: Option<LitStr>,
    resources: Option<(Span, Vec<LitStr>)>,
    events: Option<(Span, Vec<LitStr>)>,
    main: Option<LitBool>,
    driver: Option<Ident>,
    timeout: Option<(LitStr, u64)>,
    krate: Option<syn::Path>,
}

/// The checked configuration.
struct DriverConfig {
    name: LitStr,
    resources: Vec<LitStr>,
    events: Option<Vec<LitStr>>,
    main: bool,
    type_name: Ident,
    /// `timeout = "…"` in milliseconds.
    timeout: Option<u64>,
    krate: CratePath,
}

/// Where the expansion reaches conveyor-driver: `crate = "…"`, or `::conveyor_driver`.
struct CratePath(Option<syn::Path>);

impl CratePath {
    /// The path to use in front of `::Driver`, `::__private::…`. The default one takes `span`,
    /// as if written there; a configured one keeps the span of its string literal, so that a
    /// path that does not resolve is reported on the literal.
    fn at(&self, span: Span) -> TokenStream {
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

fn parse_args(input: ParseStream<'_>, args: &mut RawArgs) -> syn::Result<()> {
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
fn default_type_name(name: &str) -> Option<String> {
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
    fn check(self) -> Result<DriverConfig, syn::Error> {
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

/// Checks the function's shape.
fn check_fn(input: &ItemFn, main: bool) -> Result<(), syn::Error> {
    let mut errors = Vec::new();
    let sig = &input.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "a `#[driver]` function must be `async`: write `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            "a `#[driver]` function cannot be generic: its parameters are chosen by their concrete types",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new(
            variadic.span(),
            "a `#[driver]` function cannot be variadic",
        ));
    }
    for arg in &sig.inputs {
        match arg {
            syn::FnArg::Receiver(receiver) => errors.push(syn::Error::new(
                receiver.span(),
                "a `#[driver]` function cannot take `self`: write a free function; its parameters are taken from the event",
            )),
            syn::FnArg::Typed(typed) => {
                if let syn::Type::ImplTrait(_) = &*typed.ty {
                    errors.push(syn::Error::new(
                        typed.ty.span(),
                        "`impl Trait` parameters are not supported by `#[driver]`; use one of `Event`, `Resource`, `Spec<T>`, `RunId`, `Logger`, `Client`, or an `Option` of one of them",
                    ));
                }
            }
        }
    }
    if main && sig.ident == "main" {
        errors.push(syn::Error::new(
            sig.ident.span(),
            "`#[driver]` generates `main`; name this function differently, or add `main = false`",
        ));
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        Some(mut first) => {
            first.extend(errors);
            Err(first)
        }
        None => Ok(()),
    }
}

/// The expansion: the function as written, the driver type and, unless `main = false`, `main`.
pub(crate) fn driver(args: TokenStream, item: TokenStream) -> TokenStream {
    let input: ItemFn = match syn::parse2(item.clone()) {
        Ok(input) => input,
        Err(err) => {
            let err = syn::Error::new(
                err.span(),
                format!("`#[driver]` goes on an `async fn`: {err}"),
            );
            return with_errors(item, err, false);
        }
    };
    let mut raw = RawArgs::default();
    let parsed = (|stream: ParseStream<'_>| parse_args(stream, &mut raw)).parse2(args);
    let wants_main = raw.main.as_ref().is_none_or(|main| main.value);
    let stub_main = wants_main && input.sig.ident != "main";
    if let Err(err) = parsed {
        return with_errors(input.into_token_stream(), err, stub_main);
    }
    let config = match raw.check() {
        Ok(config) => config,
        Err(err) => return with_errors(input.into_token_stream(), err, stub_main),
    };
    if let Err(err) = check_fn(&input, config.main) {
        return with_errors(input.into_token_stream(), err, stub_main);
    }
    expand(&input, &config)
}

/// The item unchanged, the errors, and an empty `main` so that only the real errors show.
fn with_errors(item: TokenStream, error: syn::Error, stub_main: bool) -> TokenStream {
    let error = error.into_compile_error();
    let main = stub_main.then(|| {
        quote!(
            fn main() {}
        )
    });
    quote! { #item #error #main }
}

fn expand(input: &ItemFn, config: &DriverConfig) -> TokenStream {
    let krate = config.krate.at(Span::call_site());
    let fn_ident = &input.sig.ident;
    let vis = &input.vis;
    let type_name = &config.type_name;
    let name = &config.name;
    let resources = &config.resources;
    let name_value = name.value();
    let filter_subjects: Vec<LitStr> = resources
        .iter()
        .flat_map(|resource| {
            let resource_value = resource.value();
            [
                LitStr::new(&format!("resources.{resource_value}"), resource.span()),
                LitStr::new(
                    &format!("drivers.{name_value}.resources.{resource_value}"),
                    resource.span(),
                ),
            ]
        })
        .collect();
    let timeout_fn = config.timeout.map(|millis| {
        quote! {
            fn timeout(&self) -> ::core::option::Option<::core::time::Duration> {
                ::core::option::Option::Some(::core::time::Duration::from_millis(#millis))
            }
        }
    });
    let events_const = match &config.events {
        Some(events) => quote!(::core::option::Option::Some(&[#(#events),*])),
        None => quote!(::core::option::Option::None),
    };

    let event = Ident::new("__conveyor_event", Span::mixed_site());
    let log = Ident::new("__conveyor_log", Span::mixed_site());

    let mut vars = Vec::new();
    let mut extractions = Vec::new();
    let mut spec_schemas = Vec::new();
    for (index, arg) in input.sig.inputs.iter().enumerate() {
        let syn::FnArg::Typed(typed) = arg else {
            continue;
        };
        let ty = &typed.ty;
        let var = format_ident!("__conveyor_arg{}", index, span = Span::mixed_site());
        let ty_krate = config.krate.at(ty.span());
        let call = quote_spanned! {ty.span()=>
            <#ty as #ty_krate::FromEvent>::from_event
        };
        extractions.push(quote! {
            let #var = match #call(&#event, &#log) {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(error) => {
                    return #krate::__private::reject(error, &#log);
                }
            };
        });
        vars.push(var);
        spec_schemas.push(quote! {
            .or_else(|| (&#krate::__private::SpecSchemaOf::<#ty>::new()).__conveyor_spec_schema())
        });
    }
    let convert_span = match &input.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => input.sig.ident.span(),
    };
    let returned = Ident::new("__conveyor_returned", Span::mixed_site());
    // Spanned on the return type (the argument too), so an unsupported one is reported there.
    let convert_krate = config.krate.at(convert_span);
    let convert = quote_spanned! {convert_span=>
        (&&&#convert_krate::__private::wrap(&#returned))
            .__conveyor_kind()
            .convert(::core::convert::identity(#returned))
    };
    let type_doc = format!(
        " The `{name_value}` Conveyor CI driver, generated by `#[driver]` from `{fn_ident}`: \
         run it with `DriverManager::new({type_name}, config)`."
    );
    let main = config.main.then(|| {
        quote! {
            /// Runs the driver: command line, local output, Driver Manager until SIGTERM.
            fn main() -> ::std::process::ExitCode {
                #krate::cli::run_crate(
                    #type_name,
                    ::core::env!("CARGO_PKG_VERSION"),
                    ::core::env!("CARGO_CRATE_NAME"),
                )
            }
        }
    });

    quote! {
        #input

        #[doc = #type_doc]
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
        #vis struct #type_name;

        impl #type_name {
            /// The driver's name: its durable consumer, the `driver` of its logs and results.
            pub const NAME: &'static str = #name;
            /// The resource types it reconciles.
            pub const RESOURCES: &'static [&'static str] = &[#(#resources),*];
            /// The events it handles; `None` means all.
            pub const EVENTS: ::core::option::Option<&'static [&'static str]> = #events_const;
            /// The filter subjects of its consumer: `resources.<r>` and
            /// `drivers.<name>.resources.<r>` for each resource type `r`.
            pub const FILTER_SUBJECTS: &'static [&'static str] = &[#(#filter_subjects),*];
        }

        impl #krate::Driver for #type_name {
            fn name(&self) -> ::std::string::String {
                ::std::string::String::from(Self::NAME)
            }

            fn resources(&self) -> ::std::vec::Vec<::std::string::String> {
                Self::RESOURCES.iter().map(|r| ::std::string::String::from(*r)).collect()
            }

            fn events(&self) -> ::core::option::Option<::std::vec::Vec<::std::string::String>> {
                Self::EVENTS.map(|events| events.iter().map(|e| ::std::string::String::from(*e)).collect())
            }

            #timeout_fn

            fn spec_schema(&self) -> ::core::option::Option<#krate::__private::serde_json::Value> {
                #[allow(unused_imports)]
                use #krate::__private::{HasSpecSchema as _, NoSpecSchema as _};
                ::core::option::Option::None #(#spec_schemas)*
            }

            async fn reconcile(
                &self,
                #event: #krate::Event,
                #log: #krate::Logger,
            ) -> #krate::ReconcileResult {
                #[allow(unused_imports)]
                use #krate::__private::{
                    DisplayKindSelect as _, IntoKindSelect as _, OtherKindSelect as _,
                };
                #(#extractions)*
                let #returned = #fn_ident(#(#vars),*).await;
                #convert
            }
        }

        #main
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: &str, item: &str) -> String {
        driver(args.parse().unwrap(), item.parse().unwrap()).to_string()
    }

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
    }

    /// A function that uses every path of the expansion: an extractor, a spec schema, a
    /// returned value and `main`.
    const EVERY_PATH: &str =
        "async fn reconcile(spec: Spec<BuildSpec>, log: Logger) -> Result<(), String> { Ok(()) }";

    #[test]
    fn the_default_crate_path_is_conveyor_driver() {
        let out = expand_str(r#"name = "builder", resources = ["build"]"#, EVERY_PATH);
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains(":: conveyor_driver :: Driver for"), "{out}");
        assert!(
            out.contains(":: conveyor_driver :: cli :: run_crate"),
            "{out}"
        );
    }

    #[test]
    fn a_crate_path_replaces_every_conveyor_driver_path() {
        let default = expand_str(r#"name = "builder", resources = ["build"]"#, EVERY_PATH);
        let uses = default.matches(":: conveyor_driver ::").count();
        assert!(uses >= 10, "{default}");
        for (krate, expected) in [
            ("crate::sdk::cd", "crate :: sdk :: cd ::"),
            ("::my_sdk::conveyor", ":: my_sdk :: conveyor ::"),
            ("cd", "cd ::"),
        ] {
            let out = expand_str(
                &format!(r#"name = "builder", resources = ["build"], crate = "{krate}""#),
                EVERY_PATH,
            );
            assert!(!out.contains("compile_error"), "{out}");
            assert!(!out.contains("conveyor_driver"), "{krate}: {out}");
            assert_eq!(out.matches(expected).count(), uses, "{krate}: {out}");
            // Only the paths change.
            assert_eq!(
                out.replace(expected, ":: conveyor_driver ::"),
                default,
                "{krate}"
            );
        }
    }

    #[test]
    fn invalid_crate_paths_are_errors() {
        for (krate, message) in [
            (r#""not a path!""#, "\"not a path!\" is not a path"),
            (r#""""#, "\"\" is not a path"),
            (r#""a::""#, "\"a::\" is not a path"),
            (r#""a<T>""#, "\"a<T>\" is not a path"),
            (r#""a::b c""#, "\"a::b c\" is not a path"),
            ("5", "`crate` must be a string literal"),
            ("cd", "`crate` must be a string literal"),
        ] {
            let out = expand_str(
                &format!(r#"name = "builder", resources = ["build"], crate = {krate}"#),
                "async fn reconcile() {}",
            );
            assert!(out.contains("compile_error"), "{krate}: {out}");
            assert!(
                out.contains(&message.replace('"', "\\\"")),
                "{krate}: {out}"
            );
            assert!(out.contains("async fn reconcile"), "{krate}: {out}");
        }
        let out = expand_str(
            r#"name = "builder", crate = "a", resources = ["build"], crate = "b""#,
            "async fn reconcile() {}",
        );
        assert!(out.contains("duplicate `crate` argument"), "{out}");
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

    #[test]
    fn filter_subjects_are_literals() {
        let out = expand_str(
            r#"name = "builder", resources = ["build", "release"], main = false"#,
            "async fn reconcile() {}",
        );
        for subject in [
            "\"resources.build\"",
            "\"drivers.builder.resources.build\"",
            "\"resources.release\"",
            "\"drivers.builder.resources.release\"",
        ] {
            assert!(out.contains(subject), "{out}");
        }
        assert!(!out.contains("fn main"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn errors_keep_the_function_and_stub_main() {
        let out = expand_str(
            r#"name = "a.b", resources = ["x"]"#,
            "async fn reconcile() {}",
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("async fn reconcile"), "{out}");
        assert!(out.contains("fn main () { }"), "{out}");
        let out = expand_str(
            r#"name = "a.b", resources = ["x"], main = false"#,
            "async fn reconcile() {}",
        );
        assert!(!out.contains("fn main"), "{out}");
    }
}
