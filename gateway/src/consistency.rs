//! Read-your-writes: a mutation's `consistencyToken` is `<module>:<position>`
//! (where its change landed in that module's event log). A query sent with
//! header `consistency-token` runs only once every read model that consumes
//! that module's events has applied that position (bounded wait).

use std::time::Duration;

use mallbots_contracts::ErrorCode;
use tokio::time::Instant;

use crate::app::AppState;
use crate::graphql::{ApiError, internal};

/// A parsed token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub module: String,
    pub position: i64,
}

/// Modules whose events read models consume; a token names one of them.
const SOURCES: [&str; 6] = [
    "stores",
    "customers",
    "baskets",
    "payments",
    "ordering",
    "depot",
];
/// The modules the notifications read model consumes.
const NOTIFIED: [&str; 2] = ["customers", "ordering"];

pub fn parse(token: &str) -> Result<Token, ApiError> {
    let bad = || ApiError::bad_input(format!("{token:?} is not a consistency token"));
    let (module, position) = token.trim().split_once(':').ok_or_else(bad)?;
    let position = position
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(bad)?;
    if !SOURCES.contains(&module) {
        return Err(bad());
    }
    Ok(Token {
        module: module.to_owned(),
        position,
    })
}

/// Whether every read model consuming `token.module` has applied it.
async fn applied(app: &AppState, token: &Token) -> Result<bool, ApiError> {
    let search = app
        .queries
        .search
        .applied(&token.module)
        .await
        .map_err(internal)?;
    if search < token.position {
        return Ok(false);
    }
    if NOTIFIED.contains(&token.module.as_str()) {
        let notified = app
            .queries
            .notifications
            .applied(&token.module)
            .await
            .map_err(internal)?;
        return Ok(notified >= token.position);
    }
    Ok(true)
}

/// Waits until `token`'s write is visible in every read model, or fails
/// with `TIMEOUT` after the configured wait.
pub async fn wait(app: &AppState, token: &str) -> Result<(), ApiError> {
    let token = parse(token)?;
    if token.position == 0 {
        // The mutation changed nothing: there is nothing to wait for.
        return Ok(());
    }
    let limit = Duration::from_millis(app.settings.consistency_timeout_ms);
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if applied(app, &token).await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "the read models did not reach {}:{} within {} ms",
                    token.module,
                    token.position,
                    limit.as_millis()
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_a_module_and_a_position() {
        assert_eq!(
            parse("ordering:42").unwrap(),
            Token {
                module: "ordering".into(),
                position: 42
            }
        );
        for bad in [
            "",
            "ordering",
            "ordering:-1",
            "ordering:x",
            "nowhere:3",
            "search:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
