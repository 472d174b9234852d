//! Paging: every alarm in template.yaml is actionable (cause, first step, a runbook section that
//! exists, recovery notified), Slack is optional and read-only, and the Grafana dashboard plots
//! only metrics the functions emit (names from `shared::metrics::NAMES`, not a list kept here).

use integration_tests::template::template;
use serde_norway::Value;
use shared::metrics::{DIMENSION, METRICS_NAMESPACE, NAMES};

const RUNBOOK: &str = include_str!("../../docs/RUNBOOK.md");
const GRAFANA: &str = include_str!("../../docs/grafana/agent-backend.json");

/// The four parts every alarm's runbook section has.
const SECTION_PARTS: &[&str] = &["**What it means.**", "**Confirm.**", "**Mitigate.**", "**Over when.**"];

/// GitHub's anchor for a heading: lower case, spaces to hyphens, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The runbook's `##` sections: (anchor, text up to the next `##`).
fn sections(runbook: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_code = false;
    for line in runbook.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code {
            if let Some(heading) = line.strip_prefix("## ") {
                out.push((anchor(heading), String::new()));
                continue;
            }
        }
        if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// A string, or the string of a `!Sub`.
fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Tagged(tagged) if tagged.tag == "!Sub" => tagged.value.as_str(),
        other => other.as_str(),
    }
}

/// `!Ref name`'s name.
fn reference(v: &Value) -> Option<&str> {
    match v {
        Value::Tagged(tagged) if tagged.tag == "!Ref" => tagged.value.as_str(),
        _ => None,
    }
}

