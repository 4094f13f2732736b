use super::*;
use sha2::{Digest, Sha256};
use suno_callbacks::parse::MAX_SEGMENT_LEN;
use suno_callbacks::s3_key::{
    callback_body_key, details_key, file_key, manifest_key, parked_body_key, unparsable_body_key,
};
use suno_callbacks::{Stage, TaskId};

/// What a function's grant for an action must do with one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Must,
    MustNot,
    /// Either is fine (said where it is so).
    May,
}
use Reach::{May, Must, MustNot};

/// For one function and the S3 object actions named: the kinds of key it must and must
/// not reach.
pub struct KeyRule {
    pub function: &'static str,
    pub actions: &'static [&'static str],
    pub files: Reach,
    pub bodies: Reach,
    /// Results too large for the task item, kept beside the bodies (`details/`).
    pub details: Reach,
    pub manifests: Reach,
    pub parked: Reach,
}

/// Every S3 object action a role grants needs a rule here.
pub const RULES: &[KeyRule] = &[
    // Ingest archives each accepted body (and its results too large for the task item),
    // parks one it cannot record, and writes nothing else.
    KeyRule {
        function: "IngestFunction",
        actions: &["s3:PutObject"],
        files: MustNot,
        bodies: Must,
        details: Must,
        manifests: MustNot,
        parked: Must,
    },
    // The reconciler archives each answer it ingests as a callback body (and its results
    // too large for the task item), nothing else.
    KeyRule {
        function: "ReconcilerFunction",
        actions: &["s3:PutObject"],
        files: MustNot,
        bodies: Must,
        details: Must,
        manifests: MustNot,
        parked: MustNot,
    },
    // It replays the parked callbacks: reads them, deletes them once recorded.
    KeyRule {
        function: "ReconcilerFunction",
        actions: &["s3:GetObject", "s3:DeleteObject"],
        files: MustNot,
        bodies: MustNot,
        details: MustNot,
        manifests: MustNot,
        parked: Must,
    },
    // The downloader writes files and manifests, never a body.
    KeyRule {
        function: "DownloadFunction",
        actions: &["s3:PutObject", "s3:AbortMultipartUpload"],
        files: Must,
        bodies: MustNot,
        details: MustNot,
        manifests: Must,
        parked: MustNot,
    },
    // It reads back what it stored (a copy an earlier attempt made, the manifest's
    // version), never a body.
    KeyRule {
        function: "DownloadFunction",
        actions: &["s3:GetObject"],
        files: Must,
        bodies: MustNot,
        details: MustNot,
        manifests: Must,
        parked: MustNot,
    },
    // Results presigns the stored files it links, and the details kept apart. The manifest may stay readable: it
    // holds what the results answer holds, and refusing `tasks/*/manifest.json` would also
    // refuse a file named `<something>/manifest` with a .json URL.
    KeyRule {
        function: "ResultsFunction",
        actions: &["s3:GetObject"],
        files: Must,
        bodies: MustNot,
        details: Must,
        manifests: May,
        parked: MustNot,
    },
];

/// IAM's resource wildcards: `*` is any run of characters (`/` included), `?` any one.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            last_star = Some((pi, ti));
            pi += 1;
        } else if let Some((star, from)) = last_star {
            // Let the last `*` take one more character and try again.
            last_star = Some((star, from + 1));
            pi = star + 1;
            ti = from + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The key pattern of `!Sub "${VaultBucket.Arn}/<pattern>"`.
pub fn key_pattern(sub: &str) -> Option<&str> {
    sub.strip_prefix("${VaultBucket.Arn}/").filter(|rest| !rest.contains("${"))
}

/// The key patterns a role allows and denies one action on.
#[derive(Debug, Default)]
pub struct Grant {
    pub allowed: Vec<String>,
    pub denied: Vec<String>,
}

impl Grant {
    pub fn reaches(&self, key: &str) -> bool {
        self.allowed.iter().any(|p| matches(p, key)) && !self.denied.iter().any(|p| matches(p, key))
    }
}

/// The statements of the role a function runs as.
fn statements(template: &Value, function: &str) -> Vec<Value> {
    let props = cfn::function_properties(template, function);
    let Some(role) = props.get("Role").and_then(cfn::get_att) else { return Vec::new() };
    cfn::role_statements(template, role.trim_end_matches(".Arn")).into_iter().cloned().collect()
}

fn key_patterns(statement: &Value) -> Vec<String> {
    cfn::as_list(&statement["Resource"])
        .into_iter()
        .filter_map(cfn::sub)
        .filter_map(|s| key_pattern(&s).map(str::to_owned))
        .collect()
}

/// Per S3 action the role allows on vault objects: the patterns allowed, and those denied
/// (a Deny's actions may be wildcards, as IAM's are, case-insensitively).
pub fn grants(template: &Value, function: &str) -> BTreeMap<String, Grant> {
    let statements = statements(template, function);
    let actions = |s: &Value| -> Vec<String> {
        cfn::as_list(&s["Action"]).into_iter().filter_map(Value::as_str).map(str::to_owned).collect()
    };
    let mut grants: BTreeMap<String, Grant> = BTreeMap::new();
    for s in statements.iter().filter(|s| s["Effect"] == "Allow") {
        let patterns = key_patterns(s);
        if patterns.is_empty() {
            continue;
        }
        for action in actions(s).into_iter().filter(|a| a.starts_with("s3:") && !a.contains('*')) {
            grants.entry(action).or_default().allowed.extend(patterns.iter().cloned());
        }
    }
    for s in statements.iter().filter(|s| s["Effect"] == "Deny") {
        let patterns = key_patterns(s);
        for (action, grant) in grants.iter_mut() {
            let denied = actions(s).iter().any(|a| matches(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()));
            if denied {
                grant.denied.extend(patterns.iter().cloned());
            }
        }
    }
    grants
}

/// Keys of each kind, as the layout makes them.
pub struct SampleKeys {
    pub files: Vec<String>,
    pub bodies: Vec<String>,
    pub details: Vec<String>,
    pub manifests: Vec<String>,
    pub parked: Vec<String>,
}

/// Every stage (a new variant stops this compiling until it is listed).
fn every_stage() -> [Stage; 6] {
    let _all_listed = |s: Stage| match s {
        Stage::Submitted | Stage::Text | Stage::First | Stage::Complete | Stage::Error | Stage::Final => (),
    };
    [Stage::Submitted, Stage::Text, Stage::First, Stage::Complete, Stage::Error, Stage::Final]
}

/// Names the parser can produce that sit close to the task's own objects: a `callbacks`
/// or `manifest` segment below the first (a music track whose id is `callbacks`, a
/// generic body's keys), a hashed reserved word, a segment of the longest length.
fn edge_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "tracks/callbacks/audio",
        "tracks/details/audio",
        "result/manifest",
        "manifest-1a2b3c4d",
        "callbacks_x",
        "x/callbacks/first-1a2b3c4d",
        "x/details/first-1a2b3c4d",
    ]
    .map(str::to_owned)
    .into();
    names.push("s".repeat(MAX_SEGMENT_LEN));
    // A later `callbacks` or `details` segment, then `-` and 64 characters over several
    // segments (IAM's `?` matches `/`): with a `.json` URL, the bodies' shape.
    for word in ["callbacks", "details"] {
        names.push(format!("a/{word}/k-{}/{}", "x".repeat(30), "y".repeat(33)));
    }
    names
}

