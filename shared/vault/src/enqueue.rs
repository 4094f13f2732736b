//! Claim-and-send: how the files a request (ingest) or a run (the sweeper) has claimed reach
//! the download queue. One message per claimed file; the sent files are marked `queued` (one
//! write of the task item, unconditional: the set names files, not claims), the others
//! released back to `pending`, each only while still held under the sender's claim.
//!
//! Known gap: a mark delayed past a whole download of the file, its failure, a reopen by a
//! new URL and a release of the new claim (a chain of seconds at least, against one
//! UpdateItem sent right after the messages) would read that reopened file as `queued`
//! with no message out. Stamping the names in the set with the file's generation would
//! close it.
//!
//! The ports are implemented over AWS by `stemvault_aws::enqueue`; a function's own adapter
//! struct hands them to it with [`delegate_enqueue_ports!`](crate::delegate_enqueue_ports).

#[cfg(feature = "test-support")]
pub mod memory;

use std::future::Future;

use suno_callbacks::TaskId;

use crate::ingest::Claimant;
use crate::{FileJob, QueueError, StoreError};

/// Send one message per job; one result per job, in order: the message id or why it failed.
pub trait EnqueueFiles {
    fn enqueue_files(&self, jobs: &[FileJob]) -> impl Future<Output = Vec<Result<String, QueueError>>> + Send;
}

