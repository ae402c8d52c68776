//! The limits a query is held to before it runs, each refused with
//! QUERY_TOO_COMPLEX and the limit in `extensions`. Depth, complexity and
//! directives are async-graphql's own checks (their errors get the code
//! here); aliases and the fields a document expands to are counted here
//! ([`oversized`]), since async-graphql has no such limits.
//! And every error of a request gets a code: GRAPHQL_PARSE_FAILED,
//! GRAPHQL_VALIDATION_FAILED, or BAD_USER_INPUT for a value of the wrong
//! shape.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Response, ServerError, Value};
use mallbots_contracts::ErrorCode;

use crate::config::Settings;

/// What a document amounts to once every fragment spread is expanded
/// where it is used: its fields and its aliased fields. Each fragment is
/// counted once and its size reused (saturating), so a document whose
/// fragments double at every level is measured in a blink instead of being
/// walked 2^n times; a fragment that spreads itself counts nothing more
/// (validation refuses the cycle).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Size {
    pub fields: usize,
    pub aliases: usize,
}

impl Size {
    fn add(self, other: Size) -> Size {
        Size {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
        }
    }
}

pub fn size(document: &ExecutableDocument) -> Size {
    struct Walk<'a> {
        document: &'a ExecutableDocument,
        sizes: HashMap<&'a str, Size>,
        open: HashSet<&'a str>,
    }
    impl<'a> Walk<'a> {
        fn set(&mut self, set: &'a SelectionSet) -> Size {
            set.items.iter().fold(Size::default(), |size, item| {
                let more = match &item.node {
                    Selection::Field(field) => Size {
                        fields: 1,
                        aliases: usize::from(field.node.alias.is_some()),
                    }
                    .add(self.set(&field.node.selection_set.node)),
                    Selection::InlineFragment(f) => self.set(&f.node.selection_set.node),
                    Selection::FragmentSpread(spread) => {
                        self.fragment(spread.node.fragment_name.node.as_str())
                    }
                };
                size.add(more)
            })
        }

        fn fragment(&mut self, name: &'a str) -> Size {
            if let Some(size) = self.sizes.get(name) {
                return *size;
            }
            let Some(fragment) = self.document.fragments.get(name) else {
                return Size::default();
            };
            if !self.open.insert(name) {
                return Size::default();
            }
            let size = self.set(&fragment.node.selection_set.node);
            self.open.remove(name);
            self.sizes.insert(name, size);
            size
        }
    }
    let mut walk = Walk {
        document,
        sizes: HashMap::new(),
        open: HashSet::new(),
    };
    document
        .operations
        .iter()
        .fold(Size::default(), |size, (_, op)| {
            size.add(walk.set(&op.node.selection_set.node))
        })
}

/// A document over the alias limit, or one that expands to more fields
/// than a query may cost at all: why, and the limit. Checked on the parsed
/// document before async-graphql sees it (over HTTP and on websockets):
/// its own depth and directive checks walk every fragment spread in full,
/// which a kilobyte of doubling fragments turns into hours.
pub fn oversized(document: &ExecutableDocument, settings: &Settings) -> Option<(String, usize)> {
    let size = size(document);
    let (aliases, fields) = (settings.max_aliases, settings.max_query_complexity);
    if size.aliases > aliases {
        Some((
            format!("a request may alias at most {aliases} fields"),
            aliases,
        ))
    } else if size.fields > fields {
        Some((
            format!("the query expands to more than {fields} fields"),
            fields,
        ))
    } else {
        None
    }
}

/// A subscription operation of `document` that selects more than one
/// top-level field (fragments expanded, each occurrence counted): GraphQL
/// allows one ("Single root field"), and async-graphql runs each
/// occurrence as a live stream of its own, even two of the same field
/// under one name, which the per-connection subscription limit does not
/// count. How many it selects (counted up to [`ROOT_FIELDS_COUNTED`]).
pub fn subscription_fields_over_one(document: &ExecutableDocument) -> Option<usize> {
    use async_graphql::parser::types::OperationType;
    fn count<'a>(
        document: &'a ExecutableDocument,
        set: &'a SelectionSet,
        open: &mut HashSet<&'a str>,
        found: &mut usize,
    ) {
        for item in &set.items {
            if *found >= ROOT_FIELDS_COUNTED {
                return;
            }
            match &item.node {
                Selection::Field(_) => *found += 1,
                Selection::InlineFragment(f) => {
                    count(document, &f.node.selection_set.node, open, found)
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    // Not into itself: a cycle is validation's to refuse.
                    if let Some(fragment) = document.fragments.get(name)
                        && open.insert(name)
                    {
                        count(document, &fragment.node.selection_set.node, open, found);
                        open.remove(name);
                    }
                }
            }
        }
    }
    document
        .operations
        .iter()
        .filter(|(_, op)| op.node.ty == OperationType::Subscription)
        .map(|(_, op)| {
            let mut found = 0;
            count(
                document,
                &op.node.selection_set.node,
                &mut HashSet::new(),
                &mut found,
            );
            found
        })
        .find(|n| *n > 1)
}

/// Whether a subscription selects its top-level field through a fragment:
/// the subscription type is merged from every module's, and async-graphql
/// runs no field selected so (the subscription would complete at once,
/// saying nothing).
pub fn subscription_root_fragment(document: &ExecutableDocument) -> bool {
    use async_graphql::parser::types::OperationType;
    document
        .operations
        .iter()
        .filter(|(_, op)| op.node.ty == OperationType::Subscription)
        .flat_map(|(_, op)| &op.node.selection_set.node.items)
        .any(|item| !matches!(item.node, Selection::Field(_)))
}

