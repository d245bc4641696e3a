//! How many events an instance takes ahead of its free slots.

use std::fmt;

use crate::settings::Value;

/// How many events an instance takes from JetStream ahead of its free slots; see
/// [`Config::prefetch`](crate::Config::prefetch).
///
/// Written `auto` or a whole number in `CONVEYOR_PREFETCH` and `--prefetch`; a number
/// converts into [`Prefetch::Fixed`]:
///
/// ```
/// use conveyor_driver::Prefetch;
///
/// assert_eq!(Prefetch::from(8), Prefetch::Fixed(8));
/// assert_eq!(Prefetch::default().to_string(), "auto");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefetch {
    /// Take events ahead only while the instance's recent reconciles say they would start
    /// within [`Config::prefetch_wait`](crate::Config::prefetch_wait): short reconciles
    /// pipeline, long ones are left for other instances.
    #[default]
    Auto,
    /// Always keep up to this many events waiting for a slot (`0`: none, the fairest).
    Fixed(usize),
}

impl From<usize> for Prefetch {
    fn from(events: usize) -> Self {
        Prefetch::Fixed(events)
    }
}

impl fmt::Display for Prefetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefetch::Auto => f.write_str("auto"),
            Prefetch::Fixed(events) => write!(f, "{events}"),
        }
    }
}

impl Value for Prefetch {
    type Parsed = Self;
    fn set(&mut self, parsed: Self) {
        *self = parsed;
    }
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// `auto` or a whole number.
pub(crate) fn parse(text: &str) -> Result<Prefetch, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("auto") {
        return Ok(Prefetch::Auto);
    }
    text.parse()
        .map(Prefetch::Fixed)
        .map_err(|_| "expected auto or a whole number".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auto_and_numbers_and_names_what_is_expected() {
        assert_eq!(parse(" AUTO "), Ok(Prefetch::Auto));
        assert_eq!(parse("0"), Ok(Prefetch::Fixed(0)));
        assert_eq!(parse("64"), Ok(Prefetch::Fixed(64)));
        assert_eq!(
            parse("some"),
            Err("expected auto or a whole number".to_owned())
        );
    }
}
