//! The scheduler function's handler (see issue 3; not built yet).

use lambda_runtime::{Error, LambdaEvent};

use crate::db::Db;

pub async fn handle(_db: &Db, _event: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value, Error> {
    Err("the scheduler is not available yet".into())
}
