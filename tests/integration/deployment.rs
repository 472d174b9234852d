//! template.yaml: the connection budget and the timeouts, checked.

use std::collections::BTreeSet;

use integration_tests::template::{template, TEMPLATE};
use serde_norway::Value;

/// A number, a numeric string, or `!Ref Parameter` (its default).
fn number(t: &Value, v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n:?} is not an integer")),
        Value::String(s) => s.parse().map_err(|_| format!("{s:?} is not a number")),
        Value::Tagged(tagged) if tagged.tag == "!Ref" => {
            let name = tagged.value.as_str().ok_or("!Ref of a non-string")?;
            let default = &t["Parameters"][name]["Default"];
            if default.is_null() {
                return Err(format!("parameter {name} has no default"));
            }
            number(t, default)
        }
        other => Err(format!("{other:?} is not a number or a !Ref")),
    }
}

/// One function's share of the budget.
#[derive(Debug)]
struct Share {
    function: String,
    reserved: i64,
    pool: i64,
    timeout_s: i64,
    /// `DB_CONNECTION_MODE`: `release` holds clients only while statements run (the share bounds
    /// clients in flight); `warm` holds them for the instance's life (the share is held).
    mode: String,
}

/// The budget check: every function has reserved concurrency and a pool size, and
/// Σ reserved × pool stays within the pooler's client limit.
fn budget(t: &Value) -> Result<(Vec<Share>, i64, i64), String> {
    let limit = number(t, &t["Parameters"]["PoolerClientLimit"]["Default"])?;
    let globals = &t["Globals"]["Function"];
    let mut shares = Vec::new();
    let resources = t["Resources"].as_mapping().ok_or("no Resources")?;
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let name = name.as_str().unwrap_or("?").to_string();
        let props = &resource["Properties"];
        let reserved = props
            .get("ReservedConcurrentExecutions")
            .ok_or_else(|| format!("{name} has no ReservedConcurrentExecutions"))
            .and_then(|v| number(t, v))?;
        let pool_value = props["Environment"]["Variables"]
            .get("DB_POOL_MAX_SIZE")
            .or_else(|| globals["Environment"]["Variables"].get("DB_POOL_MAX_SIZE"))
            .ok_or_else(|| format!("{name} sets no DB_POOL_MAX_SIZE"))?;
        let pool = number(t, pool_value)?;
        let timeout_s = number(t, props.get("Timeout").unwrap_or(&globals["Timeout"]))?;
        let mode = props["Environment"]["Variables"]
            .get("DB_CONNECTION_MODE")
            .or_else(|| globals["Environment"]["Variables"].get("DB_CONNECTION_MODE"))
            .and_then(Value::as_str)
            .unwrap_or("release")
            .to_string();
        shares.push(Share {
            function: name,
            reserved,
            pool,
            timeout_s,
            mode,
        });
    }
    let used: i64 = shares.iter().map(|s| s.reserved * s.pool).sum();
    if used > limit {
        return Err(format!(
            "connection budget broken: {} = {used} > PoolerClientLimit {limit} \
             (warm: clients held for the instances' lives; release: clients in flight at one instant)",
            shares
                .iter()
                .map(|s| format!("{} {}x{} ({})", s.function, s.reserved, s.pool, s.mode))
                .collect::<Vec<_>>()
                .join(" + ")
        ));
    }
    Ok((shares, used, limit))
}

fn with(mut t: Value, path: &[&str], value: Option<Value>) -> Value {
    let mut node = &mut t;
    for key in &path[..path.len() - 1] {
        node = node.get_mut(*key).expect("path exists");
    }
    let map = node.as_mapping_mut().expect("a mapping");
    match value {
        Some(v) => {
            map.insert(Value::String(path[path.len() - 1].into()), v);
        }
        None => {
            map.remove(path[path.len() - 1]);
        }
    }
    t
}

