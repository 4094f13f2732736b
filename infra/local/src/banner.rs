//! What `make run` prints on start: where to send callbacks, the effective settings, and a
//! ready-to-paste signed `curl`.

use std::fmt::Write as _;

use crate::client_auth::ClientAuth;
use crate::run_info::RunInfo;

/// A small callback (lyrics: no files to download) for the printed example.
pub fn sample_callback(task_id: &str) -> String {
    serde_json::json!({
        "code": 200,
        "msg": "All generated successfully.",
        "data": {
            "callbackType": "complete",
            "task_id": task_id,
            "data": [{ "error_message": "", "status": "complete", "title": "Hello stemvault", "text": "[Verse]\nHello from the local runner" }]
        }
    })
    .to_string()
}

/// Quote for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A `curl` that posts `body` for `task_id`, signed at `timestamp` (Unix seconds).
pub fn curl_example(base_url: &str, auth: &ClientAuth, task_id: &str, timestamp: i64, body: &str) -> String {
    let mut curl = format!(
        "curl -sS -X POST {} \\\n  -H 'Content-Type: application/json'",
        shell_quote(&auth.callback_url(base_url))
    );
    for (name, value) in auth.headers(task_id, timestamp) {
        let _ = write!(curl, " \\\n  -H {}", shell_quote(&format!("{name}: {value}")));
    }
    let _ = write!(curl, " \\\n  --data {}", shell_quote(body));
    curl
}

/// What `make run` says about webhooks (with `NOTIFY_URL` set): where they go, and the
/// signing secret when it generated one.
pub fn webhooks(notify: &crate::pipeline::NotifySummary) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "  webhooks:    POST {} (signed, Standard Webhooks)", notify.notify_url);
    let _ = writeln!(text, "  notify:      polling {}", notify.queue_url);
    match &notify.generated_secret {
        Some(secret) => {
            let _ = writeln!(text, "  secret:      {secret}  (generated; set NOTIFY_SECRET to choose it)");
        }
        None => {
            let _ = writeln!(text, "  secret:      NOTIFY_SECRET");
        }
    }
    text
}

