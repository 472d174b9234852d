//! One snapshot of the environment ([`Env`]) and its typed readers: each value checked against
//! its setting's declaration, every malformed value an error that names the setting.

use std::collections::HashMap;
use std::time::Duration;

use super::{invalid, ConfigError, Kind, Setting};

/// One snapshot of the environment. Unset and blank are the same; values are trimmed.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl std::fmt::Debug for Env {
    /// Names only: values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// The process environment, read once. The only place the product reads `std::env`.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// An environment from pairs (tests, or values fetched at start-up).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v): &(String, String)| !v.trim().is_empty())
            .map(|(k, v)| (k, v.trim().to_string()))
            .collect();
        Self { vars }
    }

    /// The same snapshot with `name` set (values fetched at start-up, e.g. from a secret store).
    #[must_use]
    pub fn with(mut self, name: &str, value: &str) -> Self {
        if value.trim().is_empty() {
            self.vars.remove(name);
        } else {
            self.vars.insert(name.to_string(), value.trim().to_string());
        }
        self
    }

    /// The raw value of a variable that is not a product setting (e.g. `RUST_LOG`, read by the
    /// logging library's own syntax). Declared settings use the typed readers below.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// A text or secret setting, or its declared default.
    pub fn text(&self, s: &Setting) -> Option<String> {
        match (self.vars.get(s.name), s.kind) {
            (Some(v), _) => Some(v.clone()),
            (None, Kind::Text { default: Some(d) }) => Some(d.to_string()),
            (None, _) => None,
        }
    }

    /// A text or secret setting that must be set.
    pub fn required(&self, s: &Setting) -> Result<String, ConfigError> {
        self.text(s).ok_or(ConfigError::Missing(s.name))
    }

    /// A whole number in its declared range when it is set (its default is not applied).
    pub fn given_number(&self, s: &Setting) -> Result<Option<u64>, ConfigError> {
        let Kind::Number { min, max, .. } = s.kind else {
            return Err(invalid(s.name, "is not declared as a number"));
        };
        match self.vars.get(s.name) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(invalid(
                    s.name,
                    format!("expected a whole number between {min} and {max}"),
                )),
            },
        }
    }

    /// A whole number in its declared range; its default when unset; `None` without one.
    pub fn optional_number(&self, s: &Setting) -> Result<Option<u64>, ConfigError> {
        Ok(self.given_number(s)?.or(s.default_number()))
    }

    /// A whole number with a default.
    pub fn number(&self, s: &Setting) -> Result<u64, ConfigError> {
        self.optional_number(s)?.ok_or(ConfigError::Missing(s.name))
    }

    /// A number of milliseconds or seconds, as a duration.
    pub fn duration(&self, s: &Setting) -> Result<Duration, ConfigError> {
        Ok(self.optional_duration(s)?.unwrap_or_default())
    }

    /// A duration; its default when unset; `None` without one.
    pub fn optional_duration(&self, s: &Setting) -> Result<Option<Duration>, ConfigError> {
        Ok(self.given_duration(s)?.or(s.default_duration()))
    }

    /// A duration when it is set (its default is not applied): for settings that fall back to
    /// another source before their default.
    pub fn given_duration(&self, s: &Setting) -> Result<Option<Duration>, ConfigError> {
        Ok(self.given_number(s)?.and_then(|n| s.as_duration(n)))
    }

    /// A percentage above 0 and at most 100.
    pub fn percent(&self, s: &Setting) -> Result<f64, ConfigError> {
        let Kind::Percent { default } = s.kind else {
            return Err(invalid(s.name, "is not declared as a percentage"));
        };
        match self.vars.get(s.name) {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
                _ => Err(invalid(s.name, "expected a percentage above 0 and at most 100")),
            },
        }
    }

    /// `true`/`false` (also `1`/`0`).
    pub fn flag(&self, s: &Setting) -> Result<bool, ConfigError> {
        let Kind::Flag { default } = s.kind else {
            return Err(invalid(s.name, "is not declared as a flag"));
        };
        match self.vars.get(s.name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(_) => Err(invalid(s.name, "expected true or false")),
        }
    }

    /// One of the declared options.
    pub fn choice(&self, s: &Setting) -> Result<&'static str, ConfigError> {
        let Kind::Choice { options, default } = s.kind else {
            return Err(invalid(s.name, "is not declared as a choice"));
        };
        match self.vars.get(s.name) {
            None => Ok(default),
            Some(v) => options.iter().copied().find(|o| o == v).ok_or_else(|| {
                let shown: String = v.chars().take(40).collect();
                invalid(
                    s.name,
                    format!("unknown value {shown:?} (expected one of {})", options.join(", ")),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Unit;

    const N: Setting = Setting::number("N", 1, 10, 3, Unit::Plain, "a number");
    const MS: Setting = Setting::millis("MS", 1, 1000, 250, "a bound");
    const P: Setting = Setting::percent("P", 80.0, "a level");
    const F: Setting = Setting::flag("F", false, "a switch");
    const C: Setting = Setting::choice("C", &["a", "b"], "a", "a choice");

    #[test]
    fn defaults_apply_when_unset_or_blank() {
        let env = Env::from_pairs([("N", "  ")]);
        assert_eq!(env.number(&N).unwrap(), 3);
        assert_eq!(env.duration(&MS).unwrap(), Duration::from_millis(250));
        assert!((env.percent(&P).unwrap() - 80.0).abs() < f64::EPSILON);
        assert!(!env.flag(&F).unwrap());
        assert_eq!(env.choice(&C).unwrap(), "a");
    }

    #[test]
    fn values_are_read_and_trimmed() {
        let env = Env::from_pairs([("N", " 7 "), ("MS", "900"), ("P", "50.5"), ("F", "TRUE"), ("C", "b")]);
        assert_eq!(env.number(&N).unwrap(), 7);
        assert_eq!(env.duration(&MS).unwrap(), Duration::from_millis(900));
        assert!((env.percent(&P).unwrap() - 50.5).abs() < f64::EPSILON);
        assert!(env.flag(&F).unwrap());
        assert_eq!(env.choice(&C).unwrap(), "b");
    }

    #[test]
    fn every_malformed_value_names_its_setting() {
        for (name, value) in [
            ("N", "0"),
            ("N", "11"),
            ("N", "many"),
            ("MS", "-1"),
            ("MS", "1e3"),
            ("P", "0"),
            ("P", "101"),
            ("F", "yes"),
            ("C", "z"),
        ] {
            let env = Env::from_pairs([(name, value)]);
            let err = match name {
                "N" => env.number(&N).map(|_| ()),
                "MS" => env.duration(&MS).map(|_| ()),
                "P" => env.percent(&P).map(|_| ()),
                "F" => env.flag(&F).map(|_| ()),
                _ => env.choice(&C).map(|_| ()),
            }
            .unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    #[test]
    fn debug_output_shows_names_not_values() {
        let env = Env::from_pairs([("SECRET_THING", "hunter2")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("SECRET_THING") && !shown.contains("hunter2"));
    }
}
