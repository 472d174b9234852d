//! What an agent request says: the `POST /api/agents` body ([`AgentBody`]) and the
//! `PATCH /api/agents/{id}` body ([`AgentPatchBody`]), each field its own type (a malformed one
//! is a 422 naming it), then bounded into a [`NewAgent`] or an [`AgentPatch`].

use serde::{Deserialize, Deserializer};

use shared::http::{parse_json, ApiError, Text, WholeNumber};

/// Longest name, description and model name (the table's own bounds).
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 500;
pub const MAX_MODEL_CHARS: usize = 200;
/// Longest instructions (the system prompt) an agent made through the API may have.
pub const MAX_INSTRUCTIONS_CHARS: usize = 20_000;
/// Largest daily token budget (`null`: unlimited).
pub const MAX_DAILY_TOKEN_BUDGET: i64 = 1_000_000_000_000;

/// The `POST /api/agents` body as sent (a `null` field is an absent one). No `visibility`: an
/// agent made through the API is its owner's, private.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentBody {
    name: Text,
    description: Option<Text>,
    instructions: Option<Text>,
    model: Option<Text>,
    daily_token_budget: Option<WholeNumber>,
}

/// The `PATCH /api/agents/{id}` body: an absent field is unchanged, `null` clears it (the
/// description and instructions to empty, the model to the deployment's, the budget to none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentPatchBody {
    #[serde(default, deserialize_with = "given")]
    name: Option<Option<Text>>,
    #[serde(default, deserialize_with = "given")]
    description: Option<Option<Text>>,
    #[serde(default, deserialize_with = "given")]
    instructions: Option<Option<Text>>,
    #[serde(default, deserialize_with = "given")]
    model: Option<Option<Text>>,
    #[serde(default, deserialize_with = "given")]
    daily_token_budget: Option<Option<WholeNumber>>,
}

/// A field that is present: `Some(None)` when it is `null`.
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A validated new agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub name: String,
    pub description: String,
    pub instructions: String,
    pub model: Option<String>,
    pub daily_token_budget: Option<i64>,
}

/// A validated change: `None` leaves a field as it is; `Some` sets it (`Some(None)` clears a
/// nullable one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub instructions: Option<String>,
    pub model: Option<Option<String>>,
    pub daily_token_budget: Option<Option<i64>>,
}

/// The one length check of these fields: a 422 naming the field.
fn bounded(text: Text, field: &str, max: usize) -> Result<String, ApiError> {
    let chars = text.as_str().chars().count();
    if chars > max {
        return Err(ApiError::Unprocessable(format!(
            "{field} must be at most {max} characters (it has {chars})"
        )));
    }
    Ok(text.into_inner())
}

fn budget(n: WholeNumber) -> Result<i64, ApiError> {
    n.within("dailyTokenBudget", 0, MAX_DAILY_TOKEN_BUDGET)
}

/// Reads and validates a `POST /api/agents` body already capped in size.
pub fn parse_new(body: &[u8]) -> Result<NewAgent, ApiError> {
    let body: AgentBody = parse_json(body)?;
    Ok(NewAgent {
        name: bounded(body.name, "name", MAX_NAME_CHARS)?,
        description: body
            .description
            .map(|t| bounded(t, "description", MAX_DESCRIPTION_CHARS))
            .transpose()?
            .unwrap_or_default(),
        instructions: body
            .instructions
            .map(|t| bounded(t, "instructions", MAX_INSTRUCTIONS_CHARS))
            .transpose()?
            .unwrap_or_default(),
        model: body.model.map(|t| bounded(t, "model", MAX_MODEL_CHARS)).transpose()?,
        daily_token_budget: body.daily_token_budget.map(budget).transpose()?,
    })
}

