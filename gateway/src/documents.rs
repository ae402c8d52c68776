//! Parsed GraphQL documents, kept by the SHA-256 of their text.
//!
//! Clients send the same few documents over and over, and parsing one costs
//! more CPU than the primary-key read it asks for. Apollo's automatic
//! persisted queries name documents by the same hash, so one cache serves
//! both: a document sent as text can afterwards be named by its hash alone.
//!
//! A kept document is spared only the parsing and what the gateway learns
//! from a document alone ([`Checked`]). async-graphql still validates it
//! against each request's variables, and every check that depends on who
//! asks (introspection for operators, rate limits) still runs.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::parser::Positioned;
use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql_value::{ConstValue, Name, Value};
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::config::Settings;

/// A document's SHA-256.
pub type Hash = [u8; 32];

pub fn hash(query: &str) -> Hash {
    Sha256::digest(query.as_bytes()).into()
}

/// `hex` (64 hex digits, any case) as a hash.
pub fn from_hex(hex: &str) -> Option<Hash> {
    // Digits only: `from_str_radix` would also take a sign.
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(hash)
}

/// A parsed document and what the gateway learns from it alone.
pub struct Checked {
    pub document: ExecutableDocument,
    /// About how much memory the parsed document takes.
    pub bytes: usize,
    /// Over one of the size limits: the refusal and the limit.
    pub oversized: Option<(String, usize)>,
    pub mutations: usize,
    pub introspects: bool,
    /// The name of its one operation, when it has one and it is named.
    pub operation_name: Option<String>,
}

impl Checked {
    /// Parses `query`; `None` when it does not parse (execution then says
    /// why, as async-graphql words it).
    pub fn parse(query: &str, settings: &Settings) -> Option<Checked> {
        crate::limits::off_the_workers(query.len(), || {
            let document = async_graphql::parser::parse_query(query).ok()?;
            Some(Checked {
                bytes: query.len() + NODE_BYTES * nodes(&document),
                oversized: crate::limits::oversized(&document, settings),
                mutations: crate::limits::mutations(&document),
                introspects: crate::limits::introspects(&document),
                operation_name: only_operation_name(&document),
                document,
            })
        })
    }
}

/// What one node of a parsed document (a selection, an argument, a
/// directive, a variable's definition) takes in memory, about: measured at
/// 350 bytes a field in a document of 2,600 `id` fields.
const NODE_BYTES: usize = 400;

/// The nodes of `document`, each fragment's once, each value's too (a
/// list of a thousand numbers takes as much as a thousand fields).
fn nodes(document: &ExecutableDocument) -> usize {
    fn value(v: &Value) -> usize {
        1 + match v {
            Value::List(items) => items.iter().map(value).sum(),
            Value::Object(fields) => fields.values().map(value).sum(),
            _ => 0,
        }
    }
    fn const_value(v: &ConstValue) -> usize {
        1 + match v {
            ConstValue::List(items) => items.iter().map(const_value).sum(),
            ConstValue::Object(fields) => fields.values().map(const_value).sum(),
            _ => 0,
        }
    }
    fn arguments(arguments: &[(Positioned<Name>, Positioned<Value>)]) -> usize {
        arguments.iter().map(|(_, v)| 1 + value(&v.node)).sum()
    }
    fn directives(directives: &[Positioned<Directive>]) -> usize {
        directives
            .iter()
            .map(|d| 1 + arguments(&d.node.arguments))
            .sum()
    }
    fn set(selections: &Positioned<SelectionSet>) -> usize {
        selections
            .node
            .items
            .iter()
            .map(|item| {
                1 + match &item.node {
                    Selection::Field(f) => {
                        let f = &f.node;
                        arguments(&f.arguments) + directives(&f.directives) + set(&f.selection_set)
                    }
                    Selection::InlineFragment(f) => {
                        directives(&f.node.directives) + set(&f.node.selection_set)
                    }
                    Selection::FragmentSpread(s) => directives(&s.node.directives),
                }
            })
            .sum()
    }
    let operations: usize = document
        .operations
        .iter()
        .map(|(_, op)| {
            let op = &op.node;
            let variables: usize = op
                .variable_definitions
                .iter()
                .map(|v| {
                    let v = &v.node;
                    let default = v.default_value.as_ref().map_or(0, |d| const_value(&d.node));
                    1 + directives(&v.directives) + default
                })
                .sum();
            1 + variables + directives(&op.directives) + set(&op.selection_set)
        })
        .sum();
    let fragments: usize = document
        .fragments
        .values()
        .map(|f| 1 + directives(&f.node.directives) + set(&f.node.selection_set))
        .sum();
    operations + fragments
}

fn only_operation_name(document: &ExecutableDocument) -> Option<String> {
    match &document.operations {
        DocumentOperations::Multiple(operations) if operations.len() == 1 => {
            operations.keys().next().map(|name| name.to_string())
        }
        _ => None,
    }
}

