//! Relay connections over keyset pages: the cursor is the last item's id.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, OutputType, Result};
use mallbots_platform::PlatformError;
use mallbots_platform::views::Page;
use uuid::Uuid;

use super::errors::ApiError;

pub const DEFAULT_PAGE: i32 = 20;

/// A page's cost in the query's complexity: its size (`first`, or the
/// default) times what each item costs, so a large page of large items is
/// refused before it runs.
pub fn cost(first: Option<i32>, child_complexity: usize) -> usize {
    let n = usize::try_from(first.unwrap_or(DEFAULT_PAGE).max(1)).unwrap_or(usize::MAX);
    n.saturating_mul(child_complexity.max(1))
}

/// The page size asked for, within `MAX_PAGE_SIZE`.
pub fn first(ctx: &async_graphql::Context<'_>, first: Option<i32>) -> Result<u64, ApiError> {
    let max = super::dispatch::state(ctx)?.settings.max_page_size;
    let n = first.unwrap_or(DEFAULT_PAGE.min(max));
    if !(0..=max).contains(&n) {
        return Err(ApiError::bad_input(format!(
            "first must be between 0 and {max}"
        )));
    }
    Ok(n as u64)
}

pub fn after(after: Option<String>) -> Result<Option<Uuid>, ApiError> {
    after
        .map(|c| {
            Uuid::parse_str(&c).map_err(|_| ApiError::bad_input("after is not a valid cursor"))
        })
        .transpose()
}

pub fn connection<T: OutputType>(
    items: Vec<(Uuid, T)>,
    has_previous: bool,
    has_next: bool,
) -> Connection<String, T, EmptyFields, EmptyFields> {
    let mut connection = Connection::new(has_previous, has_next);
    connection.edges.extend(
        items
            .into_iter()
            .map(|(id, node)| Edge::new(id.to_string(), node)),
    );
    connection
}

/// A connection of keyset pages.
pub type Paged<T> = Connection<String, T, EmptyFields, EmptyFields>;

/// The connection of one page: `first` and `after` checked, the page read by
/// `fetch(size, after)`, each item made a node by `node`.
pub async fn page<T, N, Fut>(
    ctx: &Context<'_>,
    size: Option<i32>,
    cursor: Option<String>,
    fetch: impl FnOnce(u64, Option<Uuid>) -> Fut,
    node: impl Fn(T) -> N,
) -> Result<Paged<N>, ApiError>
where
    N: OutputType,
    Fut: Future<Output = Result<Page<T>, PlatformError>>,
{
    let (n, after) = (first(ctx, size)?, after(cursor)?);
    let page = fetch(n, after).await.map_err(ApiError::from)?;
    let items = page
        .items
        .into_iter()
        .map(|(id, item)| (id, node(item)))
        .collect();
    Ok(connection(items, after.is_some(), page.has_next))
}
