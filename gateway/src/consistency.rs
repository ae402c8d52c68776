//! Read-your-writes: a mutation's `consistencyToken` is `<module>:<position>`
//! (where its change landed in that module's event log). A query sent with
//! header `consistency-token` runs only once every read model that consumes
//! that module's events has applied that position (bounded wait): search,
//! notifications, and the catalog caches of baskets and depot (so an
//! `addItem` sent with `addProduct`'s token knows the product).

use std::time::Duration;

use mallbots_contracts::ErrorCode;
use mallbots_platform::changes;
use tokio::time::Instant;

use crate::app::AppState;
use crate::graphql::ApiError;

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
/// Which module keeps read models from which module's events. Search reads
/// every module; notifications, customers and orders; baskets and depot
/// cache the catalog.
const READERS: [(&str, &[&str]); 4] = [
    ("search", &SOURCES),
    ("notifications", &["customers", "ordering"]),
    ("baskets", &["stores"]),
    ("depot", &["stores"]),
];

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
    for (reader, sources) in READERS {
        if !sources.contains(&token.module.as_str()) {
            continue;
        }
        let Some((_, db)) = app.databases.iter().find(|(name, _)| *name == reader) else {
            continue;
        };
        let at = changes::applied(db, &token.module)
            .await
            .map_err(ApiError::from)?;
        if at < token.position {
            return Ok(false);
        }
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
