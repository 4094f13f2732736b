//! template.yaml agrees with the code it deploys:
//! - each function is an arm64 cargo-lambda build of its crate's binary;
//! - each function's environment sets exactly the variables it declares
//!   (`config::ENVIRONMENT`, which its `Config` reads through `stemvault_aws::Env`, plus
//!   `stemvault_aws::logging::ENVIRONMENT`);
//! - each function's IAM policy grants exactly the actions it declares (`aws::AWS_ACTIONS`),
//!   each on the right resource (plus its own log group, and the SQS event source's actions
//!   for download);
//! - each function's S3 grants reach exactly the kinds of key it uses (`s3_keys::RULES`), judged
//!   on keys the layout makes (files, callback bodies, manifests), Deny statements included;
//! - the table's key is the item collection's (`task_id` HASH, `sk` RANGE, as
//!   `stemvault_vault::items` writes them), with the `open-tasks` index, which only the
//!   sweeper may query, and the `reconcile-due` index, which only the reconciler may query
//!   (every function may query the table); the reconciler runs every 2 minutes;
//! - the queue settings (including server-side encryption) equal `stemvault_aws::provision`'s,
//!   which the emulator uses;
//! - each HTTP route is throttled by its own parameters, and ingest has reserved concurrency;
//! - every function's errors and throttles, the callback 5xx rate, files failed for good and
//!   the dead-letter queue are alarmed, to the alarm topic, and the dashboard (valid JSON)
//!   shows every alarm and metric;
//! - every checkov skip names its check and gives a one-line reason;
//! - webhooks (only with `NotifyUrl`): a rule on the event bus sends every stemvault event to
//!   the notify queue (which only that rule may send to), whose retention, redrive and
//!   visibility timeout fit the notify function's retry delays (`stemvault_notify::domain`),
//!   with its dead-letter queue alarmed, which the notify function alone may send to (a 410'd
//!   event) and nothing may send to the notify queue but the rule; every notify resource
//!   exists only with `NotifyUrl`.
//!
//! Each check has a test that feeds it a broken template and expects its complaints.
//!
//! As a cross-check of the declarations, every AWS SDK call written in a function crate's
//! production code must be covered by its `AWS_ACTIONS` (see `sdk_calls`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use stemvault_aws::provision::{DLQ_RETENTION_SECONDS, QUEUE_VISIBILITY_TIMEOUT_SECONDS, SQS_MANAGED_SSE};
use stemvault_vault::download::MAX_RECEIVE_COUNT;

/// One deployed function: its crate under functions/, its logical id in template.yaml, its
/// binary, and what it declares.
struct Function {
    crate_dir: &'static str,
    logical_id: &'static str,
    binary: &'static str,
    environment: &'static [&'static str],
    aws_actions: &'static [&'static str],
}

const FUNCTIONS: &[Function] = &[
    Function {
        crate_dir: "ingest",
        logical_id: "IngestFunction",
        binary: "ingest",
        environment: stemvault_ingest::config::ENVIRONMENT,
        aws_actions: stemvault_ingest::aws::AWS_ACTIONS,
    },
    Function {
        crate_dir: "sweeper",
        logical_id: "SweeperFunction",
        binary: "sweeper",
        environment: stemvault_sweeper::config::ENVIRONMENT,
        aws_actions: stemvault_sweeper::aws::AWS_ACTIONS,
    },
    Function {
        crate_dir: "reconciler",
        logical_id: "ReconcilerFunction",
        binary: "reconciler",
        environment: stemvault_reconciler::config::ENVIRONMENT,
        aws_actions: stemvault_reconciler::aws::AWS_ACTIONS,
    },
    Function {
        crate_dir: "download",
        logical_id: "DownloadFunction",
        binary: "download",
        environment: stemvault_download::config::ENVIRONMENT,
        aws_actions: stemvault_download::aws::AWS_ACTIONS,
    },
    Function {
        crate_dir: "results",
        logical_id: "ResultsFunction",
        binary: "results",
        environment: stemvault_results::config::ENVIRONMENT,
        aws_actions: stemvault_results::aws::AWS_ACTIONS,
    },
    Function {
        crate_dir: "notify",
        logical_id: "NotifyFunction",
        binary: "notify",
        environment: stemvault_notify::config::ENVIRONMENT,
        aws_actions: stemvault_notify::aws::AWS_ACTIONS,
    },
];

impl Function {
    fn variables(&self) -> BTreeSet<String> {
        self.environment.iter().chain(stemvault_aws::logging::ENVIRONMENT).map(|v| v.to_string()).collect()
    }

    fn actions(&self) -> BTreeSet<String> {
        self.aws_actions.iter().map(|a| a.to_string()).collect()
    }
}

/// Every function writes its logs; Lambda needs these on the function's own log group.
const LOG_ACTIONS: &[&str] = &["logs:CreateLogStream", "logs:PutLogEvents"];
/// What Lambda's SQS event source mapping does with the download and notify functions' roles.
const EVENT_SOURCE_ACTIONS: &[&str] = &["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"];

fn repo() -> PathBuf {
    stemvault_tests::repo_dir()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn template() -> Value {
    serde_yaml::from_str(&read(&repo().join("template.yaml"))).expect("template.yaml parses")
}

/// The cross-check: which AWS SDK calls a crate's production code makes.
#[path = "template_agrees/sdk_calls.rs"]
mod sdk_calls;

/// Reading the template: resources, SAM globals and CloudFormation intrinsics.
#[path = "template_agrees/cfn.rs"]
mod cfn;

/// Which S3 keys each function's grants reach, judged on keys made by the real layout
/// (`suno_callbacks::s3_key` over the documented fixtures, plus names the parser allows) rather
/// than on the text of the patterns: IAM's `*` matches any characters, `/` included, so
/// `tasks/*/callbacks/*` also covers the vaulted file `tasks/<id>/tracks/callbacks/audio`.
#[path = "template_agrees/s3_keys.rs"]
mod s3_keys;

/// The IAM actions of the SDK calls written in a function crate's production code. (Calls
/// made inside the shared adapters, `TaskTable` and `TableAndQueue`, are declared by the
/// functions that use them.)
fn sdk_calls_in(function: &Function) -> BTreeSet<String> {
    let src = repo().join("functions").join(function.crate_dir).join("src");
    sdk_calls::production_sources(&src).values().flat_map(|code| sdk_calls::sdk_actions(code)).collect()
}

/// Differences between a function's Environment.Variables and what its code reads.
fn environment_problems(template: &Value, function: &str, needed: &BTreeSet<String>) -> Vec<String> {
    let props = cfn::function_properties(template, function);
    let set: BTreeSet<String> = props
        .get("Environment")
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping)
        .map(|vars| vars.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let mut problems = Vec::new();
    for missing in needed.difference(&set) {
        problems.push(format!("{function}: the code reads {missing} but the template does not set it"));
    }
    for unused in set.difference(needed) {
        problems.push(format!("{function}: the template sets {unused} but the code never reads it"));
    }
    problems
}

/// The kind of resource a policy statement names.
fn resource_kind(resource: &Value, own_log_group: Option<&str>) -> String {
    // `!If [condition, a, b]`: one kind when both branches name the same kind.
    if let Some((tag, Value::Sequence(args))) = cfn::intrinsic(resource)
        && tag == "If"
        && args.len() == 3
    {
        let (a, b) = (resource_kind(&args[1], own_log_group), resource_kind(&args[2], own_log_group));
        return if a == b { a } else { format!("{a} or {b}") };
    }
    // The secret the stack creates, or the existing one it is given.
    if let Some("CallbackSecret" | "CallbackSecretArn") = cfn::reference(resource).as_deref() {
        return "the callback secret".into();
    }
    if let Some("ProviderSecret" | "ProviderSecretArn") = cfn::reference(resource).as_deref() {
        return "the provider secret".into();
    }
    if let Some("NotifySecret" | "NotifySecretArn") = cfn::reference(resource).as_deref() {
        return "the notify secret".into();
    }
    if let Some(att) = cfn::get_att(resource) {
        return match att.as_str() {
            "TaskTable.Arn" => "the task table".into(),
            "DownloadQueue.Arn" => "the download queue".into(),
            "EventBus.Arn" => "the event bus".into(),
            "NotifyQueue.Arn" => "the notify queue".into(),
            "NotifyDeadLetterQueue.Arn" => "the notify dead-letter queue".into(),
            "VaultBucket.Arn" => "the vault bucket".into(),
            other if Some(other.trim_end_matches(".Arn")) == own_log_group => "its own log group".into(),
            other => format!("!GetAtt {other}"),
        };
    }
    match cfn::sub(resource) {
        Some(s) if s3_keys::key_pattern(&s).is_some() => "objects in the vault bucket".into(),
        Some(s) if s == "${TaskTable.Arn}/index/open-tasks" => "the open-tasks index".into(),
        Some(s) if s == "${TaskTable.Arn}/index/reconcile-due" => "the reconcile-due index".into(),
        _ => format!("{resource:?}"),
    }
}

/// The kinds of resource an action may be granted on.
fn expected_kinds(action: &str) -> &'static [&'static str] {
    match action.split(':').next() {
        // A task's item collection, or the open tasks.
        Some("dynamodb") if action == "dynamodb:Query" => {
            &["the task table", "the open-tasks index", "the reconcile-due index"]
        }
        Some("dynamodb") => &["the task table"],
        // Only the rule sends to the notify queue (its queue policy); a function sends jobs to
        // the download queue, or a refused event to the notify dead-letter queue.
        Some("sqs") if action == "sqs:SendMessage" => &["the download queue", "the notify dead-letter queue"],
        Some("sqs") => &["the download queue", "the notify queue"],
        Some("logs") => &["its own log group"],
        Some("s3") if action == "s3:ListBucket" => &["the vault bucket"],
        Some("s3") => &["objects in the vault bucket"],
        Some("secretsmanager") => &["the callback secret", "the notify secret", "the provider secret"],
        Some("events") => &["the event bus"],
        _ => &["nothing"],
    }
}

