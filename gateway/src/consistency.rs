//! Read-your-writes: a mutation's `consistencyToken` is `<module>:<position>`
//! (where its change landed in that module's event log). A query sent with
//! header `consistency-token` runs only once every read model that follows
//! that module's events has applied that position (bounded wait). Which
//! read models those are is read from the modules' own queues (a queue
//! bound to `<module>.#` follows all of that module's events and keeps a
//! checkpoint of it), not kept here by hand: today search, notifications,
//! and the catalog caches of baskets and depot (so an `addItem` sent with
//! `addProduct`'s token knows the product).

use std::time::Duration;

use mallbots_contracts::ErrorCode;
use mallbots_platform::{QueueSpec, changes};
use sea_orm::DatabaseConnection;
use tokio::time::Instant;

use crate::graphql::errors::{ApiError, internal};

/// Each module's database, by module name.
pub type Databases = [(&'static str, DatabaseConnection)];

/// `module`'s database among `databases`.
pub fn database<'a>(databases: &'a Databases, module: &str) -> Option<&'a DatabaseConnection> {
    databases
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, db)| db)
}

/// A parsed token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub module: String,
    pub position: i64,
}

/// Which module's read models follow which modules' events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readers(Vec<(&'static str, Vec<String>)>);

impl Readers {
    /// From each module's queue (module name, queue).
    pub fn of(queues: impl IntoIterator<Item = (&'static str, QueueSpec)>) -> Self {
        Readers(
            queues
                .into_iter()
                .map(|(module, queue)| {
                    (
                        module,
                        queue.follows().map(str::to_owned).collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, sources)| !sources.is_empty())
                .collect(),
        )
    }

    /// The read models following `source`'s events.
    pub fn of_source<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'static str> + 'a {
        self.0
            .iter()
            .filter(move |(_, sources)| sources.iter().any(|s| s == source))
            .map(|(reader, _)| *reader)
    }

    /// Each (read model, module it follows).
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.0
            .iter()
            .flat_map(|(reader, sources)| sources.iter().map(move |s| (*reader, s.as_str())))
    }

    /// The read models that have no database in `databases`.
    pub fn missing<'a>(
        &'a self,
        databases: &'a Databases,
    ) -> impl Iterator<Item = &'static str> + 'a {
        self.0
            .iter()
            .map(|(reader, _)| *reader)
            .filter(|reader| database(databases, reader).is_none())
    }

    /// Whether some read model follows `source` (a token may name it).
    fn followed(&self, source: &str) -> bool {
        self.of_source(source).next().is_some()
    }
}

/// A position written as positions are handed out: decimal digits, no
/// sign, no space, no leading zero.
pub fn canonical_position(text: &str) -> Option<i64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    (digits && !leading_zero)
        .then(|| text.parse::<i64>().ok())
        .flatten()
}

pub fn parse(token: &str, readers: &Readers) -> Result<Token, ApiError> {
    let bad = || ApiError::bad_input(format!("{token:?} is not a consistency token"));
    let (module, position) = token.split_once(':').ok_or_else(bad)?;
    let position = canonical_position(position).ok_or_else(bad)?;
    if !readers.followed(module) {
        return Err(bad());
    }
    Ok(Token {
        module: module.to_owned(),
        position,
    })
}

/// Whether every read model following `token.module` has applied it. A
/// reader whose database this gateway does not have is an error, never
/// counted as caught up.
async fn applied(
    readers: &Readers,
    databases: &Databases,
    token: &Token,
) -> Result<bool, ApiError> {
    for reader in readers.of_source(&token.module) {
        let db = database(databases, reader)
            .ok_or_else(|| internal(format!("the {reader} database is not open here")))?;
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
/// with `TIMEOUT` after `limit`.
pub async fn wait(
    readers: &Readers,
    databases: &Databases,
    limit: Duration,
    token: &str,
) -> Result<(), ApiError> {
    let token = parse(token, readers)?;
    if token.position == 0 {
        // The mutation changed nothing: there is nothing to wait for.
        return Ok(());
    }
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if applied(readers, databases, &token).await? {
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
    use mallbots_platform::Exchange;

    fn readers() -> Readers {
        Readers::of([
            (
                "search",
                QueueSpec::durable("s")
                    .bind(Exchange::Events, "stores.#")
                    .bind(Exchange::Events, "ordering.#"),
            ),
            (
                "ordering",
                // One event type is not the whole stream: no checkpoint.
                QueueSpec::durable("o")
                    .bind(Exchange::Commands, "ordering.#")
                    .bind(Exchange::Events, "baskets.Basket.BasketCheckedOut"),
            ),
            (
                "depot",
                QueueSpec::durable("d").bind(Exchange::Events, "stores.#"),
            ),
        ])
    }

    #[test]
    fn readers_are_the_queues_following_a_whole_stream() {
        let readers = readers();
        assert_eq!(
            readers.of_source("stores").collect::<Vec<_>>(),
            ["search", "depot"]
        );
        assert_eq!(
            readers.of_source("ordering").collect::<Vec<_>>(),
            ["search"]
        );
        assert_eq!(readers.of_source("baskets").count(), 0);
    }

    #[test]
    fn tokens_name_a_followed_module_and_a_position() {
        let readers = readers();
        assert_eq!(
            parse("ordering:42", &readers).unwrap(),
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
            "baskets:1",
            "ordering:+1",
            "ordering:01",
            " ordering:1",
            "ordering:1 ",
            "ordering:",
        ] {
            assert!(parse(bad, &readers).is_err(), "{bad}");
        }
    }
}