#[test]
fn the_templates_connection_budget_fits_under_the_pooler_limit() {
    let (shares, used, limit) = budget(&template()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        shares.len(),
        6,
        "api, chat, chat-stream, health, live and scheduler: {shares:?}"
    );
    assert!(used <= limit, "{used} > {limit}");
    let by_name = |n: &str| shares.iter().find(|s| s.function == n).unwrap();
    assert_eq!(by_name("ChatFunction").pool, 1);
    assert_eq!(by_name("HealthFunction").pool, 1);
    assert_eq!(by_name("ApiFunction").pool, 1);
    assert_eq!(by_name("ChatStreamFunction").pool, 1);
    assert_eq!(by_name("SchedulerFunction").pool, 2);
    assert_eq!(by_name("LiveFunction").pool, 1);
    // The functions that wait on a model hold no pooler client across the call or between
    // requests: their share bounds connections in flight, not instances. The live function
    // neither between WebSocket events (an open socket holds no client).
    for f in [
        "ChatFunction",
        "ChatStreamFunction",
        "SchedulerFunction",
        "LiveFunction",
    ] {
        assert_eq!(
            by_name(f).mode,
            "release",
            "{f} holds clients only while statements run"
        );
    }
}

#[test]
fn a_broken_budget_or_a_missing_share_is_caught() {
    let too_many = with(
        template(),
        &["Parameters", "ChatReservedConcurrency", "Default"],
        Some(Value::Number(500.into())),
    );
    assert!(budget(&too_many).unwrap_err().contains("budget broken"));

    let no_reserved = with(
        template(),
        &[
            "Resources",
            "HealthFunction",
            "Properties",
            "ReservedConcurrentExecutions",
        ],
        None,
    );
    assert!(budget(&no_reserved)
        .unwrap_err()
        .contains("HealthFunction has no ReservedConcurrentExecutions"));

    let no_pool = with(
        template(),
        &[
            "Resources",
            "SchedulerFunction",
            "Properties",
            "Environment",
            "Variables",
            "DB_POOL_MAX_SIZE",
        ],
        None,
    );
    assert!(budget(&no_pool)
        .unwrap_err()
        .contains("SchedulerFunction sets no DB_POOL_MAX_SIZE"));
}

#[test]
fn every_database_bound_stays_below_its_function_timeout() {
    let t = template();
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    let (shares, _, _) = budget(&t).unwrap();
    for share in shares {
        let vars = &t["Resources"][share.function.as_str()]["Properties"]["Environment"]["Variables"];
        let ms = |name: &str| -> i64 {
            let v = vars
                .get(name)
                .or_else(|| globals.get(name))
                .unwrap_or_else(|| panic!("{name} set"));
            number(&t, v).unwrap()
        };
        // Worst case for one statement: wait for the pool, connect, run.
        let worst = ms("DB_POOL_TIMEOUT_MS") + ms("DB_CONNECT_TIMEOUT_MS") + ms("DB_STATEMENT_TIMEOUT_MS");
        assert!(
            worst < share.timeout_s * 1000,
            "{}: {worst} ms of database bounds >= {} s timeout",
            share.function,
            share.timeout_s
        );
    }
    let chat = &t["Resources"]["ChatFunction"]["Properties"];
    let timeout_ms = number(&t, &chat["Timeout"]).unwrap() * 1000;
    assert!(timeout_ms < 30_000, "chat's timeout stays below API Gateway's 30 s");
    let var = |name: &str| number(&t, &chat["Environment"]["Variables"][name]).unwrap();
    // A message: two round trips (each may wait, connect and run) and one model call.
    let per_trip = var("DB_POOL_TIMEOUT_MS") + var("DB_CONNECT_TIMEOUT_MS") + var("DB_STATEMENT_TIMEOUT_MS");
    let worst = 2 * per_trip + var("CHAT_MODEL_TIMEOUT_MS");
    assert!(
        worst < timeout_ms,
        "chat: {worst} ms worst case >= {timeout_ms} ms timeout"
    );
}

