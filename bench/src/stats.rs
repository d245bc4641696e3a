//! Medians with their spread, and numbers formatted for the markdown tables.

/// The median of some measurements, with their minimum and maximum.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `samples` (all zero when there are none). With an even count the median is
    /// the upper middle one: a value that was measured, not an average of two.
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        match (sorted.first(), sorted.last()) {
            (Some(&min), Some(&max)) => Self {
                median: sorted[sorted.len() / 2],
                min,
                max,
            },
            _ => Self::default(),
        }
    }

    /// `median (min–max)`, each rounded to whole units, with thousands separated.
    pub fn whole(&self) -> String {
        format!(
            "{} ({}–{})",
            thousands(self.median),
            thousands(self.min),
            thousands(self.max)
        )
    }

    /// `median (min–max)` with `decimals` decimals.
    pub fn fixed(&self, decimals: usize) -> String {
        format!(
            "{:.decimals$} ({:.decimals$}–{:.decimals$})",
            self.median, self.min, self.max
        )
    }
}

/// A number rounded to a whole, with a thin space between thousands (as BENCHMARKS.md writes
/// them: `20 297`).
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) && digits.len() > 4 {
            out.push(' ');
        }
        out.push(digit);
    }
    if value < -0.5 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let spread = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((spread.median, spread.min, spread.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[]).median, 0.0);
    }

    #[test]
    fn thousands_are_separated_from_five_digits_on() {
        assert_eq!(thousands(4419.4), "4419");
        assert_eq!(thousands(20297.0), "20 297");
        assert_eq!(thousands(1234567.0), "1 234 567");
    }
}
