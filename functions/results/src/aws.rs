//! The ports over AWS: the task table (one strongly consistent Query of a task's item
//! collection, and a registration's conditional PutItem), S3 presigning, and the parked
//! callbacks of a task the table does not know (one ListObjectsV2).

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use stemvault_aws::TaskTable;
use stemvault_vault::items;
use stemvault_vault::{Conditional, LoadTask, SaveTask, StorageError, StoreError, TaskRecord};
use suno_callbacks::{TaskId, s3_key};

use crate::Config;
use crate::domain::{IsParked, PresignDownload};
use crate::error::PRESIGN;
use stemvault_aws::sdk_error::error_chain;

/// The IAM actions of every AWS call the function makes (template.yaml grants exactly these):
/// the task's item collection (one Query), a registration's task item (PutItem, only if
/// absent; or, completing a task recorded first, over the version read), presigning, which
/// signs a GetObject the caller later makes with the function's credentials, and listing a
/// task's parked callbacks (ListBucket, under `parked/` only).
pub const AWS_ACTIONS: &[&str] = &["dynamodb:Query", "dynamodb:PutItem", "s3:GetObject", "s3:ListBucket"];

/// The task table and the vault bucket.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    table: TaskTable,
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl AwsPorts {
    /// Build the clients once, at start-up.
    pub fn new(config: &Config, sdk: &aws_config::SdkConfig) -> AwsPorts {
        AwsPorts {
            table: TaskTable::new(aws_sdk_dynamodb::Client::new(sdk), &config.table_name),
            s3: stemvault_aws::s3_client(sdk),
            bucket: config.bucket_name.clone(),
        }
    }
}

impl LoadTask for AwsPorts {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.table.load(task_id.as_str()).await
    }
}

stemvault_aws::system_clock!(AwsPorts);

impl SaveTask for AwsPorts {
    /// A registration (over no task: its task item, only if there is none) or its completion
    /// (the task item alone, its files and callbacks as read): one PutItem, over the version read. Any other plan is refused before it is
    /// sent: this role may not write file or callback items, nor UpdateItem.
    async fn save_task(&self, before: Option<&TaskRecord>, after: &TaskRecord) -> Result<(), StoreError> {
        let Some(put) = items::plan_save(before, after)?.task_put_alone() else {
            // Not the plan's contents: file items hold signed URLs.
            return Err(StoreError::Rejected("a registration writes the task item alone".into()));
        };
        match self.table.put("PutItem (registration)", put).await? {
            Conditional::Applied => Ok(()),
            Conditional::Conflict => Err(StoreError::Conflict),
        }
    }
}

impl IsParked for AwsPorts {
    async fn is_parked(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        stemvault_aws::parked::list(&self.s3, &self.bucket, &s3_key::parked_task_prefix(task_id), None, 1)
            .await
            .map(|parked| !parked.is_empty())
            .map_err(stemvault_aws::parked::listing_failed)
    }
}

impl PresignDownload for AwsPorts {
    async fn presign_download(&self, key: &str, expires_in: Duration) -> Result<String, StorageError> {
        let config =
            PresigningConfig::expires_in(expires_in).map_err(|e| StorageError::transient(PRESIGN, e.to_string()))?;
        let request = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            // Opened in a browser, a file downloads rather than renders: its type is the
            // source's, and one that runs script (an SVG) must not run it from a link this API
            // handed out. Players and HTTP clients read the bytes as before.
            .response_content_disposition(attachment(key))
            .presigned(config)
            .await
            .map_err(|e| StorageError::transient(PRESIGN, error_chain(&e)))?;
        Ok(request.uri().to_owned())
    }
}

/// The longest filename a link saves as: file systems take 255 bytes a name, and a browser
/// may add ` (1)` to one already there.
const MAX_FILENAME_BYTES: usize = 240;

/// `attachment` with a filename a browser saves the object as: the key after `tasks/`, its
/// slashes `_` (`<task_id>_tracks_a_audio.mp3`: every track's audio is `audio.mp3` under its
/// own prefix), and any character but letters, digits, `.`, `-` and `_` also `_`, so the
/// name needs no quoting rules beyond its quotes. A longer name than a file system takes (an
/// unknown family's nested one) keeps its start and extension, with the first 8 hex digits
/// of the key's SHA-256 between, so two such files still save apart.
fn attachment(key: &str) -> String {
    let name: String = key
        .strip_prefix("tasks/")
        .unwrap_or(key)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let name = if name.len() <= MAX_FILENAME_BYTES {
        name
    } else {
        let extension = s3_key::key_extension(key).map(|e| format!(".{e}")).unwrap_or_default();
        let hash = s3_key::short_sha256(key);
        // ASCII: any byte index is a character boundary.
        let start = &name[..MAX_FILENAME_BYTES - 1 - hash.len() - extension.len()];
        format!("{start}-{hash}{extension}")
    };
    format!("attachment; filename=\"{name}\"")
}

#[cfg(test)]
mod tests {
    use super::{MAX_FILENAME_BYTES, attachment};

    #[test]
    fn a_link_saves_its_file_under_the_task_and_the_file_s_name() {
        assert_eq!(
            attachment("tasks/e649edb7abfd759285bd41a47a634b10/tracks/a/audio.mp3"),
            r#"attachment; filename="e649edb7abfd759285bd41a47a634b10_tracks_a_audio.mp3""#
        );
        assert_eq!(attachment("tasks/id:1+2=3/vocal"), r#"attachment; filename="id_1_2_3_vocal""#);
        assert_eq!(attachment("tasks/t/a\"b\\c"), r#"attachment; filename="t_a_b_c""#);
    }

    /// A name longer than a file system takes is cut, keeping its extension, with the key's
    /// hash so two long names with one start save apart; one that fits is left whole.
    #[test]
    fn a_long_name_saves_shortened_with_its_extension_and_the_key_s_hash() {
        let filename = |key: &str| {
            attachment(key).strip_prefix("attachment; filename=\"").unwrap().trim_end_matches('"').to_owned()
        };
        let fits = format!("tasks/t/{}.mp3", "a".repeat(MAX_FILENAME_BYTES - 6));
        assert_eq!(filename(&fits).len(), MAX_FILENAME_BYTES);
        let long = |last: &str| format!("tasks/t/{}/{last}.mp3", "a/".repeat(300));
        let (one, two) = (filename(&long("x")), filename(&long("y")));
        assert_eq!((one.len(), two.len()), (MAX_FILENAME_BYTES, MAX_FILENAME_BYTES));
        assert!(one.starts_with("t_a_a_") && one.ends_with(".mp3"), "{one}");
        assert_ne!(one, two);
        assert!(!filename(&format!("tasks/t/{}", "b".repeat(400))).contains('.'), "no extension, none added");
    }
}
