//! Flood protection: every HTTP route throttled by its own parameters, ingest's reserved
//! concurrency from a parameter.

use super::*;

/// The route throttles and the reserved concurrency that keep a flood of callbacks from
/// starving the pipeline: each HTTP route of `routes` (function, rate parameter, burst
/// parameter) throttled by its own parameters, which default to a positive number and are
/// shared with no other function's routes; ingest's reserved concurrency set from a parameter
/// that reserves some by default.
fn flood_problems(template: &Value, routes: &[(&str, &str, &str)], ingest: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let positive_default = |name: &str| {
        let parameter = &template["Parameters"][name];
        parameter["Type"] == "Number" && parameter.get("Default").is_some_and(|d| cfn::number(d) > 0)
    };
    for (function, rate, burst) in routes {
        for (other, other_rate, other_burst) in routes.iter().filter(|(f, ..)| f != function) {
            if [other_rate, other_burst].iter().any(|p| [rate, burst].contains(p)) {
                problems.push(format!("{function} and {other} share a throttling parameter"));
            }
        }
        let props = cfn::function_properties(template, function);
        let events = props.get("Events").and_then(Value::as_mapping).cloned().unwrap_or_default();
        let http: Vec<_> = events.iter().filter(|(_, e)| e["Type"] == "HttpApi").collect();
        if http.is_empty() {
            problems.push(format!("{function}: no HttpApi route to throttle"));
        }
        for (name, event) in http {
            let name = name.as_str().unwrap_or_default();
            let settings = &event["Properties"]["RouteSettings"];
            for (setting, parameter) in [("ThrottlingRateLimit", rate), ("ThrottlingBurstLimit", burst)] {
                if cfn::reference(&settings[setting]).as_deref() != Some(*parameter) {
                    problems.push(format!("{function} {name}: RouteSettings.{setting} is not !Ref {parameter}"));
                }
            }
        }
        for parameter in [rate, burst] {
            if !positive_default(parameter) {
                problems.push(format!("{parameter}: not a Number parameter with a positive default"));
            }
        }
    }
    let reserved = cfn::function_properties(template, ingest).get("ReservedConcurrentExecutions").cloned();
    // Set directly, or `!If [condition, !Ref <parameter>, !Ref AWS::NoValue]` (0 = none).
    let parameter = reserved.as_ref().and_then(|r| match cfn::intrinsic(r) {
        Some((tag, Value::Sequence(args))) if tag == "If" && args.len() == 3 => cfn::reference(&args[1]),
        _ => cfn::reference(r),
    });
    match parameter {
        Some(p) if positive_default(&p) => {}
        Some(p) => problems.push(format!("{p}: ingest reserves no concurrency by default")),
        None => problems.push(format!("{ingest}: no ReservedConcurrentExecutions from a parameter")),
    }
    problems
}

/// The routes and their throttling parameters.
const THROTTLED_ROUTES: &[(&str, &str, &str)] = &[
    ("IngestFunction", "CallbackThrottlingRateLimit", "CallbackThrottlingBurstLimit"),
    ("ResultsFunction", "ResultsThrottlingRateLimit", "ResultsThrottlingBurstLimit"),
];

#[test]
fn a_flood_of_callbacks_cannot_starve_the_pipeline() {
    let template = template();
    let problems = flood_problems(&template, THROTTLED_ROUTES, "IngestFunction");
    assert!(problems.is_empty(), "template.yaml flood protection:\n{}", problems.join("\n"));
}

const UNTHROTTLED: &str = r#"
Parameters:
  Rate: { Type: Number, Default: 10 }
  Burst: { Type: Number, Default: 0 }
  Reserved: { Type: Number, Default: 0 }
Resources:
  Ingest:
    Type: AWS::Serverless::Function
    Properties:
      ReservedConcurrentExecutions: !If [Reserves, !Ref Reserved, !Ref AWS::NoValue]
      Events:
        Callback:
          Type: HttpApi
          Properties:
            RouteSettings: { ThrottlingRateLimit: !Ref Rate, ThrottlingBurstLimit: !Ref Burst }
        CallbackWithToken:
          Type: HttpApi
          Properties: {}
  Results:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Task:
          Type: HttpApi
          Properties:
            RouteSettings: { ThrottlingRateLimit: !Ref Rate, ThrottlingBurstLimit: 5 }
  Download:
    Type: AWS::Serverless::Function
    Properties: {}
"#;

#[test]
fn flood_checks_report_unthrottled_routes_shared_limits_and_no_reservation() {
    let template: Value = yaml_serde::from_str(UNTHROTTLED).unwrap();
    let routes = [("Ingest", "Rate", "Burst"), ("Results", "Rate", "ResultsBurst")];
    assert_eq!(
        flood_problems(&template, &routes, "Ingest"),
        [
            "Ingest and Results share a throttling parameter",
            "Ingest CallbackWithToken: RouteSettings.ThrottlingRateLimit is not !Ref Rate",
            "Ingest CallbackWithToken: RouteSettings.ThrottlingBurstLimit is not !Ref Burst",
            "Burst: not a Number parameter with a positive default",
            "Results and Ingest share a throttling parameter",
            "Results Task: RouteSettings.ThrottlingBurstLimit is not !Ref ResultsBurst",
            "ResultsBurst: not a Number parameter with a positive default",
            "Reserved: ingest reserves no concurrency by default",
        ]
    );
    assert_eq!(
        flood_problems(&template, &[], "Download"),
        ["Download: no ReservedConcurrentExecutions from a parameter"]
    );
    // Routes moved away (renamed, retyped) are no routes throttled.
    let problems = flood_problems(&template, &[("Download", "Rate", "Burst")], "Ingest");
    assert_eq!(problems[0], "Download: no HttpApi route to throttle");
}