/// Differences between a function's IAM grants and the calls its code makes.
fn policy_problems(template: &Value, function: &str, code_actions: &BTreeSet<String>, extra: &[&str]) -> Vec<String> {
    let props = cfn::function_properties(template, function);
    let mut problems = Vec::new();
    if props.contains_key("Policies") {
        problems.push(format!(
            "{function}: uses SAM Policies, whose generated role adds wildcard managed policies; use an explicit Role"
        ));
    }
    let Some(role_name) =
        props.get("Role").and_then(cfn::get_att).and_then(|a| a.strip_suffix(".Arn").map(str::to_owned))
    else {
        problems.push(format!("{function}: Role is not `!GetAtt <role>.Arn`"));
        return problems;
    };
    let own_log_group = props.get("LoggingConfig").and_then(|l| l.get("LogGroup")).and_then(cfn::reference);
    let role = &cfn::resource(template, &role_name)["Properties"];
    if role.get("ManagedPolicyArns").is_some() {
        problems.push(format!("{function}: {role_name} has managed policies"));
    }
    let mut granted = BTreeSet::new();
    for statement in cfn::role_statements(template, &role_name) {
        if statement["Effect"].as_str() != Some("Allow") {
            continue;
        }
        let kinds: Vec<String> = cfn::as_list(&statement["Resource"])
            .into_iter()
            .map(|r| resource_kind(r, own_log_group.as_deref()))
            .collect();
        for action in cfn::as_list(&statement["Action"]).into_iter().filter_map(Value::as_str) {
            if action.contains('*') {
                problems.push(format!("{function}: wildcard action {action}"));
            }
            for kind in &kinds {
                if !expected_kinds(action).contains(&kind.as_str()) {
                    problems.push(format!(
                        "{function}: {action} is granted on {kind}; it belongs on {}",
                        expected_kinds(action).join(" or ")
                    ));
                }
            }
            granted.insert(action.to_owned());
        }
    }
    let mut needed = code_actions.clone();
    needed.extend(LOG_ACTIONS.iter().chain(extra).map(|a| a.to_string()));
    for missing in needed.difference(&granted) {
        problems.push(format!("{function}: the code needs {missing} but {role_name} does not grant it"));
    }
    for unused in granted.difference(&needed) {
        problems.push(format!("{function}: {role_name} grants {unused}, which the code never calls"));
    }
    problems
}

#[test]
fn every_function_is_an_arm64_cargo_lambda_build_of_its_binary() {
    let template = template();
    for Function { crate_dir, logical_id: function, binary, .. } in FUNCTIONS {
        let props = cfn::function_properties(&template, function);
        assert_eq!(props["Runtime"], "provided.al2023", "{function}");
        assert_eq!(props["Handler"], "bootstrap", "{function}");
        assert_eq!(props["Architectures"], Value::Sequence(vec!["arm64".into()]), "{function}");
        assert_eq!(props["CodeUri"], ".", "{function}: cargo-lambda builds from the workspace root");
        let metadata = &cfn::resource(&template, function)["Metadata"];
        assert_eq!(metadata["BuildMethod"], "rust-cargolambda", "{function}");
        let manifest = read(&repo().join("functions").join(crate_dir).join("Cargo.toml"));
        let bin_names: Vec<&str> =
            manifest.split("[[bin]]").skip(1).map(|section| section.split('"').nth(1).expect("bin name")).collect();
        assert!(bin_names.contains(binary), "{crate_dir} declares no [[bin]] {binary}: {bin_names:?}");
        assert_eq!(metadata["BuildProperties"]["Binary"], *binary, "{function}");
    }
}

#[test]
fn every_function_sets_exactly_the_variables_it_declares() {
    let template = template();
    let mut problems = Vec::new();
    for function in FUNCTIONS {
        problems.extend(environment_problems(&template, function.logical_id, &function.variables()));
    }
    assert!(problems.is_empty(), "template.yaml environment disagrees with the code:\n{}", problems.join("\n"));
}

#[test]
fn every_policy_grants_exactly_the_actions_its_function_declares() {
    let template = template();
    let mut problems = Vec::new();
    for function in FUNCTIONS {
        let extra = match function.logical_id {
            "DownloadFunction" | "NotifyFunction" => EVENT_SOURCE_ACTIONS,
            _ => &[],
        };
        problems.extend(policy_problems(&template, function.logical_id, &function.actions(), extra));
    }
    assert!(problems.is_empty(), "template.yaml policies disagree with the code:\n{}", problems.join("\n"));
}

#[test]
fn every_sdk_call_a_function_makes_is_declared() {
    // A function may make every call through the shared adapters (notify: `stemvault_aws`'s
    // secrets and SQS batch modules), so only all of them together must show calls.
    let mut found = 0;
    for function in FUNCTIONS {
        let called = sdk_calls_in(function);
        found += called.len();
        let declared = function.actions();
        let undeclared: Vec<&String> = called.difference(&declared).collect();
        assert!(
            undeclared.is_empty(),
            "{}: calls {undeclared:?} without declaring them in AWS_ACTIONS",
            function.crate_dir
        );
    }
    assert!(found > 0, "no SDK call found in any function; is the cross-check still reading them?");
}