/// Where counting a subscription's top-level fields stops: far past one,
/// and cheap however its fragments double.
pub(crate) const ROOT_FIELDS_COUNTED: usize = 64;

/// The GraphQL error for a document over a limit.
/// Documents up to this size are parsed on the request's own task.
pub(crate) const INLINE_PARSE_BYTES: usize = 16 * 1024;

/// Runs `work` on a document of `len` bytes: a large one (slow to parse and
/// measure) where it does not hold up the runtime's other tasks.
pub(crate) fn off_the_workers<T>(len: usize, work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if len > INLINE_PARSE_BYTES && multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

pub(crate) fn too_complex(message: &str, limit: usize) -> serde_json::Value {
    serde_json::json!({
        "message": message,
        "extensions": { "code": ErrorCode::QueryTooComplex.as_str(), "limit": limit },
    })
}

fn set(error: &mut ServerError, code: ErrorCode) -> &mut ErrorExtensionValues {
    let extensions = error
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    extensions.set("code", Value::from(code.as_str()));
    extensions
}

/// The longest error message passed on.
const MAX_MESSAGE: usize = 300;

/// `message`, cut to [`MAX_MESSAGE`] bytes (on a character boundary).
pub fn cut(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        message.truncate(message.floor_char_boundary(MAX_MESSAGE));
        message.push_str(" ...");
    }
    message
}

/// Gives every error of `response` a code: async-graphql's limit errors
/// QUERY_TOO_COMPLEX and their limit; a document that did not `parse`, or
/// did not validate, the GraphQL codes; a value of the wrong shape
/// BAD_USER_INPUT.
pub fn code_errors(response: &mut Response, settings: &Settings, parsed: bool) {
    for error in &mut response.errors {
        // Messages quote what they refuse (a line, a name): a long one is cut.
        error.message = cut(std::mem::take(&mut error.message));
        if error
            .extensions
            .as_ref()
            .is_some_and(|x| x.get("code").is_some())
        {
            continue;
        }
        // The parser gives up past 64 levels, before the schema's check of
        // 32 would: both are the one nesting limit.
        let limit = if error
            .message
            .starts_with("The recursion depth of the query")
            || error.message.starts_with("recursion limit exceeded")
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

/// The mutations `document` asks for: the root fields of its mutation
/// operations (all of them: which one runs is known later).
pub fn mutations(document: &ExecutableDocument) -> usize {
    use async_graphql::parser::types::OperationType;
    document
        .operations
        .iter()
        .filter(|(_, op)| op.node.ty == OperationType::Mutation)
        .map(|(_, op)| op.node.selection_set.node.items.len())
        .sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_fragments_are_measured_without_being_walked() {
        let levels = 70;
        let mut query = "query { ...F0 } ".to_owned();
        for i in 0..levels {
            let n = i + 1;
            query.push_str(&format!("fragment F{i} on Query {{ ...F{n} ...F{n} }} "));
        }
        query.push_str(&format!("fragment F{levels} on Query {{ __typename }}"));
        let document = async_graphql::parser::parse_query(&query).unwrap();
        assert_eq!(size(&document).fields, usize::MAX, "2^70 saturates");
        let small = async_graphql::parser::parse_query(
            "{ a: stores { edges { node { id } } } ...F } fragment F on Query { b: __typename }",
        )
        .unwrap();
        assert_eq!(
            size(&small),
            Size {
                fields: 5,
                aliases: 2
            }
        );
    }

    #[test]
    fn a_subscription_selects_one_top_level_field() {
        let over = |query: &str| {
            subscription_fields_over_one(&async_graphql::parser::parse_query(query).unwrap())
        };
        assert_eq!(over("subscription { a { x } }"), None);
        // The same field twice under one name is two streams all the same.
        assert_eq!(over("subscription { a { x } a { y } }"), Some(2));
        assert_eq!(over("subscription { a { x } b: a { x } }"), Some(2));
        assert_eq!(over("subscription { a { x } __typename }"), Some(2));
        assert_eq!(
            over(
                "subscription { ...F ... on Subscription { c } } fragment F on Subscription { a b: a }"
            ),
            Some(3)
        );
        // A fragment spreading itself is walked once (validation refuses it);
        // one spread twice counts twice.
        assert_eq!(
            over("subscription { ...F } fragment F on Subscription { a ...F }"),
            None
        );
        assert_eq!(
            over("subscription { ...F ...F } fragment F on Subscription { a }"),
            Some(2)
        );
        // Doubling fragments are counted only so far.
        let mut doubling = "subscription { ...F0 } ".to_owned();
        for i in 0..40 {
            let n = i + 1;
            doubling.push_str(&format!(
                "fragment F{i} on Subscription {{ ...F{n} ...F{n} }} "
            ));
        }
        doubling.push_str("fragment F40 on Subscription { a }");
        assert_eq!(over(&doubling), Some(ROOT_FIELDS_COUNTED));
        // Queries and mutations select as many as they like.
        assert_eq!(over("query Q { a b c } mutation M { d e }"), None);
        assert_eq!(
            over("query Q { a b } subscription S { a b: a c: a }"),
            Some(3)
        );
    }
}
