//! The provider's record-info endpoints over HTTP: `GET {PROVIDER_BASE_URL}{path}?taskId=<id>`
//! with the API key as a Bearer token ([`suno_callbacks::poll::record_info_path`]).

use std::time::Duration;

use stemvault_aws::provider::ApiKey;
use suno_callbacks::{Family, TaskId, poll::record_info_path};

use crate::domain::ProviderAnswer;

/// How long a whole poll may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Larger answers are not read (the largest documented ones are tens of kilobytes).
pub const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// The record-info endpoints of one provider.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    client: reqwest::Client,
    base_url: String,
    key: ApiKey,
}

impl HttpProvider {
    /// Fails only when the TLS backend cannot start.
    pub fn new(base_url: &str, key: ApiKey) -> Result<HttpProvider, reqwest::Error> {
        let client =
            stemvault_aws::provider::http_client(concat!("stemvault-reconciler/", env!("CARGO_PKG_VERSION")), TIMEOUT)?;
        Ok(HttpProvider { client, base_url: base_url.trim_end_matches('/').to_owned(), key })
    }

    /// The URL polled for `task_id` of `family` (None: the family has no endpoint).
    pub fn url(&self, family: Family, task_id: &TaskId) -> Option<String> {
        let path = record_info_path(family)?;
        let mut url = url::Url::parse(&format!("{}{path}", self.base_url)).ok()?;
        url.query_pairs_mut().append_pair("taskId", task_id.as_str());
        Some(url.into())
    }

    /// One poll. Transport failures and over-long answers are [`ProviderAnswer::Unreachable`].
    pub async fn poll(&self, family: Family, task_id: &TaskId) -> ProviderAnswer {
        let Some(url) = self.url(family, task_id) else {
            return ProviderAnswer::Unreachable(format!("family {family} has no record-info endpoint"));
        };
        let sent = self.client.get(&url).bearer_auth(self.key.expose()).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return ProviderAnswer::Unreachable(without_url(&e)),
        };
        let status = response.status().as_u16();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER_BYTES => body.extend_from_slice(&chunk),
                Ok(Some(_)) => {
                    return ProviderAnswer::Unreachable(format!("the answer is over {MAX_ANSWER_BYTES} bytes"));
                }
                Ok(None) => return ProviderAnswer::Http { status, body },
                Err(e) => return ProviderAnswer::Unreachable(without_url(&e)),
            }
        }
    }
}

/// A reqwest error's text without its URL (it names the task id only, but stays short).
fn without_url(e: &reqwest::Error) -> String {
    format!("the provider {}", stemvault_aws::provider::error_text(e))
}

#[cfg(test)]
mod tests {
    use stemvault_aws::secrets::SecretText;

    use super::*;

    #[test]
    fn each_family_is_polled_at_its_record_info_endpoint() {
        let key = ApiKey::from_secret(&SecretText::new("k")).unwrap();
        let provider = HttpProvider::new("http://127.0.0.1:9/", key).unwrap();
        let task = TaskId::parse("2fac****9f72").unwrap();
        assert_eq!(
            provider.url(Family::VocalSeparation, &task).as_deref(),
            Some("http://127.0.0.1:9/api/v1/vocal-removal/record-info?taskId=2fac****9f72")
        );
        assert_eq!(provider.url(Family::Unknown, &task), None);
    }
}
