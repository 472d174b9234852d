//! The declaration of a setting: its name, [`Kind`] (type, range, default) and one line of
//! documentation, with the `const` constructors every module declares its settings with.

use std::time::Duration;

/// What a whole-number setting counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Plain,
    Millis,
    Seconds,
    Bytes,
}

/// The type, range and default of a setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A whole number in `min..=max`.
    Number {
        min: u64,
        max: u64,
        default: Option<u64>,
        unit: Unit,
    },
    /// A percentage above 0 and at most 100.
    Percent { default: f64 },
    /// `true`/`false` (also `1`/`0`).
    Flag { default: bool },
    /// One of a fixed list.
    Choice {
        options: &'static [&'static str],
        default: &'static str,
    },
    /// Free text (a URL, a name, a path); checked by the code that uses it.
    Text { default: Option<&'static str> },
    /// A credential: never logged, never shown.
    Secret,
}

/// One declared setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
}

impl Setting {
    /// A whole number with a default.
    pub const fn number(name: &'static str, min: u64, max: u64, default: u64, unit: Unit, doc: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Number {
                min,
                max,
                default: Some(default),
                unit,
            },
            doc,
        }
    }

    /// A whole number without a default (unset means "no value").
    pub const fn optional_number(name: &'static str, min: u64, max: u64, unit: Unit, doc: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Number {
                min,
                max,
                default: None,
                unit,
            },
            doc,
        }
    }

    pub const fn millis(name: &'static str, min: u64, max: u64, default: u64, doc: &'static str) -> Self {
        Self::number(name, min, max, default, Unit::Millis, doc)
    }

    pub const fn percent(name: &'static str, default: f64, doc: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Percent { default },
            doc,
        }
    }

    pub const fn flag(name: &'static str, default: bool, doc: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Flag { default },
            doc,
        }
    }

    pub const fn choice(
        name: &'static str,
        options: &'static [&'static str],
        default: &'static str,
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            kind: Kind::Choice { options, default },
            doc,
        }
    }

    pub const fn text(name: &'static str, default: Option<&'static str>, doc: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Text { default },
            doc,
        }
    }

    pub const fn secret(name: &'static str, doc: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Secret,
            doc,
        }
    }

    /// The declared default of a number.
    pub fn default_number(&self) -> Option<u64> {
        match self.kind {
            Kind::Number { default, .. } => default,
            _ => None,
        }
    }

    /// `n` in the setting's unit as a duration (`None` unless it is declared in ms or s).
    pub fn as_duration(&self, n: u64) -> Option<Duration> {
        match self.kind {
            Kind::Number { unit: Unit::Millis, .. } => Some(Duration::from_millis(n)),
            Kind::Number {
                unit: Unit::Seconds, ..
            } => Some(Duration::from_secs(n)),
            _ => None,
        }
    }

    /// The declared default of a duration.
    pub fn default_duration(&self) -> Option<Duration> {
        self.default_number().and_then(|n| self.as_duration(n))
    }
}
