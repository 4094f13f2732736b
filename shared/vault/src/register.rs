//! Registering a task before any callback (`PUT /tasks/{task_id}`): the task item a
//! registration writes, and how a second registration compares with what is recorded. Ingest
//! registers too, the task of a stale callback a key signed ([`Registration::unsigned_record`]):
//! its family came unsigned, so it stays open to a client's registration until a result comes.
//!
//! A registered task is at stage `submitted`, its vault `pending` with no files, out of the
//! sweeper's `open-tasks` index (nothing to sweep yet), and watched by the reconciler from `RECONCILE_AFTER_SECONDS` on
//! (a stale callback's, from its first run 30 s on). Its first callback (or poll
//! result) moves it on like any later callback ([`crate::ingest`]); `client_ref` stays.

use std::time::Duration;

use suno_callbacks::{Family, Stage, TaskId};

use crate::{TaskRecord, Timestamp, VaultState, reconcile};

/// The longest `client_ref`, in UTF-8 bytes.
pub const MAX_CLIENT_REF_BYTES: usize = 256;

/// What a registration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub family: Family,
    pub client_ref: Option<String>,
}

/// The families a registration may name (every one but `unknown`), as stored, for the
/// refusals' words: a family added to [`Family::ALL`] is named there too.
fn registrable_families() -> String {
    let names: Vec<&str> = Family::ALL.iter().filter(|f| **f != Family::Unknown).map(|f| f.as_str()).collect();
    names.join(", ")
}

/// Why a registration body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("the body is not a JSON object: {0}")]
    NotJson(String),
    #[error("family is required: one of {}", registrable_families())]
    NoFamily,
    #[error("family {0:?} is not one of {families}", families = registrable_families())]
    UnknownFamily(String),
    #[error(
        "client_ref must be a string of at most {MAX_CLIENT_REF_BYTES} bytes, without control, line-separator, \
         invisible formatting characters or U+FFFE/U+FFFF"
    )]
    BadClientRef,
    /// A JSON parser keeps one of the two values (serde_json the last, others the first): which
    /// one the caller meant cannot be told.
    #[error("{0} is given more than once")]
    Repeated(&'static str),
    /// A misspelt field (`clientRef`) would otherwise register the task without it.
    #[error("unknown field {0:?}: a registration holds family and client_ref only")]
    UnknownField(String),
}

/// The fields of a registration body, read in one pass over the object's keys: each field's
/// value, the first field named twice (a JSON parser keeps one of the two values, serde_json
/// the last: which one the caller meant cannot be told), and the first other field's name (its
/// first 64 characters; its value skipped unread).
#[derive(Default)]
struct Fields {
    family: Option<serde_json::Value>,
    client_ref: Option<serde_json::Value>,
    repeated: Option<&'static str>,
    unknown: Option<String>,
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        struct Reading;
        impl<'de> serde::de::Visitor<'de> for Reading {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Fields, M::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let (name, slot) = match key.as_ref() {
                        "family" => ("family", &mut fields.family),
                        "client_ref" => ("client_ref", &mut fields.client_ref),
                        other => {
                            fields.unknown = fields.unknown.or_else(|| Some(crate::text::first_chars(other, 64)));
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.replace(map.next_value()?).is_some() {
                        fields.repeated = fields.repeated.or(Some(name));
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Reading)
    }
}

/// A client_ref as given: bounded, and nothing that would change how what follows it reads
/// where it is shown (it goes into logs, events, webhooks and dashboards as it is): no control
/// character, no line or paragraph separator (U+2028, U+2029: a line break to some log
/// viewers), and nothing invisible: Unicode's format characters (category Cf: zero-width
/// characters, bidirectional overrides and isolates, the soft hyphen, the byte order mark,
/// interlinear annotations, tags...), variation selectors, the combining grapheme joiner and
/// the Hangul and Mongolian fillers, which can make one id read as another; nor U+FFFE or
/// U+FFFF, which SQS refuses in a message, so events carry U+FFFD for them (a rule or receiver
/// matching the id would miss it).
fn client_ref_ok(client_ref: &str) -> bool {
    client_ref.len() <= MAX_CLIENT_REF_BYTES && !client_ref.chars().any(|c| c.is_control() || invisible(c))
}

/// Unicode 15's format characters (Cf), U+2028/U+2029, and the other characters that show
/// nothing where they stand (see [`client_ref_ok`]).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{0890}'..='\u{0891}' | '\u{08E2}' | '\u{115F}'..='\u{1160}' | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{FFFE}'..='\u{FFFF}'
        | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

impl Registration {
    /// Read `{"family": "...", "client_ref": "..."}` (client_ref optional; no other field).
    pub fn parse(body: &[u8]) -> Result<Registration, RegistrationError> {
        let fields: Fields = serde_json::from_slice(body).map_err(|e| match e.classify() {
            // Valid JSON of another type than an object.
            serde_json::error::Category::Data => RegistrationError::NotJson("not an object".into()),
            _ => RegistrationError::NotJson(e.to_string()),
        })?;
        if let Some(field) = fields.repeated {
            return Err(RegistrationError::Repeated(field));
        }
        if let Some(field) = fields.unknown {
            return Err(RegistrationError::UnknownField(field));
        }
        let family = match &fields.family {
            None | Some(serde_json::Value::Null) => return Err(RegistrationError::NoFamily),
            Some(serde_json::Value::String(name)) => match name.parse::<Family>() {
                Ok(family) if family != Family::Unknown => family,
                _ => return Err(RegistrationError::UnknownFamily(crate::text::first_chars(name, 64))),
            },
            Some(other) => {
                return Err(RegistrationError::UnknownFamily(crate::text::first_chars(&other.to_string(), 64)));
            }
        };
        let client_ref = match &fields.client_ref {
            None | Some(serde_json::Value::Null) => None,
            // "" is none: kept as given, a retry with null (or none) would disagree with it (409).
            Some(serde_json::Value::String(r)) if r.is_empty() => None,
            Some(serde_json::Value::String(r)) if client_ref_ok(r) => Some(r.clone()),
            Some(_) => return Err(RegistrationError::BadClientRef),
        };
        Ok(Registration { family, client_ref })
    }