/// The documents kept, the least recently used going first.
pub struct Documents {
    kept: Mutex<Kept>,
    /// The longest document text kept.
    max_text: usize,
    /// The most memory the kept documents may take together ([`Checked::bytes`]):
    /// a few hundred bytes of text can parse into a hundred times more.
    max_bytes: usize,
}

struct Kept {
    documents: LruCache<Hash, Arc<Checked>>,
    bytes: usize,
}

impl Documents {
    pub fn new(entries: NonZeroUsize, max_text: usize, max_bytes: usize) -> Self {
        Documents {
            kept: Mutex::new(Kept {
                documents: LruCache::new(entries),
                bytes: 0,
            }),
            max_text,
            max_bytes,
        }
    }

    pub fn get(&self, hash: &Hash) -> Option<Arc<Checked>> {
        self.lock().documents.get(hash).cloned()
    }

    /// Keeps the document of `len` bytes of text that ran (parsed and
    /// validated) without a request error, unless its text or its parsed
    /// form is over the bounds; the least recently used go to make room.
    pub fn keep(&self, hash: Hash, len: usize, checked: Arc<Checked>) {
        if len > self.max_text || checked.bytes > self.max_bytes {
            return;
        }
        let mut kept = self.lock();
        kept.bytes += checked.bytes;
        // The entry it replaced, or the one the count limit pushed out.
        if let Some((_, gone)) = kept.documents.push(hash, checked) {
            kept.bytes -= gone.bytes;
        }
        while kept.bytes > self.max_bytes {
            let Some((_, gone)) = kept.documents.pop_lru() else {
                break;
            };
            kept.bytes -= gone.bytes;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Nothing is left half-done under this lock: a panic elsewhere
        // cannot have broken the cache.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_reads_back_from_its_hex_in_any_case() {
        let hash = hash("{ hello }");
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(from_hex(&hex), Some(hash));
        assert_eq!(from_hex(&hex.to_uppercase()), Some(hash));
        let signed = format!("+f{}", "0".repeat(62));
        for bad in [
            "",
            "abc",
            &"z".repeat(64),
            &"0".repeat(65),
            &"é".repeat(32),
            &signed,
        ] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
    }

    fn checked(query: &str, bytes: usize) -> Arc<Checked> {
        Arc::new(Checked {
            document: async_graphql::parser::parse_query(query).unwrap(),
            bytes,
            oversized: None,
            mutations: 0,
            introspects: false,
            operation_name: None,
        })
    }

    #[test]
    fn the_least_recently_used_goes_and_large_documents_are_not_kept() {
        let documents = Documents::new(NonZeroUsize::new(2).unwrap(), 20, 1000);
        for q in ["{ a }", "{ b }"] {
            documents.keep(hash(q), q.len(), checked(q, 10));
        }
        assert!(documents.get(&hash("{ a }")).is_some());
        documents.keep(hash("{ c }"), 5, checked("{ c }", 10));
        assert!(documents.get(&hash("{ b }")).is_none(), "b was used least");
        assert!(documents.get(&hash("{ a }")).is_some());
        let large = "{ a b c d e f g h i j }";
        documents.keep(hash(large), large.len(), checked(large, 10));
        assert!(documents.get(&hash(large)).is_none());
    }

    #[test]
    fn the_kept_documents_memory_is_bounded() {
        let documents = Documents::new(NonZeroUsize::new(100).unwrap(), 100, 1000);
        for q in ["{ a }", "{ b }", "{ c }"] {
            documents.keep(hash(q), q.len(), checked(q, 400));
        }
        assert!(
            documents.get(&hash("{ a }")).is_none(),
            "1,200 bytes > 1,000"
        );
        assert!(documents.get(&hash("{ b }")).is_some());
        // Kept again under the same hash, its old size is not counted twice.
        documents.keep(hash("{ b }"), 5, checked("{ b }", 400));
        assert!(documents.get(&hash("{ c }")).is_some());
        documents.keep(hash("{ d }"), 5, checked("{ d }", 1001));
        assert!(
            documents.get(&hash("{ d }")).is_none(),
            "over the whole bound"
        );
        assert!(documents.get(&hash("{ b }")).is_some() && documents.get(&hash("{ c }")).is_some());
    }

    #[test]
    fn a_documents_nodes_count_each_fragment_once() {
        let document = async_graphql::parser::parse_query(
            "query Q($n: Int) { a(first: $n) { ...F ...F } } fragment F on T { b c @skip(if: true) }",
        )
        .unwrap();
        // Q, $n, a, first: $n (2), two spreads; F, b, c, @skip(if: true) (3).
        assert_eq!(nodes(&document), 13);
        let values = async_graphql::parser::parse_query(
            "query($l: [Int] = [1, 2]) { a(f: {k: [1, 1, 1], j: null}) }",
        )
        .unwrap();
        // The operation; $l and its default (3); a; f (1) and its object (1),
        // k's list (1) of 3, j's null.
        assert_eq!(nodes(&values), 1 + 4 + 1 + 1 + 1 + 4 + 1);
    }
}