/// Mark the sent files `queued`: add them to the task item's `queued` set (one write for
/// them all, whichever request sent them; a downloader's claim of a file supersedes it).
pub trait MarkQueued {
    fn mark_queued(&self, task_id: &TaskId, names: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Put files whose message could not be sent back to `pending`, each only while it is still
/// `enqueuing` under `claimant`'s claim; `lease_until` becomes now, when the claim ended
/// (read by [`crate::ingest::reclaim`]'s rule for a file whose message cannot be left).
pub trait ReleaseClaims {
    fn release_claims(
        &self,
        task_id: &TaskId,
        claimant: &str,
        names: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Some claimed files could not be queued; they are `pending` again (or their claims lapse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{failed} of {total} file jobs could not be queued: {reason}")]
pub struct EnqueueError {
    pub failed: usize,
    pub total: usize,
    /// The first failure's reason, as the queue gave it.
    pub reason: String,
}

impl EnqueueError {
    /// Always: the files are claimable again, and the queue may work next time.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// What one send of claimed jobs did: the files whose message went out, and those whose
/// message did not (with the first failure's reason).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sent {
    /// Names of the files whose message went out.
    pub out: Vec<String>,
    pub failed: Vec<String>,
    reason: Option<String>,
}

impl Sent {
    /// How many messages went out, or why some did not.
    pub fn result(&self) -> Result<usize, EnqueueError> {
        if self.failed.is_empty() {
            return Ok(self.out.len());
        }
        let total = self.out.len() + self.failed.len();
        Err(EnqueueError { failed: self.failed.len(), total, reason: self.reason.clone().unwrap_or_default() })
    }
}

/// Send one message per claimed job (none for no jobs).
pub async fn send_jobs<P: EnqueueFiles>(ports: &P, jobs: &[FileJob]) -> Sent {
    let mut sent = Sent::default();
    if jobs.is_empty() {
        return sent;
    }
    let mut results = ports.enqueue_files(jobs).await.into_iter();
    for job in jobs {
        match results.next().unwrap_or_else(|| Err(QueueError::transient("SendMessageBatch", "no result for this job")))
        {
            Ok(message_id) => {
                tracing::debug!(file = %job.name, message_id, "queued");
                sent.out.push(job.name.clone());
            }
            Err(why) => {
                sent.reason.get_or_insert_with(|| why.to_string());
                sent.failed.push(job.name.clone());
            }
        }
    }
    sent
}

/// The record's side of a send: mark the sent files queued, release the others. Its
/// failures are only logged: the messages are out (the downloader takes files still
/// `enqueuing`), and unreleased claims lapse with their lease.
pub async fn record_sent<P>(ports: &P, task: &TaskId, claimant: &Claimant, sent: &Sent)
where
    P: MarkQueued + ReleaseClaims,
{
    if !sent.out.is_empty()
        && let Err(e) = ports.mark_queued(task, &sent.out).await
    {
        // The files will be stored; the record only lags behind until then.
        tracing::warn!(error = %e, files = sent.out.len(), "messages sent but files not marked queued");
    }
    if !sent.failed.is_empty()
        && let Err(e) = ports.release_claims(task, &claimant.id, &sent.failed).await
    {
        tracing::warn!(error = %e, files = sent.failed.len(), "claims not released; they lapse with their lease");
    }
}

/// Send the claimed jobs, mark the sent ones queued, release the rest. Returns what was sent
/// and what was not ([`Sent::result`]: how many, or why some were not).
pub async fn send_claimed<P>(ports: &P, task: &TaskId, claimant: &Claimant, jobs: &[FileJob]) -> Sent
where
    P: EnqueueFiles + MarkQueued + ReleaseClaims,
{
    let sent = send_jobs(ports, jobs).await;
    record_sent(ports, task, claimant, &sent).await;
    sent
}

#[doc(hidden)]
pub mod __macro_support {
    pub use suno_callbacks::TaskId;
}

/// Implement the task and claim-and-send ports ([`LoadTask`](crate::LoadTask),
/// [`SaveTask`](crate::SaveTask), [`EnqueueFiles`], [`MarkQueued`], [`ReleaseClaims`],
/// [`Clock`](crate::Clock)) for a function's adapter struct by handing every call to its
/// field that holds the shared adapter: `delegate_enqueue_ports!(AwsPorts => shared);`.
#[macro_export]
macro_rules! delegate_enqueue_ports {
    ($ports:ty => $field:ident) => {
        impl $crate::LoadTask for $ports {
            fn load_task(
                &self,
                task_id: &$crate::enqueue::__macro_support::TaskId,
            ) -> impl ::std::future::Future<
                Output = ::std::result::Result<::std::option::Option<$crate::TaskRecord>, $crate::StoreError>,
            > + Send {
                $crate::LoadTask::load_task(&self.$field, task_id)
            }
        }

        impl $crate::SaveTask for $ports {
            fn save_task(
                &self,
                before: ::std::option::Option<&$crate::TaskRecord>,
                after: &$crate::TaskRecord,
            ) -> impl ::std::future::Future<Output = ::std::result::Result<(), $crate::StoreError>> + Send {
                $crate::SaveTask::save_task(&self.$field, before, after)
            }
        }

        impl $crate::enqueue::EnqueueFiles for $ports {
            fn enqueue_files(
                &self,
                jobs: &[$crate::FileJob],
            ) -> impl ::std::future::Future<
                Output = ::std::vec::Vec<::std::result::Result<::std::string::String, $crate::QueueError>>,
            > + Send {
                $crate::enqueue::EnqueueFiles::enqueue_files(&self.$field, jobs)
            }
        }

        impl $crate::enqueue::MarkQueued for $ports {
            fn mark_queued(
                &self,
                task_id: &$crate::enqueue::__macro_support::TaskId,
                names: &[::std::string::String],
            ) -> impl ::std::future::Future<Output = ::std::result::Result<(), $crate::StoreError>> + Send {
                $crate::enqueue::MarkQueued::mark_queued(&self.$field, task_id, names)
            }
        }

        impl $crate::enqueue::ReleaseClaims for $ports {
            fn release_claims(
                &self,
                task_id: &$crate::enqueue::__macro_support::TaskId,
                claimant: &str,
                names: &[::std::string::String],
            ) -> impl ::std::future::Future<Output = ::std::result::Result<(), $crate::StoreError>> + Send {
                $crate::enqueue::ReleaseClaims::release_claims(&self.$field, task_id, claimant, names)
            }
        }

        impl $crate::Clock for $ports {
            fn now(&self) -> $crate::Timestamp {
                $crate::Clock::now(&self.$field)
            }

            fn sleep(&self, duration: ::std::time::Duration) -> impl ::std::future::Future<Output = ()> + Send {
                $crate::Clock::sleep(&self.$field, duration)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A queue that refuses the jobs named in `refuse`, and a record of what was marked and
    /// released.
    #[derive(Default)]
    struct Recorder {
        refuse: Vec<&'static str>,
        marked: Mutex<Vec<String>>,
        released: Mutex<Vec<String>>,
        mark_fails: bool,
    }

    impl EnqueueFiles for Recorder {
        async fn enqueue_files(&self, jobs: &[FileJob]) -> Vec<Result<String, QueueError>> {
            jobs.iter()
                .map(|j| match self.refuse.contains(&j.name.as_str()) {
                    true => Err(QueueError::transient("SendMessageBatch", format!("refused {}", j.name))),
                    false => Ok(format!("m-{}", j.name)),
                })
                .collect()
        }
    }

    impl MarkQueued for Recorder {
        async fn mark_queued(&self, _: &TaskId, sent: &[String]) -> Result<(), StoreError> {
            self.marked.lock().unwrap().extend_from_slice(sent);
            if self.mark_fails { Err(StoreError::Unavailable("down".into())) } else { Ok(()) }
        }
    }

    impl ReleaseClaims for Recorder {
        async fn release_claims(&self, _: &TaskId, claimant: &str, names: &[String]) -> Result<(), StoreError> {
            assert_eq!(claimant, "req-1");
            self.released.lock().unwrap().extend_from_slice(names);
            Ok(())
        }
    }

    fn jobs(names: &[&str]) -> Vec<FileJob> {
        names
            .iter()
            .map(|n| FileJob {
                task_id: "t".into(),
                name: (*n).into(),
                url: format!("https://h/{n}"),
                key: format!("tasks/t/{n}"),
            })
            .collect()
    }

    fn claimant() -> Claimant {
        Claimant { id: "req-1".into(), lease: Duration::from_secs(15) }
    }

    #[tokio::test]
    async fn sent_files_are_marked_and_refused_ones_released() {
        let task = TaskId::parse("t").unwrap();
        let ports = Recorder { refuse: vec!["b", "c"], ..Recorder::default() };
        let err = send_claimed(&ports, &task, &claimant(), &jobs(&["a", "b", "c"])).await.result().unwrap_err();
        assert_eq!(err, EnqueueError { failed: 2, total: 3, reason: "SQS SendMessageBatch failed: refused b".into() });
        assert!(err.is_retryable());
        assert_eq!(*ports.marked.lock().unwrap(), ["a"]);
        assert_eq!(*ports.released.lock().unwrap(), ["b", "c"]);
    }

    #[tokio::test]
    async fn all_sent_counts_even_when_marking_fails_and_nothing_sends_nothing() {
        let task = TaskId::parse("t").unwrap();
        let ports = Recorder { mark_fails: true, ..Recorder::default() };
        assert_eq!(send_claimed(&ports, &task, &claimant(), &jobs(&["a", "b"])).await.result(), Ok(2));
        assert!(ports.released.lock().unwrap().is_empty());
        assert_eq!(send_claimed(&ports, &task, &claimant(), &[]).await.result(), Ok(0));
        assert_eq!(ports.marked.lock().unwrap().len(), 2);
    }
}
