//! The limits a query is held to before it runs, each refused with
//! QUERY_TOO_COMPLEX and the limit in `extensions`. Depth, complexity and
//! directives are async-graphql's own checks (their errors get the code
//! here); aliases are counted here, since async-graphql has no such limit.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Response, Value};
use mallbots_contracts::ErrorCode;

use crate::Settings;

/// The aliased fields in `query`, fragments included; `None` when it does not
/// parse (execution then says why).
pub fn aliases(query: &str) -> Option<usize> {
    let document: ExecutableDocument = async_graphql::parser::parse_query(query).ok()?;
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
    Some(operations + fragments)
}

/// Gives async-graphql's limit errors their code and limit.
pub fn code_errors(response: &mut Response, settings: &Settings) {
    for error in &mut response.errors {
        let limit = if error
            .message
            .starts_with("The recursion depth of the query")
        {
            crate::graphql::RECURSION_LIMIT
        } else if error.message.starts_with("Query is nested too deep") {
            settings.max_query_depth
        } else if error.message.starts_with("Query is too complex") {
            settings.max_query_complexity
        } else if error
            .message
            .starts_with("The number of directives on the field")
        {
            settings.max_directives
        } else {
            continue;
        };
        let extensions = error
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default);
        extensions.set("code", Value::from(ErrorCode::QueryTooComplex.as_str()));
        extensions.set("limit", Value::from(limit));
    }
}