/// The whole start-up text.
pub fn banner(info: &RunInfo, generated_key: Option<&str>, allowed_source_hosts: &str, now_unix: i64) -> String {
    let task_id = format!("local{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let mut text = String::new();
    let _ = writeln!(text, "\nstemvault is running (Ctrl-C stops it)\n");
    let _ = writeln!(text, "  callbacks:   POST {}", info.auth.callback_url(&info.base_url));
    let _ = writeln!(text, "  results:     GET  {}/tasks/<task_id>", info.base_url);
    let _ = writeln!(text, "  downloader:  polling {}", info.queue_url);
    let _ = writeln!(
        text,
        "  sweeper:     re-enqueues orphaned files every {} s",
        crate::pipeline::SWEEP_INTERVAL.as_secs()
    );
    let every = crate::reconcile::RECONCILE_INTERVAL.as_secs();
    match &info.fake_provider {
        Some(fake) => {
            let _ = writeln!(
                text,
                "  reconciler:  polls the built-in fake provider {fake} every {every} s (set PROVIDER_BASE_URL and PROVIDER_API_KEY for another)"
            );
        }
        None => {
            let _ =
                writeln!(text, "  reconciler:  polls PROVIDER_BASE_URL every {every} s (off without PROVIDER_API_KEY)");
        }
    }
    let _ = writeln!(text, "  vault:       table {}, bucket {}", info.table_name, info.bucket_name);
    if let Some(bus) = &info.event_bus_name {
        let _ = writeln!(text, "  events:      bus {bus}; each is printed below as one `event:` line");
    }
    if let Some(endpoint) = &info.aws_endpoint_url {
        let _ = writeln!(text, "  emulator:    {endpoint}");
    }
    let _ = writeln!(text, "  sources:     ALLOWED_SOURCE_HOSTS={allowed_source_hosts}");
    match (generated_key, &info.auth.hmac_key, &info.auth.callback_token) {
        (Some(key), _, _) => {
            let _ = writeln!(text, "  auth:        generated development key WEBHOOK_HMAC_KEYS={key}");
        }
        (None, None, None) => {
            let _ = writeln!(text, "  auth:        none (ALLOW_UNAUTHENTICATED=true)");
        }
        (None, key, token) => {
            let parts: Vec<&str> =
                [key.as_ref().map(|_| "WEBHOOK_HMAC_KEYS"), token.as_ref().map(|_| "CALLBACK_TOKEN")]
                    .into_iter()
                    .flatten()
                    .collect();
            let _ = writeln!(text, "  auth:        from your {}", parts.join(" and "));
        }
    }
    let _ = writeln!(
        text,
        "\nTry it (signed now; the signature is accepted for SIGNATURE_TOLERANCE_SECONDS, default 300 s):\n"
    );
    let _ =
        writeln!(text, "{}", curl_example(&info.base_url, &info.auth, &task_id, now_unix, &sample_callback(&task_id)));
    let _ = writeln!(text, "\ncurl -sS {}/tasks/{task_id}", info.base_url);
    // The built-in fake provider answers only for `make demo`'s tasks: another task registered
    // here is answered "not found" until it is given up.
    let polled_by = match info.fake_provider {
        Some(_) => "the reconciler polls the provider for it; the built-in fake one knows only `make demo`'s tasks",
        None => "the reconciler polls the provider for it",
    };
    let _ = writeln!(
        text,
        "\nRegister a task before its callback ({polled_by}):\n\ncurl -sS -X PUT {}/tasks/<task_id> -d '{{\"family\":\"vocal_separation\",\"client_ref\":\"mine\"}}'",
        info.base_url
    );
    let _ = writeln!(text, "\nOr run `make demo` in another terminal (12 stems from a local file server).\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use hmac::Mac;

    fn info(auth: ClientAuth) -> RunInfo {
        RunInfo {
            pid: 1,
            port: 3000,
            base_url: "http://127.0.0.1:3000".into(),
            file_server_origin: "http://127.0.0.1:3001".into(),
            auth,
            aws_endpoint_url: Some("http://127.0.0.1:5000".into()),
            aws_region: Some("us-east-1".into()),
            table_name: "stemvault-local-tasks".into(),
            bucket_name: "stemvault-local-vault".into(),
            queue_url: "http://127.0.0.1:5000/123456789012/stemvault-local-downloads".into(),
            fake_provider: None,
            event_bus_name: Some("stemvault-local-events".into()),
        }
    }

    /// The value of `-H 'Name: value'` in a printed curl.
    fn header<'a>(curl: &'a str, name: &str) -> &'a str {
        let start =
            curl.find(&format!("-H '{name}: ")).unwrap_or_else(|| panic!("{name} missing in {curl}")) + name.len() + 6;
        &curl[start..start + curl[start..].find('\'').unwrap()]
    }

    #[test]
    fn printed_curl_carries_a_signature_that_verifies() {
        let key = "local-dev-0123456789abcdef";
        let text = banner(
            &info(ClientAuth { hmac_key: Some(key.into()), callback_token: None }),
            Some(key),
            "*.x",
            1_700_000_123,
        );
        assert!(text.contains("POST http://127.0.0.1:3000/callback\n"), "{text}");
        assert!(text.contains(&format!("WEBHOOK_HMAC_KEYS={key}")), "{text}");
        assert!(text.contains("  events:      bus stemvault-local-events;"), "{text}");
        let curl = &text[text.find("curl -sS -X POST").unwrap()..];
        assert!(curl.starts_with("curl -sS -X POST 'http://127.0.0.1:3000/callback' \\\n"), "{curl}");
        assert_eq!(header(curl, "X-Webhook-Timestamp"), "1700000123");
        // The body the curl sends, and the task id in it.
        let data_start = curl.find("--data '").unwrap() + 8;
        let body = &curl[data_start..data_start + curl[data_start..].find('\'').unwrap()];
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let task_id = json["data"]["task_id"].as_str().unwrap();
        assert!(text.contains(&format!("/tasks/{task_id}")));
        // Verify independently of the signing code.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{task_id}.1700000123").as_bytes());
        let signature = base64::engine::general_purpose::STANDARD.decode(header(curl, "X-Webhook-Signature")).unwrap();
        mac.verify_slice(&signature).expect("the printed signature verifies");
    }

    #[test]
    fn token_and_unauthenticated_setups_print_no_signature() {
        let text = banner(&info(ClientAuth { hmac_key: None, callback_token: Some("tok".into()) }), None, "*.x", 1);
        assert!(text.contains("POST http://127.0.0.1:3000/callback/tok"), "{text}");
        assert!(text.contains("auth:        from your CALLBACK_TOKEN"), "{text}");
        assert!(!text.contains("X-Webhook-Signature"));
        let open = banner(&info(ClientAuth::default()), None, "*.x", 1);
        assert!(open.contains("ALLOW_UNAUTHENTICATED=true"), "{open}");
        assert!(!open.contains("X-Webhook-Signature"), "{open}");
    }

    /// With the built-in fake provider, the banner says a task registered by hand is not one it
    /// knows (only `make demo`'s are), and names the provider it polls.
    #[test]
    fn a_registration_hint_says_what_the_fake_provider_knows() {
        let auth = || ClientAuth { hmac_key: None, callback_token: Some("tok".into()) };
        let with_fake = RunInfo { fake_provider: Some("http://127.0.0.1:3002".into()), ..info(auth()) };
        let text = banner(&with_fake, None, "*.x", 1);
        assert!(text.contains("polls the built-in fake provider http://127.0.0.1:3002"), "{text}");
        assert!(text.contains("the built-in fake one knows only `make demo`'s tasks"), "{text}");
        let text = banner(&info(auth()), None, "*.x", 1);
        assert!(!text.contains("knows only"), "{text}");
    }

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