/// Task ids beyond the fixtures': the shortest, every allowed punctuation, the words the
/// layout uses, the longest.
fn edge_task_ids() -> Vec<TaskId> {
    let long = "x".repeat(TaskId::MAX_LEN);
    ["t", "2fac****9f72", "a-b_c.d~e+f=g@h,i:j!k", "callbacks", "manifest.json", long.as_str()]
        .into_iter()
        .map(|id| TaskId::parse(id).expect("a valid task id"))
        .collect()
}

/// The keys of every documented fixture (its files, its body at every stage, its manifest),
/// and of the edge names under the edge task ids.
pub fn sample_keys() -> SampleKeys {
    let mut keys = SampleKeys {
        files: Vec::new(),
        bodies: Vec::new(),
        details: Vec::new(),
        manifests: Vec::new(),
        parked: Vec::new(),
    };
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(stemvault_tests::fixtures_dir())
        .expect("fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    for path in fixtures {
        let body = read(&path);
        let event =
            suno_callbacks::parse_callback(body.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let sha = hex::encode(Sha256::digest(body.as_bytes()));
        keys.files.extend(event.files.iter().map(|f| file_key(&event.task_id, &f.name, &f.url)));
        keys.bodies.extend(every_stage().map(|stage| callback_body_key(&event.task_id, stage, &sha)));
        // A verified body the parser refuses (ingest's, or a replayed parked one's).
        keys.bodies.push(unparsable_body_key(&event.task_id, &sha));
        keys.details.extend(every_stage().map(|stage| details_key(&event.task_id, stage, &sha)));
        keys.parked.extend(every_stage().map(|stage| parked_body_key(&event.task_id, stage, &sha)));
        keys.manifests.push(manifest_key(&event.task_id));
    }
    let sha = hex::encode(Sha256::digest(b"{}"));
    for task in edge_task_ids() {
        for name in edge_names() {
            for url in ["https://h/f.json", "https://h/f.mp3", "https://h/stream"] {
                keys.files.push(file_key(&task, &name, url));
            }
        }
        keys.bodies.extend(every_stage().map(|stage| callback_body_key(&task, stage, &sha)));
        keys.bodies.push(unparsable_body_key(&task, &sha));
        keys.details.extend(every_stage().map(|stage| details_key(&task, stage, &sha)));
        keys.parked.extend(every_stage().map(|stage| parked_body_key(&task, stage, &sha)));
        keys.manifests.push(manifest_key(&task));
    }
    keys
}

/// Where a function's S3 grants reach keys its rule says they must not, or miss keys they
/// must reach; and S3 actions no rule covers.
pub fn problems(template: &Value, function: &str, rules: &[KeyRule], keys: &SampleKeys) -> Vec<String> {
    let mut problems = Vec::new();
    for (action, grant) in grants(template, function) {
        let Some(rule) = rules.iter().find(|r| r.function == function && r.actions.contains(&action.as_str())) else {
            problems
                .push(format!("{function}: {action} on vault objects, but no key rule says which keys it may reach"));
            continue;
        };
        let kinds = [
            ("vaulted files", rule.files, &keys.files),
            ("callback bodies", rule.bodies, &keys.bodies),
            ("kept details", rule.details, &keys.details),
            ("manifests", rule.manifests, &keys.manifests),
            ("parked callbacks", rule.parked, &keys.parked),
        ];
        for (kind, reach, samples) in kinds {
            let wrong = match reach {
                Must => samples.iter().find(|k| !grant.reaches(k)).map(|k| format!("does not reach {kind} ({k})")),
                MustNot => samples.iter().find(|k| grant.reaches(k)).map(|k| format!("reaches {kind} ({k})")),
                May => None,
            };
            problems.extend(wrong.map(|w| format!("{function}: {action} {w}")));
        }
    }
    problems
}
