//! Provider selection: the model `MODEL_PROVIDER` names, built from the environment (a client
//! the binary was built without is a configuration error).

use std::sync::Arc;

#[cfg(feature = "bedrock")]
use super::BEDROCK_MODEL_ID;
use super::{LocalModel, ModelLimits, SharedModel, LOCAL_MODEL_LATENCY_MS, MODEL_PROVIDER};
#[cfg(feature = "openai")]
use super::{OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_MODEL};
use crate::config::{invalid, ConfigError, Env};

/// Why the model could not be set up at init.
#[derive(Debug, thiserror::Error)]
pub enum ModelInitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[cfg(feature = "openai")]
    #[error(transparent)]
    Client(#[from] crate::outbound::ClientError),
}

/// The model chosen by `MODEL_PROVIDER`.
pub async fn from_env(env: &Env) -> Result<SharedModel, ModelInitError> {
    let limits = ModelLimits::from_env(env)?;
    match env.choice(&MODEL_PROVIDER)? {
        "openai" => openai_from_env(env, limits),
        "bedrock" => Ok(bedrock_from_env(env, limits).await?),
        _ => Ok(Arc::new(LocalModel {
            latency: env.duration(&LOCAL_MODEL_LATENCY_MS)?,
        })),
    }
}

#[cfg(feature = "openai")]
fn openai_from_env(env: &Env, limits: ModelLimits) -> Result<SharedModel, ModelInitError> {
    let base = env.required(&OPENAI_BASE_URL)?;
    url::Url::parse(&base).map_err(|e| invalid(OPENAI_BASE_URL.name, format!("not a valid URL ({e})")))?;
    let model = env.required(&OPENAI_MODEL)?;
    Ok(Arc::new(super::openai::OpenAiModel::new(
        &base,
        env.text(&OPENAI_API_KEY),
        &model,
        limits,
    )?))
}

#[cfg(not(feature = "openai"))]
fn openai_from_env(_: &Env, _: ModelLimits) -> Result<SharedModel, ModelInitError> {
    Err(ModelInitError::Config(invalid(
        MODEL_PROVIDER.name,
        "this binary is built without the openai client",
    )))
}

#[cfg(feature = "bedrock")]
async fn bedrock_from_env(env: &Env, limits: ModelLimits) -> Result<SharedModel, ConfigError> {
    let model_id = env.required(&BEDROCK_MODEL_ID)?;
    Ok(Arc::new(
        super::bedrock::BedrockModel::from_env(&model_id, limits).await,
    ))
}

#[cfg(not(feature = "bedrock"))]
async fn bedrock_from_env(_: &Env, _: ModelLimits) -> Result<SharedModel, ConfigError> {
    Err(invalid(
        MODEL_PROVIDER.name,
        "this binary is built without the bedrock client",
    ))
}
