//! Reading a function's configuration from its environment: one error type and one set of
//! helpers for every function.
//!
//! Each function declares the variables it reads in one list (`config::ENVIRONMENT`); an
//! [`Env`] reads only declared names, and `tests/tests/template_agrees.rs` checks the
//! template sets exactly those (plus [`crate::logging::ENVIRONMENT`]).

use std::str::FromStr;
use std::time::Duration;

/// Why a function's configuration cannot be used: one it cannot start with (its variables),
/// or a secret's text it cannot use (which some functions start without, holding back what
/// needs it). Never carries a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    /// `reason` quotes the value only for variables that are not secrets.
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// The variables are each valid but do not work together.
    #[error("{0}")]
    Unusable(&'static str),
    /// An outbound HTTP client could not be built: its TLS backend did not start, which no
    /// variable can cause.
    #[error("no HTTP client: {0}")]
    NoHttpClient(String),
}

impl From<reqwest::Error> for ConfigError {
    fn from(e: reqwest::Error) -> ConfigError {
        ConfigError::NoHttpClient(e.to_string())
    }
}

/// `RECONCILE_AFTER_SECONDS`: how long after a task is registered, or stops at `text` or
/// `first`, the reconciler first polls the provider for it (default 600, 5 to 86400). Read by
/// every function that writes the schedule (ingest, results' registration, the reconciler).
pub fn reconcile_after(env: &Env) -> Result<Duration, ConfigError> {
    use stemvault_vault::reconcile::{DEFAULT_RECONCILE_AFTER, MIN_RECONCILE_AFTER};
    let (default, min) = (DEFAULT_RECONCILE_AFTER.as_secs(), MIN_RECONCILE_AFTER.as_secs());
    env.seconds("RECONCILE_AFTER_SECONDS", default, min, 86_400)
}

/// A function's configuration, read from the variables it declares.
pub trait FromEnv: Sized {
    /// Every variable it reads (besides logging's and the AWS SDK's).
    const ENVIRONMENT: &'static [&'static str];

    /// Read and check every setting.
    fn read(env: &Env) -> Result<Self, ConfigError>;

    /// From the process environment (the Lambda).
    fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process(Self::ENVIRONMENT))
    }

    /// From `lookup` (the local runner and tests).
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Env::new(Self::ENVIRONMENT, lookup))
    }
}

/// Where values come from: the process environment, or a map in tests.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// A function's environment, restricted to the variables it declares.
pub struct Env<'a> {
    declared: &'static [&'static str],
    lookup: Lookup<'a>,
}

impl<'a> Env<'a> {
    /// Look variables up with `lookup` (tests pass a map).
    pub fn new(declared: &'static [&'static str], lookup: impl Fn(&str) -> Option<String> + 'a) -> Env<'a> {
        Env { declared, lookup: Box::new(lookup) }
    }

    /// The process environment.
    pub fn process(declared: &'static [&'static str]) -> Env<'static> {
        Env::new(declared, |name| std::env::var(name).ok())
    }

    /// The trimmed value; unset and empty are the same (templates pass unset parameters as
    /// empty strings).
    ///
    /// # Panics
    /// If `name` is not declared: a programming error every config test finds.
    pub fn optional(&self, name: &'static str) -> Option<String> {
        assert!(self.declared.contains(&name), "{name} is read but not declared in config::ENVIRONMENT");
        (self.lookup)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// `true` or `false` (any case); unset is `false`.
    pub fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ConfigError::Invalid { name, reason: format!("{other:?} is neither true nor false") }),
        }
    }

    /// A whole number within `min..=max`; `default` when unset.
    pub fn number<T>(&self, name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
    {
        let Some(raw) = self.optional(name) else { return Ok(default) };
        let invalid = |reason: String| ConfigError::Invalid { name, reason: format!("{raw:?}: {reason}") };
        let value: T = raw.parse().map_err(|_| invalid("not a whole number".into()))?;
        if value < min || value > max {
            return Err(invalid(format!("must be between {min} and {max}")));
        }
        Ok(value)
    }

    /// Whole seconds within `min..=max`; `default` when unset.
    pub fn seconds(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
        self.number(name, default, min, max).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const DECLARED: &[&str] = &["NAME", "FLAG", "COUNT", "WAIT_SECONDS"];

    fn with(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn values_are_trimmed_and_empty_is_unset() {
        let vars = with(&[("NAME", "  tasks "), ("FLAG", " ")]);
        let env = Env::new(DECLARED, |k| vars.get(k).cloned());
        assert_eq!(env.required("NAME"), Ok("tasks".into()));
        assert_eq!(env.optional("FLAG"), None);
        assert_eq!(env.required("COUNT"), Err(ConfigError::Missing("COUNT")));
        assert_eq!(env.flag("FLAG"), Ok(false));
    }

    #[test]
    fn flags_are_true_or_false() {
        for (raw, expected) in [("TRUE", Ok(true)), ("false", Ok(false))] {
            let vars = with(&[("FLAG", raw)]);
            assert_eq!(Env::new(DECLARED, |k| vars.get(k).cloned()).flag("FLAG"), expected);
        }
        let vars = with(&[("FLAG", "yes")]);
        let err = Env::new(DECLARED, |k| vars.get(k).cloned()).flag("FLAG").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "FLAG", .. }), "{err}");
    }

    #[test]
    fn numbers_are_bounded_and_defaulted() {
        let read = |raw: &str| {
            let vars = with(&[("COUNT", raw)]);
            Env::new(DECLARED, |k| vars.get(k).cloned()).number("COUNT", 7u64, 1, 100)
        };
        assert_eq!(read(""), Ok(7));
        assert_eq!(read(" 100 "), Ok(100));
        for bad in ["0", "101", "-1", "1k"] {
            assert!(matches!(read(bad), Err(ConfigError::Invalid { name: "COUNT", .. })), "{bad}");
        }
        let vars = with(&[("WAIT_SECONDS", "30")]);
        let env = Env::new(DECLARED, |k| vars.get(k).cloned());
        assert_eq!(env.seconds("WAIT_SECONDS", 5, 1, 60), Ok(Duration::from_secs(30)));
    }

    #[test]
    #[should_panic(expected = "UNDECLARED is read but not declared")]
    fn an_undeclared_variable_is_a_programming_error() {
        Env::new(DECLARED, |_| None).optional("UNDECLARED");
    }
}
