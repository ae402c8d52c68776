//! The lines of baskets and orders.

use async_graphql::{ID, Object};
use mallbots_contracts::common;

use super::money::Money;

/// A line of a basket or an order, as it was when it was added.
pub struct LineItem(pub common::LineItem);

#[Object]
impl LineItem {
    async fn store_id(&self) -> ID {
        ID(self.0.store_id.to_string())
    }
    async fn store_name(&self) -> &str {
        &self.0.store_name
    }
    async fn product_id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }
    async fn product_name(&self) -> &str {
        &self.0.product_name
    }
    /// The unit price when the item was added.
    async fn price(&self) -> Money {
        Money(self.0.price)
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    /// price x quantity.
    async fn total(&self) -> Money {
        Money(self.0.total())
    }
}

pub fn lines(items: &[common::LineItem]) -> Vec<LineItem> {
    items.iter().cloned().map(LineItem).collect()
}
