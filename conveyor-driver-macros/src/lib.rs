//! The `#[driver]` attribute (placeholder).