/// Reads and validates a `PATCH /api/agents/{id}` body already capped in size: at least one
/// field, and `name` never `null`.
pub fn parse_patch(body: &[u8]) -> Result<AgentPatch, ApiError> {
    let body: AgentPatchBody = parse_json(body)?;
    let name = match body.name {
        None => None,
        Some(None) => {
            return Err(ApiError::Unprocessable(
                "name cannot be cleared: give a name or leave it out".into(),
            ))
        }
        Some(Some(t)) => Some(bounded(t, "name", MAX_NAME_CHARS)?),
    };
    // A cleared description or instructions is empty (the table's columns are not nullable).
    let text = |given: Option<Option<Text>>, field: &str, max: usize| -> Result<Option<String>, ApiError> {
        given
            .map(|t| {
                t.map(|t| bounded(t, field, max))
                    .transpose()
                    .map(Option::unwrap_or_default)
            })
            .transpose()
    };
    let patch = AgentPatch {
        name,
        description: text(body.description, "description", MAX_DESCRIPTION_CHARS)?,
        instructions: text(body.instructions, "instructions", MAX_INSTRUCTIONS_CHARS)?,
        model: body
            .model
            .map(|t| t.map(|t| bounded(t, "model", MAX_MODEL_CHARS)).transpose())
            .transpose()?,
        daily_token_budget: body.daily_token_budget.map(|n| n.map(budget).transpose()).transpose()?,
    };
    if patch == AgentPatch::default() {
        return Err(ApiError::Unprocessable(
            "the body changes nothing: give at least one of name, description, instructions, model, dailyTokenBudget"
                .into(),
        ));
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(result: Result<impl std::fmt::Debug, ApiError>) -> (u16, String) {
        let e = result.unwrap_err();
        (e.parts().0.as_u16(), e.to_string())
    }

    #[test]
    fn a_new_agent_takes_its_defaults_and_is_trimmed() {
        let agent = parse_new(json!({"name": "  Helper ", "model": null}).to_string().as_bytes()).unwrap();
        assert_eq!(
            agent,
            NewAgent {
                name: "Helper".into(),
                description: String::new(),
                instructions: String::new(),
                model: None,
                daily_token_budget: None,
            }
        );
    }

    #[test]
    fn a_patch_tells_absent_from_null_and_refuses_an_empty_one() {
        let patch = parse_patch(
            json!({"description": null, "model": null, "dailyTokenBudget": 5, "instructions": "be brief"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            patch,
            AgentPatch {
                name: None,
                description: Some(String::new()),
                instructions: Some("be brief".into()),
                model: Some(None),
                daily_token_budget: Some(Some(5)),
            }
        );
        assert_eq!(refusal(parse_patch(b"{}")).0, 422);
        let (status, message) = refusal(parse_patch(br#"{"name": null}"#));
        assert_eq!(status, 422);
        assert!(message.starts_with("name cannot be cleared"), "{message}");
    }

    #[test]
    fn each_refusal_names_its_field() {
        let cases = [
            (
                json!({"name": "x", "visibility": "public"}),
                "unknown field `visibility`",
            ),
            (json!({"name": 5}), "name must be a string"),
            (json!({"name": "  "}), "name must not be empty"),
            (json!({"name": "x".repeat(201)}), "name must be at most 200 characters"),
            (
                json!({"name": "x", "description": "d".repeat(501)}),
                "description must be at most 500",
            ),
            (
                json!({"name": "x", "dailyTokenBudget": -1}),
                "dailyTokenBudget must be a whole number from 0",
            ),
            (
                json!({"name": "x", "dailyTokenBudget": "9"}),
                "dailyTokenBudget must be a number",
            ),
            (json!({"description": "x"}), "name is required"),
        ];
        for (body, says) in cases {
            let (status, message) = refusal(parse_new(body.to_string().as_bytes()));
            assert_eq!(status, 422, "{body}: {message}");
            assert!(message.starts_with(says), "{body}: {message}");
        }
        let (status, message) = refusal(parse_patch(br#"{"model": 3}"#));
        assert_eq!((status, message.as_str()), (422, "model must be a string"));
    }
}
