use super::*;

/// SDK fluent operations and the IAM actions that authorise them. Multipart uploads are
/// authorised by s3:PutObject, batch sends by sqs:SendMessage, HeadObject by s3:GetObject.
/// (DynamoDB `query`/`scan` are told apart from `url::Url::query` in [`dynamodb_reads`].)
pub const SDK_CALLS: &[(&str, &[&str])] = &[
    ("get_item", &["dynamodb:GetItem"]),
    ("put_item", &["dynamodb:PutItem"]),
    ("update_item", &["dynamodb:UpdateItem"]),
    ("delete_item", &["dynamodb:DeleteItem"]),
    ("batch_get_item", &["dynamodb:BatchGetItem"]),
    ("batch_write_item", &["dynamodb:BatchWriteItem"]),
    ("transact_write_items", &["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"]),
    ("put_object", &["s3:PutObject"]),
    ("create_multipart_upload", &["s3:PutObject"]),
    ("upload_part", &["s3:PutObject"]),
    ("complete_multipart_upload", &["s3:PutObject"]),
    ("abort_multipart_upload", &["s3:AbortMultipartUpload"]),
    ("get_object", &["s3:GetObject"]),
    ("head_object", &["s3:GetObject"]),
    ("copy_object", &["s3:GetObject", "s3:PutObject"]),
    ("delete_object", &["s3:DeleteObject"]),
    ("list_objects_v2", &["s3:ListBucket"]),
    ("send_message", &["sqs:SendMessage"]),
    ("send_message_batch", &["sqs:SendMessage"]),
    ("change_message_visibility", &["sqs:ChangeMessageVisibility"]),
    ("change_message_visibility_batch", &["sqs:ChangeMessageVisibility"]),
    ("delete_message", &["sqs:DeleteMessage"]),
    ("delete_message_batch", &["sqs:DeleteMessage"]),
    ("receive_message", &["sqs:ReceiveMessage"]),
    ("get_queue_attributes", &["sqs:GetQueueAttributes"]),
    ("put_events", &["events:PutEvents"]),
    ("get_secret_value", &["secretsmanager:GetSecretValue"]),
];

/// The IAM actions of the SDK fluent calls (`.put_object()`: the SDK's builders take no
/// arguments, unlike our own trait methods of the same name).
pub fn sdk_actions(code: &str) -> BTreeSet<String> {
    let mut actions: BTreeSet<String> = SDK_CALLS
        .iter()
        .filter(|(op, _)| code.contains(&format!(".{op}()")))
        .flat_map(|(_, actions)| actions.iter().map(|a| a.to_string()))
        .collect();
    actions.extend(dynamodb_reads(code));
    actions
}

/// DynamoDB Query and Scan: `.query()`/`.scan()` called on a receiver named `…client`
/// (`self.table.client.query()`, `dynamodb_client.scan()`), unlike `url.query()`.
pub fn dynamodb_reads(code: &str) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    for (op, action) in [("query", "dynamodb:Query"), ("scan", "dynamodb:Scan")] {
        let needle = format!(".{op}()");
        let on_client = code.match_indices(&needle).any(|(at, _)| receiver(code, at).ends_with("client"));
        if on_client {
            actions.insert(action.to_owned());
        }
    }
    actions
}

/// The lower-cased identifier just before the `.` at byte `at` (the call's receiver).
fn receiver(code: &str, at: usize) -> String {
    let before = code[..at].trim_end();
    let start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    before[start..].to_ascii_lowercase()
}

/// The source without its `#[cfg(test)] mod name { … }` blocks; also returns the names
/// of `#[cfg(test)] mod name;` declarations (test-only files).
pub fn production_part(code: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_modules = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let Some(module) = after.strip_prefix("mod ").or_else(|| after.strip_prefix("pub(crate) mod ")) else {
            // cfg(test) on something else: keep it (over-counting can only fail the test).
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        };
        let name: String = module.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let after_name = module[name.len()..].trim_start();
        if let Some(body) = after_name.strip_prefix(';') {
            test_modules.push(name);
            rest = body;
        } else if after_name.starts_with('{') {
            let mut depth = 0usize;
            let mut end = after_name.len();
            for (i, c) in after_name.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &after_name[end..];
        } else {
            rest = after_name;
        }
    }
    out.push_str(rest);
    (out, test_modules)
}

/// The production code of every `.rs` file under `dir` (test-only files left out).
pub fn production_sources(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.insert(path.clone(), read(&path));
            }
        }
    }
    let mut test_only = BTreeSet::new();
    let mut production = BTreeMap::new();
    for (path, code) in &files {
        let (code, test_modules) = production_part(code);
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let module_dir = match stem.as_str() {
            "lib" | "main" | "mod" => path.parent().unwrap().to_path_buf(),
            _ => path.parent().unwrap().join(&stem),
        };
        for m in test_modules {
            test_only.insert(module_dir.join(format!("{m}.rs")));
            test_only.insert(module_dir.join(&m).join("mod.rs"));
        }
        production.insert(path.clone(), code);
    }
    production.retain(|path, _| !test_only.contains(path));
    production
}
