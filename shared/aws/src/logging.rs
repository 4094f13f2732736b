//! Tracing setup: JSON lines in Lambda (CloudWatch), readable lines elsewhere, coloured only
//! on a terminal (`make demo | less` shows no escape codes). Logs go to stderr, so a command's
//! own output on stdout stays clean.

use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;

use crate::Env;

/// The logging variables the template sets for every function (the local runner also reads
/// `LOG_FORMAT`, and `RUST_LOG` overrides `LOG_LEVEL` when set).
pub const ENVIRONMENT: &[&str] = &["LOG_LEVEL"];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with the current span (task id, file name).
    Json,
    /// Human-readable lines; `ansi`: with colour codes.
    Plain { ansi: bool },
}

impl LogFormat {
    /// JSON in Lambda or when `LOG_FORMAT=json` (in any case); otherwise plain, coloured only
    /// when stderr is a terminal and `NO_COLOR` is not set to anything (no-color.org).
    pub fn choose(in_lambda: bool, log_format: Option<&str>, stderr_is_terminal: bool, no_color: bool) -> LogFormat {
        if in_lambda || log_format.is_some_and(|f| f.trim().eq_ignore_ascii_case("json")) {
            LogFormat::Json
        } else {
            LogFormat::Plain { ansi: stderr_is_terminal && !no_color }
        }
    }
}

/// Crates that log whole requests at debug or trace: the Lambda runtime the raw event (a
/// callback's token path, its signature headers, a body of signed URLs), the SDK and the
/// HTTP stack their requests. They never log below info, whatever level is asked for.
const NEVER_BELOW_INFO: &[&str] = &[
    "lambda_runtime",
    "lambda_runtime_api_client",
    "lambda_http",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_sigv4",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "rustls",
];

/// The filter directives for `asked` (a level or `RUST_LOG` directives): as asked, and, when
/// that may turn on debug or trace (by name, by number such as `5`, or unreadable),
/// `NEVER_BELOW_INFO` kept at info (any directive of theirs dropped), so that no level makes
/// the logs hold secrets or signed URLs.
pub fn filter_directives(asked: &str) -> String {
    let most_verbose = tracing_subscriber::EnvFilter::try_new(asked).ok().and_then(|f| f.max_level_hint());
    if most_verbose.is_some_and(|level| level <= tracing_subscriber::filter::LevelFilter::INFO) {
        return asked.to_owned();
    }
    // A directive for a module of a capped crate (`lambda_runtime::layers=trace`, or the bare
    // `lambda_runtime::layers`, which means every level) is more specific than the crate's
    // cap, and would win over it; a span- or field-scoped one (`[Lambda runtime invoke]=trace`)
    // is checked before any other, so one whose target is none or a prefix of a capped crate's
    // would open that crate inside its spans: such directives go.
    let reaches_capped_crate = |directive: &str| {
        let target = directive.split(['=', '[']).next().unwrap_or_default().trim();
        let krate = target.split("::").next().unwrap_or_default();
        let scoped_over = directive.contains('[') && NEVER_BELOW_INFO.iter().any(|capped| capped.starts_with(target));
        NEVER_BELOW_INFO.contains(&krate) || scoped_over
    };
    let kept = asked.split(',').filter(|d| !reaches_capped_crate(d) && !d.trim().is_empty()).map(str::to_owned);
    let capped = NEVER_BELOW_INFO.iter().map(|target| format!("{target}=info"));
    kept.chain(capped).collect::<Vec<_>>().join(",")
}

/// Install the global subscriber. Level from `RUST_LOG`, else `LOG_LEVEL`, else `info`
/// ([`filter_directives`]).
pub fn init() {
    let level = Env::process(ENVIRONMENT).optional("LOG_LEVEL").unwrap_or_else(|| "info".into());
    let asked = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()).unwrap_or(level);
    let filter = tracing_subscriber::EnvFilter::try_new(filter_directives(&asked))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = LogFormat::choose(
        std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
        std::env::var("LOG_FORMAT").ok().as_deref(),
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    );
    // A second init (tests, local runner) keeps the first subscriber.
    let installed = tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stderr)).is_ok();
    if installed && format == LogFormat::Json {
        std::panic::set_hook(Box::new(log_panic));
    }
}