#[test]
fn secrets_are_read_at_run_time_and_never_resolved_into_the_environment() {
    let t = template();
    assert!(
        !TEMPLATE.contains("{{resolve:secretsmanager"),
        "a secret is resolved into a plaintext environment variable at deploy time"
    );
    let globals = &t["Globals"]["Function"];
    assert!(globals["Environment"]["Variables"].get("DATABASE_URL").is_none());
    assert!(globals["Environment"]["Variables"]
        .get("DATABASE_URL_SECRET_ARN")
        .is_some());
    assert!(
        globals.get("Layers").is_some(),
        "the secrets extension layer is attached"
    );
    let resources = t["Resources"].as_mapping().expect("Resources");
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let policies = serde_norway::to_string(&resource["Properties"]["Policies"]).unwrap_or_default();
        assert!(
            policies.contains("secretsmanager:GetSecretValue") && policies.contains("DatabaseUrlSecretArn"),
            "{name:?} may read its database secret: {policies}"
        );
        let variables = &resource["Properties"]["Environment"]["Variables"];
        for secret in [
            "HEALTH_API_KEY",
            "SUPABASE_JWT_SECRET",
            "DATABASE_URL",
            "OPENAI_API_KEY",
        ] {
            assert!(variables.get(secret).is_none(), "{name:?} sets {secret} in plaintext");
        }
    }
    let chat = &t["Resources"]["ChatFunction"]["Properties"]["Environment"]["Variables"];
    assert!(
        chat.get("SUPABASE_JWT_SECRET_ARN").is_some(),
        "legacy HS256 projects get their secret"
    );
}

#[test]
fn the_http_api_throttles_and_the_database_connection_requires_tls() {
    let t = template();
    let route = &t["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"];
    let burst = number(&t, &route["ThrottlingBurstLimit"]).expect("a burst limit");
    let rate = number(&t, &route["ThrottlingRateLimit"]).expect("a rate limit");
    assert!(burst >= 1 && rate >= 1);
    // Every value the mode may take (a parameter's default, either branch of an !If) encrypts.
    let sslmode = &t["Globals"]["Function"]["Environment"]["Variables"]["DB_SSLMODE"];
    let modes = sslmode_values(&t, sslmode);
    assert!(!modes.is_empty(), "no DB_SSLMODE: {sslmode:?}");
    for mode in modes {
        assert!(
            ["require", "verify-ca", "verify-full"].contains(&mode.as_str()),
            "sslmode {mode:?} allows plaintext"
        );
    }
}

/// The values a `DB_SSLMODE` entry may take: a literal, a parameter's default and allowed
/// values, either branch of an `!If`.
fn sslmode_values(t: &Value, v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Tagged(tagged) if tagged.tag == "!Ref" => {
            let parameter = &t["Parameters"][tagged.value.as_str().unwrap_or_default()];
            let allowed = parameter["AllowedValues"].as_sequence().into_iter().flatten();
            std::iter::once(&parameter["Default"])
                .chain(allowed)
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        }
        Value::Tagged(tagged) if tagged.tag == "!If" => tagged
            .value
            .as_sequence()
            .into_iter()
            .flat_map(|branches| branches.iter().skip(1))
            .flat_map(|branch| sslmode_values(t, branch))
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

#[test]
fn every_dashboard_widget_names_a_metric_the_functions_emit() {
    let t = template();
    let body = match &t["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"] {
        Value::Tagged(tagged) if tagged.tag == "!Sub" => tagged.value.as_str().unwrap_or_default().to_string(),
        other => other.as_str().unwrap_or_default().to_string(),
    };
    // ${…} substitutions are CloudFormation's; stand numbers and names in for them to read the JSON.
    let mut json = String::new();
    let mut rest = body.as_str();
    while let Some(start) = rest.find("${") {
        json.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e + 1);
        let name = &rest[start + 2..end - 1];
        json.push_str(if name.ends_with("Percent") { "80" } else { "x" });
        rest = &rest[end..];
    }
    json.push_str(rest);
    let dashboard: serde_json::Value = serde_json::from_str(&json).expect("the dashboard body is JSON");
    let mut named = 0;
    for widget in dashboard["widgets"].as_array().expect("widgets") {
        for metric in widget["properties"]["metrics"].as_array().expect("metrics") {
            let (namespace, name) = (metric[0].as_str().unwrap_or(""), metric[1].as_str().unwrap_or(""));
            if namespace == "AgentBackend" {
                assert!(
                    shared::metrics::NAMES.contains(&name),
                    "the dashboard shows {name}, which no function emits"
                );
                named += 1;
            } else {
                assert!(
                    ["AWS/Lambda", "AWS/ApiGateway"].contains(&namespace),
                    "unexpected namespace {namespace}"
                );
            }
        }
    }
    assert!(named >= 15, "the dashboard shows the functions' metrics ({named})");
}

