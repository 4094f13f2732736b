//! The alarms and the dashboards: every function and metric watched, read as the code emits
//! them, and described in the README.

use super::*;

/// The EMF metrics (namespace `stemvault`; ingest's by the names its code emits) and AWS
/// metrics the dashboard must show.
const DASHBOARD_METRICS: &[&str] = &[
    stemvault_ingest::aws::CALLBACKS_ACCEPTED,
    stemvault_ingest::aws::CALLBACKS_REFUSED,
    stemvault_ingest::aws::CALLBACKS_FAILED,
    stemvault_ingest::aws::CALLBACKS_PARKED,
    stemvault_reconciler::aws::CALLBACKS_STILL_PARKED,
    stemvault_reconciler::aws::PARKED_CALLBACKS_REFUSED,
    stemvault_ingest::aws::SECRET_REREADS_FAILED,
    stemvault_ingest::aws::STALE_CALLBACKS_REGISTERED,
    stemvault_ingest::aws::CALLBACKS_UNVERIFIABLE,
    stemvault_ingest::aws::UNPARSABLE_CALLBACKS_KEPT,
    "CallbackServerErrors",
    "CallbacksThrottled",
    "ResultsServerErrors",
    stemvault_download::aws::FILES_STORED,
    stemvault_download::aws::FILES_FAILED,
    stemvault_download::aws::BYTES_STORED,
    stemvault_download::aws::COPY_SECONDS,
    stemvault_download::aws::SECONDS_TO_SETTLED,
    stemvault_download::aws::SETTLE_CHECKS_FAILED,
    stemvault_notify::aws::WEBHOOKS_DELIVERED,
    stemvault_notify::aws::WEBHOOKS_REJECTED,
    stemvault_notify::aws::WEBHOOK_RETRIES,
    stemvault_notify::aws::WEBHOOKS_LATE,
    "ApproximateNumberOfMessagesVisible",
    "ApproximateAgeOfOldestMessage",
    "Errors",
    "Throttles",
];

/// `!Sub` text with every `${Name}`/`${Name.Attr}` replaced by `Name`/`Name.Attr` (and `${!x}`
/// by `${x}`), and the names substituted.
fn substitute(text: &str) -> (String, Vec<String>) {
    let (mut out, mut names, mut rest) = (String::new(), Vec::new(), text);
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let Some(len) = rest[at..].find('}') else { break };
        let name = &rest[at + 2..at + len];
        match name.strip_prefix('!') {
            Some(literal) => out.push_str(&format!("${{{literal}}}")),
            None => {
                out.push_str(name);
                names.push(name.to_owned());
            }
        }
        rest = &rest[at + len + 1..];
    }
    out.push_str(rest);
    (out, names)
}

/// The metrics a metric-math alarm reads: each one's name and the resource its first
/// dimension names.
fn metrics_read(template: &Value, alarm: &str) -> Vec<(String, Option<String>)> {
    cfn::as_list(&cfn::resource(template, alarm)["Properties"]["Metrics"])
        .iter()
        .map(|stat| &stat["MetricStat"]["Metric"])
        .filter(|metric| !metric.is_null())
        .map(|metric| {
            let dimensions = cfn::as_list(&metric["Dimensions"]);
            let function = dimensions.first().and_then(|d| cfn::reference(&d["Value"]));
            (metric["MetricName"].as_str().unwrap_or_default().to_owned(), function)
        })
        .collect()
}