    /// The task item of a new registration: stage `submitted`, vault `pending`, no files, not
    /// `open`, first polled `reconcile_after` from `now`.
    pub fn record(&self, task_id: &TaskId, now: Timestamp, reconcile_after: Duration) -> TaskRecord {
        let mut record = TaskRecord::new(task_id.as_str(), self.family, Stage::Submitted, 200, "", now);
        record.deliveries = 0;
        record.succeeded = false;
        record.client_ref = self.client_ref.clone();
        record.registered_at = Some(now);
        record.registered_family = Some(self.family);
        record.vault = VaultState::Pending;
        record.sync_open_marker();
        reconcile::watch(&mut record, now, reconcile_after);
        record
    }

    /// The task item of a task registered for polling by ingest, from a callback refused as
    /// stale but signed by a key: as [`Self::record`] without a client_ref, but with neither
    /// `registered_at` nor `registered_family`, since its family is an unsigned body's: a
    /// client's registration may still give another (see [`Self::completion`]). Due
    /// [`reconcile::FIRST_POLL_INTERVAL`] on (the reconciler's first run from then), not after
    /// the wait a registration leaves its callbacks: the provider has called back already, and
    /// its retries, unless signed again, are all as stale.
    pub fn unsigned_record(family: Family, task_id: &TaskId, now: Timestamp) -> TaskRecord {
        let mut record = Registration { family, client_ref: None }.record(task_id, now, reconcile::FIRST_POLL_INTERVAL);
        (record.registered_at, record.registered_family) = (None, None);
        record
    }

    /// Whether `recorded` says what this registration says: the same family (or a family the
    /// callbacks decided, when this one is the registered family: a retried registration
    /// agrees) and client_ref. (The results function asks [`Self::disagreements`].)
    #[cfg(test)]
    pub fn agrees_with(&self, recorded: &TaskRecord) -> bool {
        self.family_agrees(recorded) && recorded.client_ref == self.client_ref
    }

    /// The fields on which `recorded` and this registration disagree, as a 409 names them
    /// (`family`, `client_ref`): none when the registration agrees or only adds to it.
    pub fn disagreements(&self, recorded: &TaskRecord) -> Vec<&'static str> {
        let family = !self.family_agrees(recorded);
        let client_ref = !self.ref_agrees(recorded);
        [("family", family), ("client_ref", client_ref)].into_iter().filter_map(|(f, d)| d.then_some(f)).collect()
    }

    /// What this registration adds to a task a callback recorded first: its client_ref when
    /// the task has none, its family when the callbacks could not tell it or only guessed it
    /// ([`TaskRecord::family_read_from_a_failure`]; so the reconciler can poll it: a task that then
    /// needs watching, a file of it failed by an expired URL, is watched from `now`). To a
    /// task ingest registered from a stale callback ([`Self::unsigned_record`]), whose family
    /// was a guess, or whose family's endpoint says it does not know it (a client's own
    /// registration corrected), its family as the registered one, so a later registration
    /// naming another is refused. None when there is nothing to add, or when they disagree.
    pub fn completion(&self, recorded: &TaskRecord, now: Timestamp) -> Option<Completion> {
        if !self.family_agrees(recorded) || !self.ref_agrees(recorded) {
            return None;
        }
        let mut completion = Completion {
            client_ref: self.client_ref.clone().filter(|_| recorded.client_ref.is_none()),
            family: (recorded.family != self.family && family_open(recorded)).then_some(self.family),
            // The family a guess or the provider's "not found" left open, now given (or
            // confirmed): a later registration naming another is refused, as for any
            // registered task.
            registered_family: (recorded.registered_family != Some(self.family)
                && (unregistered(recorded)
                    || recorded.family_read_from_a_failure()
                    || unknown_at_its_endpoint(recorded)))
            .then_some(self.family),
            watch_from: None,
        };
        if let Some(family) = completion.family {
            // Whether it needs watching depends on its family, which is all the completion
            // changes of it (and a give-up for want of an answer at another family's
            // endpoint, which it takes back). One watched already is polled at once too: its
            // polls so far asked another family's endpoint (or none).
            let mut completed = recorded.clone();
            give_family(&mut completed, family);
            completion.watch_from = reconcile::needs_watching(&completed).then_some(now);
        }
        let adds =
            completion.client_ref.is_some() || completion.family.is_some() || completion.registered_family.is_some();
        adds.then_some(completion)
    }

    /// The recorded client_ref is none (a registration may give one) or this one.
    fn ref_agrees(&self, recorded: &TaskRecord) -> bool {
        recorded.client_ref.is_none() || recorded.client_ref == self.client_ref
    }