#[test]
fn the_scheduler_continues_a_backlog_by_invoking_only_itself_and_never_retries_a_continuation() {
    let t = template();
    let f = &t["Resources"]["SchedulerFunction"]["Properties"];
    assert_eq!(
        f["Environment"]["Variables"]["SCHEDULER_SELF_INVOKE"].as_str(),
        Some("true")
    );
    let name = f["FunctionName"]["!Sub"]
        .as_str()
        .or_else(|| match &f["FunctionName"] {
            Value::Tagged(tagged) if tagged.tag == "!Sub" => tagged.value.as_str(),
            _ => None,
        })
        .expect("a FunctionName the policy can name without a circular reference");
    let config = &f["EventInvokeConfig"];
    assert_eq!(config["MaximumRetryAttempts"].as_i64(), Some(0));
    assert!(config["MaximumEventAgeInSeconds"].as_i64().is_some_and(|s| s <= 300));
    // The one lambda:InvokeFunction grant is on the function's own name.
    let policies = serde_norway::to_string(&f["Policies"]).unwrap();
    let grants: Vec<&str> = policies.matches("lambda:InvokeFunction").collect();
    assert_eq!(grants.len(), 1, "{policies}");
    assert!(
        policies.contains(&format!("function:{name}")),
        "the grant names {name}: {policies}"
    );
    assert!(!policies.contains("function:*"), "{policies}");
}

#[test]
fn browsers_on_the_allowed_origins_may_call_every_route_and_never_any_origin() {
    let t = template();
    let cors = &t["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"];
    let origins = &cors["AllowOrigins"];
    let parameter = match origins {
        Value::Tagged(tagged) if tagged.tag == "!Ref" => tagged.value.as_str().unwrap_or_default().to_string(),
        other => panic!("AllowOrigins comes from the CorsAllowedOrigins parameter, not {other:?}"),
    };
    assert_eq!(parameter, "CorsAllowedOrigins");
    assert_eq!(
        t["Parameters"]["CorsAllowedOrigins"]["Type"].as_str(),
        Some("CommaDelimitedList")
    );
    // No default: a deployed stage names its own frontends, never a developer's localhost.
    assert!(
        t["Parameters"]["CorsAllowedOrigins"].get("Default").is_none(),
        "CorsAllowedOrigins has a default: {:?}",
        t["Parameters"]["CorsAllowedOrigins"]["Default"]
    );
    let list = |key: &str| -> Vec<String> {
        cors[key]
            .as_sequence()
            .unwrap_or_else(|| panic!("{key} is a list"))
            .iter()
            .map(|v| v.as_str().unwrap().to_ascii_lowercase())
            .collect()
    };
    for header in ["authorization", "content-type", "idempotency-key"] {
        assert!(list("AllowHeaders").contains(&header.to_string()), "{header} allowed");
    }
    for header in ["x-request-id", "retry-after"] {
        assert!(list("ExposeHeaders").contains(&header.to_string()), "{header} exposed");
    }
    for method in ["get", "post", "put", "patch"] {
        assert!(list("AllowMethods").contains(&method.to_string()), "{method} allowed");
    }
    assert!(cors.get("AllowCredentials").is_none_or(|v| v.as_bool() != Some(true)));
}

#[test]
fn every_frontend_route_of_the_design_is_in_the_template() {
    let t = template();
    let mut routes = Vec::new();
    for (_, resource) in t["Resources"].as_mapping().unwrap() {
        if let Some(events) = resource["Properties"]["Events"].as_mapping() {
            for (_, event) in events {
                if event["Type"].as_str() == Some("HttpApi") {
                    let p = &event["Properties"];
                    routes.push(format!(
                        "{} {}",
                        p["Method"].as_str().unwrap_or("?"),
                        p["Path"].as_str().unwrap_or("?")
                    ));
                }
            }
        }
    }
    for route in [
        "POST /api/agents/chat",
        "GET /api/agents",
        "POST /api/agents",
        "PATCH /api/agents/{id}",
        "GET /api/agents/{id}/tools",
        "PUT /api/agents/{id}/tools",
        "GET /api/agents/{id}/tool-sources",
        "PUT /api/agents/{id}/tool-sources",
        "GET /api/conversations",
        "GET /api/conversations/{id}/messages",
        "POST /api/tasks",
        "GET /api/tasks",
        "GET /api/tasks/{id}",
        "POST /api/tasks/{id}/approve",
        "POST /api/tasks/{id}/reject",
        "POST /api/tasks/{id}/cancel",
        "GET /api/runs/{id}",
        "POST /api/runs/{id}/tool-calls/{callId}/approve",
        "POST /api/runs/{id}/tool-calls/{callId}/reject",
        "GET /api/usage",
    ] {
        assert!(routes.contains(&route.to_string()), "{route} is routed: {routes:?}");
    }
}

