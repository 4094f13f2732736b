//! template.yaml agrees with the code it deploys:
//! - each function is an arm64 cargo-lambda build of its crate's binary;
//! - each function's environment sets exactly the variables it declares
//!   (`config::ENVIRONMENT`, which its `Config` reads through `stemvault_aws::Env`, plus
//!   `stemvault_aws::logging::ENVIRONMENT`);
//! - each function's IAM policy grants exactly the actions it declares (`aws::AWS_ACTIONS`),
//!   each on the right resource (plus its own log group, and the SQS event source's actions
//!   for download and notify);
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
//!   shows every alarm and metric; each dead-letter queue warns days before its messages
//!   expire, each queue a function receives from short of SQS's in-flight limit, and the
//!   README's cost model counts the alarms;
//! - every checkov skip names its check and gives a one-line reason;
//! - webhooks (only with `NotifyUrl`): a rule on the event bus sends every stemvault event to
//!   the notify queue (which only that rule may send to), whose retention, redrive and
//!   visibility timeout fit the notify function's retry delays (`stemvault_notify::domain`),
//!   with its dead-letter queue alarmed, which the notify function alone may send to (a 410'd
//!   event) and nothing may send to the notify queue but the rule; every notify resource
//!   exists only with `NotifyUrl`;
//! - the code items its comments name as where a value comes from exist.
//!
//! Each check has a test that feeds it a broken template and expects its complaints.
//!
//! As a cross-check of the declarations, every AWS SDK call written in a function crate's
//! production code, or in the shared adapter modules it uses (but the task table's), must be
//! covered by its `AWS_ACTIONS` (see `sdk_calls`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use stemvault_aws::provision::{DLQ_RETENTION_SECONDS, DOWNLOAD_QUEUE_VISIBILITY_TIMEOUT_SECONDS, SQS_MANAGED_SSE};
use stemvault_vault::download::MAX_RECEIVE_COUNT;
use yaml_serde::Value;

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
    yaml_serde::from_str(&read(&repo().join("template.yaml"))).expect("template.yaml parses")
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

/// The alarms and the dashboards.
#[path = "template_agrees/monitoring.rs"]
mod monitoring;

/// Flood protection: route throttles and reserved concurrency.
#[path = "template_agrees/flood.rs"]
mod flood;

/// The parameters, their rules and conditions.
#[path = "template_agrees/parameters.rs"]
mod parameters;

/// README.md's links to its own headings, and its contents.
#[path = "template_agrees/readme.rs"]
mod readme;

/// The IAM actions of the SDK calls written in a function crate's production code, and in
/// the shared adapter modules it uses ([`shared_modules_used`]).
fn sdk_calls_in(function: &Function) -> BTreeSet<String> {
    let src = repo().join("functions").join(function.crate_dir).join("src");
    let own = sdk_calls::production_sources(&src);
    let shared = shared_adapters();
    let used = shared_modules_used(own.values().map(String::as_str), &shared);
    let codes = own.values().chain(used.iter().map(|m| &shared[m]));
    codes.flat_map(|code| sdk_calls::sdk_actions(code)).collect()
}

/// The production code of each module of `stemvault_aws` (shared/aws/src/<module>.rs).
fn shared_adapters() -> BTreeMap<String, String> {
    let src = repo().join("shared/aws/src");
    sdk_calls::production_sources(&src)
        .into_iter()
        .filter(|(path, _)| path.parent() == Some(src.as_path()))
        .map(|(path, code)| (path.file_stem().unwrap().to_string_lossy().into_owned(), code))
        .collect()
}

