//! `template.yaml`, the SAM template, parsed: what the deployment and alerting tests read.

use serde_norway::Value;

/// The template's text.
pub const TEMPLATE: &str = include_str!("../../template.yaml");

/// The template as YAML values (its `!Ref`, `!Sub`, … tags kept as tagged values).
pub fn template() -> Value {
    serde_norway::from_str(TEMPLATE).expect("template.yaml parses")
}