#[test]
fn queue_settings_equal_the_emulator_provisioning() {
    let template = template();
    let queue = &cfn::resource(&template, "DownloadQueue")["Properties"];
    assert_eq!(cfn::number(&queue["VisibilityTimeout"]), u64::from(QUEUE_VISIBILITY_TIMEOUT_SECONDS));
    assert_eq!(cfn::number(&queue["RedrivePolicy"]["maxReceiveCount"]), u64::from(MAX_RECEIVE_COUNT));
    let retention = stemvault_vault::download::DOWNLOAD_QUEUE_RETENTION.as_secs();
    assert_eq!(cfn::number(&queue["MessageRetentionPeriod"]), retention, "the sweeper's bound on a message's life");
    assert_eq!(
        cfn::get_att(&queue["RedrivePolicy"]["deadLetterTargetArn"]).as_deref(),
        Some("DownloadDeadLetterQueue.Arn")
    );
    let dlq = &cfn::resource(&template, "DownloadDeadLetterQueue")["Properties"];
    assert_eq!(cfn::number(&dlq["MessageRetentionPeriod"]), u64::from(DLQ_RETENTION_SECONDS));
    for (name, props) in [("DownloadQueue", queue), ("DownloadDeadLetterQueue", dlq)] {
        assert_eq!(props["SqsManagedSseEnabled"], Value::Bool(SQS_MANAGED_SSE), "{name}: encrypted as provisioned");
        assert!(props.get("KmsMasterKeyId").is_none(), "{name}: SSE-SQS, not SSE-KMS (no key permissions granted)");
    }

    let download = cfn::function_properties(&template, "DownloadFunction");
    let timeout = cfn::number(&download["Timeout"]);
    assert_eq!(timeout, stemvault_download::app::FUNCTION_TIMEOUT.as_secs(), "as the local runner gives a batch");
    assert!(
        u64::from(QUEUE_VISIBILITY_TIMEOUT_SECONDS) >= 6 * timeout,
        "visibility timeout must be at least 6 x the download timeout ({timeout} s)"
    );
    let jobs = &download["Events"]["Jobs"]["Properties"];
    assert_eq!(cfn::get_att(&jobs["Queue"]).as_deref(), Some("DownloadQueue.Arn"));
    assert_eq!(jobs["FunctionResponseTypes"], Value::Sequence(vec!["ReportBatchItemFailures".into()]));
    assert_eq!(cfn::reference(&jobs["ScalingConfig"]["MaximumConcurrency"]).as_deref(), Some("DownloadConcurrency"));

    let alarm = &cfn::resource(&template, "DeadLetterQueueNotEmpty")["Properties"];
    assert_eq!(alarm["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(cfn::get_att(&alarm["Dimensions"][0]["Value"]).as_deref(), Some("DownloadDeadLetterQueue.QueueName"));
}

#[test]
fn webhooks_are_fed_by_a_rule_through_the_notify_queue_only_with_a_notify_url() {
    use stemvault_notify::domain::{MAX_RECEIVE_COUNT, MAX_RETRY_DELAY, QUEUE_RETENTION_SECONDS};
    let template = template();
    let rule = &cfn::resource(&template, "NotifyRule")["Properties"];
    assert_eq!(cfn::reference(&rule["EventBusName"]).as_deref(), Some("EventBus"));
    assert_eq!(rule["EventPattern"], serde_yaml::from_str::<Value>("{source: [stemvault]}").unwrap());
    assert_eq!(rule["EventPattern"]["source"][0], stemvault_vault::events::EVENT_SOURCE);
    let targets = cfn::as_list(&rule["Targets"]);
    assert_eq!(targets.len(), 1);
    assert_eq!(cfn::get_att(&targets[0]["Arn"]).as_deref(), Some("NotifyQueue.Arn"));
    // What the rule cannot deliver is dead-lettered where the alarm watches, not dropped.
    assert_eq!(cfn::get_att(&targets[0]["DeadLetterConfig"]["Arn"]).as_deref(), Some("NotifyDeadLetterQueue.Arn"));

    let queue = &cfn::resource(&template, "NotifyQueue")["Properties"];
    assert_eq!(cfn::number(&queue["MessageRetentionPeriod"]), QUEUE_RETENTION_SECONDS);
    assert_eq!(cfn::number(&queue["RedrivePolicy"]["maxReceiveCount"]), u64::from(MAX_RECEIVE_COUNT));
    assert_eq!(
        cfn::get_att(&queue["RedrivePolicy"]["deadLetterTargetArn"]).as_deref(),
        Some("NotifyDeadLetterQueue.Arn")
    );
    let dlq = &cfn::resource(&template, "NotifyDeadLetterQueue")["Properties"];
    assert!(cfn::number(&dlq["MessageRetentionPeriod"]) > QUEUE_RETENTION_SECONDS, "the DLQ keeps them longer");
    for (name, props) in [("NotifyQueue", queue), ("NotifyDeadLetterQueue", dlq)] {
        assert_eq!(props["SqsManagedSseEnabled"], Value::Bool(SQS_MANAGED_SSE), "{name}: encrypted");
    }
    let notify = cfn::function_properties(&template, "NotifyFunction");
    let timeout = cfn::number(&notify["Timeout"]);
    assert!(cfn::number(&queue["VisibilityTimeout"]) >= 6 * timeout, "visibility timeout: 6 x the timeout");
    assert_eq!(timeout, stemvault_notify::domain::FUNCTION_TIMEOUT.as_secs(), "as the local runner gives a batch");
    let visibility = u64::from(stemvault_notify::domain::QUEUE_VISIBILITY_TIMEOUT_SECONDS);
    assert_eq!(cfn::number(&queue["VisibilityTimeout"]), visibility, "as the local runner makes it");
    assert!(timeout < MAX_RETRY_DELAY.as_secs());
    let events = &notify["Events"]["Events"]["Properties"];
    assert_eq!(cfn::get_att(&events["Queue"]).as_deref(), Some("NotifyQueue.Arn"));
    assert_eq!(events["FunctionResponseTypes"], Value::Sequence(vec!["ReportBatchItemFailures".into()]));

    // Only the rule may send to the queue, and to the DLQ what it cannot deliver.
    for (policy, queue) in
        [("NotifyQueuePolicy", "NotifyQueue"), ("NotifyDeadLetterQueuePolicy", "NotifyDeadLetterQueue")]
    {
        let policy = &cfn::resource(&template, policy)["Properties"];
        assert_eq!(
            cfn::as_list(&policy["Queues"]).into_iter().map(cfn::reference).collect::<Vec<_>>(),
            [Some(queue.into())]
        );
        let statements = cfn::statements(policy);
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Principal"]["Service"], "events.amazonaws.com");
        assert_eq!(statements[0]["Action"], "sqs:SendMessage");
        assert_eq!(cfn::get_att(&statements[0]["Resource"]).as_deref(), Some(format!("{queue}.Arn").as_str()));
        assert_eq!(
            cfn::get_att(&statements[0]["Condition"]["ArnEquals"]["aws:SourceArn"]).as_deref(),
            Some("NotifyRule.Arn")
        );
    }

    let alarm = &cfn::resource(&template, "NotifyDeadLetterQueueNotEmpty")["Properties"];
    assert_eq!(alarm["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(cfn::get_att(&alarm["Dimensions"][0]["Value"]).as_deref(), Some("NotifyDeadLetterQueue.QueueName"));
    // What the rule could put on neither queue is lost: alarmed, on the rule's own metrics (a
    // rule on a custom bus is measured by bus and rule name).
    let lost = &cfn::resource(&template, "NotifyEventsLost")["Properties"];
    assert_eq!(
        (&lost["Namespace"], &lost["MetricName"]),
        (&"AWS/Events".into(), &"InvocationsFailedToBeSentToDlq".into())
    );
    let dimensions = cfn::as_list(&lost["Dimensions"]);
    assert_eq!(dimensions[0]["Name"], "EventBusName");
    assert_eq!(cfn::reference(&dimensions[0]["Value"]).as_deref(), Some("EventBus"));
    assert_eq!(dimensions[1]["Name"], "RuleName");
    // The rule's name, the last part of its ARN (`rule/<bus>/<name>`), so the rule need not be
    // named (a named rule cannot be replaced, and its 64 characters would bound the stack name).
    let name: Value = serde_yaml::from_str(r#"!Select [2, !Split ["/", !GetAtt NotifyRule.Arn]]"#).unwrap();
    assert_eq!(dimensions[1]["Value"], name, "the rule's name");
    assert!(rule.get("Name").is_none(), "unnamed");

    // Nothing of the webhooks exists without NotifyUrl (the bus does: the events are published
    // either way).
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if name.starts_with("Notify") {
            let condition = resource["Condition"].as_str().unwrap_or_default();
            assert!(["HasNotifyUrl", "CreateNotifySecret"].contains(&condition), "{name}: condition {condition:?}");
        }
    }
    assert_eq!(cfn::resource(&template, "NotifySecret")["Condition"], "CreateNotifySecret");
    let variables = &notify["Environment"]["Variables"];
    assert_eq!(cfn::reference(&variables["NOTIFY_URL"]).as_deref(), Some("NotifyUrl"));
    assert_eq!(cfn::reference(&variables["QUEUE_URL"]).as_deref(), Some("NotifyQueue"));

    // A 410'd event goes to the notify DLQ, the queue's own redrive target, so one redrive
    // (to the notify queue) delivers it with the rest; the notify function may send there and
    // nowhere else, and no other function may send there.
    assert_eq!(cfn::reference(&variables["DEAD_LETTER_QUEUE_URL"]).as_deref(), Some("NotifyDeadLetterQueue"));
    for function in FUNCTIONS {
        let sends = granted_kinds(&template, function.logical_id, "sqs:SendMessage");
        let dead_letters = sends.contains("the notify dead-letter queue");
        match function.logical_id {
            "NotifyFunction" => assert_eq!(sends, BTreeSet::from(["the notify dead-letter queue".to_owned()])),
            other => assert!(!dead_letters, "{other} may send to the notify dead-letter queue"),
        }
    }
}

#[test]
fn routes_are_the_ones_the_handlers_serve_with_the_right_auth() {
    let template = template();
    let api = &cfn::resource(&template, "HttpApi")["Properties"];
    assert_eq!(api["Auth"]["DefaultAuthorizer"], "AWS_IAM", "routes must opt out of IAM explicitly");
    let routes = |function: &str| -> BTreeSet<(String, String, String)> {
        let props = cfn::function_properties(&template, function);
        let events = props.get("Events").and_then(Value::as_mapping).cloned().unwrap_or_default();
        events
            .values()
            .filter(|e| e["Type"] == "HttpApi")
            .map(|e| {
                let p = &e["Properties"];
                assert_eq!(cfn::reference(&p["ApiId"]).as_deref(), Some("HttpApi"));
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (s(&p["Method"]), s(&p["Path"]), s(&p["Auth"]["Authorizer"]))
            })
            .collect()
    };
    let route = |m: &str, p: &str, a: &str| (m.to_owned(), p.to_owned(), a.to_owned());
    assert_eq!(
        routes("IngestFunction"),
        BTreeSet::from([route("POST", "/callback", "NONE"), route("POST", "/callback/{token}", "NONE")])
    );
    assert_eq!(
        routes("ResultsFunction"),
        BTreeSet::from([route("GET", "/tasks/{task_id}", "AWS_IAM"), route("PUT", "/tasks/{task_id}", "AWS_IAM")])
    );
    assert!(routes("DownloadFunction").is_empty());
    assert!(routes("SweeperFunction").is_empty());
    assert!(routes("ReconcilerFunction").is_empty());
}

#[test]
fn the_sweeper_runs_on_a_schedule_and_the_table_has_its_index() {
    let template = template();
    let sweeper = cfn::function_properties(&template, "SweeperFunction");
    let schedule = &sweeper["Events"]["Schedule"];
    assert_eq!(schedule["Type"], "Schedule");
    assert_eq!(schedule["Properties"]["Schedule"], "rate(5 minutes)");
    let index = &cfn::resource(&template, "TaskTable")["Properties"]["GlobalSecondaryIndexes"][0];
    assert_eq!(index["IndexName"], stemvault_vault::OPEN_TASKS_INDEX);
    let keys: Vec<(&str, &str)> = cfn::as_list(&index["KeySchema"])
        .into_iter()
        .map(|k| (k["AttributeName"].as_str().unwrap(), k["KeyType"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, [("open", "HASH"), ("last_received_at", "RANGE")]);
    // Only the sweeper reads the index; every function reads task collections.
    for function in FUNCTIONS {
        let expected: BTreeSet<String> = match function.logical_id {
            "SweeperFunction" => ["the open-tasks index", "the task table"].map(String::from).into(),
            "ReconcilerFunction" => ["the reconcile-due index", "the task table"].map(String::from).into(),
            // Delivers events; reads no task.
            "NotifyFunction" => BTreeSet::new(),
            _ => ["the task table".to_owned()].into(),
        };
        assert_eq!(query_kinds(&template, function.logical_id), expected, "{}", function.logical_id);
    }
}

/// The kinds of resource a function's role grants dynamodb:Query on.
fn query_kinds(template: &Value, function: &str) -> BTreeSet<String> {
    granted_kinds(template, function, "dynamodb:Query")
}

/// The kinds of resource a function's role allows `action` on.
fn granted_kinds(template: &Value, function: &str, action: &str) -> BTreeSet<String> {
    let props = cfn::function_properties(template, function);
    let role_name = props.get("Role").and_then(cfn::get_att).expect("a role");
    let mut kinds = BTreeSet::new();
    for statement in cfn::role_statements(template, role_name.trim_end_matches(".Arn")) {
        let actions = cfn::as_list(&statement["Action"]);
        if statement["Effect"].as_str() == Some("Allow") && actions.iter().any(|a| a.as_str() == Some(action)) {
            kinds.extend(cfn::as_list(&statement["Resource"]).into_iter().map(|r| resource_kind(r, None)));
        }
    }
    kinds
}

#[test]
fn the_table_keeps_each_task_s_items_together() {
    let template = template();
    let table = &cfn::resource(&template, "TaskTable")["Properties"];
    let pairs = |list: &Value, a: &str, b: &str| -> Vec<(String, String)> {
        cfn::as_list(list)
            .into_iter()
            .map(|k| (k[a].as_str().unwrap().to_owned(), k[b].as_str().unwrap().to_owned()))
            .collect()
    };
    let keys = pairs(&table["KeySchema"], "AttributeName", "KeyType");
    use stemvault_vault::items::{PARTITION_KEY, SORT_KEY};
    assert_eq!(keys, [(PARTITION_KEY.to_owned(), "HASH".to_owned()), (SORT_KEY.to_owned(), "RANGE".to_owned())]);
    let mut attributes = pairs(&table["AttributeDefinitions"], "AttributeName", "AttributeType");
    attributes.sort();
    let s = |name: &str| (name.to_owned(), "S".to_owned());
    assert_eq!(
        attributes,
        [s("last_received_at"), s("open"), s("reconcile"), s("reconcile_at"), s(SORT_KEY), s(PARTITION_KEY)]
    );
}

#[test]
fn the_reconciler_runs_every_two_minutes_over_its_sparse_index_with_only_its_secret() {
    let template = template();
    let reconciler = cfn::function_properties(&template, "ReconcilerFunction");
    let schedule = &reconciler["Events"]["Schedule"];
    assert_eq!(schedule["Type"], "Schedule");
    assert_eq!(schedule["Properties"]["Schedule"], "rate(2 minutes)");
    // A run stops in time for the next one by this period.
    assert_eq!(stemvault_reconciler::schedule::RUN_EVERY, std::time::Duration::from_secs(2 * 60));
    let indexes = cfn::as_list(&cfn::resource(&template, "TaskTable")["Properties"]["GlobalSecondaryIndexes"]);
    let index = indexes.into_iter().find(|i| i["IndexName"] == stemvault_vault::RECONCILE_DUE_INDEX).expect("index");
    let keys: Vec<(&str, &str)> = cfn::as_list(&index["KeySchema"])
        .into_iter()
        .map(|k| (k["AttributeName"].as_str().unwrap(), k["KeyType"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, [("reconcile", "HASH"), ("reconcile_at", "RANGE")]);
    assert_eq!(index["Projection"]["ProjectionType"], "KEYS_ONLY");
    // The provider key reaches the reconciler and the downloader (fresh links for expired
    // files) only, through its secret, never an environment.
    let secret = &reconciler["Environment"]["Variables"]["PROVIDER_SECRET_ARN"];
    assert_eq!(resource_kind(secret, None), "the provider secret");
    for function in FUNCTIONS {
        let readers = secret_kinds(&template, function.logical_id);
        assert_eq!(
            readers.contains("the provider secret"),
            matches!(function.logical_id, "ReconcilerFunction" | "DownloadFunction"),
            "{}: {readers:?}",
            function.logical_id
        );
        let props = cfn::function_properties(&template, function.logical_id);
        assert!(props["Environment"]["Variables"].get("PROVIDER_API_KEY").is_none(), "{}", function.logical_id);
    }
    // The downloader only with the provider whose fresh links it asks for.
    let role = &cfn::resource(&template, "DownloadRole")["Properties"];
    let statements = cfn::as_list(&role["Policies"][0]["PolicyDocument"]["Statement"]);
    let condition = statements.iter().find_map(|s| match cfn::intrinsic(s) {
        Some((tag, Value::Sequence(args))) if tag == "If" && args[1]["Sid"] == "ProviderSecret" => args[0].as_str(),
        _ => None,
    });
    let condition =
        condition.unwrap_or_else(|| panic!("the download's ProviderSecret statement is an !If: {statements:?}"));
    let only_with = format!("!Equals [!Ref Provider, {}]", stemvault_download::config::FRESH_LINK_PROVIDER.as_str());
    assert_eq!(template["Conditions"][condition], serde_yaml::from_str::<Value>(&only_with).unwrap());
}

/// The kinds of secret a function's role may read.
fn secret_kinds(template: &Value, function: &str) -> BTreeSet<String> {
    granted_kinds(template, function, "secretsmanager:GetSecretValue")
}

#[test]
fn deploying_without_callback_authentication_is_refused() {
    let template = template();
    let ingest = cfn::function_properties(&template, "IngestFunction");
    assert_eq!(ingest["Environment"]["Variables"]["ALLOW_UNAUTHENTICATED"], "false");
    let assertion = &template["Rules"]["CallbacksMustBeAuthenticated"]["Assertions"][0]["Assert"];
    let text = serde_yaml::to_string(assertion).unwrap();
    assert!(text.contains("WebhookHmacKeys") && text.contains("CallbackToken"), "{text}");
}

/// The route throttles and the reserved concurrency that keep a flood of callbacks from
/// starving the pipeline: each HTTP route of `routes` (function, rate parameter, burst
/// parameter) throttled by its own parameters, which default to a positive number and are
/// shared with no other function's routes; ingest's reserved concurrency set from a parameter
/// that reserves some by default.
fn flood_problems(template: &Value, routes: &[(&str, &str, &str)], ingest: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let positive_default = |name: &str| {
        let parameter = &template["Parameters"][name];
        parameter["Type"] == "Number" && parameter.get("Default").is_some_and(|d| cfn::number(d) > 0)
    };
    for (function, rate, burst) in routes {
        for (other, other_rate, other_burst) in routes.iter().filter(|(f, ..)| f != function) {
            if [other_rate, other_burst].iter().any(|p| [rate, burst].contains(p)) {
                problems.push(format!("{function} and {other} share a throttling parameter"));
            }
        }
        let props = cfn::function_properties(template, function);
        let events = props.get("Events").and_then(Value::as_mapping).cloned().unwrap_or_default();
        for (name, event) in events.iter().filter(|(_, e)| e["Type"] == "HttpApi") {
            let name = name.as_str().unwrap_or_default();
            let settings = &event["Properties"]["RouteSettings"];
            for (setting, parameter) in [("ThrottlingRateLimit", rate), ("ThrottlingBurstLimit", burst)] {
                if cfn::reference(&settings[setting]).as_deref() != Some(*parameter) {
                    problems.push(format!("{function} {name}: RouteSettings.{setting} is not !Ref {parameter}"));
                }
            }
        }
        for parameter in [rate, burst] {
            if !positive_default(parameter) {
                problems.push(format!("{parameter}: not a Number parameter with a positive default"));
            }
        }
    }
    let reserved = cfn::function_properties(template, ingest).get("ReservedConcurrentExecutions").cloned();
    // Set directly, or `!If [condition, !Ref <parameter>, !Ref AWS::NoValue]` (0 = none).
    let parameter = reserved.as_ref().and_then(|r| match cfn::intrinsic(r) {
        Some((tag, Value::Sequence(args))) if tag == "If" && args.len() == 3 => cfn::reference(&args[1]),
        _ => cfn::reference(r),
    });
    match parameter {
        Some(p) if positive_default(&p) => {}
        Some(p) => problems.push(format!("{p}: ingest reserves no concurrency by default")),
        None => problems.push(format!("{ingest}: no ReservedConcurrentExecutions from a parameter")),
    }
    problems
}

/// The routes and their throttling parameters.
const THROTTLED_ROUTES: &[(&str, &str, &str)] = &[
    ("IngestFunction", "CallbackThrottlingRateLimit", "CallbackThrottlingBurstLimit"),
    ("ResultsFunction", "ResultsThrottlingRateLimit", "ResultsThrottlingBurstLimit"),
];

#[test]
fn a_flood_of_callbacks_cannot_starve_the_pipeline() {
    let template = template();
    let problems = flood_problems(&template, THROTTLED_ROUTES, "IngestFunction");
    assert!(problems.is_empty(), "template.yaml flood protection:\n{}", problems.join("\n"));
}

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
    stemvault_ingest::aws::UNPARSABLE_CALLBACKS_KEPT,
    "CallbackServerErrors",
    "CallbacksThrottled",
    "ResultsServerErrors",
    "FilesStored",
    "FilesFailed",
    "BytesStored",
    "CopySeconds",
    "SecondsToSettled",
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
    let reads = |a: &Value, text: &str| serde_yaml::to_string(&a["Metrics"]).unwrap_or_default().contains(text);
    let rate = alarms.iter().any(|(_, a)| reads(a, "CallbackServerErrors") && reads(a, "CallbackResponses"));
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
    let counted_metrics: [(&str, &[&str], &str); 4] = [
        ("ResultsServerErrors", results, "results"),
        ("CallbackServerErrors", &[CALLBACKS], "callback"),
        ("CallbackResponses", &[CALLBACKS], "callback"),
        ("CallbacksThrottled", &[CALLBACKS, r#"$.status = "429""#], "callback"),
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
    if !alarms.iter().any(|(_, a)| reads(a, "SUM(FilesFailed) FROM SCHEMA(stemvault, Function, Reason)")) {
        problems.push("no alarm on files failed for good (FilesFailed, every reason)".into());
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
}

// --- the checks themselves can fail -------------------------------------------------------

const SNIPPET: &str = r#"
async fn store(c: &Client, url: &Url, store: &impl ObjectStore) {
    c.put_object().bucket("b").send().await;
    c
        .send_message_batch()
        .queue_url("q");
    let q = url.query();
    store.upload_part(key, 1, bytes).await;
}
#[cfg(test)]
mod tests {
    fn t() { c.delete_object().send(); }
}
#[cfg(test)]
mod test_support;
"#;

#[test]
fn the_cross_check_reads_sdk_calls_in_production_code_only() {
    let (code, test_modules) = sdk_calls::production_part(SNIPPET);
    assert_eq!(test_modules, ["test_support"]);
    assert!(!code.contains("delete_object"), "{code}");
    assert_eq!(
        sdk_calls::sdk_actions(&code),
        BTreeSet::from(["s3:PutObject".to_owned(), "sqs:SendMessage".to_owned()]),
        "`store.upload_part(key, …)` is our own trait, not the SDK; `url.query()` is not DynamoDB"
    );
}

#[test]
fn dynamodb_query_is_told_apart_from_url_query() {
    let url_only = "let q = url.query();\nlet r = request.uri().query();";
    assert!(sdk_calls::dynamodb_reads(url_only).is_empty());
    let on_client = "self.table\n    .client\n    .query()\n    .index_name(INDEX)";
    assert_eq!(sdk_calls::dynamodb_reads(on_client), BTreeSet::from(["dynamodb:Query".to_owned()]));
}

const BROKEN_TEMPLATE: &str = r#"
Globals:
  Function:
    Runtime: provided.al2023
Resources:
  TaskTable: { Type: AWS::DynamoDB::Table }
  VaultBucket: { Type: AWS::S3::Bucket }
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Role: !GetAtt FnRole.Arn
      LoggingConfig: { LogGroup: !Ref FnLogs }
      Environment:
        Variables:
          TABLE_NAME: !Ref TaskTable
          TABLE_NAMES: typo
  FnRole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: fn
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: [logs:CreateLogStream, logs:PutLogEvents]
                Resource: !GetAtt FnLogs.Arn
              - Effect: Allow
                Action: [dynamodb:GetItem, dynamodb:DeleteItem]
                Resource: !GetAtt TaskTable.Arn
              - Effect: Allow
                Action: s3:GetObject
                Resource: !GetAtt VaultBucket.Arn
              # Only the rule sends to the notify queue; the notify DLQ takes refused events.
              - Effect: Allow
                Action: sqs:SendMessage
                Resource: [!GetAtt NotifyQueue.Arn, !GetAtt NotifyDeadLetterQueue.Arn]
              - Effect: Allow
                Action: sqs:ChangeMessageVisibility
                Resource: !GetAtt NotifyDeadLetterQueue.Arn
"#;

#[test]
fn checks_report_missing_extra_and_misplaced_grants_and_variables() {
    let template: Value = serde_yaml::from_str(BROKEN_TEMPLATE).unwrap();
    let code_actions = BTreeSet::from(
        ["dynamodb:GetItem", "s3:GetObject", "sqs:SendMessage", "sqs:ChangeMessageVisibility", "events:PutEvents"]
            .map(String::from),
    );
    let problems = policy_problems(&template, "Fn", &code_actions, &[]);
    assert_eq!(
        problems,
        [
            "Fn: s3:GetObject is granted on the vault bucket; it belongs on objects in the vault bucket",
            "Fn: sqs:SendMessage is granted on the notify queue; it belongs on the download queue or the notify dead-letter queue",
            "Fn: sqs:ChangeMessageVisibility is granted on the notify dead-letter queue; it belongs on the download queue or the notify queue",
            "Fn: the code needs events:PutEvents but FnRole does not grant it",
            "Fn: FnRole grants dynamodb:DeleteItem, which the code never calls",
        ]
    );

    let needed = BTreeSet::from(["TABLE_NAME", "LOG_LEVEL"].map(String::from));
    assert_eq!(
        environment_problems(&template, "Fn", &needed),
        [
            "Fn: the code reads LOG_LEVEL but the template does not set it",
            "Fn: the template sets TABLE_NAMES but the code never reads it",
        ]
    );
}

#[test]
fn every_function_reaches_only_the_s3_keys_it_uses() {
    let template = template();
    let keys = s3_keys::sample_keys();
    assert!(keys.files.len() > 50 && keys.bodies.len() > 50, "few sample keys: is the fixture list read?");
    let mut problems = Vec::new();
    for function in FUNCTIONS {
        problems.extend(s3_keys::problems(&template, function.logical_id, s3_keys::RULES, &keys));
    }
    assert!(problems.is_empty(), "template.yaml S3 grants disagree with the key layout:\n{}", problems.join("\n"));
}

/// The price of the downloader's Deny, as README's "Security model" states it: a file key that
/// ends like a body (`callbacks/`, then anything, then `-`, 64 characters and `.json`) is
/// refused. File name segments are at most 64 characters, so such a name needs a later
/// `callbacks` segment and a 64-character tail across segments.
#[test]
fn the_only_files_the_downloader_may_not_write_end_like_a_callback_body() {
    let template = template();
    let download = &s3_keys::grants(&template, "DownloadFunction")["s3:PutObject"];
    let tail = format!("{}/{}", "a".repeat(31), "b".repeat(32));
    assert!(!download.reaches(&format!("tasks/t/x/callbacks/first-{tail}.json")));
    assert!(download.reaches(&format!("tasks/t/x/callbacks/first-{tail}.mp3")));
    assert!(download.reaches(&format!("tasks/t/x/callbacks/first-{tail}x.json")));
    assert!(download.reaches(&format!("tasks/t/x/first-{tail}.json")));
}

#[test]
fn iam_wildcards_match_as_iam_does() {
    use s3_keys::matches;
    assert!(matches("tasks/*", "tasks/a/b/c"));
    assert!(matches("tasks/*/callbacks/*", "tasks/t/tracks/callbacks/audio"), "* crosses /");
    assert!(matches("tasks/*/callbacks/*", "tasks/t/callbacks/"), "* may be empty");
    assert!(!matches("tasks/*/*/callbacks/*", "tasks/t/callbacks/first-x.json"));
    assert!(matches("a?c", "abc") && !matches("a?c", "ac") && !matches("a?c", "abbc"));
    assert!(matches("*-??.json", "x-y-ab.json") && !matches("*-??.json", "x-abc.json"));
    assert!(!matches("tasks/*", "Tasks/a"), "resource patterns are case-sensitive");
    assert!(matches("*", "") && !matches("?", ""));
}

const TOO_BROAD: &str = r#"
Resources:
  VaultBucket: { Type: AWS::S3::Bucket }
  Ingest:
    Type: AWS::Serverless::Function
    Properties: { Role: !GetAtt IngestRole.Arn }
  IngestRole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: ingest
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: s3:PutObject
                Resource: !Sub "${VaultBucket.Arn}/tasks/*"
  IngestWithoutDeny:
    Type: AWS::Serverless::Function
    Properties: { Role: !GetAtt IngestWithoutDenyRole.Arn }
  IngestWithoutDenyRole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: ingest
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: s3:PutObject
                Resource: !Sub "${VaultBucket.Arn}/tasks/*/callbacks/*.json"
  Download:
    Type: AWS::Serverless::Function
    Properties: { Role: !GetAtt DownloadRole.Arn }
  DownloadRole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: download
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: [s3:PutObject, s3:DeleteObject]
                Resource: !Sub "${VaultBucket.Arn}/tasks/*"
              - Effect: Deny
                Action: s3:Put*
                Resource: !Sub "${VaultBucket.Arn}/tasks/*/manifest.json"
  Results:
    Type: AWS::Serverless::Function
    Properties: { Role: !GetAtt ResultsRole.Arn }
  ResultsRole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: results
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: s3:GetObject
                Resource: !Sub "${VaultBucket.Arn}/tasks/*/callbacks/*"
"#;

#[test]
fn s3_checks_report_too_broad_and_too_narrow_grants() {
    use s3_keys::{KeyRule, Reach::*, SampleKeys};
    let template: Value = serde_yaml::from_str(TOO_BROAD).unwrap();
    let keys = SampleKeys {
        files: vec!["tasks/t/vocal.mp3".into(), "tasks/t/tracks/callbacks/audio.json".into()],
        bodies: vec![format!("tasks/t/callbacks/first-{}.json", "0".repeat(64))],
        details: vec![format!("tasks/t/details/first-{}.json", "0".repeat(64))],
        manifests: vec!["tasks/t/manifest.json".into()],
        parked: vec![format!("parked/t/first-{}.json", "0".repeat(64))],
    };
    let ingest = |function| KeyRule {
        function,
        actions: &["s3:PutObject"],
        files: MustNot,
        bodies: Must,
        details: May,
        manifests: MustNot,
        parked: May,
    };
    let rules = [
        ingest("Ingest"),
        ingest("IngestWithoutDeny"),
        KeyRule {
            function: "Download",
            actions: &["s3:PutObject"],
            files: Must,
            bodies: MustNot,
            details: MustNot,
            manifests: Must,
            parked: MustNot,
        },
        KeyRule {
            function: "Results",
            actions: &["s3:GetObject"],
            files: Must,
            bodies: MustNot,
            details: Must,
            manifests: May,
            parked: May,
        },
    ];
    let problems: Vec<String> = ["Ingest", "IngestWithoutDeny", "Download", "Results"]
        .into_iter()
        .flat_map(|f| s3_keys::problems(&template, f, &rules, &keys))
        .collect();
    let (body, details) = (&keys.bodies[0], &keys.details[0]);
    assert_eq!(
        problems,
        [
            "Ingest: s3:PutObject reaches vaulted files (tasks/t/vocal.mp3)".to_owned(),
            "Ingest: s3:PutObject reaches manifests (tasks/t/manifest.json)".to_owned(),
            "IngestWithoutDeny: s3:PutObject reaches vaulted files (tasks/t/tracks/callbacks/audio.json)".to_owned(),
            "Download: s3:DeleteObject on vault objects, but no key rule says which keys it may reach".to_owned(),
            format!("Download: s3:PutObject reaches callback bodies ({body})"),
            format!("Download: s3:PutObject reaches kept details ({details})"),
            "Download: s3:PutObject does not reach manifests (tasks/t/manifest.json)".to_owned(),
            "Results: s3:GetObject does not reach vaulted files (tasks/t/vocal.mp3)".to_owned(),
            format!("Results: s3:GetObject reaches callback bodies ({body})"),
            format!("Results: s3:GetObject does not reach kept details ({details})"),
        ]
    );
}

const UNTHROTTLED: &str = r#"
Parameters:
  Rate: { Type: Number, Default: 10 }
  Burst: { Type: Number, Default: 0 }
  Reserved: { Type: Number, Default: 0 }
Resources:
  Ingest:
    Type: AWS::Serverless::Function
    Properties:
      ReservedConcurrentExecutions: !If [Reserves, !Ref Reserved, !Ref AWS::NoValue]
      Events:
        Callback:
          Type: HttpApi
          Properties:
            RouteSettings: { ThrottlingRateLimit: !Ref Rate, ThrottlingBurstLimit: !Ref Burst }
        CallbackWithToken:
          Type: HttpApi
          Properties: {}
  Results:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Task:
          Type: HttpApi
          Properties:
            RouteSettings: { ThrottlingRateLimit: !Ref Rate, ThrottlingBurstLimit: 5 }
  Download:
    Type: AWS::Serverless::Function
    Properties: {}
"#;

#[test]
fn flood_checks_report_unthrottled_routes_shared_limits_and_no_reservation() {
    let template: Value = serde_yaml::from_str(UNTHROTTLED).unwrap();
    let routes = [("Ingest", "Rate", "Burst"), ("Results", "Rate", "ResultsBurst")];
    assert_eq!(
        flood_problems(&template, &routes, "Ingest"),
        [
            "Ingest and Results share a throttling parameter",
            "Ingest CallbackWithToken: RouteSettings.ThrottlingRateLimit is not !Ref Rate",
            "Ingest CallbackWithToken: RouteSettings.ThrottlingBurstLimit is not !Ref Burst",
            "Burst: not a Number parameter with a positive default",
            "Results and Ingest share a throttling parameter",
            "Results Task: RouteSettings.ThrottlingBurstLimit is not !Ref ResultsBurst",
            "ResultsBurst: not a Number parameter with a positive default",
            "Reserved: ingest reserves no concurrency by default",
        ]
    );
    assert_eq!(
        flood_problems(&template, &[], "Download"),
        ["Download: no ReservedConcurrentExecutions from a parameter"]
    );
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
          { "type": "alarm", "properties": { "alarms": ["${FnErrors.Arn}", "${ThrottledByFunction.Arn}"] } },
          { "type": "metric", "properties": { "metrics": [
            ["stemvault", "FilesStored", "Function", "download"],
            ["AWS/Lambda", "Errors", "FunctionName", "${Gone}"]
          ] } }
        ] }
"#;

#[test]
fn alarm_checks_report_what_goes_unwatched() {
    let template: Value = serde_yaml::from_str(UNWATCHED).unwrap();
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
        "no alarm on files failed for good (FilesFailed, every reason)",
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
        "the dashboard does not show UnparsableCallbacksKept",
        "the dashboard does not show CallbackServerErrors",
        "the dashboard does not show CallbacksThrottled",
        "the dashboard does not show ResultsServerErrors",
        "the dashboard does not show FilesFailed",
        "the dashboard does not show BytesStored",
        "the dashboard does not show CopySeconds",
        "the dashboard does not show SecondsToSettled",
        "the dashboard does not show WebhooksDelivered",
        "the dashboard does not show WebhooksRejected",
        "the dashboard does not show WebhookRetries",
        "the dashboard does not show WebhooksLate",
        "the dashboard does not show ApproximateNumberOfMessagesVisible",
        "the dashboard does not show ApproximateAgeOfOldestMessage",
        "the dashboard does not show Throttles",
    ];
    assert_eq!(problems, expected);

    let broken_json = UNWATCHED.replace(r#""${ThrottledByFunction.Arn}"]"#, r#""${ThrottledByFunction.Arn}",]"#);
    let problems = eyes_problems(&serde_yaml::from_str(&broken_json).unwrap(), &["Watched"]);
    assert!(problems.last().unwrap().starts_with("the dashboard body is not JSON"), "{problems:?}");
    assert_eq!(
        substitute("a ${X.Arn} ${!Literal} ${AWS::Region}"),
        ("a X.Arn ${Literal} AWS::Region".into(), vec!["X.Arn".into(), "AWS::Region".into()])
    );
}

/// The checkov checks a resource skips (`Metadata: checkov: skip: - id: … comment: …`) that
/// name no check or give no one-line reason. (`make checkov` fails on a skip checkov reads
/// without a comment too; this also catches a malformed entry checkov would ignore.)
fn checkov_skip_problems(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().cloned().unwrap_or_default() {
        let name = name.as_str().unwrap_or_default();
        let skip = &resource["Metadata"]["checkov"]["skip"];
        if resource["Metadata"]["checkov"].is_mapping() && !skip.is_sequence() {
            problems.push(format!("{name}: checkov metadata without a skip list"));
        }
        for entry in cfn::as_list(skip) {
            let id = entry["id"].as_str().unwrap_or_default();
            if !(id.starts_with("CKV_") || id.starts_with("CKV2_")) {
                problems.push(format!("{name}: a checkov skip names no check ({entry:?})"));
            }
            match entry["comment"].as_str().map(str::trim) {
                Some(comment) if !comment.is_empty() && !comment.contains('\n') => {}
                _ => problems.push(format!("{name}: checkov skip {id} gives no one-line reason")),
            }
        }
    }
    problems
}

#[test]
fn every_checkov_skip_names_its_check_and_says_why() {
    let template = template();
    let problems = checkov_skip_problems(&template);
    assert!(problems.is_empty(), "template.yaml checkov skips:\n{}", problems.join("\n"));
}

#[test]
fn checkov_skips_without_a_reason_are_reported() {
    let template: Value = serde_yaml::from_str(
        r#"
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_27
            comment: SSE-SQS.
          - id: CKV_AWS_28
          - comment: no id
  Logs:
    Type: AWS::Logs::LogGroup
    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_158
            comment: "  "
"#,
    )
    .unwrap();
    let problems = checkov_skip_problems(&template);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(problems[0], "Queue: checkov skip CKV_AWS_28 gives no one-line reason");
    assert!(problems[1].starts_with("Queue: a checkov skip names no check"), "{problems:?}");
    assert_eq!(problems[2], "Logs: checkov skip CKV_AWS_158 gives no one-line reason");
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
    ];
    let mut emitted: Vec<(String, Vec<(&str, String)>)> = Vec::new();
    for measure in &measures {
        let (dimensions, metrics) = stemvault_download::aws::metrics_of("DownloadFunction", measure);
        let dimensions: Vec<(&str, String)> = dimensions.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        emitted.extend(metrics.iter().map(|m| (m.name.to_owned(), dimensions.clone())));
    }
    // Notify: every measure, likewise (its dashboard exists only with NotifyUrl).
    use stemvault_notify::domain::Measure as Delivery;
    let deliveries = [
        Delivery::Delivered,
        Delivery::Rejected { reason: "status_410".into() },
        Delivery::Retried { reason: "timeout".into(), late: true },
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
        Answer::UnparsableKept,
        Answer::SecretRereadFailed,
    ];
    for answer in &answers {
        let (dimensions, metrics) = stemvault_ingest::aws::metrics_of("IngestFunction", answer);
        let dimensions: Vec<(&str, String)> = dimensions.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        emitted.extend(metrics.iter().map(|m| (m.name.to_owned(), dimensions.clone())));
    }
    // The reconciler: its one measure, likewise.
    let parked = stemvault_reconciler::domain::Measure::ParkedCallbacks { still_parked: 1, refused: 1 };
    let (dimensions, metrics) = stemvault_reconciler::aws::metrics_of("ReconcilerFunction", &parked);
    let dimensions: Vec<(&str, String)> = dimensions.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
    emitted.extend(metrics.iter().map(|m| (m.name.to_owned(), dimensions.clone())));
    let unread: Vec<String> = emitted
        .iter()
        .filter(|(name, dimensions)| {
            let dimensions: Vec<(&str, &str)> = dimensions.iter().map(|(n, v)| (*n, v.as_str())).collect();
            !dashboard_reads(&dashboard, name, &dimensions)
        })
        .map(|(name, dimensions)| format!("{name} {dimensions:?}"))
        .collect();
    assert!(unread.is_empty(), "the dashboard does not read these metrics as emitted: {unread:?}");
    // And reads none by a name no function of this stack has (a logical name, another stack's).
    let functions: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.logical_id.to_owned()).collect();
    let strangers: Vec<String> = dashboard_function_values(&dashboard).difference(&functions).cloned().collect();
    assert!(strangers.is_empty(), "the dashboard reads metrics of Function {strangers:?}, not of a function here");

    // The permanent-failure alarm sums FilesFailed over the dimension set download emits.
    let (dimensions, _) = stemvault_download::aws::metrics_of("DownloadFunction", &Measure::Failed { reason: "x" });
    let names: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
    let query = format!(
        "SELECT SUM(FilesFailed) FROM SCHEMA({}, {}) WHERE Function = '{}'",
        stemvault_aws::metrics::NAMESPACE,
        names.join(", "),
        dimensions[0].1
    );
    let alarm = &cfn::resource(&template, "DownloadsFailedForGood")["Properties"]["Metrics"][0]["Expression"];
    let alarm = cfn::sub(alarm).map(|text| substitute(&text).0);
    assert_eq!(alarm.as_deref(), Some(query.as_str()), "a !Sub naming the download function");

    // The parked-callback alarm sums CallbacksParked over the dimensions ingest emits it with.
    let (dimensions, metrics) =
        stemvault_ingest::aws::metrics_of("IngestFunction", &Answer::Parked { reason: "timeout" });
    let names: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
    let query = format!(
        "SELECT SUM({}) FROM SCHEMA({}, {}) WHERE Function = 'IngestFunction'",
        metrics[0].name,
        stemvault_aws::metrics::NAMESPACE,
        names.join(", ")
    );
    let alarm = &cfn::resource(&template, "CallbacksParkedAlarm")["Properties"]["Metrics"][0]["Expression"];
    let alarm = cfn::sub(alarm).map(|text| substitute(&text).0);
    assert_eq!(alarm.as_deref(), Some(query.as_str()), "a !Sub naming the ingest function");

    // The rejected-webhooks alarm sums its metric over the dimensions notify emits it with.
    let (dimensions, metrics) =
        stemvault_notify::aws::metrics_of("NotifyFunction", &Delivery::Rejected { reason: "status_410".into() });
    let rejected = stemvault_notify::aws::WEBHOOKS_REJECTED;
    assert!(metrics.iter().any(|m| m.name == rejected), "{rejected} emitted");
    let names: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
    let query = format!(
        "SELECT SUM({rejected}) FROM SCHEMA({}, {}) WHERE Function = 'NotifyFunction'",
        stemvault_aws::metrics::NAMESPACE,
        names.join(", ")
    );
    let expression = &cfn::resource(&template, "WebhooksRejectedAlarm")["Properties"]["Metrics"][0]["Expression"];
    let expression = cfn::sub(expression).map(|text| substitute(&text).0);
    assert_eq!(expression.as_deref(), Some(query.as_str()), "a !Sub naming the notify function");

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
    let retried = Delivery::Retried { reason: "status_503".into(), late: true };
    assert_eq!(emitted(&retried), (true, Some(1.0)), "a late retry counts");
    assert_eq!(emitted(&Delivery::Delivered), (true, Some(0.0)), "a delivery counts 0");
    let query =
        format!("SELECT SUM({late}) FROM {} WHERE Function = 'NotifyFunction'", stemvault_aws::metrics::NAMESPACE);
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
            serde_yaml::from_str::<Value>(&format!("!Sub '${{AWS::StackName}}-{name}-secret-unreadable'")).unwrap()
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

/// Issue 11: the sweeper reads one item by key, its cursor, and may put it; its role grants
/// GetItem only on that partition (`dynamodb:LeadingKeys`), and the cursor's id is no task's.
/// (It puts the cursor with the PutItem its file and task items need.)
#[test]
fn the_sweeper_reads_and_writes_only_its_cursor_item_by_key() {
    use stemvault_sweeper::aws::{AWS_ACTIONS, CURSOR_TASK_ID};
    let template = template();
    let mut get_item_grants = Vec::new();
    for statement in cfn::role_statements(&template, "SweeperRole") {
        let actions = cfn::as_list(&statement["Action"]);
        if actions.iter().any(|a| a.as_str() == Some("dynamodb:GetItem")) {
            get_item_grants.push(statement.clone());
        }
    }
    assert_eq!(get_item_grants.len(), 1, "{get_item_grants:?}");
    let grant = &get_item_grants[0];
    assert_eq!(cfn::get_att(&grant["Resource"]).as_deref(), Some("TaskTable.Arn"));
    let keys = cfn::as_list(&grant["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"]);
    assert_eq!(keys.iter().map(|k| k.as_str().unwrap()).collect::<Vec<_>>(), [CURSOR_TASK_ID]);
    let granted: Vec<&str> = cfn::as_list(&grant["Action"]).iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(granted, ["dynamodb:GetItem"]);
    assert!(AWS_ACTIONS.contains(&"dynamodb:GetItem") && AWS_ACTIONS.contains(&"dynamodb:PutItem"));
    assert!(suno_callbacks::TaskId::parse(CURSOR_TASK_ID).is_err(), "no callback can name the cursor's partition");
}

/// A parameter a function parses at start-up refuses, at deploy time, what the function would
/// refuse: a stack that deploys and then cannot start answers every callback (or download)
/// with an error. Every sample a pattern accepts, the function accepts too.
#[test]
fn parameter_patterns_refuse_what_the_functions_would_refuse_at_start_up() {
    use stemvault_download::source_policy::SourcePolicy;
    use stemvault_ingest::secret::CallbackSecret;
    let template = template();
    let parameter = |name: &str| &template["Parameters"][name];
    let pattern = |name: &str| {
        let text = parameter(name)["AllowedPattern"].as_str().unwrap_or_else(|| panic!("{name}: no pattern"));
        regex::Regex::new(text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    let hosts = pattern("AllowedSourceHosts");
    let default = parameter("AllowedSourceHosts")["Default"].as_str().unwrap();
    assert!(hosts.is_match(default), "{default}");
    let host_lists = [
        default,
        "",
        "files_cdn.example.com",
        "[::1]",
        "http://127.0.0.1:3001",
        "a.com, b.com",
        "a.com,,b.com,",
        "https://h.example:8443/",
        "*.example.com.",
        "::1",
        "2001:db8::1",
        "http://[::1]:8080",
        "http://127.0.0.1:65535",
        "_dmarc.example.com",
    ];
    for list in host_lists {
        assert!(hosts.is_match(list), "{list:?}: refused by the pattern");
        assert!(SourcePolicy::parse(list).is_ok(), "{list:?}: accepted by the pattern, refused by the download");
    }
    for refused in [
        "a.com b.com",
        "a.com/path",
        "*.",
        "https://u:p@h.example/",
        "[::1",
        "::1]",
        ".a.com",
        "https://h.example/?x",
        "https://h.example#f",
        "http://h.example:65536",
        "http://h.example:99999",
        "foo..bar",
        "-foo.com",
        "foo-.com",
        "a.-b.com",
        "a.com:8080",
        "ad.be:80",
    ] {
        assert!(!hosts.is_match(refused), "{refused:?}");
        assert!(SourcePolicy::parse(refused).is_err(), "{refused:?}: the download would start with it");
    }

    // The secret's JSON as the template writes it: each key between quotes, as typed.
    let keys = pattern("WebhookHmacKeys");
    for list in [
        "",
        "k1",
        "k1,k2",
        " k1 , k2 ",
        "a key",
        "k1,",
        ",k1",
        "k1,,k2",
        " ",
        "k1, ",
        "a\tkey",
        "k1,k\u{1}",
        "k1,\u{a0}",
        "k1,\u{a0}k2",
    ] {
        let secret = format!(
            r#"{{"webhook_hmac_keys": ["{}"], "callback_token": null}}"#,
            list.split(',').collect::<Vec<_>>().join(r#"",""#)
        );
        let ingest_starts = list.is_empty() || CallbackSecret::parse(&secret).is_ok();
        assert_eq!(keys.is_match(list), ingest_starts, "{list:?}");
    }
    let api_key = pattern("ProviderApiKey");
    for key in ["", "sk-123", "a key", "a\tkey", "k\u{1}"] {
        // A secret that is no JSON is read as the key itself: the whole text, sent and refused.
        let secret = stemvault_aws::secrets::SecretText::new(format!(r#"{{"api_key": "{key}"}}"#));
        let read = stemvault_aws::provider::ApiKey::from_secret(&secret);
        let key_as_typed = match &read {
            Ok(Some(read)) => read.expose() == key,
            Ok(None) => key.is_empty(),
            Err(_) => false,
        };
        assert_eq!(api_key.is_match(key), key_as_typed, "{key:?}");
    }

    let notify = pattern("NotifyUrl");
    for url in [
        "https://h.example/hook?token=t",
        "https://h.example:8443/a@b",
        "https://u:p@h.example/x",
        "https://h.example/x#f",
        "https://h.example:65535/x",
        "https://h.example:65536/x",
        "https://h.example:99999/",
        "https://[oops/",
        "https://[::1]:8443/hook",
        "https://hooks.bücher.example/x",
        "https://h.example?token=t",
        "https://a|b/",
        "https://a<b/",
        "https://a^b/",
    ] {
        let notify_starts = stemvault_notify::config::notify_url(url).is_ok();
        assert_eq!(notify.is_match(url), notify_starts, "{url}");
    }

    // Empty is the provider's default; anything else the download and the reconciler check.
    let provider = pattern("ProviderBaseUrl");
    for url in [
        "https://api.kie.ai",
        "https://api.kie.ai/",
        "https://proxy.example:8443/suno/v1",
        "https://h.example:65535",
        "https://u:p@api.kie.ai",
        "https://api.kie.ai:65536",
        "https://api.kie.ai:99999",
        "https://api.kie.ai/?x=1",
        "https://api.kie.ai/#f",
        "http://api.kie.ai",
    ] {
        let functions_start = stemvault_aws::provider::base_url(url).is_ok();
        assert_eq!(provider.is_match(url), functions_start, "{url}");
    }
    assert!(provider.is_match(""));
}

/// Scheduled runs are not retried or kept for later by Lambda (either overlaps the next run,
/// which does the same work), and the stack refuses a provider key given beside an existing provider secret.
#[test]
fn scheduled_runs_are_not_retried_and_one_provider_key_is_given() {
    let template = template();
    for function in ["SweeperFunction", "ReconcilerFunction"] {
        let config = &cfn::resource(&template, function)["Properties"]["EventInvokeConfig"];
        assert_eq!(config["MaximumRetryAttempts"].as_u64(), Some(0), "{function}");
        // Nor kept for later when throttled (Lambda's default: 6 hours); 60 s is the least.
        assert_eq!(config["MaximumEventAgeInSeconds"].as_u64(), Some(60), "{function}");
    }
    let rule = &template["Rules"]["OneProviderKey"];
    assert_eq!(
        rule["RuleCondition"],
        serde_yaml::from_str::<Value>(r#"!Not [!Equals [!Ref ProviderSecretArn, ""]]"#).unwrap()
    );
    assert_eq!(
        rule["Assertions"][0]["Assert"],
        serde_yaml::from_str::<Value>(
            r#"!Or [!Equals [!Ref ProviderApiKey, ""], !Equals [!Ref ProviderApiKey, none]]"#
        )
        .unwrap()
    );
}

/// Whether a condition or rule expression (`Equals`, `Not`, `And`, `Or`, `Condition`, `Ref`
/// of a parameter) holds with `given` parameter values, the others at their defaults.
fn holds(template: &Value, expression: &Value, given: &BTreeMap<&str, &str>) -> bool {
    let value = |v: &Value| -> String {
        match cfn::reference(v) {
            Some(name) => given.get(name.as_str()).map_or_else(
                || template["Parameters"][name.as_str()]["Default"].as_str().unwrap_or_default().to_owned(),
                |v| (*v).to_owned(),
            ),
            None => v.as_str().unwrap_or_else(|| panic!("not a string or Ref: {v:?}")).to_owned(),
        }
    };
    let (tag, args) = cfn::intrinsic(expression).unwrap_or_else(|| panic!("not an intrinsic: {expression:?}"));
    let all = || args.as_sequence().unwrap_or_else(|| panic!("{tag}: not a list")).iter();
    match tag.as_str() {
        "Equals" => {
            let pair: Vec<String> = all().map(value).collect();
            pair[0] == pair[1]
        }
        "Not" => !holds(template, &args[0], given),
        "And" => all().all(|a| holds(template, a, given)),
        "Or" => all().any(|a| holds(template, a, given)),
        "Condition" => holds(template, &template["Conditions"][args.as_str().unwrap()], given),
        "Contains" => {
            let (list, item) = (&args[0], value(&args[1]));
            list.as_sequence().unwrap_or_else(|| panic!("Contains: not a list")).iter().any(|v| value(v) == item)
        }
        other => panic!("{other} is not evaluated here"),
    }
}

/// `sam deploy --guided` prompts for every parameter and takes no empty answer for a NoEcho
/// one: each NoEcho parameter takes `none` for unset, and the conditions and rules read it so.
#[test]
fn a_noecho_parameter_is_unset_when_none_as_the_guided_deploy_must_type_it() {
    let template = template();
    let parameters = template["Parameters"].as_mapping().unwrap();
    let no_echo: BTreeSet<&str> =
        parameters.iter().filter(|(_, p)| p["NoEcho"] == true).filter_map(|(name, _)| name.as_str()).collect();
    let unset_when_none = [
        ("WebhookHmacKeys", "HasWebhookHmacKeys", "k1"),
        ("CallbackToken", "HasCallbackToken", "a-long-enough-token"),
        ("ProviderApiKey", "HasProviderApiKey", "sk-123"),
        ("NotifyUrl", "HasNotifyUrl", "https://hooks.example/x"),
    ];
    assert_eq!(no_echo, unset_when_none.iter().map(|(p, ..)| *p).collect(), "every NoEcho parameter, and only those");
    for (parameter, condition, set) in unset_when_none {
        let pattern = regex::Regex::new(parameters[parameter]["AllowedPattern"].as_str().unwrap()).unwrap();
        let has = |value: &str| {
            assert!(pattern.is_match(value), "{parameter}: {value:?} refused by its pattern");
            holds(&template, &template["Conditions"][condition], &BTreeMap::from([(parameter, value)]))
        };
        assert_eq!((has(""), has("none"), has(set)), (false, false, true), "{parameter}");
    }

    let rule = |name: &str, i: usize| &template["Rules"][name]["Assertions"][i]["Assert"];
    let given = |pairs: &[(&'static str, &'static str)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
    let none = [("WebhookHmacKeys", "none"), ("CallbackToken", "none")];
    assert!(!holds(&template, rule("CallbacksMustBeAuthenticated", 0), &given(&none)), "none of the three: refused");
    let hmac_only = given(&[("WebhookHmacKeys", "k1"), ("CallbackToken", "none")]);
    assert!(holds(&template, rule("CallbacksMustBeAuthenticated", 0), &hmac_only));
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:cb-AbCdEf";
    let own_secret = given(&[("WebhookHmacKeys", "none"), ("CallbackToken", "none"), ("CallbackSecretArn", arn)]);
    assert!(holds(&template, rule("CallbacksMustBeAuthenticated", 0), &own_secret));
    assert!(holds(&template, rule("CallbacksMustBeAuthenticated", 1), &own_secret), "none beside an own secret");
    let own_provider_secret = given(&[("ProviderApiKey", "none"), ("ProviderSecretArn", arn)]);
    assert!(holds(&template, rule("OneProviderKey", 0), &own_provider_secret));
    // Another case of none is refused where it would be taken as a value (the patterns of
    // CallbackToken and NotifyUrl refuse it already).
    for (i, parameter) in ["WebhookHmacKeys", "ProviderApiKey"].into_iter().enumerate() {
        let lower_case =
            |value: &'static str| holds(&template, rule("NoneIsLowerCase", i), &given(&[(parameter, value)]));
        assert_eq!((lower_case("none"), lower_case(""), lower_case("k1")), (true, true, true), "{parameter}");
        assert_eq!((lower_case("None"), lower_case("NONE")), (false, false), "{parameter}");
    }
    for parameter in ["CallbackToken", "NotifyUrl"] {
        let pattern = regex::Regex::new(parameters[parameter]["AllowedPattern"].as_str().unwrap()).unwrap();
        assert!(!pattern.is_match("None") && !pattern.is_match("NONE"), "{parameter}");
    }
    let webhooks_off = &template["Rules"]["WebhooksNeedANotifyUrl"]["RuleCondition"];
    assert!(holds(&template, webhooks_off, &given(&[("NotifyUrl", "none")])));
    // The created provider secret holds no key for `none`.
    let secret = &cfn::resource(&template, "ProviderSecret")["Properties"]["SecretString"];
    let (tag, args) = cfn::intrinsic(secret).expect("an !If");
    assert_eq!((tag.as_str(), args[0].as_str()), ("If", Some("HasProviderApiKey")));
    assert_eq!(args[2], r#"{"api_key": ""}"#);
}

/// A batch is as large as the messages a function handles at once: a larger one leaves the
/// rest waiting for a permit inside the same invocation deadline (a late copy can be cut off
/// and retried while its URL ages).
#[test]
fn each_queue_batch_is_as_large_as_the_messages_handled_at_once() {
    let template = template();
    for (function, event, at_once) in [
        ("DownloadFunction", "Jobs", stemvault_download::app::MAX_CONCURRENT_MESSAGES),
        ("NotifyFunction", "Events", stemvault_notify::app::MAX_CONCURRENT_MESSAGES),
    ] {
        let source = &cfn::resource(&template, function)["Properties"]["Events"][event]["Properties"];
        assert_eq!(source["BatchSize"].as_u64(), Some(at_once as u64), "{function}");
    }
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

/// Results answers within its bound, with time to spare under the function's timeout (the
/// invocation killed by it answers API Gateway's bare 500).
#[test]
fn results_answers_before_its_timeout() {
    let template = template();
    let timeout = cfn::number(&cfn::function_properties(&template, "ResultsFunction")["Timeout"]);
    let within = stemvault_results::app::ANSWER_WITHIN;
    assert!(
        within + std::time::Duration::from_secs(1) < std::time::Duration::from_secs(timeout),
        "{within:?} of {timeout} s"
    );
}