/// The `stemvault_aws` modules `code` names (`stemvault_aws::events`, `use
/// stemvault_aws::{ConfigError, deadline}`), and those they name (`crate::table`), all the
/// way down. But `table`: `TaskTable` makes every kind of item write and read, and each
/// function declares those of the methods it calls (download updates and queries, never puts).
/// A module counts whole: one whose calls only some of its users make would ask them all for
/// every action (keep such calls in `table`, or in the functions). Nested braces and items
/// re-exported from the crate's root are not followed: name the module.
fn shared_modules_used<'a>(code: impl Iterator<Item = &'a str>, shared: &BTreeMap<String, String>) -> BTreeSet<String> {
    let named_in = |code: &str, prefix: &str| -> Vec<String> {
        let mut names = Vec::new();
        for (at, _) in code.match_indices(prefix) {
            let rest = &code[at + prefix.len()..];
            // `{a, b}`: each; a path: its first segment.
            let items: Vec<&str> = match rest.strip_prefix('{') {
                Some(braced) => braced[..braced.find('}').unwrap_or(braced.len())].split(',').collect(),
                None => vec![rest],
            };
            for item in items {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if shared.contains_key(&name) && name != "table" {
                    names.push(name);
                }
            }
        }
        names
    };
    let mut used: BTreeSet<String> = code.flat_map(|c| named_in(c, "stemvault_aws::")).collect();
    let mut todo: Vec<String> = used.iter().cloned().collect();
    while let Some(module) = todo.pop() {
        for inner in named_in(&shared[&module], "crate::") {
            if used.insert(inner.clone()) {
                todo.push(inner);
            }
        }
    }
    used
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

/// Differences between a function's IAM grants and the calls its code makes (and its log
/// settings: its own log group, the `Text` format).
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
    let logging = props.get("LoggingConfig");
    let own_log_group = logging.and_then(|l| l.get("LogGroup")).and_then(cfn::reference);
    // The functions write their own JSON lines, EMF metrics among them (which name no level):
    // in Lambda's JSON log format a console log level would filter them.
    if logging.and_then(|l| l.get("LogFormat")).and_then(|f| f.as_str()) != Some("Text") {
        problems.push(format!("{function}: LoggingConfig's LogFormat is not Text"));
    }
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

/// Every function the template deploys and every crate under `functions/` is in
/// `FUNCTIONS`, so that each is checked: one added to the template or the workspace alone
/// fails here.
#[test]
fn every_function_is_checked() {
    let template = template();
    let resources = template["Resources"].as_mapping().cloned().unwrap_or_default();
    let deployed: BTreeSet<String> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .filter_map(|(name, _)| name.as_str().map(str::to_owned))
        .collect();
    let checked: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.logical_id.to_owned()).collect();
    assert_eq!(deployed, checked, "the template's functions and FUNCTIONS");
    // Directories, as the Makefile builds one bootstrap per `functions/*/`.
    let crates: BTreeSet<String> = std::fs::read_dir(repo().join("functions"))
        .expect("functions/")
        .filter_map(|entry| entry.ok().filter(|e| e.path().is_dir())?.file_name().into_string().ok())
        .collect();
    let checked: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.crate_dir.to_owned()).collect();
    assert_eq!(crates, checked, "the crates under functions/ and FUNCTIONS");
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
    for function in FUNCTIONS {
        let called = sdk_calls_in(function);
        // Every function makes some (notify through the shared secrets and SQS batch modules).
        assert!(
            !called.is_empty(),
            "{}: no SDK call found; is the cross-check still reading them?",
            function.crate_dir
        );
        let declared = function.actions();
        let undeclared: Vec<&String> = called.difference(&declared).collect();
        assert!(
            undeclared.is_empty(),
            "{}: calls {undeclared:?} without declaring them in AWS_ACTIONS",
            function.crate_dir
        );
    }
}

/// The modules a function uses are found whether named in a path or in a braced `use`, and
/// through the modules they use; `table` is left to the functions' own declarations.
#[test]
fn the_shared_modules_a_function_uses_are_found_all_the_way_down() {
    let shared = shared_adapters();
    let found = |code: &str| shared_modules_used(std::iter::once(code), &shared);
    let used = found(
        "use stemvault_aws::{ConfigError, deadline};\nlet bus = stemvault_aws::events::EventBus::new(sdk, name);",
    );
    assert!(used.contains("deadline") && used.contains("events") && used.contains("sqs_text"), "{used:?}");
    let used = found("stemvault_aws::enqueue::TableAndQueue::new(sdk, t, q)");
    assert!(used.contains("enqueue") && !used.contains("table"), "{used:?}");
    assert!(found("stemvault_aws::ConfigError").is_empty());
}

