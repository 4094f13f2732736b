use super::*;

/// `!Tag value` (short form) or `{ "Ref" | "Fn::Tag": value }` (long form), as (Tag, value).
pub fn intrinsic(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((t.tag.to_string().trim_start_matches('!').to_owned(), &t.value)),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, inner) = m.iter().next()?;
            let k = k.as_str()?;
            if k == "Ref" {
                Some(("Ref".into(), inner))
            } else {
                k.strip_prefix("Fn::").map(|name| (name.to_owned(), inner))
            }
        }
        _ => None,
    }
}

pub fn reference(v: &Value) -> Option<String> {
    match intrinsic(v)? {
        (tag, target) if tag == "Ref" => target.as_str().map(str::to_owned),
        _ => None,
    }
}

/// `!GetAtt Name.Attr` or `[Name, Attr]`, as "Name.Attr".
pub fn get_att(v: &Value) -> Option<String> {
    match intrinsic(v)? {
        (tag, Value::String(s)) if tag == "GetAtt" => Some(s.clone()),
        (tag, Value::Sequence(parts)) if tag == "GetAtt" => {
            Some(parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("."))
        }
        _ => None,
    }
}

pub fn sub(v: &Value) -> Option<String> {
    match intrinsic(v)? {
        (tag, Value::String(s)) if tag == "Sub" => Some(s.clone()),
        _ => None,
    }
}

/// A policy's statements, a statement given as `!If [condition, statement, !Ref
/// AWS::NoValue]` read as the statement (it grants that or nothing).
pub fn statements(policy: &Value) -> Vec<&Value> {
    as_list(&policy["PolicyDocument"]["Statement"])
        .into_iter()
        .map(|statement| match intrinsic(statement) {
            Some((tag, Value::Sequence(args)))
                if tag == "If" && args.len() == 3 && reference(&args[2]).as_deref() == Some("AWS::NoValue") =>
            {
                &args[1]
            }
            _ => statement,
        })
        .collect()
}

/// The statements of the role `role` (its logical id), every inline policy's.
pub fn role_statements<'a>(template: &'a Value, role: &str) -> Vec<&'a Value> {
    as_list(&resource(template, role)["Properties"]["Policies"]).into_iter().flat_map(statements).collect()
}

pub fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    template["Resources"].get(name).unwrap_or_else(|| panic!("template.yaml has no resource {name}"))
}

/// A function's properties with SAM's `Globals.Function` merged in (maps merge one level
/// deep, as SAM does for `Environment.Variables`).
pub fn function_properties(template: &Value, name: &str) -> yaml_serde::Mapping {
    let mut merged = template["Globals"]["Function"].as_mapping().cloned().unwrap_or_default();
    let own = resource(template, name)["Properties"].as_mapping().cloned().unwrap_or_default();
    for (k, v) in own {
        match (merged.get_mut(&k), &v) {
            (Some(Value::Mapping(global)), Value::Mapping(local)) if k.as_str() == Some("Environment") => {
                let mut vars = global.get("Variables").and_then(Value::as_mapping).cloned().unwrap_or_default();
                for (vk, vv) in local.get("Variables").and_then(Value::as_mapping).cloned().unwrap_or_default() {
                    vars.insert(vk, vv);
                }
                global.insert("Variables".into(), Value::Mapping(vars));
            }
            _ => {
                merged.insert(k, v);
            }
        }
    }
    merged
}

pub fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Sequence(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

pub fn number(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().expect("whole number"),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("{s:?} is not a number")),
        other => panic!("{other:?} is not a number"),
    }
}