    fn family_agrees(&self, recorded: &TaskRecord) -> bool {
        recorded.family == self.family || family_open(recorded) || recorded.registered_family == Some(self.family)
    }
}

/// Whether the callbacks left the task's family for a registration to give: they could not
/// tell it, or only guessed it (from a failure's shape, or a lyrics failure's message, which
/// ingest would not have let overrule a registration made first); or no client registered
/// it, and no result came yet (a task
/// registered for polling from an unsigned body's family: [`Registration::unsigned_record`]);
/// or no result came and its family's endpoint said it did not know the task.
fn family_open(recorded: &TaskRecord) -> bool {
    recorded.family == Family::Unknown
        || recorded.family_read_from_a_failure()
        || unregistered(recorded)
        || unknown_at_its_endpoint(recorded)
}

/// A task at `submitted` (no callback and no polled result came) that its family's endpoint
/// answers "not found" for, since `not_found_since`, or that was given up for it (not one
/// given up for want of a result in time, which a family given would not revive): the
/// family, a client's own registration's included, is likely wrong, and a registration naming
/// another corrects it (else the task would be lost: polled at the wrong endpoint, given up).
fn unknown_at_its_endpoint(recorded: &TaskRecord) -> bool {
    let given_up = recorded.abandoned.is_some();
    recorded.stage == Stage::Submitted
        && ((!given_up && recorded.not_found_since.is_some()) || given_up_as_unknown(recorded))
}

/// A task at `submitted` that no client registered: ingest did, from a stale callback's
/// unsigned family ([`Registration::unsigned_record`], which sets neither `registered_at` nor
/// `registered_family`). A client's registration written before `registered_family` existed
/// has its `registered_at`.
pub(crate) fn unregistered(recorded: &TaskRecord) -> bool {
    recorded.stage == Stage::Submitted && recorded.named_by_no_registration()
}

/// Whether the reconciler gave the task up because the provider did not know it
/// ([`crate::GiveUpReason::NotFound`]): at its family's endpoint, which a family given now makes
/// another.
fn given_up_as_unknown(recorded: &TaskRecord) -> bool {
    recorded.abandoned.as_ref().is_some_and(|given_up| given_up.reason == crate::GiveUpReason::NotFound)
}

/// `record` given `family`. What another family's endpoint answered ("not found", its last
/// poll, a last chance begun, the polls' backoff) says nothing of this one's: nor does a
/// give-up for it.
fn give_family(record: &mut TaskRecord, family: Family) {
    record.family = family;
    record.not_found_since = None;
    (record.last_poll, record.last_chance_from, record.poll_interval_seconds) = (None, None, None);
    if given_up_as_unknown(record) {
        record.abandoned = None;
    }
}

/// What a registration adds to a task recorded before it ([`Registration::completion`]):
/// the task item as [`Completion::apply`] leaves it, written over the version read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub client_ref: Option<String>,
    pub family: Option<Family>,
    /// The family a client registered, for a task ingest registered first, whose family was a
    /// guess, or whose family's endpoint said it did not know it.
    pub registered_family: Option<Family>,
    /// Watch the task, polled next at this time: the family given makes a task the reconciler
    /// did not watch one a poll can mend, and one it watched is asked at that family's
    /// endpoint at once.
    pub watch_from: Option<Timestamp>,
}

impl Completion {
    /// `record` completed. The family and client_ref are in the task's manifest and Task
    /// Vaulted, so when either is added the file set's generation moves on: a settle planned
    /// before the completion is refused (it is conditional on the generation) and planned
    /// again, and the next
    /// settle writes its manifest over the old one (fenced by generation) and publishes its
    /// Task Vaulted under a new id (one id, one content). A task settled already gives up its
    /// manifest key and is open again: the sweeper's next lap over the open tasks (its index
    /// position is its old `last_received_at`) asks for its manifest, as for
    /// a settler that stopped before recording it (a task given up without files or a result
    /// stays out of the index: nothing would settle it). As every read-modify-write of the task item, it
    /// adopts the files of an attempt that wrote them but not the task item, unless the task
    /// was given up.
    pub fn apply(&self, record: &mut TaskRecord) {
        if let Some(client_ref) = &self.client_ref {
            record.client_ref = Some(client_ref.clone());
        }
        if let Some(family) = self.family {
            give_family(record, family);
        }
        if let Some(family) = self.registered_family {
            record.registered_family = Some(family);
        }
        if let Some(from) = self.watch_from {
            reconcile::watch(record, from, Duration::ZERO);
        }
        let read = record.generation;
        reconcile::adopt_unless_abandoned(record);
        if self.changes_the_manifest() {
            record.move_past(read);
        }
        reconcile::sync_open(record);
        record.version += 1;
    }

    /// Whether the task's manifest and `Task Vaulted` carry what it adds: the family or the
    /// client_ref. A family only confirmed as the registered one (`registered_family`) is in
    /// neither: the vault is not written again for it.
    fn changes_the_manifest(&self) -> bool {
        self.client_ref.is_some() || self.family.is_some()
    }
}

#[cfg(test)]
mod tests {
    use suno_callbacks::{CallbackEvent, Details, FileRef, LyricsVariant};

    use super::*;
    use crate::download::manifest_job;
    use crate::ingest::{BodyInfo, Claimant, ingest_callback};

    /// The task's one file `a`, in `status`, (re)opened at `generation`.
    fn file(status: crate::FileStatus, generation: Option<u64>) -> crate::FileEntry {
        let pending = crate::FileEntry::pending("https://cdn.example/a.mp3", "tasks/t1/a.mp3".into(), Stage::Complete);
        crate::FileEntry { status, generation, ..pending }
    }

    /// A refused family is answered with every family a registration may name, taken from
    /// `Family::ALL` (`unknown` left out).
    #[test]
    fn a_family_refused_is_answered_with_every_family_a_registration_may_name() {
        let listed = "music, lyrics, cover_image, wav, vocal_separation, midi, music_video, voice";
        assert_eq!(RegistrationError::NoFamily.to_string(), format!("family is required: one of {listed}"));
        let unknown = RegistrationError::UnknownFamily("jazz".into()).to_string();
        assert_eq!(unknown, format!("family \"jazz\" is not one of {listed}"));
    }

