//! The notify function's settings, read once at start-up from the environment.

use stemvault_aws::{ConfigError, Env, FromEnv};
use url::Url;

/// Every variable the function reads (besides `LOG_LEVEL`, read by
/// `stemvault_aws::logging::init`, and the AWS SDK's own). The signing secret is not among
/// them: it is in Secrets Manager, named by `NOTIFY_SECRET_ARN` ([`crate::secret`]).
pub const ENVIRONMENT: &[&str] = &["NOTIFY_URL", "NOTIFY_SECRET_ARN", "QUEUE_URL", "DEAD_LETTER_QUEUE_URL"];

/// No secret in here but what `NOTIFY_URL` may hold (a token in its path or query), which
/// its Debug shows only as [`stemvault_vault::shown::loggable`] does.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Where every webhook goes ([`notify_url`]).
    pub notify_url: Url,
    /// The Secrets Manager secret (ARN or name) whose text is the signing secret.
    pub notify_secret_arn: String,
    /// The notify queue: retries are delayed with ChangeMessageVisibility on it.
    pub queue_url: String,
    /// The notify dead-letter queue (the notify queue's redrive target): a message the
    /// receiver refused with 410 Gone is sent there, with its reason, to be redriven.
    pub dead_letter_queue_url: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("notify_url", &stemvault_vault::shown::loggable(&self.notify_url))
            .field("notify_secret_arn", &self.notify_secret_arn)
            .field("queue_url", &self.queue_url)
            .field("dead_letter_queue_url", &self.dead_letter_queue_url)
            .finish()
    }
}

impl FromEnv for Config {
    const ENVIRONMENT: &'static [&'static str] = ENVIRONMENT;

    fn read(env: &Env) -> Result<Config, ConfigError> {
        let raw = env.required("NOTIFY_URL")?;
        let notify_url = notify_url(&raw).map_err(|reason| ConfigError::Invalid { name: "NOTIFY_URL", reason })?;
        Ok(Config {
            notify_url,
            notify_secret_arn: env.required("NOTIFY_SECRET_ARN")?,
            queue_url: env.required("QUEUE_URL")?,
            dead_letter_queue_url: env.required("DEAD_LETTER_QUEUE_URL")?,
        })
    }
}

/// `NOTIFY_URL`, checked: an absolute `https` URL, or `http` to a loopback host
/// (`127.0.0.1`, `::1`, `localhost`: local runs only), without credentials or a fragment.
/// A refusal names at most the scheme and host: the path and query may carry the receiver's
/// token, and the reason is printed to the function's logs.
pub fn notify_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (user:password@)".into());
    }
    if url.fragment().is_some() {
        return Err("has a fragment (#...), which is never sent".into());
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if stemvault_aws::http::is_loopback(url.host()) => Ok(url),
        "http" => Err(format!(
            "plain http to {:?}, which is not 127.0.0.1, ::1 or localhost; use https",
            url.host_str().unwrap_or_default()
        )),
        other => Err(format!("scheme {other:?}; use https")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stemvault-notify-AbCdEf";

    fn config(url: &str) -> Result<Config, ConfigError> {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("NOTIFY_URL", url),
            ("NOTIFY_SECRET_ARN", ARN),
            ("QUEUE_URL", "http://q/1/notify"),
            ("DEAD_LETTER_QUEUE_URL", "http://q/1/notify-dlq"),
        ]);
        Config::from_lookup(|k| vars.get(k).map(|v| v.to_string()))
    }

    /// A token in the URL stays out of a `{:?}` of the settings (and of the poster).
    #[test]
    fn debug_shows_the_url_as_logged() {
        let c = config("https://hooks.example.com/t0ken?key=s3cr3t").unwrap();
        let poster = crate::poster::HttpPoster::new(c.notify_url.clone()).unwrap();
        for shown in [format!("{c:?}"), format!("{poster:?}")] {
            assert!(shown.contains("https://hooks.example.com/… (sha256 "), "{shown}");
            assert!(!shown.contains("t0ken") && !shown.contains("s3cr3t"), "{shown}");
        }
    }

    #[test]
    fn reads_every_setting() {
        let c = config(" https://hooks.example.com/stemvault?team=7 ").unwrap();
        assert_eq!(c.notify_url.as_str(), "https://hooks.example.com/stemvault?team=7");
        assert_eq!((c.notify_secret_arn.as_str(), c.queue_url.as_str()), (ARN, "http://q/1/notify"));
        assert_eq!(c.dead_letter_queue_url, "http://q/1/notify-dlq");
    }

    #[test]
    fn https_anywhere_and_http_only_to_a_loopback_host() {
        for ok in [
            "https://hooks.example.com/x",
            "https://203.0.113.9:8443/",
            "http://127.0.0.1:4000/hook",
            "http://localhost/hook",
            "http://LOCALHOST:9/",
            "http://[::1]:4000/",
        ] {
            assert!(notify_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/x",
            "http://127.0.0.2/x",
            "http://10.0.0.1/x",
            "http://localhost.example.com/x",
            "http://127.0.0.1.nip.io/x",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/#frag",
            "hooks.example.com/x",
        ] {
            assert!(notify_url(bad).is_err(), "{bad}");
        }
        let err = config("http://hooks.example.com/x").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "NOTIFY_URL", .. }), "{err}");
        assert!(err.to_string().contains("use https"), "{err}");
    }

    /// The reason goes to the logs: never the path or query, where a receiver's token may be.
    #[test]
    fn a_refusal_shows_no_path_nor_query() {
        for bad in [
            "https://hooks.example.com/in/s3cr3t?token=s3cr3t#x",
            "https://hooks.example.com:99999/in/s3cr3t?token=s3cr3t",
            "http://hooks.example.com/in/s3cr3t?token=s3cr3t",
            "ftp://hooks.example.com/in/s3cr3t?token=s3cr3t",
            "https://user:s3cr3t@hooks.example.com/",
        ] {
            let reason = notify_url(bad).unwrap_err();
            assert!(!reason.contains("s3cr3t"), "{bad}: {reason}");
        }
    }

    #[test]
    fn required_values() {
        let none = Config::from_lookup(|_| None).unwrap_err();
        assert_eq!(none, ConfigError::Missing("NOTIFY_URL"));
        let vars = HashMap::from([("NOTIFY_URL", "https://h/")]);
        let err = Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(err, ConfigError::Missing("NOTIFY_SECRET_ARN"));
        let vars =
            HashMap::from([("NOTIFY_URL", "https://h/"), ("NOTIFY_SECRET_ARN", ARN), ("QUEUE_URL", "http://q/1/n")]);
        let err = Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(err, ConfigError::Missing("DEAD_LETTER_QUEUE_URL"));
    }
}
