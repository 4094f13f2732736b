//! What the runner adds on top of the environment: the provisioned resource names (and the
//! callback secret's ARN), and friendly defaults for a first run (a generated development HMAC
//! key, and the demo file server among the allowed download sources). The user's own variables
//! win, except the provisioned names, which must be the ones just provisioned, and
//! `ALLOWED_SOURCE_HOSTS`, which gets the demo file server added.

use std::collections::BTreeMap;

use stemvault_aws::provision::Resources;

pub const DEFAULT_PORT: u16 = 3000;

/// The download function's default `ALLOWED_SOURCE_HOSTS`.
pub const PRODUCTION_SOURCE_HOSTS: &str = stemvault_download::source_policy::DEFAULT_ALLOWED_SOURCE_HOSTS;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error(
        "PORT must be a port number below 65534 (the demo file server uses PORT+1, the fake provider PORT+2), got {0:?}"
    )]
    BadPort(String),
}

/// A non-empty value of a variable.
pub fn non_empty(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `PORT`, default 3000; PORT+1 must exist for the file server, PORT+2 for the fake provider.
pub fn port(get: &impl Fn(&str) -> Option<String>) -> Result<u16, SettingsError> {
    match non_empty(get, "PORT") {
        None => Ok(DEFAULT_PORT),
        Some(v) => v.parse::<u16>().ok().filter(|p| *p > 0 && *p < u16::MAX - 1).ok_or(SettingsError::BadPort(v)),
    }
}

/// Whether PORT is set (to anything but blanks: read as unset by [`port`]).
pub fn port_is_set(get: &impl Fn(&str) -> Option<String>) -> bool {
    non_empty(get, "PORT").is_some()
}

/// The origin of the demo file server that goes with the HTTP port.
pub fn file_server_origin(file_server_port: u16) -> String {
    format!("http://127.0.0.1:{file_server_port}")
}

/// Whether the environment configures any way to authenticate callbacks.
pub fn has_callback_auth(get: &impl Fn(&str) -> Option<String>) -> bool {
    non_empty(get, "WEBHOOK_HMAC_KEYS").is_some()
        || non_empty(get, "CALLBACK_TOKEN").is_some()
        || non_empty(get, "ALLOW_UNAUTHENTICATED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Variables the runner sets for the functions, consulted before the environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    values: BTreeMap<String, String>,
    /// The development HMAC key the runner generated (none when the user configured auth).
    pub generated_hmac_key: Option<String>,
}

/// The variables' names only: some hold keys (`WEBHOOK_HMAC_KEYS`).
impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .field("generated_hmac_key", &crate::client_auth::redacted(&self.generated_hmac_key))
            .finish()
    }
}

impl Overlay {
    /// The overlay for freshly provisioned `resources`. `generate_key` is called only when the
    /// environment configures no callback authentication at all.
    pub fn new(
        resources: &Resources,
        env: &impl Fn(&str) -> Option<String>,
        file_server_origin: &str,
        generate_key: impl FnOnce() -> String,
    ) -> Overlay {
        let mut values = BTreeMap::new();
        values.insert("TABLE_NAME".to_owned(), resources.table_name.clone());
        values.insert("BUCKET_NAME".to_owned(), resources.bucket_name.clone());
        values.insert("QUEUE_URL".to_owned(), resources.queue_url.clone());
        values.insert("EVENT_BUS_NAME".to_owned(), resources.event_bus_name.clone());
        let mut generated_hmac_key = None;
        if !has_callback_auth(env) {
            let key = generate_key();
            values.insert("WEBHOOK_HMAC_KEYS".to_owned(), key.clone());
            generated_hmac_key = Some(key);
        }
        // Yours (or the download's default), and always the local file server the demo's
        // callbacks point at (and the fake provider, added when it starts): without them a
        // list of your own would refuse every demo file.
        let hosts = non_empty(env, "ALLOWED_SOURCE_HOSTS").unwrap_or_else(|| PRODUCTION_SOURCE_HOSTS.to_owned());
        values.insert("ALLOWED_SOURCE_HOSTS".to_owned(), format!("{hosts},{file_server_origin}"));
        Overlay { values, generated_hmac_key }
    }

    /// Let the downloader fetch from `origin` too (the fake provider, once it starts).
    pub fn allow_source(&mut self, origin: &str) {
        if let Some(hosts) = self.values.get_mut("ALLOWED_SOURCE_HOSTS") {
            *hosts = format!("{hosts},{origin}");
        }
    }

    /// Set `name` for the functions, over the environment (a value provisioned after the
    /// overlay was made: the callback secret's ARN).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(name.to_owned(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The overlay over `env`: what each function's `Config::from_lookup` reads.
    pub fn over<'a>(&'a self, env: &'a impl Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| self.get(name).map(str::to_owned).or_else(|| env(name))
    }
}