fn resources_of<'a>(t: &'a Value, kind: &str) -> Vec<(String, &'a Value)> {
    t["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(name, r)| (name.as_str().unwrap_or("?").to_string(), r))
        .collect()
}

/// The description as CloudWatch shows it, with a long runbook URL and the parameters' defaults.
fn rendered(t: &Value, description: &str) -> String {
    let mut out = String::new();
    let mut rest = description;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e + 1);
        let name = &rest[start + 2..end - 1];
        let value = match name {
            "RunbookUrl" => {
                "https://github.com/an-organisation/its-agent-backend/blob/main/docs/RUNBOOK.md".to_string()
            }
            _ => serde_norway::to_string(&t["Parameters"][name]["Default"]).unwrap_or_default(),
        };
        out.push_str(value.trim());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Everything wrong with the alarms of `t` against `runbook`.
fn alarm_problems(t: &Value, runbook: &str) -> Vec<String> {
    let sections = sections(runbook);
    let mut problems = Vec::new();
    let alarms = resources_of(t, "AWS::CloudWatch::Alarm");
    if alarms.is_empty() {
        problems.push("no alarm".to_string());
    }
    for (name, alarm) in &alarms {
        let props = &alarm["Properties"];
        for actions in ["AlarmActions", "OKActions"] {
            let notifies = props[actions]
                .as_sequence()
                .is_some_and(|a| a.iter().any(|v| reference(v) == Some("AlarmTopic")));
            if !notifies {
                problems.push(format!("{name}: {actions} does not notify AlarmTopic"));
            }
        }
        let Some(description) = text(&props["AlarmDescription"]) else {
            problems.push(format!("{name} has no AlarmDescription"));
            continue;
        };
        for part in ["Likely cause:", "First step:"] {
            if !description.contains(part) {
                problems.push(format!("{name}'s description names no {part:?}"));
            }
        }
        let shown = rendered(t, description);
        if shown.chars().count() > 1024 {
            problems.push(format!(
                "{name}'s description is {} characters (CloudWatch: 1024)",
                shown.len()
            ));
        }
        let Some((_, link)) = description.split_once("Runbook: ${RunbookUrl}#") else {
            problems.push(format!(
                "{name}'s description links no runbook section (Runbook: ${{RunbookUrl}}#…)"
            ));
            continue;
        };
        let wanted: String = link
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        match sections.iter().find(|(a, _)| *a == wanted) {
            None => problems.push(format!(
                "{name} links #{wanted}, which is no heading of docs/RUNBOOK.md"
            )),
            Some((_, section)) => {
                if !section.contains(&format!("Alarm: `{name}`")) {
                    problems.push(format!(
                        "the runbook's #{wanted} does not name the alarm (Alarm: `{name}`)"
                    ));
                }
                for part in SECTION_PARTS {
                    if !section.contains(part) {
                        problems.push(format!("the runbook's #{wanted} has no {part}"));
                    }
                }
            }
        }
    }
    // One section per alarm: no section for an alarm that is gone.
    for (a, section) in &sections {
        if let Some((_, rest)) = section.split_once("Alarm: `") {
            let named = rest.split('`').next().unwrap_or_default();
            if !alarms.iter().any(|(name, _)| name == named) {
                problems.push(format!(
                    "the runbook's #{a} is for {named}, which is no alarm of the template"
                ));
            }
        }
    }
    problems
}

#[test]
fn every_alarm_names_its_cause_and_first_step_links_a_runbook_section_and_notifies_recovery() {
    let t = template();
    let problems = alarm_problems(&t, RUNBOOK);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(resources_of(&t, "AWS::CloudWatch::Alarm").len() >= 7);
    let url = t["Parameters"]["RunbookUrl"]["Default"].as_str().unwrap_or_default();
    assert!(
        url.ends_with("docs/RUNBOOK.md"),
        "RunbookUrl defaults to the runbook's path: {url}"
    );
}

#[test]
fn an_alarm_without_recovery_notice_cause_or_runbook_section_is_caught() {
    let t = template();
    let alarm = |t: &mut Value| {
        t["Resources"]["PoolTimeoutAlarm"]["Properties"]
            .as_mapping_mut()
            .expect("alarm")
            .clone()
    };
    let mut silent_recovery = t.clone();
    let mut props = alarm(&mut silent_recovery);
    props.remove("OKActions");
    silent_recovery["Resources"]["PoolTimeoutAlarm"]["Properties"] = Value::Mapping(props);
    assert!(alarm_problems(&silent_recovery, RUNBOOK)
        .contains(&"PoolTimeoutAlarm: OKActions does not notify AlarmTopic".to_string()));

    let mut vague = t.clone();
    let mut props = alarm(&mut vague);
    props.insert("AlarmDescription".into(), Value::String("Pool timeouts".into()));
    vague["Resources"]["PoolTimeoutAlarm"]["Properties"] = Value::Mapping(props);
    let problems = alarm_problems(&vague, RUNBOOK);
    assert!(problems.iter().any(|p| p.contains("Likely cause")), "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains("links no runbook section")),
        "{problems:?}"
    );

    let no_section = RUNBOOK.replace("## Pool timeouts", "## Pool waits");
    let problems = alarm_problems(&t, &no_section);
    assert!(
        problems.contains(&"PoolTimeoutAlarm links #pool-timeouts, which is no heading of docs/RUNBOOK.md".to_string()),
        "{problems:?}"
    );
    let half_section = RUNBOOK.replacen("**Mitigate.**", "**Fix.**", 1);
    assert!(alarm_problems(&t, &half_section)
        .iter()
        .any(|p| p.contains("has no **Mitigate.**")));
}

#[test]
fn warning_and_critical_connection_usage_are_separate_alarms_at_the_80_and_95_percent_parameters() {
    let t = template();
    for (alarm, parameter, default) in [
        ("ConnectionUsageWarningAlarm", "ConnectionWarningPercent", 80),
        ("ConnectionUsageCriticalAlarm", "ConnectionCriticalPercent", 95),
    ] {
        let props = &t["Resources"][alarm]["Properties"];
        assert_eq!(reference(&props["Threshold"]), Some(parameter), "{alarm}'s threshold");
        assert_eq!(
            props["ComparisonOperator"].as_str(),
            Some("GreaterThanOrEqualToThreshold")
        );
        assert_eq!(t["Parameters"][parameter]["Default"].as_i64(), Some(default));
    }
}

/// Everything that makes the Slack channel not optional or not read-only.
fn slack_problems(t: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for p in ["SlackWorkspaceId", "SlackChannelId"] {
        if t["Parameters"][p]["Default"].as_str() != Some("") {
            problems.push(format!("{p} is not optional (default \"\")"));
        }
    }
    // NotifySlack: both IDs set.
    let condition = serde_norway::to_string(&t["Conditions"]["NotifySlack"]).unwrap_or_default();
    for p in ["SlackWorkspaceId", "SlackChannelId"] {
        if !condition.contains(&format!("!Ref {p}")) || !condition.contains("!Not") {
            problems.push(format!("NotifySlack does not require {p} to be set: {condition}"));
        }
    }
    let mut slack_resources = Vec::new();
    for (name, resource) in t["Resources"].as_mapping().expect("Resources") {
        let name = name.as_str().unwrap_or("?");
        let body = serde_norway::to_string(resource).unwrap_or_default();
        let kind = resource["Type"].as_str().unwrap_or_default();
        if kind.starts_with("AWS::Chatbot::") || body.contains("SlackWorkspaceId") || body.contains("SlackChannelId") {
            slack_resources.push(name.to_string());
        }
    }
    let channels = resources_of(t, "AWS::Chatbot::SlackChannelConfiguration");
    if channels.len() != 1 {
        problems.push(format!("{} Slack channel configurations", channels.len()));
    }
    for (name, channel) in &channels {
        let props = &channel["Properties"];
        let topics = props["SnsTopicArns"]
            .as_sequence()
            .is_some_and(|s| s.iter().any(|v| reference(v) == Some("AlarmTopic")));
        if !topics {
            problems.push(format!("{name} is not subscribed to AlarmTopic"));
        }
        let guardrails = props["GuardrailPolicies"].as_sequence().cloned().unwrap_or_default();
        // Without a guardrail, AWS Chatbot applies AdministratorAccess.
        if guardrails.is_empty() {
            problems.push(format!(
                "{name} has no guardrail policy (AdministratorAccess by default)"
            ));
        }
        for g in &guardrails {
            if !text(g).is_some_and(|g| g.ends_with(":iam::aws:policy/CloudWatchReadOnlyAccess")) {
                problems.push(format!("{name}'s guardrail is not read-only CloudWatch: {g:?}"));
            }
        }
        if props["UserRoleRequired"].as_bool() == Some(true) {
            problems.push(format!("{name} lets members bring their own roles"));
        }
        let role = match &props["IamRoleArn"] {
            Value::Tagged(tagged) if tagged.tag == "!GetAtt" => {
                tagged.value.as_str().and_then(|s| s.strip_suffix(".Arn"))
            }
            _ => None,
        };
        let Some(role) = role else {
            problems.push(format!("{name}'s role is not one of the template's"));
            continue;
        };
        slack_resources.push(role.to_string());
        let role_props = &t["Resources"][role]["Properties"];
        let trust = serde_norway::to_string(&role_props["AssumeRolePolicyDocument"]).unwrap_or_default();
        if !trust.contains("chatbot.amazonaws.com") {
            problems.push(format!("{role} is not assumed by AWS Chatbot"));
        }
        let managed = role_props["ManagedPolicyArns"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        for m in managed {
            if !text(&m).is_some_and(|m| m.ends_with(":iam::aws:policy/CloudWatchReadOnlyAccess")) {
                problems.push(format!(
                    "{role} has a managed policy beyond read-only CloudWatch: {m:?}"
                ));
            }
        }
        for policy in role_props["Policies"].as_sequence().cloned().unwrap_or_default() {
            for statement in policy["PolicyDocument"]["Statement"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
            {
                if statement["Effect"].as_str() != Some("Allow") {
                    continue;
                }
                let actions = match &statement["Action"] {
                    Value::Sequence(s) => s.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                    other => vec![other.as_str().unwrap_or("?").to_string()],
                };
                for action in actions {
                    let read_only = action
                        .strip_prefix("cloudwatch:")
                        .is_some_and(|verb| ["Describe", "Get", "List"].iter().any(|ro| verb.starts_with(ro)));
                    if !read_only {
                        problems.push(format!("{role} allows {action}, beyond reading CloudWatch"));
                    }
                }
            }
        }
    }
    for name in slack_resources {
        if t["Resources"][name.as_str()]["Condition"].as_str() != Some("NotifySlack") {
            problems.push(format!(
                "{name} is created without the Slack parameters (no Condition: NotifySlack)"
            ));
        }
    }
    problems
}

#[test]
fn slack_is_created_only_with_both_ids_and_can_only_read_cloudwatch() {
    let t = template();
    let problems = slack_problems(&t);
    assert!(problems.is_empty(), "{problems:#?}");
    // E-mail stays, whatever Slack does.
    let topic = &t["Resources"]["AlarmTopic"];
    assert!(topic.get("Condition").is_none());
    let subscription = &topic["Properties"]["Subscription"][0];
    assert_eq!(subscription["Protocol"].as_str(), Some("email"));
    assert_eq!(reference(&subscription["Endpoint"]), Some("AlarmEmail"));
}

#[test]
fn an_unconditional_or_writing_slack_channel_is_caught() {
    let t = template();
    let mut always = t.clone();
    always["Resources"]["SlackAlarmChannel"]
        .as_mapping_mut()
        .expect("channel")
        .remove("Condition");
    assert!(slack_problems(&always)
        .iter()
        .any(|p| p.contains("SlackAlarmChannel is created without")));

    let mut writer = t.clone();
    writer["Resources"]["SlackAlarmChannelRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
        ["Action"] =
        serde_norway::from_str("[cloudwatch:Get*, cloudwatch:PutMetricAlarm, lambda:InvokeFunction]").expect("yaml");
    let problems = slack_problems(&writer);
    assert!(
        problems.iter().any(|p| p.contains("allows cloudwatch:PutMetricAlarm")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("allows lambda:InvokeFunction")),
        "{problems:?}"
    );

    let mut unguarded = t.clone();
    unguarded["Resources"]["SlackAlarmChannel"]["Properties"]
        .as_mapping_mut()
        .expect("properties")
        .remove("GuardrailPolicies");
    assert!(slack_problems(&unguarded)
        .iter()
        .any(|p| p.contains("no guardrail policy")));
}

/// Everything in the Grafana dashboard that would not import as is or plots a metric no function
/// emits. Returns the problems and the emitted metric names it plots.
fn grafana_problems(dashboard: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut plotted = Vec::new();
    let datasource = serde_json::json!({"type": "cloudwatch", "uid": "${DS_CLOUDWATCH}"});
    let inputs = dashboard["__inputs"].as_array().cloned().unwrap_or_default();
    if !inputs
        .iter()
        .any(|i| i["name"] == "DS_CLOUDWATCH" && i["type"] == "datasource" && i["pluginId"] == "cloudwatch")
    {
        problems.push("no DS_CLOUDWATCH datasource input: Grafana would not ask for the data source on import".into());
    }
    let variables = dashboard["templating"]["list"].as_array().cloned().unwrap_or_default();
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).cloned();
    let namespace = shared::config::Env::default()
        .text(&METRICS_NAMESPACE)
        .unwrap_or_default();
    match variable("namespace") {
        Some(v) if v["query"] == namespace.as_str() => {}
        other => problems.push(format!(
            "the namespace variable does not default to {namespace}: {other:?}"
        )),
    }
    match variable("function") {
        Some(v) if v["query"]["dimensionKey"] == DIMENSION && v["query"]["namespace"] == "$namespace" => {}
        other => problems.push(format!(
            "the function variable is not the {DIMENSION} dimension of $namespace: {other:?}"
        )),
    }
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        problems.push("no panel".into());
    }
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["datasource"] != datasource {
            problems.push(format!("{title}: data source is not ${{DS_CLOUDWATCH}}"));
        }
        for target in panel["targets"].as_array().cloned().unwrap_or_default() {
            let metric = target["metricName"].as_str().unwrap_or_default();
            if target["datasource"] != datasource {
                problems.push(format!("{title} / {metric}: data source is not ${{DS_CLOUDWATCH}}"));
            }
            match target["namespace"].as_str() {
                Some("$namespace") => {
                    if !NAMES.contains(&metric) {
                        problems.push(format!("{title} plots {metric}, which no function emits"));
                    }
                    let keys: Vec<&String> = target["dimensions"]
                        .as_object()
                        .map(|d| d.keys().collect())
                        .unwrap_or_default();
                    let expected = if shared::metrics::BY_MODEL.contains(&metric) {
                        shared::metrics::MODEL_DIMENSION
                    } else {
                        DIMENSION
                    };
                    if keys != [expected] {
                        problems.push(format!(
                            "{title} / {metric}: dimensions {keys:?}, the functions emit it by {expected} only"
                        ));
                    }
                    plotted.push(metric.to_string());
                }
                Some("AWS/Lambda") => {}
                other => problems.push(format!("{title} / {metric}: unexpected namespace {other:?}")),
            }
        }
    }
    (problems, plotted)
}

#[test]
fn the_grafana_dashboard_imports_as_is_and_plots_only_metrics_the_functions_emit() {
    let dashboard: serde_json::Value = serde_json::from_str(GRAFANA).expect("docs/grafana/agent-backend.json is JSON");
    let (problems, plotted) = grafana_problems(&dashboard);
    assert!(problems.is_empty(), "{problems:#?}");
    // What the issue asks to see.
    for wanted in [
        "ConnectionUsagePercent",
        "PoolWaitMs",
        "PoolTimeouts",
        "PoolCheckouts",
        "TasksCompleted",
        "TasksThrottled",
        "SchedulerConcurrency",
    ] {
        assert!(plotted.iter().any(|p| p == wanted), "the dashboard plots {wanted}");
    }
    // The usage panel's lines are the template's levels.
    let t = template();
    let usage = dashboard["panels"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["targets"][0]["metricName"] == "ConnectionUsagePercent")
        })
        .expect("a connection usage panel");
    let lines: Vec<i64> = usage["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .expect("threshold steps")
        .iter()
        .filter_map(|s| s["value"].as_i64())
        .collect();
    let levels: Vec<i64> = ["ConnectionWarningPercent", "ConnectionCriticalPercent"]
        .iter()
        .filter_map(|p| t["Parameters"][*p]["Default"].as_i64())
        .collect();
    assert_eq!(lines, levels, "warning and critical lines at the template's levels");
}