/// The panic hook in Lambda: a panic (contained to its message or task by the functions'
/// guards, or ending an invocation) is one JSON line, in the span it happened in (so with its
/// task id), its text as a provider's message is kept (cut, links shown without their
/// query); the default hook wrote plain lines to stderr, outside the JSON, that CloudWatch
/// splits into several events. A backtrace when `RUST_BACKTRACE` asks for one.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let text = payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    let message = stemvault_vault::shown::provider_message(text.unwrap_or("(no message)"));
    let location = info.location().map(|at| format!("{}:{}", at.file(), at.line())).unwrap_or_default();
    let backtrace = std::backtrace::Backtrace::capture();
    match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => {
            tracing::error!(panic = message, location, %backtrace, "panicked")
        }
        _ => tracing::error!(panic = message, location, "panicked"),
    }
}

/// The subscriber for `format`, writing to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(writer);
    match format {
        // Lambda adds its own timestamp; the span list carries task_id and file name.
        LogFormat::Json => {
            Box::new(builder.json().with_current_span(true).with_span_list(false).without_time().finish())
        }
        LogFormat::Plain { ansi } => Box::new(builder.with_ansi(ansi).finish()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// At trace, the crates that would log whole requests (the raw Lambda event among them)
    /// stay at info; everything else logs as asked; at warn nothing is raised.
    #[test]
    fn no_level_lets_the_runtime_or_the_sdk_log_whole_requests() {
        use tracing::Level;
        let enabled = |asked: &str, target: &str, level: Level| {
            let filter = tracing_subscriber::EnvFilter::try_new(filter_directives(asked)).unwrap();
            let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::sink).finish();
            tracing::subscriber::with_default(subscriber, || match (target, level) {
                ("lambda_runtime", Level::TRACE) => tracing::enabled!(target: "lambda_runtime", Level::TRACE),
                ("lambda_runtime::layers", _) => {
                    tracing::enabled!(target: "lambda_runtime::layers::api_response", Level::TRACE)
                }
                ("lambda_runtime", _) => tracing::enabled!(target: "lambda_runtime", Level::INFO),
                // Inside the span the runtime opens per invocation, where it logs the raw event.
                ("the invoke span", _) => {
                    let span = tracing::info_span!(target: "lambda_runtime::layers::trace", "Lambda runtime invoke");
                    let _entered = span.enter();
                    tracing::enabled!(target: "lambda_runtime::layers::api_response", Level::TRACE)
                }
                ("aws_smithy_runtime", _) => tracing::enabled!(target: "aws_smithy_runtime", Level::DEBUG),
                (_, Level::TRACE) => tracing::enabled!(target: "stemvault_ingest", Level::TRACE),
                _ => tracing::enabled!(target: "stemvault_ingest", Level::INFO),
            })
        };
        for asked in [
            "trace",
            "TRACE",
            "debug",
            "info,stemvault_ingest=trace",
            "5",
            "lambda_runtime=5,aws_smithy_runtime=4",
            "info,lambda_runtime::layers=trace",
        ] {
            assert!(!enabled(asked, "lambda_runtime", Level::TRACE), "{asked}");
            assert!(!enabled(asked, "lambda_runtime::layers", Level::TRACE), "{asked}");
            assert!(!enabled(asked, "aws_smithy_runtime", Level::DEBUG), "{asked}");
            assert!(enabled(asked, "lambda_runtime", Level::INFO), "{asked}");
        }
        // A module of a capped crate, asked by name: dropped, so the crate's cap holds.
        let by_module = "info,lambda_runtime::layers=trace,aws_smithy_runtime::client[x]=debug";
        let bare = "info,lambda_runtime::layers";
        assert!(!enabled(bare, "lambda_runtime::layers", Level::TRACE), "{}", filter_directives(bare));
        assert!(!enabled(by_module, "lambda_runtime::layers", Level::TRACE), "{}", filter_directives(by_module));
        assert!(!filter_directives(by_module).contains("client["), "{}", filter_directives(by_module));
        // A span-scoped directive is checked before any target's: one naming no target (or a
        // prefix of a capped crate's) would open the capped crates inside its spans.
        for scoped in ["info,[Lambda runtime invoke]=trace", "info,lambda[Lambda runtime invoke]=trace"] {
            assert!(!enabled(scoped, "the invoke span", Level::TRACE), "{}", filter_directives(scoped));
        }
        let ours = "info,stemvault_ingest[callback]=trace";
        assert!(filter_directives(ours).starts_with(&format!("{ours},")), "a scoped directive of ours stays");
        assert!(enabled("trace", "stemvault_ingest", Level::TRACE));
        assert!(!enabled("warn", "lambda_runtime", Level::INFO), "warn raises nothing");
        assert_eq!(filter_directives("warn"), "warn");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `log` writes through the subscriber for `format` at `level`; and what it returns.
    fn logged_by<T>(format: LogFormat, level: &str, log: impl FnOnce() -> T) -> (String, T) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(format, tracing_subscriber::EnvFilter::new(level), move || writer.clone());
        let returned = tracing::subscriber::with_default(subscriber, log);
        (String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap(), returned)
    }

    fn logged(format: LogFormat) -> String {
        let (logged, ()) = logged_by(format, "info", || {
            let span = tracing::info_span!("callback", task_id = "t1");
            let _entered = span.enter();
            tracing::warn!(vault = %"pending", "callback refused");
        });
        logged
    }

    #[test]
    fn json_in_lambda_plain_elsewhere_coloured_only_on_a_terminal() {
        assert_eq!(LogFormat::choose(true, None, true, false), LogFormat::Json);
        assert_eq!(LogFormat::choose(false, Some("json"), false, false), LogFormat::Json);
        assert_eq!(LogFormat::choose(false, Some("JSON"), false, false), LogFormat::Json);
        assert_eq!(LogFormat::choose(false, None, false, false), LogFormat::Plain { ansi: false });
        assert_eq!(LogFormat::choose(false, Some("text"), true, false), LogFormat::Plain { ansi: true });
        assert_eq!(LogFormat::choose(false, None, true, true), LogFormat::Plain { ansi: false }, "NO_COLOR");
    }

    #[test]
    fn plain_lines_off_a_terminal_carry_no_escape_codes() {
        let plain = logged(LogFormat::Plain { ansi: false });
        assert!(plain.contains("callback refused") && plain.contains("vault=pending"), "{plain}");
        assert!(plain.contains("task_id") && plain.contains("t1"), "{plain}");
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert!(logged(LogFormat::Plain { ansi: true }).contains('\u{1b}'), "the check can fail");
    }

    /// (The hook is the process's while this runs: another test panicking meanwhile logs its
    /// panic through it, to no subscriber of its thread, and still fails.)
    #[test]
    fn a_panic_in_lambda_is_one_json_line_in_its_span_without_a_link_query() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(log_panic));
        let (logged, caught) = logged_by(LogFormat::Json, "info", || {
            let span = tracing::info_span!("message", task_id = "t1");
            let _entered = span.enter();
            std::panic::catch_unwind(|| panic!("copying https://cdn.example/a.mp3?sig=secret failed"))
        });
        std::panic::set_hook(previous);
        assert!(caught.is_err());
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines.len(), 1, "{logged}");
        let json: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!((json["level"].as_str(), json["span"]["task_id"].as_str()), (Some("ERROR"), Some("t1")));
        let text = json["fields"]["panic"].as_str().unwrap_or_default();
        assert!(text.starts_with("copying https://cdn.example") && !text.contains("sig=secret"), "{text}");
        assert!(json["fields"]["location"].as_str().is_some_and(|at| at.contains("logging.rs")), "{json}");
    }

    /// A span is filtered by its level as a line is: at `LogLevel` `warn`, an INFO span is off,
    /// and the WARN lines in it would carry none of its fields (the task id). So the functions'
    /// spans are ERROR spans, on at every level.
    #[test]
    fn at_warn_only_error_spans_carry_their_fields() {
        let (logged, ()) = logged_by(LogFormat::Json, "warn", || {
            let _error = tracing::error_span!("callback", task_id = "t1").entered();
            tracing::warn!("in the error span");
            let _info = tracing::info_span!("inner", file = "vocal").entered();
            tracing::warn!("in the info span");
        });
        let lines: Vec<serde_json::Value> = logged.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{logged}");
        assert_eq!(lines[0]["span"]["task_id"], "t1");
        assert!(lines[1]["span"]["file"].is_null(), "the info span is off: {logged}");
    }

    /// Every span the functions and shared crates open (outside tests) is an ERROR span
    /// ([`at_warn_only_error_spans_carry_their_fields`]).
    #[test]
    fn every_span_outside_tests_is_on_at_every_level() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        let mut dirs = vec![root.join("functions"), root.join("shared")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                if path.is_dir() && !["tests", "target", "benches"].contains(&name.as_str()) {
                    dirs.push(path);
                } else if name.ends_with(".rs") && name != "tests.rs" {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 50, "{} files read", files.len());
        let mut lower = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap_or_default();
            for macro_name in ["trace_span!(", "debug_span!(", "info_span!(", "warn_span!("] {
                if production.contains(macro_name) {
                    lower.push(format!("{}: {macro_name}", path.display()));
                }
            }
        }
        assert!(lower.is_empty(), "spans off at LogLevel warn: {lower:#?}");
    }

    #[test]
    fn json_lines_carry_the_span() {
        let line = logged(LogFormat::Json);
        let json: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(json["span"]["task_id"], "t1");
        assert_eq!(json["fields"]["vault"], "pending");
    }
}