/// A random development HMAC key (printed, and written to `.local/run.json` for the demo).
pub fn generate_dev_key() -> String {
    format!("local-dev-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> Resources {
        Resources {
            table_name: "stemvault-local-tasks".into(),
            bucket_name: "stemvault-local-vault".into(),
            queue_url: "http://127.0.0.1:5000/123456789012/stemvault-local-downloads".into(),
            queue_arn: "arn:aws:sqs:us-east-1:123456789012:stemvault-local-downloads".into(),
            dlq_url: "http://127.0.0.1:5000/123456789012/stemvault-local-downloads-dlq".into(),
            event_bus_name: "stemvault-local-events".into(),
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn first_run_gets_a_dev_key_and_the_file_server_origin() {
        let env = env_of(&[("TABLE_NAME", "someone-elses-table")]);
        let overlay = Overlay::new(&resources(), &env, "http://127.0.0.1:3001", || "k1".into());
        let get = overlay.over(&env);
        assert_eq!(get("TABLE_NAME").as_deref(), Some("stemvault-local-tasks"), "provisioned names win");
        assert_eq!(get("BUCKET_NAME").as_deref(), Some("stemvault-local-vault"));
        assert_eq!(get("QUEUE_URL").as_deref(), Some(resources().queue_url.as_str()));
        assert_eq!(get("EVENT_BUS_NAME").as_deref(), Some("stemvault-local-events"));
        assert_eq!(get("WEBHOOK_HMAC_KEYS").as_deref(), Some("k1"));
        assert_eq!(overlay.generated_hmac_key.as_deref(), Some("k1"));
        assert_eq!(
            get("ALLOWED_SOURCE_HOSTS").as_deref(),
            Some("*.aiquickdraw.com,*.api.box,*.suno.ai,*.erweima.ai,*.kie.ai,*.sunoapi.org,http://127.0.0.1:3001")
        );
        assert_eq!(get("MAX_BODY_BYTES"), None);
    }

    #[test]
    fn a_provisioned_value_wins_over_the_environment() {
        let env = env_of(&[("CALLBACK_SECRET_ARN", "someone-elses-secret")]);
        let mut overlay = Overlay::new(&resources(), &env, "http://127.0.0.1:3001", || "k1".into());
        overlay.set("CALLBACK_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:local");
        assert_eq!(
            overlay.over(&env)("CALLBACK_SECRET_ARN").as_deref(),
            Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:local")
        );
    }

    #[test]
    fn user_auth_and_hosts_are_honoured() {
        for auth in [("WEBHOOK_HMAC_KEYS", "mine"), ("CALLBACK_TOKEN", "tok"), ("ALLOW_UNAUTHENTICATED", "TRUE")] {
            let env = env_of(&[auth, ("ALLOWED_SOURCE_HOSTS", "*.example.com")]);
            let overlay = Overlay::new(&resources(), &env, "http://127.0.0.1:3001", || panic!("no key needed"));
            let get = overlay.over(&env);
            assert_eq!(overlay.generated_hmac_key, None);
            assert_eq!(get(auth.0).as_deref(), Some(auth.1));
            let hosts = get("ALLOWED_SOURCE_HOSTS");
            assert_eq!(hosts.as_deref(), Some("*.example.com,http://127.0.0.1:3001"), "yours, and the demo's");
        }
    }

    #[test]
    fn empty_or_false_auth_settings_still_get_a_dev_key() {
        let env = env_of(&[("WEBHOOK_HMAC_KEYS", " "), ("ALLOW_UNAUTHENTICATED", "false")]);
        let overlay = Overlay::new(&resources(), &env, "http://127.0.0.1:3001", || "k2".into());
        assert_eq!(overlay.over(&env)("WEBHOOK_HMAC_KEYS").as_deref(), Some("k2"));
    }

    #[test]
    fn port_defaults_and_validates() {
        assert_eq!(port(&env_of(&[])), Ok(3000));
        assert_eq!(port(&env_of(&[("PORT", "8080")])), Ok(8080));
        assert_eq!(port(&env_of(&[("PORT", "65535")])), Err(SettingsError::BadPort("65535".into())));
        assert_eq!(port(&env_of(&[("PORT", "65534")])), Err(SettingsError::BadPort("65534".into())));
        assert_eq!(port(&env_of(&[("PORT", "65533")])), Ok(65533));
        assert_eq!(port(&env_of(&[("PORT", "http")])), Err(SettingsError::BadPort("http".into())));
        assert_eq!(port(&env_of(&[("PORT", "0")])), Err(SettingsError::BadPort("0".into())));
        // Unset (blank counts so): `demo` and `status` then look for a live runner's port.
        assert!(!port_is_set(&env_of(&[])) && !port_is_set(&env_of(&[("PORT", " ")])));
        assert!(port_is_set(&env_of(&[("PORT", "4000")])));
    }

    #[test]
    fn dev_keys_are_random() {
        let (a, b) = (generate_dev_key(), generate_dev_key());
        assert_ne!(a, b);
        assert!(a.len() > 64, "{a}");
    }
}