    #[test]
    fn a_body_names_a_known_family_and_perhaps_a_client_ref() {
        let r = Registration::parse(br#"{"family":"vocal_separation","client_ref":"order-17"}"#).unwrap();
        assert_eq!(r, Registration { family: Family::VocalSeparation, client_ref: Some("order-17".into()) });
        let r = Registration::parse(br#"{"family":"music","client_ref":""}"#).unwrap();
        assert_eq!(r.client_ref, None, "an empty client_ref is none");
        for (body, expected) in [
            (&b"nope"[..], "NotJson"),
            (b"[]", "NotJson"),
            (b"{}", "NoFamily"),
            (br#"{"family":"jazz"}"#, "UnknownFamily"),
            (br#"{"family":"unknown"}"#, "UnknownFamily"),
            (br#"{"family":3}"#, "UnknownFamily"),
            (br#"{"family":"wav","client_ref":5}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"a\nb"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"a\u0000"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"order\u2028-17"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"order-\u202e71"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"order\u200b-17"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"order-\uffff"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"order-\u00ad17"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"order-17\ufe0f"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"order\u3164-17"}"#, "BadClientRef"),
            (br#"{"family":"wav","client_ref":"order-17\udb40\udc41"}"#, "BadClientRef"),
            (br#"{"family":"wav","family":"music"}"#, "Repeated(\"family\")"),
            (br#"{"family":"wav","client_ref":"a","client_ref":"b"}"#, "Repeated(\"client_ref\")"),
            (br#"{"family":"music","clientRef":"order-17"}"#, "UnknownField(\"clientRef\")"),
            (br#"{"extra":1,"family":"music","more":2}"#, "UnknownField(\"extra\")"),
        ] {
            let err = Registration::parse(body).unwrap_err();
            assert!(format!("{err:?}").starts_with(expected), "{}: {err:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(Registration::parse(b"[]"), Err(RegistrationError::NotJson("not an object".into())));
        // An unknown field is named by its first 64 characters; a repeated field is said first.
        let long = format!(r#"{{"family":"wav","{}":1}}"#, "k".repeat(100));
        assert_eq!(Registration::parse(long.as_bytes()), Err(RegistrationError::UnknownField("k".repeat(64))));
        let both = br#"{"x":1,"family":"wav","family":"wav"}"#;
        assert_eq!(Registration::parse(both), Err(RegistrationError::Repeated("family")));
        let long = format!(r#"{{"family":"wav","client_ref":"{}"}}"#, "x".repeat(MAX_CLIENT_REF_BYTES + 1));
        assert_eq!(Registration::parse(long.as_bytes()), Err(RegistrationError::BadClientRef));
        let longest = format!(r#"{{"family":"wav","client_ref":"{}"}}"#, "é".repeat(MAX_CLIENT_REF_BYTES / 2));
        assert!(Registration::parse(longest.as_bytes()).is_ok(), "at the limit, any non-control character");
        for visible in ["注文-17", "Zoë's order", "track 🎵 1", "ordre\u{00A0}17", "مرحبا"] {
            let body = serde_json::json!({"family": "wav", "client_ref": visible}).to_string();
            assert!(Registration::parse(body.as_bytes()).is_ok(), "{visible}");
        }
    }

    #[test]
    fn a_registered_task_is_submitted_pending_unswept_and_watched() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let reg = Registration { family: Family::Wav, client_ref: Some("mine".into()) };
        let r = reg.record(&TaskId::parse("t1").unwrap(), now, Duration::from_secs(600));
        assert_eq!((r.stage, r.vault, r.open.as_deref()), (Stage::Submitted, VaultState::Pending, None));
        assert!(r.files.is_empty() && r.callbacks.is_empty());
        assert_eq!((r.deliveries, r.registered_at, r.client_ref.as_deref()), (0, Some(now), Some("mine")));
        assert_eq!((r.reconcile.as_deref(), r.reconcile_at), (Some("due"), Some(now.plus(Duration::from_secs(600)))));
        assert!(reg.agrees_with(&r));
        assert_eq!(reg.completion(&r, now), None, "nothing to add");
        assert!(!Registration { client_ref: None, ..reg.clone() }.agrees_with(&r));
        assert!(!Registration { family: Family::Music, ..reg.clone() }.agrees_with(&r));

        // An empty client_ref an earlier build kept as given is none: agreed by a retry
        // without one, completed by one that gives one.
        let mut stored = serde_json::to_value(&r).unwrap();
        stored["client_ref"] = "".into();
        let empty: TaskRecord = serde_json::from_value(stored).unwrap();
        assert_eq!(empty.client_ref, None, "read as none");
        let no_ref = Registration { client_ref: None, ..reg.clone() };
        assert!(no_ref.agrees_with(&empty) && no_ref.disagreements(&empty).is_empty());
        assert!(reg.disagreements(&empty).is_empty());
        assert_eq!(reg.completion(&empty, now).and_then(|c| c.client_ref).as_deref(), Some("mine"));
    }

    /// A task ingest registered from a stale callback's unsigned family is no client's
    /// registration: one naming another family corrects it (200), and adds its client_ref.
    #[test]
    fn an_unsigned_family_is_corrected_by_a_registration() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let task = TaskId::parse("t1").unwrap();
        let unsigned = Registration::unsigned_record(Family::Music, &task, now);
        assert_eq!(
            (unsigned.stage, unsigned.registered_at, unsigned.registered_family),
            (Stage::Submitted, None, None)
        );
        assert_eq!(unsigned.reconcile.as_deref(), Some("due"), "polled");
        let client = Registration { family: Family::Lyrics, client_ref: Some("mine".into()) };
        assert!(client.disagreements(&unsigned).is_empty());
        let completion = client.completion(&unsigned, now).expect("something to add");
        assert_eq!((completion.family, completion.client_ref.as_deref()), (Some(Family::Lyrics), Some("mine")));
        // Once a client registered it, its family is the registered one.
        let mut completed = unsigned.clone();
        completion.apply(&mut completed);
        assert_eq!((completed.family, completed.registered_family), (Family::Lyrics, Some(Family::Lyrics)));
        assert!(client.agrees_with(&completed) && client.completion(&completed, now).is_none(), "a retry agrees");
        let third = Registration { family: Family::Wav, client_ref: Some("mine".into()) };
        assert_eq!(third.disagreements(&completed), ["family"]);
        // The same family as the unsigned one, without a client_ref: registered all the same.
        let same = Registration { family: Family::Music, client_ref: None };
        let registered = same.completion(&unsigned, now).expect("the registration itself");
        assert_eq!((registered.family, registered.registered_family), (None, Some(Family::Music)));
        // A client's registration is not corrected so (only by what its endpoint says), one
        // written before registered_family existed neither.
        let registered = client.record(&task, now, Duration::from_secs(600));
        let other = Registration { family: Family::Wav, client_ref: Some("mine".into()) };
        assert_eq!(other.disagreements(&registered), ["family"]);
        let earlier_build = TaskRecord { registered_family: None, ..registered };
        assert_eq!(other.disagreements(&earlier_build), ["family"]);
    }

    /// A family given to a task polled at another family's endpoint, which said it did not
    /// know the task for a day: not given up for that, and polled at once at the right one.
    #[test]
    fn a_family_given_to_a_task_polled_at_another_endpoint_is_polled_afresh() {
        let start = Timestamp::from_unix_ms(1_800_000_000_000);
        let task = TaskId::parse("t1").unwrap();
        let mut unsigned = Registration::unsigned_record(Family::Music, &task, start);
        let day = reconcile::NOT_FOUND_GIVE_UP_AFTER;
        let now = start.plus(day).plus(Duration::from_secs(600));
        unsigned.not_found_since = Some(start);
        unsigned.last_poll = Some(crate::LastPoll { at: now, outcome: "no_record".into() });
        let give_up_after = Duration::from_secs(14 * 86_400);
        assert_eq!(reconcile::give_up_reason(&unsigned, now, give_up_after), Some(crate::GiveUpReason::NotFound));

        let client = Registration { family: Family::VocalSeparation, client_ref: None };
        let mut completed = unsigned.clone();
        client.completion(&unsigned, now).expect("the family").apply(&mut completed);
        assert_eq!(completed.family, Family::VocalSeparation);
        assert_eq!(reconcile::give_up_reason(&completed, now, give_up_after), None);
        assert_eq!((completed.reconcile.as_deref(), completed.reconcile_at), (Some("due"), Some(now)));

        // Given up already for it: taken back, and polled at the right endpoint at once.
        let mut given_up = unsigned.clone();
        given_up.abandoned = Some(crate::Abandoned { reason: crate::GiveUpReason::NotFound, at: now });
        reconcile::unwatch(&mut given_up);
        let mut completed = given_up.clone();
        client.completion(&given_up, now).expect("the family").apply(&mut completed);
        assert_eq!((completed.abandoned, completed.reconcile_at), (None, Some(now)));
        // Given up for want of a result in time: that stands.
        given_up.abandoned = Some(crate::Abandoned { reason: crate::GiveUpReason::Abandoned, at: now });
        let mut completed = given_up.clone();
        client.completion(&given_up, now).expect("the family").apply(&mut completed);
        assert_eq!((completed.abandoned.is_some(), completed.reconcile), (true, None));
    }

    /// A client's own registration under the wrong family: its endpoint says "not found",
    /// and a registration naming another family corrects it (before the give-up and after
    /// one as `not_found`), which then is the registered family. Nothing else opens it.
    #[test]
    fn a_clients_family_the_provider_does_not_know_is_corrected() {
        let start = Timestamp::from_unix_ms(1_800_000_000_000);
        let task = TaskId::parse("t1").unwrap();
        let wrong = Registration { family: Family::Music, client_ref: Some("mine".into()) };
        let mut registered = wrong.record(&task, start, Duration::from_secs(600));
        let right = Registration { family: Family::VocalSeparation, client_ref: Some("mine".into()) };
        assert_eq!(right.disagreements(&registered), ["family"], "the provider said nothing yet");

        let now = start.plus(Duration::from_secs(3_600));
        registered.not_found_since = Some(start.plus(Duration::from_secs(600)));
        registered.last_poll = Some(crate::LastPoll { at: now, outcome: "no_record".into() });
        (registered.poll_interval_seconds, registered.last_chance_from) = (Some(240), Some(now));
        assert!(right.disagreements(&registered).is_empty());
        let completion = right.completion(&registered, now).expect("the family");
        assert_eq!(
            (completion.family, completion.registered_family, completion.client_ref.as_deref()),
            (Some(Family::VocalSeparation), Some(Family::VocalSeparation), None)
        );
        let mut corrected = registered.clone();
        completion.apply(&mut corrected);
        assert_eq!((corrected.family, corrected.not_found_since), (Family::VocalSeparation, None));
        // The other endpoint's answers are forgotten: its last poll, last chance and backoff.
        assert_eq!(
            (&corrected.last_poll, corrected.last_chance_from, corrected.poll_interval_seconds),
            (&None, None, None)
        );
        assert_eq!((corrected.reconcile.as_deref(), corrected.reconcile_at), (Some("due"), Some(now)));
        assert!(right.completion(&corrected, now).is_none(), "a retry agrees");
        assert_eq!(wrong.disagreements(&corrected), ["family"], "the wrong one retried is refused");
        assert!(wrong.completion(&registered, now).is_none(), "the same family adds nothing");

        // Given up as not_found: taken back.
        let mut given_up = TaskRecord { not_found_since: None, ..registered.clone() };
        given_up.abandoned = Some(crate::Abandoned { reason: crate::GiveUpReason::NotFound, at: now });
        reconcile::unwatch(&mut given_up);
        let mut corrected = given_up.clone();
        right.completion(&given_up, now).expect("the family").apply(&mut corrected);
        assert_eq!((corrected.family, corrected.abandoned, corrected.reconcile_at), (right.family, None, Some(now)));

        // Given up for want of a result in time (its last answers "not found" or not), or
        // called back: the family stands.
        given_up.abandoned = Some(crate::Abandoned { reason: crate::GiveUpReason::Abandoned, at: now });
        assert_eq!(right.disagreements(&given_up), ["family"]);
        given_up.not_found_since = registered.not_found_since;
        assert_eq!(right.disagreements(&given_up), ["family"]);
        let called_back = TaskRecord { stage: Stage::First, ..registered };
        assert_eq!(right.disagreements(&called_back), ["family"]);
    }

    /// A task a callback recorded first (no client_ref) takes a registration's client_ref, and
    /// an unknown family the registered one; a recorded client_ref or family that differs is
    /// a disagreement, never overwritten.
    #[test]
    fn a_registration_completes_a_called_back_task_it_agrees_with() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        // At `first`, so watched already whatever its family.
        let mut called_back =
            TaskRecord { version: 4, ..TaskRecord::new("t1", Family::Unknown, Stage::First, 200, "", now) };
        reconcile::watch(&mut called_back, now, Duration::from_secs(600));
        let reg = Registration { family: Family::Music, client_ref: Some("order-17".into()) };
        assert!(!reg.agrees_with(&called_back));
        let both = reg.completion(&called_back, now).expect("something to add");
        assert_eq!(
            both,
            Completion {
                client_ref: Some("order-17".into()),
                family: Some(Family::Music),
                registered_family: None,
                // Its polls so far asked no endpoint (an unknown family has none): at once.
                watch_from: Some(now)
            }
        );
        let mut completed = called_back.clone();
        both.apply(&mut completed);
        assert_eq!((completed.family, completed.version, completed.stage), (Family::Music, 5, Stage::First));
        assert!(reg.agrees_with(&completed) && reg.completion(&completed, now).is_none(), "once");

        let known_family = TaskRecord { family: Family::Music, ..called_back.clone() };
        assert_eq!(reg.completion(&known_family, now).map(|c| c.family), Some(None), "only the client_ref");
        let no_ref = Registration { client_ref: None, ..reg.clone() };
        let family_only = no_ref.completion(&called_back, now).expect("the family");
        assert_eq!(
            family_only,
            Completion {
                client_ref: None,
                family: Some(Family::Music),
                registered_family: None,
                watch_from: Some(now)
            }
        );
        assert_eq!(no_ref.completion(&known_family, now), None, "nothing to add");

        let other_family = TaskRecord { family: Family::Wav, ..called_back.clone() };
        assert_eq!(reg.completion(&other_family, now), None);
        // A failure without files read as music is the parser's guess: a registration naming
        // lyrics (docs.kie.ai's lyrics failure reads so) gives the task its family; one
        // naming music adds only its client_ref.
        let guessed = first_seen(&event(Stage::Error, Family::Music, &[]), now);
        assert!(guessed.family_read_from_a_failure());
        // So is one read as lyrics from its shape alone: a registration naming music gives the
        // task its family. One whose message names lyrics is lyrics.
        let read_as_lyrics = first_seen(&event(Stage::Error, Family::Lyrics, &[]), now);
        assert!(read_as_lyrics.family_read_from_a_failure());
        assert_eq!(reg.completion(&read_as_lyrics, now).and_then(|c| c.family), Some(Family::Music));
        let named =
            CallbackEvent { message: "Lyrics generation failed".into(), ..event(Stage::Error, Family::Lyrics, &[]) };
        assert!(!named.family_is_a_guess());
        // But ingest would not have let it overrule a registration made first (kie's "Song
        // Description flagged for moderation" may be a music task's): one made after gives
        // its family too, as the registered one; one naming lyrics confirms it.
        let from_message = first_seen(&named, now);
        assert!(from_message.family_read_from_a_failure());
        let given = reg.completion(&from_message, now).expect("music given");
        assert_eq!((given.family, given.registered_family), (Some(Family::Music), Some(Family::Music)));
        let confirmed = Registration { family: Family::Lyrics, ..reg.clone() }.completion(&from_message, now);
        let confirmed = confirmed.expect("lyrics confirmed");
        assert_eq!((confirmed.family, confirmed.registered_family), (None, Some(Family::Lyrics)));
        // Not over a client's registration from before `registered_family` was kept (its
        // `registered_at` alone): that family was the client's, as a guess's would be.
        let registered_before = TaskRecord { registered_at: Some(now), ..from_message.clone() };
        assert!(!registered_before.family_read_from_a_failure());
        assert_eq!(reg.completion(&registered_before, now), None);
        let guessed_over_registered = TaskRecord { registered_at: Some(now), ..guessed.clone() };
        assert!(!guessed_over_registered.family_read_from_a_failure());
        assert!(!event(Stage::Complete, Family::Lyrics, &[]).family_is_a_guess(), "a success is no guess");
        // Variants that all failed are lyrics' own, whatever the message says.
        let variant = LyricsVariant { status: "failed".into(), ..LyricsVariant::default() };
        let with_variants = CallbackEvent {
            details: Details::Lyrics { variants: vec![variant] },
            ..event(Stage::Error, Family::Lyrics, &[])
        };
        assert!(!with_variants.family_is_a_guess() && !first_seen(&with_variants, now).family_read_from_a_failure());
        let lyrics = Registration { family: Family::Lyrics, ..reg.clone() };
        let completion = lyrics.completion(&guessed, now).expect("the family");
        assert_eq!(completion.family, Some(Family::Lyrics));
        let mut completed = guessed.clone();
        completion.apply(&mut completed);
        assert!(lyrics.agrees_with(&completed) && lyrics.completion(&completed, now).is_none(), "once");
        assert_eq!(completed.registered_family, Some(Family::Lyrics));
        assert_eq!(reg.completion(&guessed, now).map(|c| c.family), Some(None), "music: only the client_ref");
        // Either way the family is given for good: a registration naming another is refused.
        let mut confirmed = guessed.clone();
        reg.completion(&guessed, now).expect("the client_ref").apply(&mut confirmed);
        assert_eq!((confirmed.family, confirmed.registered_family), (Family::Music, Some(Family::Music)));
        // A registration that only confirms the guess changes nothing the manifest carries:
        // the vault is not written again (no new generation, the manifest kept).
        let mut settled_guess = guessed.clone();
        settled_guess.client_ref = reg.client_ref.clone();
        settled_guess.manifest_key = Some("tasks/t1/manifest.json".into());
        let only_confirms = reg.completion(&settled_guess, now).expect("the registered family");
        assert_eq!((only_confirms.family, only_confirms.client_ref.as_deref()), (None, None));
        let mut kept = settled_guess.clone();
        only_confirms.apply(&mut kept);
        assert_eq!((kept.registered_family, kept.generation), (Some(Family::Music), settled_guess.generation));
        assert_eq!((kept.manifest_key, kept.version), (settled_guess.manifest_key.clone(), settled_guess.version + 1));
        assert_eq!(lyrics.completion(&confirmed, now), None);
        assert_eq!(lyrics.disagreements(&confirmed), ["family"]);
        assert_eq!(reg.disagreements(&completed), ["family"]);
        // Music that failed after tracks came is no guess, nor a family a registration gave.
        let mut with_tracks = guessed.clone();
        with_tracks.files.insert("tracks/a/audio".into(), file(crate::FileStatus::Stored, None));
        assert_eq!(lyrics.completion(&with_tracks, now), None);
        let registered_music = Registration { client_ref: None, ..reg.clone() }.record(
            &TaskId::parse("t1").unwrap(),
            now,
            Duration::from_secs(600),
        );
        assert!(!lyrics.agrees_with(&registered_music) && lyrics.completion(&registered_music, now).is_none());
        let failed_after = merge(&registered_music, &event(Stage::Error, Family::Music, &[]), now);
        assert_eq!((failed_after.family, failed_after.succeeded), (Family::Music, false));
        assert!(!lyrics.agrees_with(&failed_after) && lyrics.completion(&failed_after, now).is_none());
        let other_ref = TaskRecord { client_ref: Some("order-18".into()), ..called_back.clone() };
        assert_eq!(reg.completion(&other_ref, now), None);
    }

    /// A task of a family the callbacks could not tell, with a file failed by an expired URL,
    /// is not watched (no endpoint to poll); the registration naming its family starts
    /// watching it, from now, so the reconciler can fetch a fresh URL.
    #[test]
    fn a_family_given_to_a_task_with_an_expired_file_starts_watching_it() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let mut expired = file(crate::FileStatus::Failed, None);
        expired.error = Some("source answered 403 Forbidden".into());
        let mut called_back = TaskRecord::new("t1", Family::Unknown, Stage::Complete, 200, "", now);
        called_back.files.insert("a".into(), expired);
        assert!(!reconcile::needs_watching(&called_back), "unknown family: not watched");

        let reg = Registration { family: Family::Music, client_ref: None };
        let later = now.plus(Duration::from_secs(60));
        let completion = reg.completion(&called_back, later).expect("the family");
        assert_eq!(completion.watch_from, Some(later));
        let mut completed = called_back.clone();
        completion.apply(&mut completed);
        assert_eq!((completed.reconcile.as_deref(), completed.reconcile_at), (Some("due"), Some(later)));

        // Nothing failed by expiry: not watched. Watched already (its polls asked no family's
        // endpoint): polled at once.
        let mut stored = called_back.clone();
        stored.files.get_mut("a").unwrap().status = crate::FileStatus::Stored;
        assert_eq!(reg.completion(&stored, later).and_then(|c| c.watch_from), None);
        let mut watched = called_back.clone();
        reconcile::watch(&mut watched, now, Duration::from_secs(600));
        assert_eq!(reg.completion(&watched, later).and_then(|c| c.watch_from), Some(later));
    }

    /// What a completion adds is in the manifest and Task Vaulted: the file set's generation
    /// moves on (a settle planned before is refused), and a task settled already is open
    /// again, its manifest key gone, for a new manifest of the new generation. Files an
    /// attempt wrote without its task item are adopted, their generation being the new one.
    #[test]
    fn a_completion_moves_the_generation_on_and_reopens_a_settled_task_for_its_manifest() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let mut settled = TaskRecord::new("t1", Family::Unknown, Stage::Complete, 200, "", now);
        settled.files.insert("a".into(), file(crate::FileStatus::Stored, None));
        (settled.vault, settled.manifest_key, settled.generation) =
            (VaultState::Complete, Some("tasks/t1/manifest.json".into()), 4);
        settled.sync_open_marker();
        assert!(settled.is_settled() && settled.open.is_none());

        let reg = Registration { family: Family::Music, client_ref: None };
        let mut completed = settled.clone();
        reg.completion(&settled, now).expect("the family").apply(&mut completed);
        assert_eq!((completed.generation, completed.vault), (5, VaultState::Complete));
        assert_eq!((completed.manifest_key.as_deref(), completed.open.as_deref()), (None, Some("open")));
        // Written as one PutItem of the task item over the version read (results' only write).
        let put = crate::items::plan_save(Some(&settled), &completed).unwrap().task_put_alone();
        assert_eq!(
            put.map(|p| p.condition),
            Some(crate::items::PutCondition::Version { version: settled.version, adding: None })
        );
        let mut with_a_file = completed.clone();
        with_a_file.files.insert("b".into(), settled.files["a"].clone());
        let more = crate::items::plan_save(Some(&settled), &with_a_file).unwrap().task_put_alone();
        assert!(more.is_none(), "a file item besides: not the task item alone");
        let id = TaskId::parse("t1").unwrap();
        let crate::download::SettlePlan::Settle(plan) = crate::download::settle_plan(&completed, &id, now) else {
            panic!("the manifest is asked for again");
        };
        assert_eq!((plan.generation, plan.manifest.family), (5, Family::Music));

        // A reopen whose task item never came (its file stamped with generation 6): adopted.
        let reopened = file(crate::FileStatus::Enqueuing, Some(6));
        let mut uncommitted = settled.clone();
        uncommitted.files.insert("a".into(), reopened);
        reg.completion(&uncommitted, now).expect("the family").apply(&mut uncommitted);
        assert_eq!((uncommitted.generation, uncommitted.vault), (6, VaultState::Pending));
        assert_eq!(uncommitted.open.as_deref(), Some("open"));
    }

    /// A task given up without files or a result is out of the `open-tasks` index (nothing
    /// would settle it): a registration adding its client_ref leaves it out, but puts one given
    /// up with its result settled back for its manifest; a given-up task takes no new file
    /// set, so an attempt's uncommitted files are not adopted.
    #[test]
    fn a_completion_leaves_a_given_up_task_out_of_the_open_index() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let reg = Registration { family: Family::Music, client_ref: None };
        let registered = reg.record(&TaskId::parse("t1").unwrap(), now, Duration::from_secs(600));
        let given_up = reconcile::abandon(&registered, crate::GiveUpReason::Abandoned, now);
        assert_eq!(given_up.open, None);
        let with_ref = Registration { client_ref: Some("order-17".into()), ..reg };
        let mut completed = given_up.clone();
        with_ref.completion(&given_up, now).expect("the client_ref").apply(&mut completed);
        assert_eq!((completed.client_ref.as_deref(), completed.open.as_deref()), (Some("order-17"), None));

        // Given up with its result settled (a `text` stage without files, its manifest
        // written): the client_ref asks for the manifest again, so it is open for the sweeper.
        let mut settled_text = TaskRecord::new("t1", Family::Music, Stage::Text, 200, "", now);
        (settled_text.vault, settled_text.manifest_key) = (VaultState::Complete, Some("tasks/t1/manifest.json".into()));
        let given_up_text = reconcile::abandon(&settled_text, crate::GiveUpReason::Abandoned, now);
        assert_eq!(given_up_text.open, None, "settled: nothing to do");
        let mut completed_text = given_up_text.clone();
        with_ref.completion(&given_up_text, now).expect("the client_ref").apply(&mut completed_text);
        assert_eq!((completed_text.manifest_key.as_deref(), completed_text.open.as_deref()), (None, Some("open")));
        let crate::download::SettlePlan::Settle(plan) =
            crate::download::settle_plan(&completed_text, &TaskId::parse("t1").unwrap(), now)
        else {
            panic!("the manifest is asked for again");
        };
        assert_eq!(plan.manifest.client_ref.as_deref(), Some("order-17"));

        let reopened = file(crate::FileStatus::Enqueuing, Some(given_up.generation + 3));
        let mut with_file = given_up.clone();
        with_file.files.insert("a".into(), reopened);
        let mut completed = with_file.clone();
        with_ref.completion(&with_file, now).expect("the client_ref").apply(&mut completed);
        assert_eq!(completed.generation, given_up.generation + 1, "moved on by the completion, not by adopting");
        assert_eq!(completed.vault, with_file.vault);
    }

    fn event(stage: Stage, family: Family, files: &[&str]) -> CallbackEvent {
        CallbackEvent {
            task_id: TaskId::parse("t1").unwrap(),
            family,
            stage,
            code: 200,
            message: "ok".into(),
            files: files.iter().map(|n| FileRef { name: (*n).into(), url: format!("https://h/{n}.mp3") }).collect(),
            streams: vec![],
            details: Details::None,
        }
    }

    /// A task first seen with `event`.
    fn first_seen(event: &CallbackEvent, now: Timestamp) -> TaskRecord {
        ingested(None, event, now)
    }

    fn merge(record: &TaskRecord, event: &CallbackEvent, now: Timestamp) -> TaskRecord {
        ingested(Some(record), event, now)
    }

    fn ingested(record: Option<&TaskRecord>, event: &CallbackEvent, now: Timestamp) -> TaskRecord {
        let body = BodyInfo {
            sha256_hex: "ab".repeat(32),
            archive_key: "tasks/t1/callbacks/x.json".into(),
            bytes: 2,
            arrived_at: None,
        };
        let claimant = Claimant { id: "req".into(), lease: Duration::from_secs(15) };
        ingest_callback(record, event, &body, &claimant, now).record
    }

    #[test]
    fn a_callback_moves_a_registered_task_on_keeping_its_client_ref() {
        let t0 = Timestamp::from_unix_ms(1_800_000_000_000);
        let t1 = t0.plus(Duration::from_secs(90));
        let reg = Registration { family: Family::Music, client_ref: Some("order-17".into()) };
        let registered = reg.record(&TaskId::parse("t1").unwrap(), t0, Duration::from_secs(600));
        let merged = merge(&registered, &event(Stage::First, Family::Music, &["tracks/a/audio"]), t1);
        assert_eq!(
            (merged.stage, merged.vault, merged.open.as_deref()),
            (Stage::First, VaultState::Pending, Some("open"))
        );
        assert_eq!((merged.client_ref.as_deref(), merged.registered_at), (Some("order-17"), Some(t0)));
        assert_eq!((merged.first_received_at, merged.deliveries), (t1, 1));
        assert_eq!(merged.files.len(), 1);

        // The callback's family wins over the registered one; a result without files settles
        // the task as it is recorded (its manifest is asked for), as for a task first seen so.
        let lyrics = merge(&registered, &event(Stage::Complete, Family::Lyrics, &[]), t1);
        assert_eq!(
            (lyrics.family, lyrics.stage, lyrics.vault),
            (Family::Lyrics, Stage::Complete, VaultState::Complete)
        );
        // ... except a failure read as music or lyrics, whose shape is all that names it: a
        // task registered as music stays music, one registered as lyrics stays lyrics.
        let read_as_lyrics = merge(&registered, &event(Stage::Error, Family::Lyrics, &[]), t1);
        assert_eq!((read_as_lyrics.family, read_as_lyrics.stage), (Family::Music, Stage::Error));
        let as_lyrics = Registration { family: Family::Lyrics, ..reg.clone() };
        let registered_lyrics = as_lyrics.record(&TaskId::parse("t1").unwrap(), t0, Duration::from_secs(600));
        let failed = merge(&registered_lyrics, &event(Stage::Error, Family::Music, &[]), t1);
        assert_eq!((failed.family, failed.stage), (Family::Lyrics, Stage::Error));
        let succeeded = merge(&registered_lyrics, &event(Stage::Complete, Family::Music, &["tracks/a/audio"]), t1);
        assert_eq!(succeeded.family, Family::Music, "a result with tracks is music");
        // The same registration, retried, still agrees; another family does not.
        assert!(reg.agrees_with(&lyrics) && reg.completion(&lyrics, t1).is_none());
        let cover = Registration { family: Family::CoverImage, ..reg.clone() };
        assert!(!cover.agrees_with(&lyrics) && cover.completion(&lyrics, t1).is_none());
        assert!(manifest_job(&lyrics).is_some());
        assert_eq!(lyrics.open.as_deref(), Some("open"), "swept until its manifest is recorded");
        // ... but an unknown family does not replace the registered one.
        let unknown = merge(&registered, &event(Stage::Final, Family::Unknown, &["x"]), t1);
        assert_eq!(unknown.family, Family::Music);
    }
}
