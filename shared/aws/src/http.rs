//! The outbound HTTP client of the functions that call parties outside AWS (the provider's
//! API, a user's webhook receiver): redirects not followed (a 3xx is an answer, never a way
//! to another host), proxies from the environment ignored, a connect timeout and a timeout
//! for each whole request.

use std::time::Duration;

/// How long a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client that names itself `user_agent` and gives up on a request after `timeout`. Fails
/// only when the TLS backend cannot start.
pub fn client(user_agent: &str, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest has no crypto provider of its own: use the SDK's (aws-lc-rs), once per process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .user_agent(user_agent)
        .build()
}
