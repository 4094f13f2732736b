//! The parameters: patterns that refuse at deploy time what a function would refuse at start-up,
//! the rules and conditions they feed, and how a guided deploy types them.

use super::*;

/// A parameter a function parses at start-up refuses, at deploy time, what the function would
/// refuse: a stack that deploys and then cannot start answers every callback (or download)
/// with an error. Every sample a pattern accepts, the function accepts too.
#[test]
fn parameter_patterns_refuse_what_the_functions_would_refuse_at_start_up() {
    use stemvault_download::source_policy::SourcePolicy;
    use stemvault_ingest::secret::CallbackSecret;
    let template = template();
    let parameter = |name: &str| &template["Parameters"][name];
    let pattern = |name: &str| {
        let text = parameter(name)["AllowedPattern"].as_str().unwrap_or_else(|| panic!("{name}: no pattern"));
        regex::Regex::new(text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    let hosts = pattern("AllowedSourceHosts");
    let default = parameter("AllowedSourceHosts")["Default"].as_str().unwrap();
    assert!(hosts.is_match(default), "{default}");
    let host_lists = [
        default,
        "",
        "files_cdn.example.com",
        "[::1]",
        "http://127.0.0.1:3001",
        "a.com, b.com",
        "a.com,,b.com,",
        "https://h.example:8443/",
        "*.example.com.",
        "::1",
        "2001:db8::1",
        "http://[::1]:8080",
        "http://127.0.0.1:65535",
        "_dmarc.example.com",
    ];
    for list in host_lists {
        assert!(hosts.is_match(list), "{list:?}: refused by the pattern");
        assert!(SourcePolicy::parse(list).is_ok(), "{list:?}: accepted by the pattern, refused by the download");
    }
    for refused in [
        "a.com b.com",
        "a.com/path",
        "*.",
        "https://u:p@h.example/",
        "[::1",
        "::1]",
        ".a.com",
        "https://h.example/?x",
        "https://h.example#f",
        "http://h.example:65536",
        "http://h.example:99999",
        "foo..bar",
        "-foo.com",
        "foo-.com",
        "a.-b.com",
        "a.com:8080",
        "ad.be:80",
    ] {
        assert!(!hosts.is_match(refused), "{refused:?}");
        assert!(SourcePolicy::parse(refused).is_err(), "{refused:?}: the download would start with it");
    }

    // The secret's JSON as the template writes it: each key between quotes, as typed.
    let keys = pattern("WebhookHmacKeys");
    for list in [
        "",
        "k1",
        "k1,k2",
        " k1 , k2 ",
        "a key",
        "k1,",
        ",k1",
        "k1,,k2",
        " ",
        "k1, ",
        "a\tkey",
        "k1,k\u{1}",
        "k1,\u{a0}",
        "k1,\u{a0}k2",
        // The word none among keys (none alone, lower case, is no key: not a list).
        "k1,None",
        "None",
        " none ",
        "k1, NONE ,k2",
        "none,k1",
        "nonex",
        "n",
        "no",
        "non",
        "n one",
        "nones,k1",
        "xnone",
        "k1,non e",
    ] {
        let secret = format!(
            r#"{{"webhook_hmac_keys": ["{}"], "callback_token": null}}"#,
            list.split(',').collect::<Vec<_>>().join(r#"",""#)
        );
        let ingest_starts = list.is_empty() || CallbackSecret::parse(&secret).is_ok();
        assert_eq!(keys.is_match(list), ingest_starts, "{list:?}");
    }
    let api_key = pattern("ProviderApiKey");
    for key in ["", "sk-123", "a key", "a\tkey", "k\u{1}", "k\u{7f}", "k\u{a0}1", "k\u{2028}1", "k\u{85}1"] {
        // The key is read from the created secret's JSON as typed, or refused as no key.
        let secret = stemvault_aws::secrets::SecretText::new(format!(r#"{{"api_key": "{key}"}}"#));
        let read = stemvault_aws::provider::ApiKey::from_secret(&secret);
        let key_as_typed = match &read {
            Ok(Some(read)) => read.expose() == key,
            Ok(None) => key.is_empty(),
            Err(_) => false,
        };
        assert_eq!(api_key.is_match(key), key_as_typed, "{key:?}");
    }

    let notify = pattern("NotifyUrl");
    for url in [
        "https://h.example/hook?token=t",
        "https://h.example:8443/a@b",
        "https://u:p@h.example/x",
        "https://h.example/x#f",
        "https://h.example:65535/x",
        "https://h.example:65536/x",
        "https://h.example:99999/",
        "https://[oops/",
        "https://[::1]:8443/hook",
        "https://hooks.bücher.example/x",
        "https://h.example?token=t",
        "https://a|b/",
        "https://a<b/",
        "https://a^b/",
        "https://hooks.example.1/x",
        "https://1.2.3.999/x",
        "https://1.2.3.4/x",
        "https://a\u{7f}b/",
    ] {
        let notify_starts = stemvault_notify::config::notify_url(url).is_ok();
        assert_eq!(notify.is_match(url), notify_starts, "{url}");
    }

    // Empty is the provider's default; anything else the download and the reconciler check.
    let provider = pattern("ProviderBaseUrl");
    for url in [
        "https://api.kie.ai",
        "https://api.kie.ai/",
        "https://proxy.example:8443/suno/v1",
        "https://h.example:65535",
        "https://u:p@api.kie.ai",
        "https://api.kie.ai:65536",
        "https://api.kie.ai:99999",
        "https://api.kie.ai/?x=1",
        "https://api.kie.ai/#f",
        "http://api.kie.ai",
        "https://10.0.0.5/suno",
        "https://1.2.3.999",
        "https://api.kie.1",
        "https://256.1.1.1:443",
    ] {
        let functions_start = stemvault_aws::provider::base_url(url).is_ok();
        assert_eq!(provider.is_match(url), functions_start, "{url}");
    }
    assert!(provider.is_match(""));
}

/// Setting or emptying `ProviderApiKey` rewrites the provider secret in place (its ARN, the
/// functions' only reference to it, unchanged): the functions that read the key at start-up
/// change their configuration with it too, so new instances read it (a warm instance that
/// started without a key would poll nothing, and one holding a key would keep polling).
#[test]
fn a_provider_key_set_or_emptied_starts_new_instances_of_its_readers() {
    let template = template();
    for function in ["ReconcilerFunction", "DownloadFunction"] {
        let description = &cfn::function_properties(&template, function)["Description"];
        let Some((tag, Value::Sequence(args))) = cfn::intrinsic(description) else {
            panic!("{function}: Description is not an !If");
        };
        assert_eq!((tag.as_str(), args.len()), ("If", 3), "{function}");
        assert_eq!(args[0], "HasProviderApiKey", "{function}");
        assert_ne!(args[1], args[2], "{function}: the same either way");
    }
}

/// Scheduled runs are not retried by EventBridge, nor retried or kept for later by Lambda (each would overlap the next run,
/// which does the same work), and the stack refuses a provider key given beside an existing provider secret.
#[test]
fn scheduled_runs_are_not_retried_and_one_provider_key_is_given() {
    let template = template();
    for function in ["SweeperFunction", "ReconcilerFunction"] {
        let config = &cfn::resource(&template, function)["Properties"]["EventInvokeConfig"];
        assert_eq!(config["MaximumRetryAttempts"].as_u64(), Some(0), "{function}");
        // Nor kept for later when throttled (Lambda's default: 6 hours); 60 s is the least.
        assert_eq!(config["MaximumEventAgeInSeconds"].as_u64(), Some(60), "{function}");
        // Nor started late, beside the next run, by EventBridge's own retries of the invoke.
        let schedule = &cfn::function_properties(&template, function)["Events"]["Schedule"]["Properties"];
        assert_eq!(cfn::number(&schedule["RetryPolicy"]["MaximumRetryAttempts"]), 0, "{function}");
    }
    let rule = &template["Rules"]["OneProviderKey"];
    assert_eq!(
        rule["RuleCondition"],
        yaml_serde::from_str::<Value>(r#"!Not [!Equals [!Ref ProviderSecretArn, ""]]"#).unwrap()
    );
    assert_eq!(
        rule["Assertions"][0]["Assert"],
        yaml_serde::from_str::<Value>(
            r#"!Or [!Equals [!Ref ProviderApiKey, ""], !Equals [!Ref ProviderApiKey, none]]"#
        )
        .unwrap()
    );
}

/// Every log group keeps its lines `LogRetentionDays` (none for ever, none a number of days
/// of its own); 30 by default, any of CloudWatch's allowed values up to ten years.
#[test]
fn every_log_group_keeps_its_lines_as_long_as_log_retention_days_says() {
    let template = template();
    let resources = template["Resources"].as_mapping().cloned().unwrap_or_default();
    let groups: Vec<(String, Value)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Logs::LogGroup")
        .map(|(name, r)| (name.as_str().unwrap_or_default().to_owned(), r["Properties"]["RetentionInDays"].clone()))
        .collect();
    assert!(groups.len() >= 7, "{groups:?}");
    for (name, retention) in &groups {
        assert_eq!(cfn::reference(retention).as_deref(), Some("LogRetentionDays"), "{name}");
    }
    let parameter = &template["Parameters"]["LogRetentionDays"];
    assert_eq!(parameter["Default"].as_u64(), Some(30));
    let allowed: Vec<u64> = cfn::as_list(&parameter["AllowedValues"]).iter().filter_map(|v| v.as_u64()).collect();
    assert!(allowed.contains(&30) && allowed.contains(&90) && allowed.contains(&3653), "{allowed:?}");
}

/// `EventArchiveDays` (0 by default: none) archives every task event of the stack's bus that
/// many days, its ARN an output beside the bus's (a replay's source and destination).
#[test]
fn the_event_archive_keeps_every_task_event_when_asked() {
    let template = template();
    let archive = cfn::resource(&template, "EventArchive");
    assert_eq!(archive["Condition"], "ArchivesEvents");
    let properties = &archive["Properties"];
    assert_eq!(cfn::get_att(&properties["SourceArn"]).as_deref(), Some("EventBus.Arn"));
    assert_eq!(properties["EventPattern"]["source"], yaml_serde::from_str::<Value>("[stemvault]").unwrap());
    assert_eq!(cfn::reference(&properties["RetentionDays"]).as_deref(), Some("EventArchiveDays"));
    assert_eq!(template["Parameters"]["EventArchiveDays"]["Default"].as_u64(), Some(0));
    let defaults = BTreeMap::new();
    assert!(!holds(&template, &template["Conditions"]["ArchivesEvents"], &defaults), "none by default");
    assert!(holds(&template, &template["Conditions"]["ArchivesEvents"], &BTreeMap::from([("EventArchiveDays", "14")])));
    assert_eq!(template["Outputs"]["EventArchiveArn"]["Condition"], "ArchivesEvents");
    assert_eq!(cfn::get_att(&template["Outputs"]["EventBusArn"]["Value"]).as_deref(), Some("EventBus.Arn"));
}

/// Whether a condition or rule expression (`Equals`, `Not`, `And`, `Or`, `Condition`, `Ref`
/// of a parameter) holds with `given` parameter values, the others at their defaults.
fn holds(template: &Value, expression: &Value, given: &BTreeMap<&str, &str>) -> bool {
    let value = |v: &Value| -> String {
        match cfn::reference(v) {
            Some(name) => given.get(name.as_str()).map_or_else(
                || {
                    {
                        // A Number parameter's default is a YAML number; CloudFormation compares text.
                        let default = &template["Parameters"][name.as_str()]["Default"];
                        default.as_str().map(str::to_owned).or_else(|| default.as_u64().map(|n| n.to_string()))
                    }
                    .unwrap_or_default()
                },
                |v| (*v).to_owned(),
            ),
            None => v.as_str().unwrap_or_else(|| panic!("not a string or Ref: {v:?}")).to_owned(),
        }
    };
    let (tag, args) = cfn::intrinsic(expression).unwrap_or_else(|| panic!("not an intrinsic: {expression:?}"));
    let all = || args.as_sequence().unwrap_or_else(|| panic!("{tag}: not a list")).iter();
    match tag.as_str() {
        "Equals" => {
            let pair: Vec<String> = all().map(value).collect();
            pair[0] == pair[1]
        }
        "Not" => !holds(template, &args[0], given),
        "And" => all().all(|a| holds(template, a, given)),
        "Or" => all().any(|a| holds(template, a, given)),
        "Condition" => holds(template, &template["Conditions"][args.as_str().unwrap()], given),
        "Contains" => {
            let (list, item) = (&args[0], value(&args[1]));
            list.as_sequence().unwrap_or_else(|| panic!("Contains: not a list")).iter().any(|v| value(v) == item)
        }
        other => panic!("{other} is not evaluated here"),
    }
}

/// `sam deploy --guided` prompts for every parameter and takes no empty answer for a NoEcho
/// one: each NoEcho parameter takes `none` for unset, and the conditions and rules read it so.
#[test]
fn a_noecho_parameter_is_unset_when_none_as_the_guided_deploy_must_type_it() {
    let template = template();
    let parameters = template["Parameters"].as_mapping().unwrap();
    let no_echo: BTreeSet<&str> =
        parameters.iter().filter(|(_, p)| p["NoEcho"] == true).filter_map(|(name, _)| name.as_str()).collect();
    let unset_when_none = [
        ("WebhookHmacKeys", "HasWebhookHmacKeys", "k1"),
        ("CallbackToken", "HasCallbackToken", "a-long-enough-token"),
        ("ProviderApiKey", "HasProviderApiKey", "sk-123"),
        ("NotifyUrl", "HasNotifyUrl", "https://hooks.example/x"),
    ];
    assert_eq!(no_echo, unset_when_none.iter().map(|(p, ..)| *p).collect(), "every NoEcho parameter, and only those");
    for (parameter, condition, set) in unset_when_none {
        let pattern = regex::Regex::new(parameters[parameter]["AllowedPattern"].as_str().unwrap()).unwrap();
        let has = |value: &str| {
            assert!(pattern.is_match(value), "{parameter}: {value:?} refused by its pattern");
            holds(&template, &template["Conditions"][condition], &BTreeMap::from([(parameter, value)]))
        };
        assert_eq!((has(""), has("none"), has(set)), (false, false, true), "{parameter}");
    }

    let rule = |name: &str, i: usize| &template["Rules"][name]["Assertions"][i]["Assert"];
    let given = |pairs: &[(&'static str, &'static str)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
    let none = [("WebhookHmacKeys", "none"), ("CallbackToken", "none")];
    assert!(!holds(&template, rule("CallbacksMustBeAuthenticated", 0), &given(&none)), "none of the three: refused");
    let hmac_only = given(&[("WebhookHmacKeys", "k1"), ("CallbackToken", "none")]);
    assert!(holds(&template, rule("CallbacksMustBeAuthenticated", 0), &hmac_only));
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:cb-AbCdEf";
    let own_secret = given(&[("WebhookHmacKeys", "none"), ("CallbackToken", "none"), ("CallbackSecretArn", arn)]);
    assert!(holds(&template, rule("CallbacksMustBeAuthenticated", 0), &own_secret));
    assert!(holds(&template, rule("CallbacksMustBeAuthenticated", 1), &own_secret), "none beside an own secret");
    let own_provider_secret = given(&[("ProviderApiKey", "none"), ("ProviderSecretArn", arn)]);
    assert!(holds(&template, rule("OneProviderKey", 0), &own_provider_secret));
    // Bounds a deploy must keep for the reconciler to start: a give-up always past the first
    // poll's wait, and a pace its code takes.
    let bound = |name: &str, side: &str| parameters[name][side].as_u64().unwrap_or_else(|| panic!("{name} {side}"));
    assert!(bound("ReconcileGiveUpSeconds", "MinValue") > bound("ReconcileAfterSeconds", "MaxValue"));
    let pace = stemvault_reconciler::request_spacing::POLLS_PER_MINUTE_RANGE;
    let pace_bounds = (bound("ReconcilePollsPerMinute", "MinValue"), bound("ReconcilePollsPerMinute", "MaxValue"));
    assert_eq!(pace_bounds, (u64::from(*pace.start()), u64::from(*pace.end())));
    // docs.sunoapi.org signs nothing: keys beside it are refused, a token alone is not.
    let sunoapi_rule = &template["Rules"]["SunoapiSignsNothing"]["RuleCondition"];
    assert!(holds(&template, sunoapi_rule, &given(&[("Provider", "sunoapi")])));
    assert!(!holds(&template, sunoapi_rule, &given(&[])), "kie, the default, signs");
    assert!(!holds(&template, rule("SunoapiSignsNothing", 0), &given(&[("WebhookHmacKeys", "k1")])));
    let token_only = given(&[("WebhookHmacKeys", "none"), ("CallbackToken", "a-long-enough-token")]);
    assert!(holds(&template, rule("SunoapiSignsNothing", 0), &token_only));
    // Another case of none is refused where it would be taken as a value (the patterns of
    // CallbackToken and NotifyUrl refuse it already).
    for (i, parameter) in ["WebhookHmacKeys", "ProviderApiKey"].into_iter().enumerate() {
        let lower_case =
            |value: &'static str| holds(&template, rule("NoneIsLowerCase", i), &given(&[(parameter, value)]));
        assert_eq!((lower_case("none"), lower_case(""), lower_case("k1")), (true, true, true), "{parameter}");
        // Every other case of the word: each letter either case, but all four lower.
        let other_cases = (1..16u8).map(|upper: u8| {
            "none"
                .chars()
                .enumerate()
                .map(|(i, c)| if upper & (1 << i) != 0 { c.to_ascii_uppercase() } else { c })
                .collect::<String>()
        });
        for other_case in other_cases {
            let given = BTreeMap::from([(parameter, other_case.as_str())]);
            assert!(!holds(&template, rule("NoneIsLowerCase", i), &given), "{parameter}: {other_case}");
        }
    }
    for parameter in ["CallbackToken", "NotifyUrl"] {
        let pattern = regex::Regex::new(parameters[parameter]["AllowedPattern"].as_str().unwrap()).unwrap();
        assert!(!pattern.is_match("None") && !pattern.is_match("NONE"), "{parameter}");
    }
    let webhooks_off = &template["Rules"]["WebhooksNeedANotifyUrl"]["RuleCondition"];
    assert!(holds(&template, webhooks_off, &given(&[("NotifyUrl", "none")])));
    // The created provider secret holds no key for `none`.
    let secret = &cfn::resource(&template, "ProviderSecret")["Properties"]["SecretString"];
    let (tag, args) = cfn::intrinsic(secret).expect("an !If");
    assert_eq!((tag.as_str(), args[0].as_str()), ("If", Some("HasProviderApiKey")));
    assert_eq!(args[2], r#"{"api_key": ""}"#);
}

/// `sam deploy --guided` asks for the parameters in the template's order, without their
/// descriptions: README's parameter table, which it tells the reader to keep open while
/// answering, lists them in that order, and all of them.
#[test]
fn readme_lists_the_parameters_in_the_order_the_guided_deploy_asks() {
    let template = template();
    let asked: Vec<&str> = template["Parameters"].as_mapping().unwrap().keys().filter_map(|k| k.as_str()).collect();
    let readme = read(&repo().join("README.md"));
    let table = readme.split("| parameter | meaning |\n|---|---|\n").nth(1).expect("the parameter table");
    let listed: Vec<&str> = table
        .lines()
        .take_while(|line| line.starts_with('|'))
        .flat_map(|row| row.split('|').nth(1).unwrap_or_default().split('`').skip(1).step_by(2))
        .collect();
    assert_eq!(listed, asked);
}

/// Where the template gives a function's variable a value of its own (a literal, or a
/// parameter's default), the function takes that value when the variable is unset: local runs
/// and the tests, which leave such variables unset, run what a stack deployed with the
/// defaults runs. (The rest, names of resources made by the stack, get stand-ins.) And a
/// Number parameter's MinValue and MaxValue are values the function takes.
#[test]
fn the_templates_own_values_are_the_functions_defaults() {
    let template = template();
    let runs = [
        runs_the_same::<stemvault_ingest::config::Config>(&template, "IngestFunction"),
        runs_the_same::<stemvault_sweeper::config::Config>(&template, "SweeperFunction"),
        runs_the_same::<stemvault_reconciler::config::Config>(&template, "ReconcilerFunction"),
        runs_the_same::<stemvault_download::config::Config>(&template, "DownloadFunction"),
        runs_the_same::<stemvault_results::config::Config>(&template, "ResultsFunction"),
    ];
    // Each function has values of its own to check, and some parameter bounds are read: a test
    // that compared nothing would pass.
    assert!(runs.iter().all(|(own, _)| *own > 0), "{runs:?}");
    assert!(runs.iter().map(|(_, bounds)| bounds).sum::<usize>() > 0, "{runs:?}");
}

/// `function`'s `Config` read from the template's variables equals the one read with its own
/// values left unset; how many of those its `Config` reads (`LOG_LEVEL` is logging's), and
/// how many parameter bounds it was read at.
fn runs_the_same<C: stemvault_aws::FromEnv + std::fmt::Debug>(template: &Value, function: &str) -> (usize, usize) {
    let properties = cfn::function_properties(template, function);
    let variables = properties["Environment"]["Variables"].as_mapping().expect("variables");
    let parameter_default = |value: &Value| {
        let default = &template["Parameters"][cfn::reference(value)?.as_str()]["Default"];
        match default {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let (mut deployed, mut unset) = (BTreeMap::new(), BTreeMap::new());
    for (name, value) in variables {
        let name = name.as_str().expect("a name").to_owned();
        if !C::ENVIRONMENT.contains(&name.as_str()) {
            continue;
        }
        let own = match value {
            Value::String(literal) => Some(literal.clone()),
            _ => parameter_default(value),
        };
        match own {
            Some(own) => deployed.insert(name, own),
            None => {
                let stand_in = stand_in(&name);
                unset.insert(name.clone(), stand_in.clone());
                deployed.insert(name, stand_in)
            }
        };
    }
    let read = |variables: &BTreeMap<String, String>| {
        C::from_lookup(|name| variables.get(name).cloned())
            .unwrap_or_else(|e| panic!("{function} with {variables:?}: {e}"))
    };
    let (deployed_config, unset_config) = (read(&deployed), read(&unset));
    assert_eq!(
        format!("{deployed_config:?}"),
        format!("{unset_config:?}"),
        "{function}: its template values are not its defaults"
    );
    // Every value a Number parameter's bounds let a deploy through, the function takes too (one
    // it refused would fail every invocation of a stack that deployed fine).
    let mut bounds = 0;
    for (name, value) in variables {
        let Some(parameter) = cfn::reference(value) else { continue };
        let parameter = &template["Parameters"][parameter.as_str()];
        let name = name.as_str().expect("a name");
        if parameter["Type"] != "Number" || !C::ENVIRONMENT.contains(&name) {
            continue;
        }
        for side in ["MinValue", "MaxValue"] {
            let Some(bound) = parameter[side].as_u64() else { continue };
            let mut at_bound = deployed.clone();
            at_bound.insert(name.to_owned(), bound.to_string());
            read(&at_bound);
            bounds += 1;
        }
    }
    (deployed.len() - unset.len(), bounds)
}

/// A value for a variable naming a resource the stack makes.
fn stand_in(variable: &str) -> String {
    match variable {
        "QUEUE_URL" => "https://sqs.us-east-1.amazonaws.com/123456789012/q".into(),
        v if v.ends_with("_ARN") => "arn:aws:secretsmanager:us-east-1:123456789012:secret:s-AbCdEf".into(),
        v => v.to_lowercase(),
    }
}

/// `ApiDomainName` (and `ApiMappingKey`) map the stack's API, its one stage, to a custom
/// domain made outside the stack, and `CallbackUrl` and `ResultsUrl` then name that domain
/// (under the key) with the paths the routes serve; by default nothing is mapped and the
/// outputs name the API's own endpoint. A key without a domain is refused at deploy time,
/// and the patterns refuse what API Gateway would (or what would make a broken URL).
#[test]
fn the_api_maps_to_a_custom_domain_of_your_own_when_asked() {
    let template = template();
    let mapping = cfn::resource(&template, "ApiDomainMapping");
    assert_eq!(mapping["Type"], "AWS::ApiGatewayV2::ApiMapping");
    assert_eq!(mapping["Condition"], "HasApiDomain");
    let properties = &mapping["Properties"];
    assert_eq!(cfn::reference(&properties["DomainName"]).as_deref(), Some("ApiDomainName"));
    assert_eq!(cfn::reference(&properties["ApiId"]).as_deref(), Some("HttpApi"));
    // SAM's reference to the HTTP API's stage (its own `$default`, which the routes are
    // deployed to, whatever StageName would name it).
    assert_eq!(cfn::reference(&properties["Stage"]).as_deref(), Some("HttpApi.Stage"));
    assert_eq!(
        properties["ApiMappingKey"],
        yaml_serde::from_str::<Value>("!If [HasApiMappingKey, !Ref ApiMappingKey, !Ref AWS::NoValue]").unwrap()
    );

    // The output's URL with `given` parameter values: the `!If` branch the conditions take,
    // its `!Sub` filled in with the parameters.
    let url = |output: &str, given: &BTreeMap<&str, &str>| -> String {
        let mut value = &template["Outputs"][output]["Value"];
        while let Some((tag, args)) = cfn::intrinsic(value).filter(|(tag, _)| tag == "If") {
            let condition = &template["Conditions"][args[0].as_str().unwrap_or_else(|| panic!("{tag}"))];
            value = &args[if holds(&template, condition, given) { 1 } else { 2 }];
        }
        let text = cfn::sub(value).unwrap_or_else(|| panic!("{output}: no !Sub at the end of its !Ifs"));
        given.iter().fold(text, |text, (name, v)| text.replace(&format!("${{{name}}}"), v))
    };
    let route_path = |function: &str, event: &str| {
        cfn::function_properties(&template, function)["Events"][event]["Properties"]["Path"]
            .as_str()
            .unwrap_or_else(|| panic!("{function}.{event}: no path"))
            .to_owned()
    };
    let callback = route_path("IngestFunction", "Callback");
    let tasks = route_path("ResultsFunction", "Task");
    let tasks = tasks.strip_suffix("/{task_id}").expect("GET /tasks/{task_id}");

    let defaults = BTreeMap::new();
    assert!(!holds(&template, &template["Conditions"]["HasApiDomain"], &defaults), "no domain by default");
    let own = |path: &str| format!("https://${{HttpApi}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}{path}");
    assert_eq!(url("CallbackUrl", &defaults), own(&callback));
    assert_eq!(url("ResultsUrl", &defaults), own(tasks));

    let domain = BTreeMap::from([("ApiDomainName", "api.example.com")]);
    assert!(holds(&template, &template["Conditions"]["HasApiDomain"], &domain));
    assert_eq!(url("CallbackUrl", &domain), format!("https://api.example.com{callback}"));
    assert_eq!(url("ResultsUrl", &domain), format!("https://api.example.com{tasks}"));
    let keyed = BTreeMap::from([("ApiDomainName", "api.example.com"), ("ApiMappingKey", "hooks/v1")]);
    assert_eq!(url("CallbackUrl", &keyed), format!("https://api.example.com/hooks/v1{callback}"));
    assert_eq!(url("ResultsUrl", &keyed), format!("https://api.example.com/hooks/v1{tasks}"));

    let rule = &template["Rules"]["MappingKeyNeedsADomain"];
    let key_alone = BTreeMap::from([("ApiMappingKey", "hooks")]);
    assert!(holds(&template, &rule["RuleCondition"], &key_alone));
    assert!(!holds(&template, &rule["Assertions"][0]["Assert"], &key_alone), "a key without a domain deploys");
    assert!(!holds(&template, &rule["RuleCondition"], &keyed));
    assert!(
        holds(&template, &rule["RuleCondition"], &defaults)
            && holds(&template, &rule["Assertions"][0]["Assert"], &defaults)
    );

    let pattern = |name: &str| {
        regex::Regex::new(template["Parameters"][name]["AllowedPattern"].as_str().unwrap_or_else(|| panic!("{name}")))
            .unwrap()
    };
    let domains = pattern("ApiDomainName");
    for accepted in ["", "api.example.com", "hooks.a-b.example.co.uk", "x1.example.io", "api.xn--p1ai"] {
        assert!(domains.is_match(accepted), "{accepted:?} refused");
    }
    for refused in [
        "API.example.com",
        "https://api.example.com",
        "api.example.com/",
        "api.example.com:443",
        "localhost",
        "-api.example.com",
        "api-.example.com",
        "api..example.com",
        "api.example.com.",
        "api.example.1",
        "*.example.com",
    ] {
        assert!(!domains.is_match(refused), "{refused:?} accepted");
    }
    let keys = pattern("ApiMappingKey");
    for accepted in ["", "stemvault", "hooks/v1", "a.b_c-d"] {
        assert!(keys.is_match(accepted), "{accepted:?} refused");
    }
    for refused in ["/hooks", "hooks/", "hooks//v1", "a b", "hooks?x", "https://x", ".", "..", "hooks/..", "./hooks"] {
        assert!(!keys.is_match(refused), "{refused:?} accepted");
    }
    assert!(keys.is_match(".well-known/hooks") && keys.is_match("v1.2"), "dots within a segment are a path's own");
    assert_eq!(template["Parameters"]["ApiMappingKey"]["MaxLength"].as_u64(), Some(300), "API Gateway's longest");
}
