use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a module answers to a command, sent to the command's `reply_to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandReply {
    Accepted {
        /// What the command was about: the ids it names.
        #[serde(default)]
        result: Affected,
        /// Where the change landed in the module's event log: a read model that
        /// has applied this position shows the change (read-your-writes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<i64>,
    },
    Rejected(ReplyError),
}

/// The entity an accepted command acted on, with the ids a caller reads
/// back (a product's store, a shopping list's order): one variant per kind
/// of aggregate, so a renamed field fails to compile, not silently.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Affected {
    /// Nothing a caller reads back (events applied by a read side, ...).
    #[default]
    Nothing,
    Store {
        store_id: Uuid,
    },
    Product {
        product_id: Uuid,
        store_id: Uuid,
    },
    Customer {
        customer_id: Uuid,
    },
    Basket {
        basket_id: Uuid,
        order_id: Option<Uuid>,
    },
    Order {
        order_id: Uuid,
    },
    Payment {
        payment_id: Uuid,
    },
    Invoice {
        invoice_id: Uuid,
        order_id: Option<Uuid>,
    },
    ShoppingList {
        shopping_list_id: Uuid,
        order_id: Uuid,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReplyError {
    pub code: ErrorCode,
    /// In the domain's words; never internal details.
    pub message: String,
}

/// The error codes of the public API (README, "Endpoints").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadUserInput,
    NotFound,
    Conflict,
    Unauthenticated,
    Forbidden,
    Timeout,
    RateLimited,
    /// A dependency (the broker, a database) cannot be reached right now:
    /// nothing was done; the request can be retried.
    Unavailable,
    /// A subscription cursor older than the change log keeps.
    CursorExpired,
    /// A query over a limit (depth, complexity, aliases, directives),
    /// refused before it runs.
    QueryTooComplex,
    /// The request is not a GraphQL document.
    GraphqlParseFailed,
    /// The document does not fit the schema.
    GraphqlValidationFailed,
    /// A persisted query's hash the server does not know (yet): send the
    /// query with it (Apollo's automatic persisted queries).
    PersistedQueryNotFound,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::CursorExpired => "CURSOR_EXPIRED",
            ErrorCode::QueryTooComplex => "QUERY_TOO_COMPLEX",
            ErrorCode::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            ErrorCode::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            ErrorCode::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

crate::codec::message!(CommandReply, crate::codec::REPLY_TYPE);