/// The vault bucket's lifecycle rules, as the emulator's bucket is provisioned
/// (tests/tests/provision.rs reads those back from the emulator), and the one
/// `ArchiveVaultedFilesAfterDays` adds (off by default, as locally).
#[test]
fn bucket_lifecycle_equals_the_emulator_provisioning() {
    use stemvault_aws::provision::{
        ABORT_INCOMPLETE_MULTIPART_DAYS, NONCURRENT_VERSION_DAYS, PARKED_NONCURRENT_VERSION_DAYS,
    };
    let template = template();
    let listed = &cfn::resource(&template, "VaultBucket")["Properties"]["LifecycleConfiguration"]["Rules"];
    // `!If [condition, rule, !Ref AWS::NoValue]`, as (condition, rule).
    let conditional = |r: &Value| match cfn::intrinsic(r) {
        Some((tag, Value::Sequence(branches))) if tag == "If" && branches.len() == 3 => {
            assert_eq!(cfn::reference(&branches[2]).as_deref(), Some("AWS::NoValue"));
            Some((branches[0].as_str().unwrap_or_default().to_owned(), branches[1].clone()))
        }
        _ => None,
    };
    let (mut rules, mut optional) = (Vec::new(), Vec::new());
    for r in listed.as_sequence().into_iter().flatten() {
        match conditional(r) {
            Some(found) => optional.push(found),
            None => rules.push(r.clone()),
        }
    }
    let rule = |id: &str| {
        let found = rules.iter().find(|r| r["Id"].as_str() == Some(id));
        found.unwrap_or_else(|| panic!("no lifecycle rule {id}")).clone()
    };
    assert_eq!(rules.len(), 3, "the three rules the emulator's bucket has");
    let every = rules.iter().chain(optional.iter().map(|(_, r)| r));
    assert!(every.clone().all(|r| r["Status"].as_str() == Some("Enabled")));
    let [(condition, archive)] = optional.as_slice() else { panic!("one optional rule: {optional:?}") };
    assert_eq!((condition.as_str(), archive["Id"].as_str()), ("ArchivesVaultedFiles", Some("ArchiveVaultedFiles")));
    let prefix = archive["Prefix"].as_str().unwrap_or_default();
    let task = suno_callbacks::TaskId::parse("t1").unwrap();
    assert!(prefix.ends_with('/') && suno_callbacks::s3_key::task_prefix(&task).starts_with(prefix), "{prefix}");
    let transitions = cfn::as_list(&archive["Transitions"]);
    let [transition] = transitions.as_slice() else { panic!("one transition") };
    assert_eq!(transition["StorageClass"].as_str(), Some("GLACIER_IR"));
    assert_eq!(cfn::reference(&transition["TransitionInDays"]).as_deref(), Some("ArchiveVaultedFilesAfterDays"));
    let when = &template["Conditions"]["ArchivesVaultedFiles"];
    assert!(format!("{when:?}").contains("ArchiveVaultedFilesAfterDays"), "{when:?}");
    let days = |n: i32| u64::try_from(n).unwrap();
    let abort = rule("AbortIncompleteMultipartUploads");
    assert_eq!(
        cfn::number(&abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]),
        days(ABORT_INCOMPLETE_MULTIPART_DAYS)
    );
    let noncurrent = rule("ExpireNoncurrentVersions");
    assert_eq!(
        cfn::number(&noncurrent["NoncurrentVersionExpiration"]["NoncurrentDays"]),
        days(NONCURRENT_VERSION_DAYS)
    );
    assert_eq!(noncurrent["ExpiredObjectDeleteMarker"].as_bool(), Some(true));
    let parked = rule("ForgetReplayedParkedCallbacks");
    assert_eq!(parked["Prefix"].as_str(), Some(suno_callbacks::s3_key::PARKED_PREFIX));
    assert_eq!(
        cfn::number(&parked["NoncurrentVersionExpiration"]["NoncurrentDays"]),
        days(PARKED_NONCURRENT_VERSION_DAYS)
    );
    assert_eq!(parked["ExpiredObjectDeleteMarker"].as_bool(), Some(true));
}

