//! The limits a query is held to before it runs, each refused with
//! QUERY_TOO_COMPLEX and the limit in `extensions`. Depth, complexity and
//! directives are async-graphql's own checks (their errors get the code
//! here); aliases are counted here, since async-graphql has no such limit.
//! And every error of a request gets a code: GRAPHQL_PARSE_FAILED,
//! GRAPHQL_VALIDATION_FAILED, or BAD_USER_INPUT for a value of the wrong
//! shape.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Response, Value};
use mallbots_contracts::ErrorCode;

use crate::Settings;

/// The aliased fields in `document`, fragments included.
pub fn aliases(document: &ExecutableDocument) -> usize {
    fn count(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + count(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => count(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let operations: usize = document
        .operations
        .iter()
        .map(|(_, op)| count(&op.node.selection_set.node))
        .sum();
    let fragments: usize = document
        .fragments
        .values()
        .map(|f| count(&f.node.selection_set.node))
        .sum();
    operations + fragments
}

fn set(error: &mut async_graphql::ServerError, code: ErrorCode) -> &mut ErrorExtensionValues {
    let extensions = error
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    extensions.set("code", Value::from(code.as_str()));
    extensions
}

/// Gives every error of `response` a code: async-graphql's limit errors
/// QUERY_TOO_COMPLEX and their limit; a document that did not `parse`, or
/// did not validate, the GraphQL codes; a value of the wrong shape
/// BAD_USER_INPUT.
pub fn code_errors(response: &mut Response, settings: &Settings, parsed: bool) {
    for error in &mut response.errors {
        if error
            .extensions
            .as_ref()
            .is_some_and(|x| x.get("code").is_some())
        {
            continue;
        }
        let limit = if error
            .message
            .starts_with("The recursion depth of the query")
        {
            Some(crate::graphql::RECURSION_LIMIT)
        } else if error.message.starts_with("Query is nested too deep") {
            Some(settings.max_query_depth)
        } else if error.message.starts_with("Query is too complex") {
            Some(settings.max_query_complexity)
        } else if error
            .message
            .starts_with("The number of directives on the field")
        {
            Some(settings.max_directives)
        } else {
            None
        };
        let shape = error.message.starts_with("Invalid value for argument")
            || error.message.starts_with("Failed to parse")
            || error.message.starts_with("Invalid value for variable")
            || error.message.starts_with("Expected input type")
            || error.message.contains("(occurred while parsing");
        if let Some(limit) = limit {
            set(error, ErrorCode::QueryTooComplex).set("limit", Value::from(limit));
        } else if !parsed {
            set(error, ErrorCode::GraphqlParseFailed);
        } else if shape {
            set(error, ErrorCode::BadUserInput);
        } else if error.path.is_empty() {
            set(error, ErrorCode::GraphqlValidationFailed);
        } else {
            // Our resolvers' errors all have codes: one with a path but none
            // is async-graphql's own, about a field's arguments.
            set(error, ErrorCode::BadUserInput);
        }
    }
}

/// Whether `document` asks for the schema itself (`__schema`, `__type`).
pub fn introspects(document: &ExecutableDocument) -> bool {
    fn asks(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                name == "__schema" || name == "__type" || asks(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => asks(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => false,
        })
    }
    document
        .operations
        .iter()
        .any(|(_, op)| asks(&op.node.selection_set.node))
        || document
            .fragments
            .values()
            .any(|f| asks(&f.node.selection_set.node))
}