#[test]
fn the_streaming_chat_is_a_function_url_that_streams_checks_tokens_itself_and_allows_only_the_frontends() {
    let t = template();
    let f = &t["Resources"]["ChatStreamFunction"];
    assert_eq!(f["Metadata"]["BuildProperties"]["Binary"].as_str(), Some("chat-stream"));
    let url = &f["Properties"]["FunctionUrlConfig"];
    assert_eq!(url["InvokeMode"].as_str(), Some("RESPONSE_STREAM"));
    // By default the URL does not authenticate: the function verifies the Supabase token (tested
    // above); behind CloudFront it takes only signed requests.
    assert_eq!(
        serde_norway::to_string(&url["AuthType"]).unwrap().trim(),
        "!If\n- StreamBehindCloudFront\n- AWS_IAM\n- NONE"
    );
    match &url["Cors"]["AllowOrigins"] {
        Value::Tagged(tagged) if tagged.tag == "!Ref" => assert_eq!(tagged.value.as_str(), Some("CorsAllowedOrigins")),
        other => panic!("the URL's origins come from CorsAllowedOrigins, not {other:?}"),
    }
    let headers = serde_norway::to_string(&url["Cors"]["AllowHeaders"]).unwrap();
    for h in ["authorization", "content-type", "idempotency-key"] {
        assert!(headers.contains(h), "{h} allowed: {headers}");
    }
    let exposed = serde_norway::to_string(&url["Cors"]["ExposeHeaders"]).unwrap();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("retry-after"),
        "{exposed}"
    );
    // A reply is bounded below the function's timeout, the database bounds too.
    let vars = &f["Properties"]["Environment"]["Variables"];
    let ms = |name: &str| number(&t, &vars[name]).unwrap();
    let timeout_ms = number(&t, &f["Properties"]["Timeout"]).unwrap() * 1000;
    let trip = ms("DB_POOL_TIMEOUT_MS") + ms("DB_CONNECT_TIMEOUT_MS") + ms("DB_STATEMENT_TIMEOUT_MS");
    assert!(2 * trip + ms("CHAT_STREAM_TIMEOUT_MS") < timeout_ms);
}

/// Every parameter a value refers to (`!Ref`, inside `!If` too), `AWS::NoValue` left out.
fn refs(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match v {
        Value::Tagged(tagged) if tagged.tag == "!Ref" => {
            if let Some(name) = tagged.value.as_str().filter(|n| *n != "AWS::NoValue") {
                out.insert(name.to_string());
            }
        }
        Value::Tagged(tagged) => out.extend(refs(&tagged.value)),
        Value::Sequence(items) => items.iter().for_each(|i| out.extend(refs(i))),
        Value::Mapping(map) => map.values().for_each(|i| out.extend(refs(i))),
        _ => {}
    }
    out
}