#[test]
fn queue_settings_equal_the_emulator_provisioning() {
    let template = template();
    let queue = &cfn::resource(&template, "DownloadQueue")["Properties"];
    assert_eq!(cfn::number(&queue["VisibilityTimeout"]), u64::from(DOWNLOAD_QUEUE_VISIBILITY_TIMEOUT_SECONDS));
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
    assert_eq!(timeout, stemvault_download::domain::FUNCTION_TIMEOUT.as_secs(), "as the local runner gives a batch");
    assert!(
        u64::from(DOWNLOAD_QUEUE_VISIBILITY_TIMEOUT_SECONDS) >= 6 * timeout,
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

/// Each dead-letter queue warns before SQS deletes what it holds: an alarm on its oldest
/// message's age (which counts from when the message got there) fires with a day or more
/// left of its retention (which counts from when it was first sent), however long its
/// source queue held it: every receive waiting the longest a receive can (a source's or
/// receiver's longest `Retry-After`, or the visibility timeout), capped by that queue's
/// retention.
#[test]
fn each_dead_letter_queue_warns_before_its_messages_expire() {
    use stemvault_notify::domain as notify;
    use stemvault_vault::download;
    let template = template();
    let day = 24 * 3600;
    let download_receive =
        download::MAX_RETRY_AFTER.as_secs().max(u64::from(DOWNLOAD_QUEUE_VISIBILITY_TIMEOUT_SECONDS));
    let notify_receive = notify::MAX_RETRY_AFTER
        .max(notify::MAX_RETRY_DELAY)
        .as_secs()
        .max(u64::from(notify::QUEUE_VISIBILITY_TIMEOUT_SECONDS));
    let queues = [
        (
            "DeadLettersExpiring",
            "DownloadDeadLetterQueue",
            "DownloadQueue",
            u64::from(MAX_RECEIVE_COUNT) * download_receive,
        ),
        (
            "NotifyDeadLettersExpiring",
            "NotifyDeadLetterQueue",
            "NotifyQueue",
            u64::from(notify::MAX_RECEIVE_COUNT) * notify_receive,
        ),
    ];
    let targets: BTreeSet<String> = template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter_map(|r| cfn::get_att(&r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]))
        .collect();
    let watched: BTreeSet<String> = queues.iter().map(|(_, dlq, ..)| format!("{dlq}.Arn")).collect();
    assert_eq!(targets, watched, "every dead-letter queue is watched here");
    for (alarm, dlq, source, longest_receives) in queues {
        let alarm = &cfn::resource(&template, alarm)["Properties"];
        assert_eq!(
            (alarm["Namespace"].as_str(), alarm["MetricName"].as_str()),
            (Some("AWS/SQS"), Some("ApproximateAgeOfOldestMessage"))
        );
        assert_eq!(alarm["Dimensions"][0]["Name"].as_str(), Some("QueueName"));
        assert_eq!(cfn::get_att(&alarm["Dimensions"][0]["Value"]), Some(format!("{dlq}.QueueName")));
        assert_eq!(
            (alarm["Statistic"].as_str(), alarm["ComparisonOperator"].as_str(), alarm["TreatMissingData"].as_str()),
            (Some("Maximum"), Some("GreaterThanThreshold"), Some("notBreaching"))
        );
        // Past the threshold, the alarm takes its evaluation periods to fire.
        let firing = cfn::number(&alarm["Period"]) * cfn::number(&alarm["EvaluationPeriods"]);
        let threshold = cfn::number(&alarm["Threshold"]) + firing;
        let retention = cfn::number(&cfn::resource(&template, dlq)["Properties"]["MessageRetentionPeriod"]);
        let held = longest_receives
            .min(cfn::number(&cfn::resource(&template, source)["Properties"]["MessageRetentionPeriod"]));
        assert!(threshold + held + day <= retention, "{dlq}: {threshold} s + {held} s held + a day > {retention} s");
        assert!(threshold >= 7 * day, "{dlq}: a reminder, not the not-empty alarm again");
    }
}

/// Each queue a function receives from warns short of SQS's in-flight limit for a standard
/// queue (about 120,000 received or delayed messages), past which its receives fail.
#[test]
fn each_received_queue_warns_short_of_the_in_flight_limit() {
    const IN_FLIGHT_LIMIT: u64 = 120_000;
    let template = template();
    let received: BTreeSet<String> = FUNCTIONS
        .iter()
        .flat_map(|f| {
            let events = cfn::function_properties(&template, f.logical_id)["Events"].clone();
            let events: Vec<Value> = events.as_mapping().map(|m| m.values().cloned().collect()).unwrap_or_default();
            events.into_iter().filter(|e| e["Type"] == "SQS").filter_map(|e| cfn::get_att(&e["Properties"]["Queue"]))
        })
        .collect();
    assert_eq!(received, BTreeSet::from(["DownloadQueue.Arn".to_owned(), "NotifyQueue.Arn".to_owned()]));
    let alarms: Vec<&Value> = template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| {
            let alarm = &r["Properties"];
            alarm["Namespace"] == "AWS/SQS"
                && alarm["MetricName"] == "ApproximateNumberOfMessagesNotVisible"
                && alarm["Dimensions"][0]["Name"] == "QueueName"
        })
        .collect();
    for queue in received {
        let name = queue.replace(".Arn", ".QueueName");
        let alarm =
            alarms.iter().find(|a| cfn::get_att(&a["Properties"]["Dimensions"][0]["Value"]) == Some(name.clone()));
        let alarm = &alarm.unwrap_or_else(|| panic!("no in-flight alarm on {queue}"))["Properties"];
        let threshold = cfn::number(&alarm["Threshold"]);
        assert!((IN_FLIGHT_LIMIT / 2..=IN_FLIGHT_LIMIT * 9 / 10).contains(&threshold), "{queue}: {threshold}");
        assert_eq!(
            (alarm["Statistic"].as_str(), alarm["ComparisonOperator"].as_str()),
            (Some("Maximum"), Some("GreaterThanThreshold"))
        );
    }
}