/// The alarms and the dashboard: an Errors and a Throttles alarm on each function; the
/// callback 5xx rate (from the access log's callback routes); files failed for good; the
/// dead-letter queue; every alarm notifying the alarm topic; a dashboard (valid JSON once
/// substituted, naming only resources that exist) showing every alarm and `DASHBOARD_METRICS`.
fn eyes_problems(template: &Value, functions: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let resources = template["Resources"].as_mapping().cloned().unwrap_or_default();
    let alarms: Vec<(String, &Value)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|(name, r)| (name.as_str().unwrap_or_default().to_owned(), &r["Properties"]))
        .collect();
    // An alarm on one metric, by the dimension naming the resource it watches.
    let alarmed = |namespace: &str, metric: &str, dimension: &str, resource: &str| {
        alarms.iter().any(|(_, a)| {
            a["Namespace"] == namespace
                && a["MetricName"] == metric
                && cfn::as_list(&a["Dimensions"])
                    .iter()
                    .any(|d| d["Name"] == dimension && cfn::reference(&d["Value"]).as_deref() == Some(resource))
        })
    };
    for function in functions {
        for metric in ["Errors", "Throttles"] {
            if !alarmed("AWS/Lambda", metric, "FunctionName", function) {
                problems.push(format!("no alarm on {function}'s {metric}"));
            }
        }
    }
    let reads = |a: &Value, text: &str| yaml_serde::to_string(&a["Metrics"]).unwrap_or_default().contains(text);
    // Of the answers neither throttled nor refused: junk traffic must not dilute it. Each id
    // of the expression reads its own metric.
    let ids = |a: &Value| -> BTreeMap<String, String> {
        cfn::as_list(&a["Metrics"])
            .iter()
            .filter_map(|m| {
                let name = m["MetricStat"]["Metric"]["MetricName"].as_str()?;
                Some((m["Id"].as_str()?.to_owned(), name.to_owned()))
            })
            .collect()
    };
    let expected: BTreeMap<String, String> = [
        ("errors", "CallbackServerErrors"),
        ("responses", "CallbackResponses"),
        ("throttled", "CallbacksThrottled"),
        ("refused", "CallbacksRefusedByIngest"),
    ]
    .into_iter()
    .map(|(id, metric)| (id.to_owned(), metric.to_owned()))
    .collect();
    let rate = alarms.iter().any(|(_, a)| {
        ids(a) == expected && reads(a, "100 * FILL(errors, 0) / (responses - FILL(throttled, 0) - FILL(refused, 0))")
    });
    if !rate {
        problems.push("no alarm on the rate of callbacks answered 5xx".into());
    }
    // On the metric the filter writes: its namespace and its one dimension, the API's id.
    if !alarmed(stemvault_aws::metrics::NAMESPACE, "CallbacksThrottled", "ApiId", "HttpApi") {
        problems.push("no alarm on callbacks the routes throttled (429)".into());
    }
    // The results function answers its own 5xx (Lambda's Errors do not count them).
    if !alarmed(stemvault_aws::metrics::NAMESPACE, "ResultsServerErrors", "ApiId", "HttpApi") {
        problems.push("no alarm on the results routes' 5xx".into());
    }
    // Each counted from its routes' access lines (the parts its filter pattern must hold).
    const CALLBACKS: &str = r#"$.routeKey = "POST /callback*""#;
    let results: &[&str] = &[r#"$.routeKey = "GET /tasks*""#, r#"$.routeKey = "PUT /tasks*""#, r#"$.status = "5*""#];
    let counted_metrics: [(&str, &[&str], &str); 5] = [
        ("ResultsServerErrors", results, "results"),
        ("CallbackServerErrors", &[CALLBACKS, r#"$.status = "5*""#], "callback"),
        ("CallbackResponses", &[CALLBACKS], "callback"),
        ("CallbacksThrottled", &[CALLBACKS, r#"$.status = "429""#], "callback"),
        ("CallbacksRefusedByIngest", &[CALLBACKS, r#"$.status = "4*""#, r#"$.status != "429""#], "callback"),
    ];
    for (metric, parts, routes) in counted_metrics {
        let counted = resources.values().any(|r| {
            r["Type"] == "AWS::Logs::MetricFilter"
                && cfn::reference(&r["Properties"]["LogGroupName"]).as_deref() == Some("HttpApiAccessLogs")
                && r["Properties"]["FilterPattern"].as_str().is_some_and(|p| parts.iter().all(|part| p.contains(part)))
                && cfn::as_list(&r["Properties"]["MetricTransformations"]).iter().any(|t| t["MetricName"] == metric)
        });
        if !counted {
            problems.push(format!("no metric filter counts {metric} from the {routes} routes' access log"));
        }
    }
    if !alarms.iter().any(|(_, a)| reads(a, r#"SUM(FilesFailed) FROM SCHEMA(stemvault, "Function", "Reason")"#)) {
        problems.push("no alarm on files failed for good (FilesFailed, every reason)".into());
    }
    // Settles failing with nothing else failing (a grant gone, a write refused for good).
    let settle_checks = stemvault_download::aws::SETTLE_CHECKS_FAILED;
    let namespace = stemvault_aws::metrics::NAMESPACE;
    let every_reason = format!(r#"SUM({settle_checks}) FROM SCHEMA({namespace}, "Function", "Reason")"#);
    if !alarms.iter().any(|(_, a)| reads(a, &every_reason) && reads(a, "DownloadFunction")) {
        problems.push(format!("no alarm on the download function's {settle_checks}"));
    }
    // Callbacks refused before their task was known: nothing else keeps or counts them.
    let before_the_task = ["missing_task_id", "invalid_task_id", "invalid_json", "not_a_json_object", "body_too_large"];
    // Read as ingest emits them: its CallbacksRefused, by its Function and the Reason.
    let (dimensions, refused) = stemvault_ingest::aws::metrics_of(
        "IngestFunction",
        &stemvault_ingest::domain::Measure::Refused { reason: "x" },
    );
    assert_eq!(
        (refused[0].name, dimensions[0].0, dimensions[1].0),
        (stemvault_ingest::aws::CALLBACKS_REFUSED, "Function", "Reason")
    );
    let refused_for = |a: &Value, reason: &str| {
        cfn::as_list(&a["Metrics"]).iter().any(|m| {
            let metric = &m["MetricStat"]["Metric"];
            let dimensions: Vec<(&str, Option<String>)> = cfn::as_list(&metric["Dimensions"])
                .iter()
                .map(|d| (d["Name"].as_str().unwrap_or_default(), d["Value"].as_str().map(str::to_owned)))
                .collect();
            let function = cfn::as_list(&metric["Dimensions"])
                .iter()
                .any(|d| d["Name"] == "Function" && cfn::reference(&d["Value"]).as_deref() == Some("IngestFunction"));
            metric["Namespace"] == stemvault_aws::metrics::NAMESPACE
                && metric["MetricName"] == stemvault_ingest::aws::CALLBACKS_REFUSED
                && function
                && dimensions.len() == 2
                && dimensions.contains(&("Reason", Some(reason.to_owned())))
        })
    };
    if !alarms.iter().any(|(_, a)| before_the_task.iter().all(|reason| refused_for(a, reason))) {
        problems.push("no alarm on callbacks refused before their task was known".into());
    }
    if !alarms.iter().any(|(_, a)| refused_for(a, "timestamp_too_old") && refused_for(a, "timestamp_in_future")) {
        problems.push("no alarm on callbacks signed outside the window".into());
    }
    if !alarms.iter().any(|(name, _)| name == "DeadLetterQueueNotEmpty") {
        problems.push("no dead-letter queue alarm".into());
    }
    for (name, alarm) in &alarms {
        for actions in ["AlarmActions", "OKActions"] {
            let to_topic =
                cfn::as_list(&alarm[actions]).iter().any(|a| cfn::reference(a).as_deref() == Some("AlarmTopic"));
            if !to_topic {
                problems.push(format!("{name}: {actions} do not notify AlarmTopic"));
            }
        }
    }

    // The main dashboard, and any other (the webhooks' exists only with NotifyUrl, like what
    // it shows): together they show every alarm and metric.
    let bodies: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Dashboard")
        .map(|d| &d["Properties"]["DashboardBody"])
        .collect();
    if bodies.is_empty() {
        problems.push("no dashboard".into());
        return problems;
    }
    let mut widgets = Vec::new();
    for body in bodies {
        let Some(text) = cfn::sub(body) else {
            problems.push("the dashboard body is not a !Sub string".into());
            return problems;
        };
        let (json, names) = substitute(&text);
        for name in names {
            let resource = name.split('.').next().unwrap_or_default();
            if !resource.starts_with("AWS::") && resources.get(resource).is_none() {
                problems.push(format!("the dashboard names ${{{name}}}, which is not a resource"));
            }
        }
        let dashboard: serde_json::Value = match serde_json::from_str(&json) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("the dashboard body is not JSON: {e}"));
                return problems;
            }
        };
        widgets.extend(dashboard["widgets"].as_array().cloned().unwrap_or_default());
    }
    let shown_alarms: BTreeSet<String> = widgets
        .iter()
        .flat_map(|w| w["properties"]["alarms"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(|a| a.trim_end_matches(".Arn").to_owned()))
        .collect();
    for (name, _) in &alarms {
        if !shown_alarms.contains(name) {
            problems.push(format!("the dashboard does not show the alarm {name}"));
        }
    }
    let shown_metrics = widgets.iter().map(|w| w["properties"]["metrics"].to_string()).collect::<String>();
    for metric in DASHBOARD_METRICS {
        if !shown_metrics.contains(&format!("\"{metric}\"")) && !shown_metrics.contains(&format!("\\\"{metric}\\\"")) {
            problems.push(format!("the dashboard does not show {metric}"));
        }
    }
    problems
}

#[test]
fn alarms_and_the_dashboard_watch_every_function_and_metric() {
    let template = template();
    let functions: Vec<&str> = FUNCTIONS.iter().map(|f| f.logical_id).collect();
    let problems = eyes_problems(&template, &functions);
    assert!(problems.is_empty(), "template.yaml alarms and dashboard:\n{}", problems.join("\n"));
    // The metric filters read fields the access log writes.
    let format = cfn::resource(&template, "HttpApi")["Properties"]["AccessLogSettings"]["Format"].as_str().unwrap();
    for field in [r#""routeKey":"$context.routeKey""#, r#""status":"$context.status""#, r#""apiId":"$context.apiId""#] {
        assert!(format.contains(field), "the access log lacks {field}");
    }
    // And the ids a request's log lines are found by: ingest's and results' spans carry `requestId` as
    // `api_request_id`; Lambda's own lines (a start or a conversion that failed) carry
    // `lambdaRequestId`.
    for field in [r#""requestId":"$context.requestId""#, r#""lambdaRequestId":"$context.integration.requestId""#] {
        assert!(format.contains(field), "the access log lacks {field}");
    }
}

const UNWATCHED: &str = r#"
Resources:
  AlarmTopic: { Type: AWS::SNS::Topic }
  Watched:
    Type: AWS::Serverless::Function
  FnErrors:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Namespace: AWS/Lambda
      MetricName: Errors
      Dimensions: [{ Name: FunctionName, Value: !Ref Watched }]
      AlarmActions: [!Ref AlarmTopic]
  # On the throttle metric, but by a dimension its filter does not write.
  ThrottledByFunction:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Namespace: stemvault
      MetricName: CallbacksThrottled
      Dimensions: [{ Name: FunctionName, Value: !Ref Watched }]
      AlarmActions: [!Ref AlarmTopic]
      OKActions: [!Ref AlarmTopic]
  # The 5xx rate diluted by throttled and refused answers.
  DilutedRate:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Metrics:
        - { Id: rate, Expression: "100 * FILL(errors, 0) / responses" }
        - { Id: errors, MetricStat: { Metric: { Namespace: stemvault, MetricName: CallbackServerErrors } } }
        - { Id: responses, MetricStat: { Metric: { Namespace: stemvault, MetricName: CallbackResponses } } }
        - { Id: throttled, MetricStat: { Metric: { Namespace: stemvault, MetricName: CallbacksThrottled } } }
        - { Id: refused, MetricStat: { Metric: { Namespace: stemvault, MetricName: CallbacksRefusedByIngest } } }
      AlarmActions: [!Ref AlarmTopic]
      OKActions: [!Ref AlarmTopic]
  # The right expression over swapped metrics: errors read the responses.
  SwappedRate:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Metrics:
        - { Id: rate, Expression: "100 * FILL(errors, 0) / (responses - FILL(throttled, 0) - FILL(refused, 0))" }
        - { Id: errors, MetricStat: { Metric: { Namespace: stemvault, MetricName: CallbackResponses } } }
        - { Id: responses, MetricStat: { Metric: { Namespace: stemvault, MetricName: CallbackServerErrors } } }
        - { Id: throttled, MetricStat: { Metric: { Namespace: stemvault, MetricName: CallbacksThrottled } } }
        - { Id: refused, MetricStat: { Metric: { Namespace: stemvault, MetricName: CallbacksRefusedByIngest } } }
      AlarmActions: [!Ref AlarmTopic]
      OKActions: [!Ref AlarmTopic]
  # Counts every callback answer as throttled: no status in its pattern.
  ThrottledUnfiltered:
    Type: AWS::Logs::MetricFilter
    Properties:
      LogGroupName: !Ref HttpApiAccessLogs
      FilterPattern: '{ $.routeKey = "POST /callback*" }'
      MetricTransformations: [{ MetricNamespace: stemvault, MetricName: CallbacksThrottled, MetricValue: "1" }]
  Dashboard:
    Type: AWS::CloudWatch::Dashboard
    Properties:
      DashboardBody: !Sub |
        { "widgets": [
          { "type": "alarm", "properties": { "alarms": ["${FnErrors.Arn}", "${ThrottledByFunction.Arn}", "${DilutedRate.Arn}", "${SwappedRate.Arn}"] } },
          { "type": "metric", "properties": { "metrics": [
            ["stemvault", "FilesStored", "Function", "download"],
            ["AWS/Lambda", "Errors", "FunctionName", "${Gone}"]
          ] } }
        ] }
"#;

#[test]
fn alarm_checks_report_what_goes_unwatched() {
    let template: Value = yaml_serde::from_str(UNWATCHED).unwrap();
    let problems = eyes_problems(&template, &["Watched"]);
    let expected = [
        "no alarm on Watched's Throttles",
        "no alarm on the rate of callbacks answered 5xx",
        "no alarm on callbacks the routes throttled (429)",
        "no alarm on the results routes' 5xx",
        "no metric filter counts ResultsServerErrors from the results routes' access log",
        "no metric filter counts CallbackServerErrors from the callback routes' access log",
        "no metric filter counts CallbackResponses from the callback routes' access log",
        "no metric filter counts CallbacksThrottled from the callback routes' access log",
        "no metric filter counts CallbacksRefusedByIngest from the callback routes' access log",
        "no alarm on files failed for good (FilesFailed, every reason)",
        "no alarm on the download function's SettleChecksFailed",
        "no alarm on callbacks refused before their task was known",
        "no alarm on callbacks signed outside the window",
        "no dead-letter queue alarm",
        "FnErrors: OKActions do not notify AlarmTopic",
        "the dashboard names ${Gone}, which is not a resource",
        "the dashboard does not show CallbacksAccepted",
        "the dashboard does not show CallbacksRefused",
        "the dashboard does not show CallbacksFailed",
        "the dashboard does not show CallbacksParked",
        "the dashboard does not show CallbacksStillParked",
        "the dashboard does not show ParkedCallbacksRefused",
        "the dashboard does not show SecretRereadsFailed",
        "the dashboard does not show StaleCallbacksRegistered",
        "the dashboard does not show CallbacksUnverifiable",
        "the dashboard does not show UnparsableCallbacksKept",
        "the dashboard does not show CallbackServerErrors",
        "the dashboard does not show CallbacksThrottled",
        "the dashboard does not show ResultsServerErrors",
        "the dashboard does not show FilesFailed",
        "the dashboard does not show BytesStored",
        "the dashboard does not show CopySeconds",
        "the dashboard does not show SecondsToSettled",
        "the dashboard does not show SettleChecksFailed",
        "the dashboard does not show WebhooksDelivered",
        "the dashboard does not show WebhooksRejected",
        "the dashboard does not show WebhookRetries",
        "the dashboard does not show WebhooksLate",
        "the dashboard does not show ApproximateNumberOfMessagesVisible",
        "the dashboard does not show ApproximateAgeOfOldestMessage",
        "the dashboard does not show Throttles",
    ];
    assert_eq!(problems, expected);

    let broken_json = UNWATCHED.replace(r#""${SwappedRate.Arn}"]"#, r#""${SwappedRate.Arn}",]"#);
    assert_ne!(broken_json, UNWATCHED, "the fixture's last alarm is where the comma goes");
    let problems = eyes_problems(&yaml_serde::from_str(&broken_json).unwrap(), &["Watched"]);
    assert!(problems.last().unwrap().starts_with("the dashboard body is not JSON"), "{problems:?}");
    assert_eq!(
        substitute("a ${X.Arn} ${!Literal} ${AWS::Region}"),
        ("a X.Arn ${Literal} AWS::Region".into(), vec!["X.Arn".into(), "AWS::Region".into()])
    );
}

/// The widgets of template.yaml's dashboards (the main one and the webhooks'), substituted
/// and parsed, as one dashboard.
fn dashboard(template: &Value) -> serde_json::Value {
    let resources = template["Resources"].as_mapping().cloned().unwrap_or_default();
    let mut widgets = Vec::new();
    for dashboard in resources.values().filter(|r| r["Type"] == "AWS::CloudWatch::Dashboard") {
        let text = cfn::sub(&dashboard["Properties"]["DashboardBody"]).expect("a !Sub dashboard body");
        let body: serde_json::Value = serde_json::from_str(&substitute(&text).0).expect("the dashboard body is JSON");
        widgets.extend(body["widgets"].as_array().cloned().unwrap_or_default());
    }
    assert!(!widgets.is_empty(), "no dashboard");
    serde_json::json!({ "widgets": widgets })
}

/// Every row of every metric widget of `dashboard`.
fn metric_rows(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    dashboard["widgets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|w| w["properties"]["metrics"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The `Function` values the dashboard reads `stemvault` metrics by: metric rows' and
/// `SEARCH` expressions'.
fn dashboard_function_values(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let rows = metric_rows(dashboard);
    let mut values = BTreeSet::new();
    for row in &rows {
        if row[0] == stemvault_aws::metrics::NAMESPACE && row[2] == "Function" {
            values.insert(row[3].as_str().unwrap_or_default().to_owned());
        }
        let expression = row[0]["expression"].as_str().unwrap_or_default();
        for rest in expression.split(r#"Function=""#).skip(1) {
            values.insert(rest.split('"').next().unwrap_or_default().to_owned());
        }
    }
    values
}

/// Whether the dashboard reads metric `name` of namespace `stemvault` under `dimensions` as
/// the code emits them: a metric row for `Function` alone, a `SEARCH` over every `Reason`
/// when there is one.
fn dashboard_reads(dashboard: &serde_json::Value, name: &str, dimensions: &[(&str, &str)]) -> bool {
    let rows = metric_rows(dashboard);
    match dimensions {
        [("Function", function)] => rows.iter().any(|row| {
            row[0] == stemvault_aws::metrics::NAMESPACE && row[1] == name && row[2] == "Function" && row[3] == *function
        }),
        [("Function", function), ("Reason", _)] => {
            let search = format!(
                r#"{{{},Function,Reason}} MetricName="{name}" Function="{function}""#,
                stemvault_aws::metrics::NAMESPACE
            );
            rows.iter().any(|row| row[0]["expression"].as_str().is_some_and(|e| e.contains(&search)))
        }
        _ => false,
    }
}

/// The metrics the sweeper's and the reconciler's runs send with every count `n` (0: a quiet
/// run; 1: one that counted everything), each with its dimensions (`Function` = the logical id).
fn scheduled_run_metrics(n: usize) -> Vec<(Vec<(&'static str, &'static str)>, stemvault_aws::metrics::Metric)> {
    use stemvault_reconciler::domain::Measure as Run;
    let swept = stemvault_sweeper::domain::Measure::Swept {
        checked: n,
        failed: n,
        broken: n,
        oldest_open_seconds: Some(n as u64),
    };
    let runs = [
        Run::ParkedCallbacks { still_parked: n, refused: n },
        Run::Reconciled {
            polls: n,
            unanswered: n,
            refused: n,
            unpaid: n,
            given_up: n,
            failed: n,
            broken: n,
            oldest_due_seconds: n as u64,
        },
    ];
    let mut sent = Vec::new();
    let (dimensions, metrics) = stemvault_sweeper::aws::metrics_of("SweeperFunction", &swept);
    sent.extend(metrics.into_iter().map(|m| (dimensions.clone(), m)));
    for run in &runs {
        let (dimensions, metrics) = stemvault_reconciler::aws::metrics_of("ReconcilerFunction", run);
        sent.extend(metrics.into_iter().map(|m| (dimensions.clone(), m)));
    }
    sent
}

/// In Lambda a function's metrics carry its deployed name as `Function`
/// (`stemvault_aws::metrics::function_name`), which is what `!Ref` of the function (`${Name}`
/// in a `!Sub`) yields; substituted as the tests substitute, that is its logical id.
#[test]
fn the_dashboard_and_alarms_read_the_metrics_the_code_emits() {
    use stemvault_download::domain::Measure;
    let template = template();
    let dashboard = dashboard(&template);
    // Download: every measure, through the function that turns it into metrics.
    let measures = [
        Measure::Stored { bytes: 1, copy_seconds: Some(1.0) },
        Measure::Failed { reason: "source_expired" },
        Measure::Settled { seconds: 1.0 },
        Measure::SettleCheckFailed { reason: "publish" },
    ];
    let mut emitted: Vec<(String, Vec<(&str, &str)>)> = Vec::new();
    for measure in &measures {
        let (dimensions, metrics) = stemvault_download::aws::metrics_of("DownloadFunction", measure);
        emitted.extend(metrics.iter().map(|m| (m.name.to_owned(), dimensions.clone())));
    }
    // Notify: every measure, likewise (its dashboard exists only with NotifyUrl).
    use stemvault_notify::domain::Measure as Delivery;
    let deliveries = [
        Delivery::Delivered,
        Delivery::Rejected { reason: "status_410" },
        Delivery::Retried { reason: "timeout", late: true },
        Delivery::SecretRereadFailed,
    ];
    for delivery in &deliveries {
        let (dimensions, metrics) = stemvault_notify::aws::metrics_of("NotifyFunction", delivery);
        // Not a delivery's 0 of WebhooksLate: it only brings the webhooks-late alarm back to
        // OK; the dashboard's late line shows the late failures, by Reason.
        let shown = metrics.iter().filter(|m| !(m.name == stemvault_notify::aws::WEBHOOKS_LATE && m.value == 0.0));
        emitted.extend(shown.map(|m| (m.name.to_owned(), dimensions.clone())));
    }
    // Ingest: every measure, likewise.
    use stemvault_ingest::domain::Measure as Answer;
    let answers = [
        Answer::Accepted,
        Answer::Parked { reason: "timeout" },
        Answer::Refused { reason: "signature_mismatch" },
        Answer::Failed { reason: "enqueue_failed" },
        Answer::StaleRegistered,
        Answer::Unverifiable,
        Answer::UnparsableKept,
        Answer::SecretRereadFailed,
    ];
    for answer in &answers {
        let (dimensions, metrics) = stemvault_ingest::aws::metrics_of("IngestFunction", answer);
        emitted.extend(metrics.iter().map(|m| (m.name.to_owned(), dimensions.clone())));
    }
    // The reconciler and the sweeper: every measure, likewise.
    emitted.extend(scheduled_run_metrics(1).into_iter().map(|(dimensions, m)| (m.name.to_owned(), dimensions)));
    // Their alarms read those metrics by their names and the one dimension.
    for (alarm, metric, function) in [
        ("ProviderKeyRefused", stemvault_reconciler::aws::POLLS_REFUSED, "ReconcilerFunction"),
        ("ProviderCreditsRefused", stemvault_reconciler::aws::POLLS_UNPAID, "ReconcilerFunction"),
        ("TasksGivenUp", stemvault_reconciler::aws::TASKS_GIVEN_UP, "ReconcilerFunction"),
        ("TasksNotReconciled", stemvault_reconciler::aws::TASKS_NOT_RECONCILED, "ReconcilerFunction"),
        ("TaskOpenTooLong", stemvault_sweeper::aws::OLDEST_OPEN_TASK_SECONDS, "SweeperFunction"),
        ("PollsBehind", stemvault_reconciler::aws::OLDEST_DUE_TASK_SECONDS, "ReconcilerFunction"),
    ] {
        let properties = &cfn::resource(&template, alarm)["Properties"];
        assert_eq!(properties["MetricName"], metric, "{alarm}");
        let dimensions = cfn::as_list(&properties["Dimensions"]);
        let [dimension] = dimensions.as_slice() else { panic!("{alarm}: one dimension") };
        assert_eq!(dimension["Name"], "Function", "{alarm}");
        assert_eq!(cfn::reference(&dimension["Value"]).as_deref(), Some(function), "{alarm}");
    }
    // The not-swept alarm reads the sweeper's count (filled where no sweep ran: below).
    let read = metrics_read(&template, "TasksNotSwept");
    let expected = [(stemvault_sweeper::aws::TASKS_NOT_SWEPT.to_owned(), Some("SweeperFunction".to_owned()))];
    assert_eq!(read, expected, "TasksNotSwept of the sweeper");
    // The broken-tasks alarm reads the count both functions emit under one name, each by its
    // function.
    let read = metrics_read(&template, "TasksBroken");
    let expected = ["ReconcilerFunction", "SweeperFunction"]
        .map(|f| (stemvault_aws::metrics::TASKS_BROKEN.to_owned(), Some(f.to_owned())));
    assert_eq!(read, expected, "TasksBroken of the reconciler and the sweeper");
    // The unanswered-polls alarm reads the share of the reconciler's polls it counts so.
    let read = metrics_read(&template, "ProviderUnanswered");
    let expected = [stemvault_reconciler::aws::POLLS, stemvault_reconciler::aws::POLLS_UNANSWERED]
        .map(|metric| (metric.to_owned(), Some("ReconcilerFunction".to_owned())));
    assert_eq!(read, expected, "Polls and PollsUnanswered of the reconciler");
    // The silent-webhooks alarm reads the settles the downloader counts and the deliveries
    // notify counts, each by its function, under the names they emit them with.
    let read = metrics_read(&template, "WebhooksSilent");
    let settled = stemvault_download::aws::metrics_of("DownloadFunction", &Measure::Settled { seconds: 1.0 }).1;
    let delivered = stemvault_notify::aws::metrics_of("NotifyFunction", &Delivery::Delivered).1;
    assert!(settled.iter().any(|m| m.name == stemvault_download::aws::SECONDS_TO_SETTLED));
    assert!(delivered.iter().any(|m| m.name == stemvault_notify::aws::WEBHOOKS_DELIVERED));
    let expected = [
        (stemvault_download::aws::SECONDS_TO_SETTLED.to_owned(), Some("DownloadFunction".to_owned())),
        (stemvault_notify::aws::WEBHOOKS_DELIVERED.to_owned(), Some("NotifyFunction".to_owned())),
    ];
    assert_eq!(read, expected, "SecondsToSettled of the downloader, WebhooksDelivered of notify");
    // The table-throttled alarm reads the table's throttles and each index's, by the names
    // the table gives its indexes.
    let mut throttles: Vec<(String, Option<String>)> =
        cfn::as_list(&cfn::resource(&template, "TableThrottled")["Properties"]["Metrics"])
            .iter()
            .map(|stat| &stat["MetricStat"]["Metric"])
            .filter(|metric| !metric.is_null())
            .map(|metric| {
                let index = cfn::as_list(&metric["Dimensions"])
                    .iter()
                    .find(|d| d["Name"] == "GlobalSecondaryIndexName")
                    .and_then(|d| d["Value"].as_str().map(str::to_owned));
                (metric["MetricName"].as_str().unwrap_or_default().to_owned(), index)
            })
            .collect();
    throttles.sort();
    let mut expected = Vec::new();
    for metric in ["ReadThrottleEvents", "WriteThrottleEvents"] {
        for index in [None, Some(stemvault_vault::OPEN_TASKS_INDEX), Some(stemvault_vault::RECONCILE_DUE_INDEX)] {
            expected.push((metric.to_owned(), index.map(str::to_owned)));
        }
    }
    expected.sort();
    assert_eq!(throttles, expected, "the table's and each index's read and write throttles");
    // The unauthorized-callbacks alarm reads CallbacksRefused by the reasons ingest gives them.
    let (dimensions, metrics) =
        stemvault_ingest::aws::metrics_of("IngestFunction", &Answer::Refused { reason: "signature_mismatch" });
    let names: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
    // And the unverifiable ones, by the one dimension.
    let (unverifiable_dimensions, unverifiable) =
        stemvault_ingest::aws::metrics_of("IngestFunction", &Answer::Unverifiable);
    let unverifiable_names: Vec<&str> = unverifiable_dimensions.iter().map(|(n, _)| *n).collect();
    let mut read_unverifiable = false;
    for stat in cfn::as_list(&cfn::resource(&template, "CallbacksUnauthorized")["Properties"]["Metrics"]) {
        let metric = &stat["MetricStat"]["Metric"];
        if metric.is_null() {
            continue;
        }
        if metric["MetricName"] == unverifiable[0].name {
            let read: Vec<String> = cfn::as_list(&metric["Dimensions"])
                .iter()
                .map(|d| d["Name"].as_str().unwrap_or_default().to_owned())
                .collect();
            assert_eq!(read, unverifiable_names, "the dimensions ingest emits CallbacksUnverifiable with");
            read_unverifiable = true;
            continue;
        }
        assert_eq!(metric["MetricName"], metrics[0].name);
        let read: Vec<String> = cfn::as_list(&metric["Dimensions"])
            .iter()
            .map(|d| d["Name"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(read, names, "the dimensions ingest emits");
    }
    assert!(read_unverifiable, "the unauthorized alarm reads CallbacksUnverifiable");
    let unread: Vec<String> = emitted
        .iter()
        .filter(|(name, dimensions)| !dashboard_reads(&dashboard, name, dimensions))
        .map(|(name, dimensions)| format!("{name} {dimensions:?}"))
        .collect();
    assert!(unread.is_empty(), "the dashboard does not read these metrics as emitted: {unread:?}");
    // And reads none by a name no function of this stack has (a logical name, another stack's).
    let functions: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.logical_id.to_owned()).collect();
    let strangers: Vec<String> = dashboard_function_values(&dashboard).difference(&functions).cloned().collect();
    assert!(strangers.is_empty(), "the dashboard reads metrics of Function {strangers:?}, not of a function here");

    // The permanent-failure alarm sums FilesFailed over the dimension set download emits.
    let (dimensions, _) = stemvault_download::aws::metrics_of("DownloadFunction", &Measure::Failed { reason: "x" });
    let query = schema_sum("FilesFailed", &dimensions, dimensions[0]);
    assert_eq!(alarm_query(&template, "DownloadsFailedForGood"), Some(query), "a !Sub naming the download function");
    // The settle-check alarm sums SettleChecksFailed over the dimension set download emits.
    let (dimensions, metrics) =
        stemvault_download::aws::metrics_of("DownloadFunction", &Measure::SettleCheckFailed { reason: "x" });
    let query = schema_sum(metrics[0].name, &dimensions, dimensions[0]);
    assert_eq!(alarm_query(&template, "SettleChecksFailing"), Some(query), "a !Sub naming the download function");

    // The parked-callback alarm sums CallbacksParked over the dimensions ingest emits it with.
    let (dimensions, metrics) =
        stemvault_ingest::aws::metrics_of("IngestFunction", &Answer::Parked { reason: "timeout" });
    let query = schema_sum(metrics[0].name, &dimensions, ("Function", "IngestFunction"));
    assert_eq!(alarm_query(&template, "CallbacksParkedAlarm"), Some(query), "a !Sub naming the ingest function");

    // The rejected-webhooks alarm sums its metric over the dimensions notify emits it with.
    let (dimensions, metrics) =
        stemvault_notify::aws::metrics_of("NotifyFunction", &Delivery::Rejected { reason: "status_410" });
    let rejected = stemvault_notify::aws::WEBHOOKS_REJECTED;
    assert!(metrics.iter().any(|m| m.name == rejected), "{rejected} emitted");
    let query = schema_sum(rejected, &dimensions, ("Function", "NotifyFunction"));
    assert_eq!(alarm_query(&template, "WebhooksRejectedAlarm"), Some(query), "a !Sub naming the notify function");

    // The late-webhooks alarm sums WebhooksLate under every dimension set notify emits it with
    // (by Reason beside a late retry; 0 by Function alone beside a delivery), and keeps its
    // state through periods with neither: only a delivery brings it back to OK.
    let late = stemvault_notify::aws::WEBHOOKS_LATE;
    let emitted = |measure: &Delivery| {
        let (dimensions, metrics) = stemvault_notify::aws::metrics_of("NotifyFunction", measure);
        let names: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect::<Vec<_>>();
        let value = metrics.iter().find(|m| m.name == late).map(|m| m.value);
        (names.contains(&"Function"), value)
    };
    let retried = Delivery::Retried { reason: "status_503", late: true };
    assert_eq!(emitted(&retried), (true, Some(1.0)), "a late retry counts");
    assert_eq!(emitted(&Delivery::Delivered), (true, Some(0.0)), "a delivery counts 0");
    let query = format!(
        "SELECT SUM({late}) FROM {} WHERE {} = 'NotifyFunction'",
        stemvault_aws::metrics::NAMESPACE,
        insights_key("Function")
    );
    let properties = &cfn::resource(&template, "WebhooksLateAlarm")["Properties"];
    let expression = cfn::sub(&properties["Metrics"][0]["Expression"]).map(|text| substitute(&text).0);
    assert_eq!(expression.as_deref(), Some(query.as_str()), "every dimension set, naming the notify function");
    assert_eq!(
        properties["TreatMissingData"], "ignore",
        "a period without deliveries or late failures keeps the state"
    );

    // The alarms on a metric emitted under the one dimension `Function` read it so: the parked
    // callbacks still parked and refused (the reconciler's), the unparsable ones kept (ingest's).
    for (alarm, metric, function) in [
        ("ParkedCallbacksStuck", stemvault_reconciler::aws::CALLBACKS_STILL_PARKED, "ReconcilerFunction"),
        ("ParkedCallbacksRefused", stemvault_reconciler::aws::PARKED_CALLBACKS_REFUSED, "ReconcilerFunction"),
        ("UnparsableCallbacksKept", stemvault_ingest::aws::UNPARSABLE_CALLBACKS_KEPT, "IngestFunction"),
    ] {
        let properties = &cfn::resource(&template, alarm)["Properties"];
        assert_eq!(properties["Namespace"].as_str(), Some(stemvault_aws::metrics::NAMESPACE), "{alarm}");
        assert_eq!(properties["MetricName"].as_str(), Some(metric), "{alarm}");
        let dimensions = cfn::as_list(&properties["Dimensions"]);
        assert_eq!(dimensions.len(), 1, "{alarm}: {dimensions:?}");
        assert_eq!(dimensions[0]["Name"].as_str(), Some(stemvault_aws::metrics::FUNCTION), "{alarm}");
        assert_eq!(cfn::reference(&dimensions[0]["Value"]).as_deref(), Some(function), "{alarm}");
    }
}

/// Every function that re-reads a secret (ingest, notify) or the provider key (reconciler,
/// download), and so may count a failed read, has its own `<function>-secret-unreadable` alarm
/// on its metric under the dimension set it emits it with (notify's only when notify exists):
/// no metric math over functions that never failed, whose metric has no data at all.
#[test]
fn each_function_reading_a_secret_has_an_alarm_on_its_failed_rereads_as_emitted() {
    use stemvault_notify::domain::Measure;
    let template = template();
    let (dimensions, metrics) = stemvault_notify::aws::metrics_of("NotifyFunction", &Measure::SecretRereadFailed);
    assert_eq!(metrics[0].name, stemvault_ingest::aws::SECRET_REREADS_FAILED, "one metric for every function");
    let names: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["Function"], "the alarms read the metric by Function alone");
    let functions = [
        ("IngestSecretUnreadable", "ingest", "IngestFunction"),
        ("ReconcilerSecretUnreadable", "reconciler", "ReconcilerFunction"),
        ("DownloadSecretUnreadable", "download", "DownloadFunction"),
        ("NotifySecretUnreadable", "notify", "NotifyFunction"),
    ];
    for (resource, name, function) in functions {
        let alarm = &cfn::resource(&template, resource)["Properties"];
        assert_eq!(alarm["Namespace"], stemvault_aws::metrics::NAMESPACE, "{resource}");
        assert_eq!(alarm["MetricName"], metrics[0].name, "{resource}");
        assert_eq!(alarm["Dimensions"].as_sequence().map(Vec::len), Some(1), "{resource}");
        assert_eq!(alarm["Dimensions"][0]["Name"], "Function", "{resource}");
        assert_eq!(cfn::reference(&alarm["Dimensions"][0]["Value"]).as_deref(), Some(function), "{resource}");
        assert_eq!(
            alarm["AlarmName"],
            yaml_serde::from_str::<Value>(&format!("!Sub '${{AWS::StackName}}-{name}-secret-unreadable'")).unwrap()
        );
        // Any failed read in 15 minutes: 1 of 3 five-minute sums at >= 1.
        assert_eq!((alarm["Statistic"].as_str(), alarm["Period"].as_u64()), (Some("Sum"), Some(300)), "{resource}");
        let settings = [&alarm["Threshold"], &alarm["EvaluationPeriods"], &alarm["DatapointsToAlarm"]];
        assert_eq!(settings.map(|v| v.as_u64()), [Some(1), Some(3), Some(1)], "{resource}");
        assert_eq!(alarm["ComparisonOperator"], "GreaterThanOrEqualToThreshold", "{resource}");
        assert_eq!(alarm["TreatMissingData"], "notBreaching", "{resource}");
        // Exists exactly when its function does.
        assert_eq!(
            cfn::resource(&template, resource).get("Condition"),
            cfn::resource(&template, function).get("Condition"),
            "{resource}"
        );
    }
    assert_eq!(cfn::resource(&template, "NotifyFunction")["Condition"], "HasNotifyUrl");
}

#[test]
fn dashboard_reads_tells_dimension_sets_apart() {
    let dashboard = serde_json::json!({ "widgets": [{ "properties": { "metrics": [
        ["stemvault", "FilesStored", "Function", "download"],
        [{ "expression": "SEARCH('{stemvault,Function,Reason} MetricName=\"FilesFailed\" Function=\"download\"', 'Sum', 300)" }]
    ] } }] });
    assert!(dashboard_reads(&dashboard, "FilesStored", &[("Function", "download")]));
    assert!(!dashboard_reads(&dashboard, "FilesStored", &[("Function", "ingest")]));
    assert!(!dashboard_reads(&dashboard, "FilesStored", &[("Function", "download"), ("Reason", "x")]));
    assert!(dashboard_reads(&dashboard, "FilesFailed", &[("Function", "download"), ("Reason", "x")]));
    assert!(!dashboard_reads(&dashboard, "FilesFailed", &[("Function", "download")]));
    let values: Vec<String> = dashboard_function_values(&dashboard).into_iter().collect();
    assert_eq!(values, ["download"]);
}

/// Every alarm on a value the sweeper or the reconciler sends reads one they send on a quiet
/// run too, zero included, unless the alarm fills its gaps with zeros (`FILL`): their other
/// counts are left out when zero (a series is billed by the hour it receives data), and an
/// alarm meets a gap otherwise: one reading missing data as breaching fires, one taking the
/// least of a period's values finds only the runs that counted, and one that breached stays
/// so on its last value rather than going back to OK on the zero.
#[test]
fn an_alarm_on_a_scheduled_functions_value_reads_one_sent_every_run() {
    let template = template();
    // (Function, metric) of a quiet run; and what their runs send when every count is not
    // zero (other metrics, such as a failed secret read's, are sent when it happens, not run
    // by run).
    let quiet: BTreeSet<(&str, &str)> = scheduled_run_metrics(0).iter().map(|(d, m)| (d[0].1, m.name)).collect();
    let by_runs: BTreeSet<&str> = scheduled_run_metrics(1).iter().map(|(_, m)| m.name).collect();
    // Each alarm's metrics: (its id in the expression, if any; the metric; its Function).
    let read = |alarm: &Value| -> Vec<(Option<String>, String, String)> {
        let function = |metric: &Value| {
            let dimensions = cfn::as_list(&metric["Dimensions"]);
            dimensions
                .iter()
                .find(|d| d["Name"] == "Function")
                .and_then(|d| cfn::reference(&d["Value"]))
                .unwrap_or_default()
        };
        let name = |metric: &Value| metric["MetricName"].as_str().unwrap_or_default().to_owned();
        if alarm.get("MetricName").is_some() {
            return vec![(None, name(alarm), function(alarm))];
        }
        cfn::as_list(&alarm["Metrics"])
            .iter()
            .filter(|m| !m["MetricStat"].is_null())
            .map(|m| {
                let metric = &m["MetricStat"]["Metric"];
                (m["Id"].as_str().map(str::to_owned), name(metric), function(metric))
            })
            .collect()
    };
    let mut checked = BTreeSet::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        let alarm = &resource["Properties"];
        let expressions: Vec<String> = cfn::as_list(&alarm["Metrics"])
            .iter()
            .filter_map(|m| m["Expression"].as_str().map(str::to_owned).or_else(|| cfn::sub(&m["Expression"])))
            .collect();
        for (id, metric, function) in read(alarm) {
            if !["SweeperFunction", "ReconcilerFunction"].contains(&function.as_str())
                || !by_runs.contains(metric.as_str())
            {
                continue;
            }
            let name = name.as_str().unwrap_or_default().to_owned();
            let filled = id.is_some_and(|id| expressions.iter().any(|e| e.contains(&format!("FILL({id}, 0)"))));
            assert!(
                filled || quiet.contains(&(function.as_str(), metric.as_str())),
                "{name}: {function} leaves {metric} out of a quiet run, and the alarm does not FILL it"
            );
            checked.insert(name);
        }
    }
    let expected: BTreeSet<String> = [
        "ParkedCallbacksRefused",
        "ParkedCallbacksStuck",
        "PollsBehind",
        "ProviderCreditsRefused",
        "ProviderKeyRefused",
        "ProviderUnanswered",
        "TaskOpenTooLong",
        "TasksBroken",
        "TasksGivenUp",
        "TasksNotReconciled",
        "TasksNotSwept",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(checked, expected, "the alarms on the scheduled functions' run values");
}

/// The fixed costs under README's "What it costs" count the alarms the template makes: those
/// every stack has, and with webhooks (the `HasNotifyUrl` ones) in all.
#[test]
fn the_cost_model_counts_the_alarms_the_template_makes() {
    let template = template();
    let alarms: Vec<&Value> = template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .collect();
    let always = alarms.iter().filter(|a| a.get("Condition").is_none()).count();
    let unknown: Vec<&Value> =
        alarms.iter().filter_map(|a| a.get("Condition")).filter(|c| *c != "HasNotifyUrl").collect();
    assert!(unknown.is_empty(), "alarms under other conditions: {unknown:?}");
    let readme = read(&repo().join("README.md")).split_whitespace().collect::<Vec<_>>().join(" ");
    let stated = format!("CloudWatch: {always} alarms ({} with webhooks)", alarms.len());
    assert!(readme.contains(&stated), "README's cost model should say {stated:?}");
}

/// Every alarm the stack creates has its entry in README's "Operating it" alarm list (an
/// entry naming it in bold, by its `<stack>-<what>` name): what it means and what to do.
#[test]
fn the_readme_says_what_each_alarm_means() {
    let template = template();
    let readme = read(&repo().join("README.md"));
    // The list in "Operating it", where each entry starts with its names in bold.
    let operating = readme.split("\n## Operating it\n").nth(1).expect("README has Operating it");
    let operating = operating.split("\n## ").next().unwrap_or(operating);
    let resources = template["Resources"].as_mapping().unwrap();
    let mut missing = Vec::new();
    for (id, resource) in resources {
        if resource["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        let name = cfn::sub(&resource["Properties"]["AlarmName"]);
        let what = name.as_deref().and_then(|name| name.strip_prefix("${AWS::StackName}-"));
        let what = what.unwrap_or_else(|| panic!("{id:?}: not named !Sub <stack>-<what>: {name:?}"));
        let listed = operating.lines().any(|line| {
            let entry = line.trim_start().strip_prefix("- **").and_then(|rest| rest.split("**").next());
            entry.is_some_and(|names| names.contains(&format!("`{what}`")))
        });
        if !listed {
            missing.push(what.to_owned());
        }
    }
    assert!(missing.is_empty(), "alarms README does not describe: {missing:?}");
}

/// A scheduled function's `rate(N minutes)`, in seconds.
fn schedule_seconds(template: &Value, function: &str) -> u64 {
    let properties = cfn::function_properties(template, function);
    let rate = properties
        .get("Events")
        .and_then(|events| events.as_mapping())
        .into_iter()
        .flat_map(|events| events.values())
        .find(|event| event["Type"] == "Schedule")
        .and_then(|event| event["Properties"]["Schedule"].as_str())
        .unwrap_or_else(|| panic!("{function} has no schedule"));
    let minutes = rate.strip_prefix("rate(").and_then(|r| r.split_once(' ')).and_then(|(n, _)| n.parse::<u64>().ok());
    60 * minutes.unwrap_or_else(|| panic!("{function}: {rate} is not rate(N minutes)"))
}

#[test]
fn an_alarm_reading_no_count_as_breaching_has_two_runs_in_each_period() {
    // Such an alarm reads a scheduled function's count of every run; a period holding only
    // one run may hold none when the schedule's jitter moves it, and would read as breaching.
    // One judged on fewer than three periods fills a period without a count (FILL, with a
    // breaching value), over two periods at least (the one in progress may have no count
    // yet): CloudWatch judges it on the last real count while one is within its evaluation
    // range (three or four periods), whatever TreatMissingData says.
    let template = template();
    let mut checked = 0;
    for (name, alarm) in template["Resources"].as_mapping().into_iter().flatten() {
        let properties = &alarm["Properties"];
        if alarm["Type"] != "AWS::CloudWatch::Alarm" || properties["TreatMissingData"] != "breaching" {
            continue;
        }
        let name = name.as_str().unwrap_or_default();
        let metrics = cfn::as_list(&properties["Metrics"]);
        // The metric itself, or the one a math expression reads.
        let (stat, period) = match metrics.iter().find(|m| !m["MetricStat"].is_null()) {
            Some(m) => (&m["MetricStat"]["Metric"], &m["MetricStat"]["Period"]),
            None => (properties, &properties["Period"]),
        };
        let dimensions = cfn::as_list(&stat["Dimensions"]);
        let [dimension] = dimensions.as_slice() else { panic!("{name}: one dimension") };
        let function = cfn::reference(&dimension["Value"]).unwrap_or_else(|| panic!("{name}: a function"));
        let period = cfn::number(period);
        let every = schedule_seconds(&template, &function);
        assert!(period >= 2 * every, "{name}: a {period} s period and {function} runs every {every} s");
        let periods = cfn::number(&properties["EvaluationPeriods"]);
        // Every period of those breaching, not one alone (the one in progress, say).
        let to_alarm = properties.get("DatapointsToAlarm").map_or(periods, cfn::number);
        assert!(to_alarm >= 2, "{name}: one period, which may be the one in progress without a count yet");
        if periods < 3 {
            let returned = metrics.iter().find(|m| m["ReturnData"] == true).map(|m| &m["Expression"]);
            let filled =
                returned.and_then(|e| e.as_str()).is_some_and(|e| e.starts_with("FILL(") && e.ends_with(", 1)"));
            assert!(filled, "{name}: {periods} periods, its gaps not filled as breaching: {returned:?}");
        }
        checked += 1;
    }
    assert_eq!(checked, 2, "tasks-not-swept and parked-callbacks-stuck");
}

/// The Metrics Insights query that sums `metric` over the dimension set it is emitted under
/// (`dimensions`), for the one series `dimension` names.
fn schema_sum(metric: &str, dimensions: &[(&str, &str)], dimension: (&str, &str)) -> String {
    let names: Vec<String> = dimensions.iter().map(|(n, _)| insights_key(n)).collect();
    format!(
        "SELECT SUM({metric}) FROM SCHEMA({}, {}) WHERE {} = '{}'",
        stemvault_aws::metrics::NAMESPACE,
        names.join(", "),
        insights_key(dimension.0),
        dimension.1
    )
}

/// The query of `alarm`'s first metric, its `!Sub` filled in as [`substitute`] does.
fn alarm_query(template: &Value, alarm: &str) -> Option<String> {
    cfn::sub(&cfn::resource(template, alarm)["Properties"]["Metrics"][0]["Expression"]).map(|text| substitute(&text).0)
}

/// A label key as a Metrics Insights query (the alarms' `SELECT`) names it: in double quotes,
/// always. A reserved keyword of the language must be (CloudWatch refuses it bare: "Reserved
/// keyword ... must be surrounded by double quotes"; `Function` is one), and quoting every key
/// needs no list of them to go stale.
fn insights_key(key: &str) -> String {
    format!("\"{key}\"")
}
