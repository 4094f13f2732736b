//! Metrics in CloudWatch embedded metric format (EMF): one JSON line per event on stdout,
//! which Lambda ships to CloudWatch Logs, where CloudWatch turns it into metrics. No API
//! call and no IAM permission; alarms and the dashboard in `template.yaml` read them from
//! the [`NAMESPACE`] namespace, by the deployed function's name ([`function_name`]). Outside
//! Lambda the same values are logged at debug level.

use std::io::Write;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use stemvault_vault::Timestamp;

/// The CloudWatch namespace of every stemvault metric.
pub const NAMESPACE: &str = "stemvault";

/// The dimension every metric carries: which function emitted it, by [`function_name`].
pub const FUNCTION: &str = "Function";

/// The second dimension of a count by reason (why a callback was refused, a file failed, a
/// webhook was retried), its value a snake_case reason code.
pub const REASON: &str = "Reason";

/// Tasks a run (a reconciler's or a sweep) could not handle in a way no retry mends: a panic,
/// a record that cannot be read, a write the table refuses for good. Both functions emit it
/// under this one name, so one alarm reads both.
pub const TASKS_BROKEN: &str = "TasksBroken";

/// The value of the [`FUNCTION`] dimension of the function whose logical name is `logical`
/// ("download", "ingest", ...): its deployed name (`AWS_LAMBDA_FUNCTION_NAME`, unique per
/// stack), so two stacks in one account and region never add up in each other's metrics and
/// alarms; `logical` outside Lambda. The environment is read once per instance.
pub fn function_name(logical: &'static str) -> &'static str {
    function_name_of(deployed_name(), logical)
}

/// [`function_name`] with the deployed name given: it, unless unset or empty.
fn function_name_of(deployed: Option<&'static str>, logical: &'static str) -> &'static str {
    deployed.filter(|name| !name.is_empty()).unwrap_or(logical)
}

/// `AWS_LAMBDA_FUNCTION_NAME`, read on first use: Lambda sets it before start-up and never
/// changes it, so there is no reason to read it again per metric.
fn deployed_name() -> Option<&'static str> {
    static DEPLOYED: OnceLock<Option<String>> = OnceLock::new();
    DEPLOYED.get_or_init(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok()).as_deref()
}

/// A CloudWatch unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Seconds => "Seconds",
        }
    }
}

/// One value of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
}

impl Metric {
    pub fn count(name: &'static str) -> Metric {
        Metric { name, unit: Unit::Count, value: 1.0 }
    }

    /// A count of `n` (a gauge sampled once per run).
    pub fn counted(name: &'static str, n: usize) -> Metric {
        Metric { name, unit: Unit::Count, value: n as f64 }
    }

    pub fn bytes(name: &'static str, bytes: u64) -> Metric {
        Metric { name, unit: Unit::Bytes, value: bytes as f64 }
    }

    pub fn seconds(name: &'static str, seconds: f64) -> Metric {
        Metric { name, unit: Unit::Seconds, value: seconds }
    }
}

/// `metrics` less those of value zero. The scheduled functions count every run, and a series
/// is billed by the hour it receives data: a zero no alarm needs, sent every run, keeps a
/// series billed on a stack with nothing to count. (What an alarm reads run by run is sent
/// apart, zero too: the zero is what brings it back to OK, or tells a quiet run from none.)
pub fn without_zeros(metrics: impl IntoIterator<Item = Metric>) -> impl Iterator<Item = Metric> {
    metrics.into_iter().filter(|m| m.value != 0.0)
}

/// The EMF document for `metrics`, all under the same `dimensions` (name, value): one
/// dimension set, so each metric is aggregated by exactly those (e.g. `Function`, `Reason`).
pub fn emf_document(at: Timestamp, dimensions: &[(&str, &str)], metrics: &[Metric]) -> Value {
    let mut doc = Map::new();
    let definitions: Vec<Value> = metrics.iter().map(|m| json!({ "Name": m.name, "Unit": m.unit.as_str() })).collect();
    let dimension_names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.unix_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimension_names],
                "Metrics": definitions,
            }],
        }),
    );
    for (name, value) in dimensions {
        doc.insert((*name).to_owned(), Value::String((*value).to_owned()));
    }
    for m in metrics {
        doc.insert(m.name.to_owned(), json!(m.value));
    }
    Value::Object(doc)
}

/// Record `metrics` under `dimensions`: an EMF line on stdout in Lambda, a debug log line
/// elsewhere. Never fails the caller.
pub fn emit(dimensions: &[(&str, &str)], metrics: &[Metric]) {
    if metrics.is_empty() {
        return;
    }
    if deployed_name().is_some() {
        let line = emf_document(Timestamp::now(), dimensions, metrics).to_string();
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    } else {
        for m in metrics {
            tracing::debug!(metric = m.name, value = m.value, unit = m.unit.as_str(), ?dimensions, "metric");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_left_out() {
        let kept: Vec<Metric> =
            without_zeros([Metric::counted("A", 0), Metric::counted("B", 2), Metric::seconds("C", 0.0)]).collect();
        assert_eq!(kept, [Metric::counted("B", 2)]);
    }

    #[test]
    fn documents_follow_the_embedded_metric_format() {
        let at = Timestamp::from_unix_ms(1_764_600_000_123);
        let doc = emf_document(
            at,
            &[("Function", "download"), ("Reason", "source_expired")],
            &[Metric::count("FilesFailed"), Metric::bytes("BytesStored", 42), Metric::seconds("CopySeconds", 1.5)],
        );
        assert_eq!(doc["_aws"]["Timestamp"], 1_764_600_000_123u64);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "stemvault");
        assert_eq!(directive["Dimensions"], json!([["Function", "Reason"]]));
        assert_eq!(
            directive["Metrics"],
            json!([
                {"Name": "FilesFailed", "Unit": "Count"},
                {"Name": "BytesStored", "Unit": "Bytes"},
                {"Name": "CopySeconds", "Unit": "Seconds"}
            ])
        );
        assert_eq!((doc["Function"].as_str(), doc["Reason"].as_str()), (Some("download"), Some("source_expired")));
        assert_eq!((doc["FilesFailed"].as_f64(), doc["BytesStored"].as_f64()), (Some(1.0), Some(42.0)));
        assert_eq!(doc["CopySeconds"], 1.5);
    }

    #[test]
    fn the_function_dimension_is_the_deployed_name() {
        let deployed = "stemvault-prod-DownloadFunction-AbC123";
        let function = function_name_of(Some(deployed), "download");
        let doc = emf_document(Timestamp::from_unix_ms(0), &[(FUNCTION, function)], &[Metric::count("FilesStored")]);
        assert_eq!(doc["Function"], deployed);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Function"]]));
    }

    #[test]
    fn outside_lambda_the_function_dimension_is_the_logical_name() {
        assert_eq!(function_name_of(None, "download"), "download");
        assert_eq!(function_name_of(Some(""), "download"), "download");
    }
}