#[test]
fn webhooks_are_fed_by_a_rule_through_the_notify_queue_only_with_a_notify_url() {
    use stemvault_notify::domain::{MAX_RECEIVE_COUNT, MAX_RETRY_DELAY, QUEUE_RETENTION};
    let template = template();
    let rule = &cfn::resource(&template, "NotifyRule")["Properties"];
    assert_eq!(cfn::reference(&rule["EventBusName"]).as_deref(), Some("EventBus"));
    assert_eq!(rule["EventPattern"], yaml_serde::from_str::<Value>("{source: [stemvault]}").unwrap());
    assert_eq!(rule["EventPattern"]["source"][0], stemvault_vault::events::EVENT_SOURCE);
    let targets = cfn::as_list(&rule["Targets"]);
    assert_eq!(targets.len(), 1);
    assert_eq!(cfn::get_att(&targets[0]["Arn"]).as_deref(), Some("NotifyQueue.Arn"));
    // What the rule cannot deliver is dead-lettered where the alarm watches, not dropped.
    assert_eq!(cfn::get_att(&targets[0]["DeadLetterConfig"]["Arn"]).as_deref(), Some("NotifyDeadLetterQueue.Arn"));

    let queue = &cfn::resource(&template, "NotifyQueue")["Properties"];
    assert_eq!(cfn::number(&queue["MessageRetentionPeriod"]), QUEUE_RETENTION.as_secs());
    assert_eq!(cfn::number(&queue["RedrivePolicy"]["maxReceiveCount"]), u64::from(MAX_RECEIVE_COUNT));
    assert_eq!(
        cfn::get_att(&queue["RedrivePolicy"]["deadLetterTargetArn"]).as_deref(),
        Some("NotifyDeadLetterQueue.Arn")
    );
    let dlq = &cfn::resource(&template, "NotifyDeadLetterQueue")["Properties"];
    assert!(cfn::number(&dlq["MessageRetentionPeriod"]) > QUEUE_RETENTION.as_secs(), "the DLQ keeps them longer");
    // The oldest age SQS counts is of events received fewer than three times: past their two
    // longest waits (and two invocations), nothing is receiving them, long before they expire.
    let stalled = &cfn::resource(&template, "NotifyQueueStalled")["Properties"];
    let longest_wait = MAX_RETRY_DELAY.max(stemvault_notify::domain::MAX_RETRY_AFTER).as_secs();
    let two_waits = 2 * (longest_wait + stemvault_notify::domain::FUNCTION_TIMEOUT.as_secs());
    let threshold = cfn::number(&stalled["Threshold"]);
    assert!(threshold > two_waits && threshold < QUEUE_RETENTION.as_secs() / 4, "{threshold}");
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
        // The bus's rules: naming the notify rule itself would have the rule made first, and
        // live (dropping what it could not yet deliver) before the policies.
        let source: Value = yaml_serde::from_str(
            r#"!Sub "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/${EventBus}/*""#,
        )
        .unwrap();
        assert_eq!(statements[0]["Condition"]["ArnLike"]["aws:SourceArn"], source);
    }
    let depends_on: Vec<Value> =
        cfn::as_list(&cfn::resource(&template, "NotifyRule")["DependsOn"]).into_iter().cloned().collect();
    assert_eq!(
        depends_on,
        [Value::from("NotifyQueuePolicy"), Value::from("NotifyDeadLetterQueuePolicy")],
        "made after the policies"
    );

    let alarm = &cfn::resource(&template, "NotifyDeadLetterQueueNotEmpty")["Properties"];
    assert_eq!(alarm["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(cfn::get_att(&alarm["Dimensions"][0]["Value"]).as_deref(), Some("NotifyDeadLetterQueue.QueueName"));
    // What the rule could put on neither queue is lost: alarmed, on the rule's own metric,
    // selected by the rule's name alone (the documentation gives a custom bus's rule metrics
    // either with the bus's name beside it or without; a fixed dimension set matches only one).
    let lost = &cfn::resource(&template, "NotifyEventsLost")["Properties"];
    assert!(lost.get("Dimensions").is_none() && lost.get("MetricName").is_none(), "a query, not one dimension set");
    let query = cfn::intrinsic(&lost["Metrics"][0]["Expression"]).expect("a !Sub");
    let Value::Sequence(sub) = query.1 else { panic!("a !Sub with its variables: {query:?}") };
    assert_eq!(
        sub[0], r#"SELECT SUM(InvocationsFailedToBeSentToDlq) FROM "AWS/Events" WHERE "RuleName" = '${Rule}'"#,
        "every dimension set the rule's name is in"
    );
    // The rule's name, the last part of its ARN (`rule/<bus>/<name>`), so the rule need not be
    // named (a named rule cannot be replaced, and its 64 characters would bound the stack name).
    let name: Value = yaml_serde::from_str(r#"!Select [2, !Split ["/", !GetAtt NotifyRule.Arn]]"#).unwrap();
    assert_eq!(sub[1]["Rule"], name, "the rule's name");
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

/// A secret the stack made is rewritten by any update that changes how the template writes
/// it, over what an operator put in it by hand: a token rotation's two tokens, a webhook
/// secret rotation's two secrets (any change to `GenerateSecretString` makes a new secret),
/// a rotated provider key. So how each is written is held here: a change must say so in
/// UPGRADING.md (finish a rotation before deploying it), then update this.
#[test]
fn how_the_stack_writes_its_secrets_is_held() {
    let template = template();
    let written = |name: &str, property: &str| cfn::resource(&template, name)["Properties"][property].clone();
    let yaml = |text: &str| yaml_serde::from_str::<Value>(text).unwrap();
    let callback = yaml(
        r#"!Sub
        - '{"webhook_hmac_keys": ${Keys}, "callback_token": ${Token}}'
        - Keys: !If
            - HasWebhookHmacKeys
            - !Join ["", ['["', !Join ['","', !Split [",", !Ref WebhookHmacKeys]], '"]']]
            - "[]"
          Token: !If [HasCallbackToken, !Sub '"${CallbackToken}"', "null"]"#,
    );
    assert_eq!(written("CallbackSecret", "SecretString"), callback, "CallbackSecret");
    let provider = yaml(r#"!If [HasProviderApiKey, !Sub '{"api_key": "${ProviderApiKey}"}', '{"api_key": ""}']"#);
    assert_eq!(written("ProviderSecret", "SecretString"), provider, "ProviderSecret");
    let notify = yaml("{PasswordLength: 32, ExcludePunctuation: true, IncludeSpace: false}");
    assert_eq!(written("NotifySecret", "GenerateSecretString"), notify, "NotifySecret");
}

/// What holds data nothing could make again (the record, the vault, the secrets' keys and
/// tokens) is kept when the stack deletes or replaces it, but (the table aside, whose deletion
/// protection would fail it) by the rollback of the deploy that made it, which leaves nothing
/// behind; each secret is unnamed, so one kept never blocks the stack from making it again.
#[test]
fn what_holds_data_outlives_the_stack() {
    let template = template();
    let resources = template["Resources"].as_mapping().expect("resources");
    let kept = |policy: &str| {
        let mut kept: Vec<&str> = resources
            .iter()
            .filter(|(_, r)| r["DeletionPolicy"] == policy && r["UpdateReplacePolicy"] == "Retain")
            .filter_map(|(name, _)| name.as_str())
            .collect();
        kept.sort_unstable();
        kept
    };
    assert_eq!(kept("Retain"), ["TaskTable"]);
    assert_eq!(
        kept("RetainExceptOnCreate"),
        ["CallbackSecret", "NotifySecret", "ProviderSecret", "VaultBucket", "VaultBucketPolicy"]
    );
    let table = &cfn::resource(&template, "TaskTable")["Properties"];
    assert_eq!(table["DeletionProtectionEnabled"].as_bool(), Some(true));
    // The stack policy the README has set refuses what a retain policy cannot stop: the
    // functions moving to a new, empty table or bucket, or to a new webhook signing key.
    // JSON is YAML: read as the template is, its one-or-many fields by cfn::as_list.
    let policy: Value =
        yaml_serde::from_str(&read(&repo().join("infra/stack-policy.json"))).expect("infra/stack-policy.json parses");
    let refused = |action: &str| {
        let mut refused: Vec<&str> = cfn::as_list(&policy["Statement"])
            .into_iter()
            .filter(|s| s["Effect"] == "Deny" && s["Principal"] == "*")
            .filter(|s| cfn::as_list(&s["Action"]).iter().any(|a| a.as_str() == Some(action)))
            .flat_map(|s| cfn::as_list(&s["Resource"]))
            .filter_map(|r| r.as_str()?.strip_prefix("LogicalResourceId/"))
            .collect();
        refused.sort_unstable();
        refused
    };
    assert_eq!(refused("Update:Replace"), ["NotifySecret", "TaskTable", "VaultBucket"]);
    assert_eq!(refused("Update:Delete"), ["TaskTable", "VaultBucket"], "NotifySecret goes with NotifyUrl");
    let allowed = &policy["Statement"][0];
    assert_eq!(
        (&allowed["Effect"], &allowed["Action"], &allowed["Resource"]),
        (&"Allow".into(), &"Update:*".into(), &"*".into())
    );
    for (name, resource) in resources {
        if resource["Type"] == "AWS::SecretsManager::Secret" {
            assert!(resource["Properties"]["Name"].is_null(), "{name:?} is named");
        }
    }
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
    assert_eq!(table["DeletionProtectionEnabled"].as_bool(), Some(true), "as the emulator's table");
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
    assert_eq!(template["Conditions"][condition], yaml_serde::from_str::<Value>(&only_with).unwrap());
}

/// The `s3:prefix` conditions of `function`'s ListBucket grants, as (operator, value); a
/// grant without one as `("(none)", "(none)")`: it may list the whole bucket.
fn list_prefix_conditions(template: &Value, function: &str) -> Vec<(String, String)> {
    let props = cfn::function_properties(template, function);
    let role_name = props.get("Role").and_then(cfn::get_att).expect("a role");
    let mut conditions = Vec::new();
    for statement in cfn::role_statements(template, role_name.trim_end_matches(".Arn")) {
        let actions = cfn::as_list(&statement["Action"]);
        if statement["Effect"].as_str() != Some("Allow") || !actions.iter().any(|a| a.as_str() == Some("s3:ListBucket"))
        {
            continue;
        }
        let Some(operators) = statement["Condition"].as_mapping().cloned() else {
            conditions.push(("(none)".to_owned(), "(none)".to_owned()));
            continue;
        };
        for (operator, keys) in operators {
            let value = keys["s3:prefix"].as_str().unwrap_or("(none)").to_owned();
            conditions.push((operator.as_str().unwrap_or_default().to_owned(), value));
        }
    }
    conditions
}

/// The prefixes the code lists are the ones the roles may list (IAM refuses any other, and
/// the emulator enforces no IAM): the reconciler lists `parked/` itself, results one task's
/// `parked/<task_id>/`.
#[test]
fn the_roles_list_only_the_prefixes_the_code_lists() {
    use suno_callbacks::{TaskId, s3_key};
    let template = template();
    let reconciler = list_prefix_conditions(&template, "ReconcilerFunction");
    assert_eq!(reconciler, [("StringEquals".to_owned(), s3_key::PARKED_PREFIX.to_owned())]);
    let results = list_prefix_conditions(&template, "ResultsFunction");
    let [(operator, pattern)] = results.as_slice() else { panic!("one ListBucket condition: {results:?}") };
    assert_eq!(operator, "StringLike");
    let listed = s3_key::parked_task_prefix(&TaskId::parse("3e63b4cc88d52611159371f6af5571e7").unwrap());
    assert!(string_like(pattern, &listed), "{listed} is not listable under {pattern}");
    // Not every task's parked keys at once.
    assert!(!string_like(pattern, s3_key::PARKED_PREFIX), "{pattern} lets results list all of parked/");
    for function in ["IngestFunction", "DownloadFunction", "SweeperFunction", "NotifyFunction"] {
        assert_eq!(list_prefix_conditions(&template, function), [], "{function} lists nothing");
    }
}

/// Whether IAM's `StringLike` takes `value` under `pattern` (`*` any characters, `/` too;
/// `?` one).
fn string_like(pattern: &str, value: &str) -> bool {
    let parts: Vec<String> = pattern.split('*').map(|p| regex::escape(p).replace(r"\?", ".")).collect();
    regex::Regex::new(&format!("^{}$", parts.join(".*"))).expect("a pattern").is_match(value)
}

/// A function may put events on the bus only as stemvault (`events:source`), so that no
/// role's events pass for another source's to a rule of the account's.
#[test]
fn the_roles_put_events_only_from_stemvault() {
    let template = template();
    let expected = yaml_serde::from_str::<Value>(&format!(
        "StringEquals: {{events:source: {}}}",
        stemvault_vault::events::EVENT_SOURCE
    ))
    .unwrap();
    let mut grants = 0;
    for function in FUNCTIONS {
        let role = cfn::function_properties(&template, function.logical_id).get("Role").and_then(cfn::get_att);
        let role = role.expect("a role");
        for statement in cfn::role_statements(&template, role.trim_end_matches(".Arn")) {
            if cfn::as_list(&statement["Action"]).iter().any(|a| a.as_str() == Some("events:PutEvents")) {
                assert_eq!(statement["Condition"], expected, "{}: {statement:?}", function.logical_id);
                grants += 1;
            }
        }
    }
    assert_eq!(grants, 3, "ingest, the reconciler and the download publish");
}

/// The kinds of secret a function's role may read.
fn secret_kinds(template: &Value, function: &str) -> BTreeSet<String> {
    granted_kinds(template, function, "secretsmanager:GetSecretValue")
}

#[test]
fn deploying_without_callback_authentication_is_refused() {
    let template = template();
    let ingest = cfn::function_properties(&template, "IngestFunction");
    // Not a variable of the function (the local runner's alone): none set it to true.
    assert!(ingest["Environment"]["Variables"].get("ALLOW_UNAUTHENTICATED").is_none());
    let assertion = &template["Rules"]["CallbacksMustBeAuthenticated"]["Assertions"][0]["Assert"];
    let text = yaml_serde::to_string(assertion).unwrap();
    assert!(text.contains("WebhookHmacKeys") && text.contains("CallbackToken"), "{text}");
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
    let template: Value = yaml_serde::from_str(BROKEN_TEMPLATE).unwrap();
    let code_actions = BTreeSet::from(
        ["dynamodb:GetItem", "s3:GetObject", "sqs:SendMessage", "sqs:ChangeMessageVisibility", "events:PutEvents"]
            .map(String::from),
    );
    let problems = policy_problems(&template, "Fn", &code_actions, &[]);
    assert_eq!(
        problems,
        [
            "Fn: LoggingConfig's LogFormat is not Text",
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
    let template: Value = yaml_serde::from_str(TOO_BROAD).unwrap();
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
    let template: Value = yaml_serde::from_str(
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

/// A batch is as large as the messages a function handles at once: a larger one leaves the
/// rest waiting for a permit inside the same invocation deadline (a late copy can be cut off
/// and retried while its URL ages). The download's batches are gathered for a few seconds,
/// so that the files of a task copy together in one invocation (billed about as one copy)
/// rather than one or two to an invocation; a webhook goes out as soon as its event comes.
#[test]
fn each_queue_batch_is_as_large_as_the_messages_handled_at_once() {
    let template = template();
    for (function, event, at_once, gathered_for) in [
        ("DownloadFunction", "Jobs", stemvault_download::app::MAX_CONCURRENT_MESSAGES, 1..=5),
        ("NotifyFunction", "Events", stemvault_notify::app::MAX_CONCURRENT_MESSAGES, 0..=0),
    ] {
        let source = &cfn::resource(&template, function)["Properties"]["Events"][event]["Properties"];
        assert_eq!(source["BatchSize"].as_u64(), Some(at_once as u64), "{function}");
        let window = source
            .get("MaximumBatchingWindowInSeconds")
            .map_or(0, |w| w.as_u64().unwrap_or_else(|| panic!("{function}: the batching window is no number: {w:?}")));
        assert!(gathered_for.contains(&window), "{function}: batches gathered for {window} s");
    }
}

/// The sweeper and the reconciler stop taking tasks a margin before their deadline: what their
/// timeouts leave them is the working time README states (a sweep's 40 s, a reconciler run's
/// polls for about 56 s of its 90); a timeout cut to the margin would stop every run at once.
#[test]
fn scheduled_runs_work_for_the_time_readme_states() {
    let template = template();
    let readme = read(&repo().join("README.md"));
    let timeout = |function| {
        std::time::Duration::from_secs(cfn::number(&cfn::function_properties(&template, function)["Timeout"]))
    };
    // As the local runner gives its scheduled runs.
    assert_eq!(timeout("SweeperFunction"), stemvault_sweeper::app::FUNCTION_TIMEOUT);
    assert_eq!(timeout("ReconcilerFunction"), stemvault_reconciler::app::FUNCTION_TIMEOUT);
    let sweeps = timeout("SweeperFunction") - stemvault_sweeper::app::STOP_BEFORE_DEADLINE;
    let polls = timeout("ReconcilerFunction") - stemvault_reconciler::app::STOP_BEFORE_DEADLINE;
    assert_eq!((sweeps.as_secs(), polls.as_secs()), (40, 56));
    assert!(readme.contains("its 40 s run out first"), "the sweep's working time");
    assert!(readme.contains("a run polls for about 56 s of its 90"), "the reconciler's");
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

/// The Rust items template.yaml's comments name as where a value comes from
/// (`stemvault_vault::download::MAX_RECEIVE_COUNT`, `provision::DLQ_RETENTION_SECONDS`), with
/// the source file each is looked for in.
fn named_items(template: &str) -> Vec<(String, PathBuf, String)> {
    let repo = repo();
    let mut named = Vec::new();
    for comment in template.lines().filter_map(|line| line.split_once('#').map(|(_, c)| c)) {
        let paths = comment.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        for path in paths.filter(|p| p.contains("::")) {
            // `provision::X` is the shared AWS crate's module, as the template writes it.
            let full = if path.starts_with("provision::") { format!("stemvault_aws::{path}") } else { path.to_owned() };
            let segments: Vec<&str> = full.split("::").collect();
            let root = match segments[0] {
                "stemvault_vault" => repo.join("shared/vault/src"),
                "stemvault_aws" => repo.join("shared/aws/src"),
                "suno_callbacks" => repo.join("shared/src"),
                function => match function.strip_prefix("stemvault_") {
                    Some(function) => repo.join("functions").join(function).join("src"),
                    None => continue,
                },
            };
            let file = match &segments[1..segments.len() - 1] {
                [] => root.join("lib.rs"),
                [parents @ .., last] => parents.iter().fold(root, |dir, m| dir.join(m)).join(format!("{last}.rs")),
            };
            named.push((path.to_owned(), file, (*segments.last().unwrap_or(&"")).to_owned()));
        }
    }
    named
}

/// Whether `source` declares `name` (an item, or a `pub use` of one).
fn declares(source: &str, name: &str) -> bool {
    let after_name = |rest: &str| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    source.lines().map(str::trim_start).any(|line| {
        // A re-export declares it; a private import (kept where the item once was) does not.
        let reexport = line.starts_with("pub use ") && line.trim_end_matches(';').ends_with(&format!("::{name}"));
        let line = line.strip_prefix("pub ").or_else(|| line.strip_prefix("pub(crate) ")).unwrap_or(line);
        let item = ["const ", "static ", "fn ", "struct ", "enum ", "type ", "trait "]
            .iter()
            .any(|kind| line.strip_prefix(kind).and_then(|l| l.strip_prefix(name)).is_some_and(after_name));
        item || reexport
    })
}

/// The items of `template` (its text) whose comments name what the code does not declare.
fn undeclared(template: &str) -> Vec<String> {
    named_items(template)
        .into_iter()
        .filter(|(_, file, name)| !declares(&std::fs::read_to_string(file).unwrap_or_default(), name))
        .map(|(path, _, _)| path)
        .collect()
}

/// What template.yaml's comments name in the code exists there: a value renamed or moved
/// leaves no comment pointing at nothing.
#[test]
fn the_items_the_template_names_exist_in_the_code() {
    let template = read(&repo().join("template.yaml"));
    assert!(named_items(&template).len() >= 5, "{:?}", named_items(&template));
    assert_eq!(undeclared(&template), Vec::<String>::new(), "template.yaml names what the code does not declare");
    let stale = "  X: 8 # provision::MAX_RECEIVE_COUNT\n  Y: 1 # (doubling: stemvault_notify::domain::retry_delay)\n";
    let kept = "  Z: 2 # stemvault_notify::domain::NOTIFY_BACKOFF, stemvault_vault::download::MAX_RECEIVE_COUNT";
    assert_eq!(
        undeclared(&format!("{stale}{kept}")),
        ["provision::MAX_RECEIVE_COUNT", "stemvault_notify::domain::retry_delay"]
    );
    assert!(declares("pub use stemvault_vault::download::MAX_RECEIVE_COUNT;", "MAX_RECEIVE_COUNT"));
    assert!(!declares("use stemvault_vault::download::MAX_RECEIVE_COUNT;", "MAX_RECEIVE_COUNT"), "a private import");
    assert!(declares("    pub const MAX: u32 = 8;", "MAX") && !declares("pub const MAXIMUM: u32 = 8;", "MAX"));
}