/// The secrets (template parameters) `function` may read with `secretsmanager:GetSecretValue`.
fn readable_secrets(t: &Value, function: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let policies = t["Resources"][function]["Properties"]["Policies"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    for policy in &policies {
        for statement in policy["Statement"].as_sequence().into_iter().flatten() {
            let actions = serde_norway::to_string(&statement["Action"]).unwrap_or_default();
            if actions.contains("secretsmanager:GetSecretValue") {
                out.extend(refs(&statement["Resource"]));
            }
        }
    }
    out
}

#[test]
fn each_function_may_read_only_the_secrets_of_its_own_use_and_only_token_verifiers_the_token_secret() {
    let t = template();
    let set = |names: &[&str]| names.iter().map(|n| (*n).to_string()).collect::<BTreeSet<_>>();
    let expected = [
        (
            "ChatFunction",
            set(&[
                "DatabaseUrlSecretArn",
                "SupabaseJwtSecretArn",
                "OpenAiApiKeySecretArn",
                "AgentToolSigningSecretArn",
                "AgentMcpEncryptionKeyArn",
            ]),
        ),
        (
            "ChatStreamFunction",
            set(&[
                "DatabaseUrlSecretArn",
                "SupabaseJwtSecretArn",
                "OpenAiApiKeySecretArn",
                "AgentToolSigningSecretArn",
                "AgentMcpEncryptionKeyArn",
            ]),
        ),
        (
            "ApiFunction",
            set(&[
                "DatabaseUrlSecretArn",
                "SupabaseJwtSecretArn",
                "AgentMcpEncryptionKeyArn",
            ]),
        ),
        (
            "HealthFunction",
            set(&[
                "DatabaseUrlSecretArn",
                "HealthDatabaseUrlSecretArn",
                "HealthApiKeySecretArn",
            ]),
        ),
        (
            "SchedulerFunction",
            set(&[
                "DatabaseUrlSecretArn",
                "OpenAiApiKeySecretArn",
                "AgentToolSigningSecretArn",
                "AgentMcpEncryptionKeyArn",
            ]),
        ),
        ("LiveFunction", set(&["DatabaseUrlSecretArn", "SupabaseJwtSecretArn"])),
    ];
    for (function, secrets) in &expected {
        assert_eq!(&readable_secrets(&t, function), secrets, "{function}");
    }
    // Each secret a function is told to read (`*_SECRET_ARN`) is one its policy lets it read.
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    for (function, _) in &expected {
        let variables = &t["Resources"][*function]["Properties"]["Environment"]["Variables"];
        let readable = readable_secrets(&t, function);
        for (name, value) in globals
            .as_mapping()
            .into_iter()
            .flatten()
            .chain(variables.as_mapping().into_iter().flatten())
        {
            let name = name.as_str().unwrap_or_default();
            if name.ends_with("_SECRET_ARN") {
                let own = variables.get(name).unwrap_or(value);
                assert!(
                    refs(own).is_subset(&readable),
                    "{function}: {name} = {own:?} outside {readable:?}"
                );
            }
        }
    }
    // The HS256 secret is optional (Supabase's signing keys need none); the split secrets are
    // distinct parameters, so no policy can reach another use's secret through a shared one.
    assert_eq!(t["Parameters"]["SupabaseJwtSecretArn"]["Default"].as_str(), Some(""));
    assert_eq!(t["Parameters"]["OpenAiApiKeySecretArn"]["Default"].as_str(), Some(""));
    assert!(t["Parameters"]["HealthApiKeySecretArn"].get("Default").is_none());
}

#[test]
fn a_policy_reading_another_uses_secret_is_caught() {
    let t = with(
        template(),
        &["Resources", "HealthFunction", "Properties", "Policies"],
        Some(serde_norway::from_str(
            "- Statement:\n    - Effect: Allow\n      Action: [secretsmanager:GetSecretValue]\n      Resource: [!Ref DatabaseUrlSecretArn, !Ref SupabaseJwtSecretArn]\n",
        )
        .unwrap()),
    );
    assert!(readable_secrets(&t, "HealthFunction").contains("SupabaseJwtSecretArn"));
}

#[test]
fn only_the_schedulers_own_rule_may_write_to_its_dead_letter_queue() {
    let t = template();
    let statements = t["Resources"]["SchedulerDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    assert_eq!(statements.len(), 1);
    let source = serde_norway::to_string(&statements[0]["Condition"]["ArnEquals"]["aws:SourceArn"]).unwrap();
    let rule =
        t["Resources"]["SchedulerFunction"]["Properties"]["Events"]["Every5Minutes"]["Properties"]["Name"].clone();
    let rule = serde_norway::to_string(&rule).unwrap();
    assert!(rule.contains("${AWS::StackName}-schedule"), "the rule is named: {rule}");
    assert!(
        source.contains(":rule/${AWS::StackName}-schedule"),
        "the queue admits exactly the scheduler's rule: {source}"
    );
}

#[test]
fn behind_cloudfront_the_streaming_url_takes_only_signed_requests_rate_limited_per_ip() {
    let t = template();
    let r = &t["Resources"];
    for name in [
        "StreamingOriginAccessControl",
        "StreamingTokenHeader",
        "StreamingDistribution",
        "StreamingUrlPermission",
    ] {
        assert_eq!(r[name]["Condition"].as_str(), Some("StreamBehindCloudFront"), "{name}");
    }
    assert_eq!(
        t["Parameters"]["StreamingFrontDoor"]["Default"].as_str(),
        Some("function-url")
    );
    let oac = &r["StreamingOriginAccessControl"]["Properties"]["OriginAccessControlConfig"];
    assert_eq!(oac["OriginAccessControlOriginType"].as_str(), Some("lambda"));
    assert_eq!(oac["SigningBehavior"].as_str(), Some("always"));
    let permission = &r["StreamingUrlPermission"]["Properties"];
    assert_eq!(permission["Action"].as_str(), Some("lambda:InvokeFunctionUrl"));
    assert_eq!(permission["FunctionUrlAuthType"].as_str(), Some("AWS_IAM"));
    assert_eq!(permission["Principal"].as_str(), Some("cloudfront.amazonaws.com"));
    assert!(serde_norway::to_string(&permission["SourceArn"])
        .unwrap()
        .contains("distribution/${StreamingDistribution}"));
    // The WAF rule: rate-based, per client IP.
    let rule = &r["StreamingWebAcl"]["Properties"]["Rules"][0];
    assert_eq!(
        rule["Statement"]["RateBasedStatement"]["AggregateKeyType"].as_str(),
        Some("IP")
    );
    assert!(rule["Action"].get("Block").is_some());
    assert_eq!(r["StreamingWebAcl"]["Properties"]["Scope"].as_str(), Some("CLOUDFRONT"));
    // The viewer's token reaches the function in the header the function is told to read.
    let code = r["StreamingTokenHeader"]["Properties"]["FunctionCode"]
        .as_str()
        .unwrap();
    let header = serde_norway::to_string(
        &r["ChatStreamFunction"]["Properties"]["Environment"]["Variables"]["AUTH_TOKEN_HEADER"],
    )
    .unwrap();
    assert!(
        code.contains("x-agent-authorization") && header.contains("x-agent-authorization"),
        "{header}"
    );
}

#[test]
fn holding_every_streaming_instance_takes_at_least_ten_accounts() {
    let t = template();
    let props = &t["Resources"]["ChatStreamFunction"]["Properties"];
    let reserved = number(&t, &props["ReservedConcurrentExecutions"]).unwrap();
    let per_user = number(&t, &props["Environment"]["Variables"]["CHAT_MAX_IN_FLIGHT"]).unwrap();
    let accounts = (reserved + per_user - 1) / per_user;
    assert!(
        accounts >= 10,
        "{reserved} instances / {per_user} streams per user = {accounts} accounts"
    );
}

#[test]
fn the_websocket_api_routes_to_the_live_function_and_only_publishers_may_push_to_its_connections() {
    let t = template();
    let r = &t["Resources"];
    assert_eq!(r["LiveApi"]["Properties"]["ProtocolType"].as_str(), Some("WEBSOCKET"));
    assert_eq!(
        r["LiveApi"]["Properties"]["RouteSelectionExpression"].as_str(),
        Some("$request.body.action")
    );
    let routes: BTreeSet<String> = r
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v["Type"].as_str() == Some("AWS::ApiGatewayV2::Route"))
        .filter_map(|(_, v)| v["Properties"]["RouteKey"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        routes,
        ["$connect", "$disconnect", "$default"]
            .iter()
            .map(|s| (*s).to_string())
            .collect()
    );
    assert_eq!(
        r["LiveFunction"]["Metadata"]["BuildProperties"]["Binary"].as_str(),
        Some("live")
    );
    let pushes = |function: &str| {
        let policies = serde_norway::to_string(&r[function]["Properties"]["Policies"]).unwrap_or_default();
        policies.contains("execute-api:ManageConnections")
    };
    for publisher in ["ChatFunction", "ChatStreamFunction", "ApiFunction", "SchedulerFunction"] {
        assert!(pushes(publisher), "{publisher} may push");
        let policies = serde_norway::to_string(&r[publisher]["Properties"]["Policies"]).unwrap_or_default();
        assert!(
            policies.contains("${LiveApi}/live/*/@connections/*"),
            "{publisher}: only that API's connections: {policies}"
        );
        let endpoint =
            serde_norway::to_string(&r[publisher]["Properties"]["Environment"]["Variables"]["LIVE_ENDPOINT"])
                .unwrap_or_default();
        assert!(endpoint.contains("${LiveApi}.execute-api"), "{publisher}: {endpoint}");
    }
    for other in ["HealthFunction", "LiveFunction"] {
        assert!(!pushes(other), "{other} never pushes");
    }
}
