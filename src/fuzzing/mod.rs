//! The properties the fuzz targets in `fuzz/` check: one module per target, each with the
//! input it takes (built with `arbitrary`, from libFuzzer's bytes or from a random seed) and a
//! `check` that panics when the property does not hold.
//!
//! The same checks run as bounded property tests in every `cargo test` (each module's tests,
//! with `arbtest`), so a change that breaks a property fails without a fuzzing run. Not part of
//! the API: compiled for the unit tests and with the `fuzzing` feature only.

pub mod client_addr;
pub mod config;
pub mod credentials;
pub mod judge;
pub mod jwt;
pub mod rewrite;
pub mod route;
pub mod token_request;

use arbitrary::Arbitrary;
use serde_json::{Map, Value};

/// A JSON value built from fuzz input. Object keys are drawn mostly from `keys` (the names
/// the code under test looks for), so a random value reaches the checks behind them.
#[derive(Debug, Clone, Arbitrary)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

/// An object key: one of the names a target cares about, or any string.
#[derive(Debug, Clone, Arbitrary)]
pub enum Key {
    Known(u8),
    Other(String),
}

impl Key {
    /// The key's text, a known one picked from `keys`.
    pub fn name(&self, keys: &[&str]) -> String {
        match self {
            Key::Known(i) if !keys.is_empty() => keys[usize::from(*i) % keys.len()].to_string(),
            Key::Known(_) => String::new(),
            Key::Other(name) => name.clone(),
        }
    }
}

impl Json {
    /// The value as serde_json sees it (a float that JSON cannot hold becomes `null`).
    pub fn to_value(&self, keys: &[&str]) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::UInt(u) => Value::from(*u),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(|v| v.to_value(keys)).collect()),
            Json::Object(fields) => Value::Object(object(fields, keys)),
        }
    }
}

/// `fields` as a JSON object (a repeated key keeps its last value).
pub fn object(fields: &[(Key, Json)], keys: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .map(|(key, value)| (key.name(keys), value.to_value(keys)))
        .collect()
}

/// A single-threaded runtime for the async code under test (the checks are synchronous, as
/// libFuzzer calls them).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

/// Run `check` on random inputs for about a second, or `ARBTEST_BUDGET_MS` when set (a
/// failure prints its seed: rerun it with `ARBTEST_SEED=<seed>`).
#[cfg(test)]
pub(crate) fn property<T>(check: impl Fn(T))
where
    T: for<'a> Arbitrary<'a>,
{
    // libFuzzer's default input size: larger inputs are mostly long strings.
    let test = arbtest::arbtest(|u| {
        check(u.arbitrary()?);
        Ok(())
    })
    .size_max(4096);
    if std::env::var_os("ARBTEST_BUDGET_MS").is_none() {
        test.budget_ms(1000).run();
    }
}