#[test]
fn a_grafana_panel_plotting_an_unknown_metric_or_another_data_source_is_caught() {
    let dashboard: serde_json::Value = serde_json::from_str(GRAFANA).expect("JSON");
    let mut unknown = dashboard.clone();
    unknown["panels"][0]["targets"][0]["metricName"] = "ConnectionsUsedPercent".into();
    let (problems, _) = grafana_problems(&unknown);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("plots ConnectionsUsedPercent, which no function emits")),
        "{problems:?}"
    );

    let mut pinned = dashboard.clone();
    pinned["panels"][1]["datasource"]["uid"] = "P034F075C744B399F".into();
    assert!(!grafana_problems(&pinned).0.is_empty());

    let mut other_dimension = dashboard;
    other_dimension["templating"]["list"][2]["query"]["dimensionKey"] = "FunctionName".into();
    assert!(grafana_problems(&other_dimension)
        .0
        .iter()
        .any(|p| p.contains("function variable")));
}

#[test]
fn every_metric_name_the_code_defines_is_documented_in_its_table() {
    let documented = include_str!("../../shared/src/metrics.rs");
    for name in NAMES {
        assert!(
            documented.contains(&format!("| `{name}`")) || documented.contains(&format!(", `{name}`")),
            "{name} in the table of shared/src/metrics.rs"
        );
    }
}
