//! The README's configuration tables: each setting's default and accepted values as the
//! README shows them, and the Markdown rows of a group of settings.

use std::fmt::Write as _;

use super::{Kind, Setting, Unit};

impl Setting {
    /// The default as the README shows it.
    pub fn default_text(&self) -> String {
        match self.kind {
            Kind::Number {
                default: Some(d), unit, ..
            } => match unit {
                Unit::Millis => format!("{d} ms"),
                Unit::Seconds => format!("{d} s"),
                Unit::Bytes => format!("{d} bytes"),
                Unit::Plain => d.to_string(),
            },
            Kind::Percent { default } => format!("{default} %"),
            Kind::Flag { default } => default.to_string(),
            Kind::Choice { default, .. } => format!("`{default}`"),
            Kind::Text { default: Some(d) } => format!("`{d}`"),
            Kind::Number { default: None, .. } | Kind::Text { default: None } | Kind::Secret => "—".into(),
        }
    }

    /// The accepted values as the README shows them.
    pub fn accepts_text(&self) -> String {
        match self.kind {
            Kind::Number { min, max, unit, .. } => {
                let unit = match unit {
                    Unit::Millis => " ms",
                    Unit::Seconds => " s",
                    Unit::Bytes => " bytes",
                    Unit::Plain => "",
                };
                format!("{min}–{max}{unit}")
            }
            Kind::Percent { .. } => "0 < p ≤ 100".into(),
            Kind::Flag { .. } => "`true`, `false`".into(),
            Kind::Choice { options, .. } => options.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", "),
            Kind::Text { .. } => "text".into(),
            Kind::Secret => "secret".into(),
        }
    }
}

/// Markdown table rows for a group of settings (the README's configuration tables).
pub fn markdown_table(settings: &[&Setting]) -> String {
    let mut out = String::from("| variable | default | accepts | what it does |\n|---|---|---|---|\n");
    for s in settings {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            s.name,
            s.default_text(),
            s.accepts_text(),
            s.doc
        );
    }
    out
}
