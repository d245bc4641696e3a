//! The expansion of `#[driver]`: arguments, checks, code generation, on `proc_macro2` so it
//! can be unit tested.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::parse::{ParseStream, Parser};
use syn::ItemFn;

use crate::args::{parse_args, RawArgs};
use crate::check::check_fn;
use crate::expand::expand;

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
    if let Err(err) = check_fn(&input, &config) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: &str, item: &str) -> String {
        driver(args.parse().unwrap(), item.parse().unwrap()).to_string()
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
