//! The checks of the function itself: its shape, and what its parameters need.

use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{ItemFn, Type};

use crate::args::DriverConfig;

/// Checks the function's shape, and that a `State<T>` parameter has a hook to build its `T`.
pub(crate) fn check_fn(input: &ItemFn, config: &DriverConfig) -> Result<(), syn::Error> {
    let main = config.main;
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
                        "`impl Trait` parameters are not supported by `#[driver]`; use one of `Event`, `Resource`, `Spec<T>`, `RunId`, `Logger`, `Client`, `PipelineContext`, an `Option` of one of them, or `State<T>`",
                    ));
                }
                if let (Some(state), None) = (state_type(&typed.ty), &config.state) {
                    let state = type_text(state);
                    errors.push(syn::Error::new(
                        typed.ty.span(),
                        format!(
                            "`State<{state}>` needs a start-up hook that builds the `{state}`: add `state = connect` to `#[driver(...)]`, with `async fn connect(config: &Config) -> Result<{state}, E>`"
                        ),
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

/// The `T` of a parameter written `State<T>` (with any path in front).
pub(crate) fn state_type(ty: &Type) -> Option<&Type> {
    let [inner] = last_arguments(ty, "State")?[..] else {
        return None;
    };
    Some(inner)
}

/// The `T` and, when written, the `E` of a return type written `Result<T, E>` or
/// `Result<T>` (an alias such as `std::io::Result` or `anyhow::Result`).
pub(crate) fn result_types(ty: &Type) -> Option<(&Type, Option<&Type>)> {
    match last_arguments(ty, "Result")?[..] {
        [data] => Some((data, None)),
        [data, error] => Some((data, Some(error))),
        _ => None,
    }
}

/// The type arguments of `ty` when it is a path whose last segment is `name<…>`.
fn last_arguments<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let ty = match ty {
        Type::Group(group) => &*group.elem,
        ty => ty,
    };
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if path.qself.is_some() || last.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .map(|arg| match arg {
            syn::GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect()
}

/// `ty` as the user would write it (`Arc<Mutex<Pool>>`, not `Arc < Mutex < Pool > >`).
pub(crate) fn type_text(ty: &Type) -> String {
    let text = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(text.len());
    for token in text.split(' ') {
        let glue = matches!(token, "<" | ">" | "::" | "," | ">>")
            || out.ends_with('<')
            || out.ends_with("::")
            || out.ends_with('&');
        if !out.is_empty() && !glue {
            out.push(' ');
        }
        out.push_str(token);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(text: &str) -> Type {
        syn::parse_str(text).unwrap()
    }

    #[test]
    fn state_and_result_types_are_read_from_the_signature() {
        let state = ty("conveyor_driver::State<Arc<Pool>>");
        assert_eq!(type_text(state_type(&state).unwrap()), "Arc<Pool>");
        assert!(state_type(&ty("Option<State<Pool>>")).is_none());
        assert!(state_type(&ty("State")).is_none());
        let result = ty("Result<Vec<u8>, std::io::Error>");
        let (data, error) = result_types(&result).unwrap();
        assert_eq!(type_text(data), "Vec<u8>");
        assert_eq!(type_text(error.unwrap()), "std::io::Error");
        let alias = ty("anyhow::Result<()>");
        let (data, error) = result_types(&alias).unwrap();
        assert_eq!(type_text(data), "()");
        assert!(error.is_none());
        assert!(result_types(&ty("DriverResult")).is_none());
        assert_eq!(type_text(&ty("&'static str")), "&'static str");
        assert_eq!(type_text(&ty("HashMap<String, u8>")), "HashMap<String, u8>");
    }
}
