//! The pure domain: the Basket aggregate. No I/O, no async.

use std::collections::HashMap;

use mallbots_contracts::baskets::BasketStatus;
use mallbots_contracts::common::{self, LineItem};
use mallbots_contracts::stores::{ProductView, StoreView};
use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most of one product a basket line may hold.
pub const MAX_QUANTITY: i32 = 1000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BasketsError {
    #[error("the basket was not found")]
    NotFound,
    #[error("the basket already exists")]
    AlreadyStarted,
    #[error("the basket is {0}; only open baskets change")]
    NotOpen(&'static str),
    #[error("the quantity must be greater than zero")]
    NonPositiveQuantity,
    #[error("a basket holds at most {MAX_QUANTITY} of one product")]
    TooMany,
    #[error("a basket's total cannot exceed {}", common::MAX_MONEY)]
    TotalTooHigh,
    #[error("product not found")]
    ProductNotFound,
    #[error("the store {0} is not taking orders")]
    StoreNotParticipating(String),
    #[error("the product is not in the basket")]
    NotInBasket,
    #[error("the basket holds only {0} of that product")]
    RemovingMoreThanHeld(i32),
    #[error("an empty basket cannot be checked out")]
    Empty,
    #[error("a checkout needs a payment")]
    NoPayment,
    #[error("{0} is no longer sold; remove it from the basket")]
    NoLongerSold(String),
}

/// What the catalog says now of the stores and products a basket holds (this
/// module's cache of it), by id: a product it no longer has is not there.
#[derive(Default)]
pub struct OnSale {
    pub stores: HashMap<Uuid, StoreView>,
    pub products: HashMap<Uuid, ProductView>,
}

/// `Default`: a basket not started yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Basket {
    pub customer_id: Uuid,
    pub items: Vec<LineItem>,
    pub status: Option<BasketStatus>,
    pub payment_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum BasketEvent {
    BasketStarted {
        customer_id: Uuid,
    },
    /// `item.quantity` more of the product, at the item's copied price.
    BasketItemAdded {
        item: LineItem,
    },
    BasketItemRemoved {
        product_id: Uuid,
        quantity: i32,
    },
    BasketCanceled,
    BasketCheckedOut {
        payment_id: Uuid,
        order_id: Uuid,
    },
}

impl DomainEvent for BasketEvent {
    fn event_type(&self) -> &'static str {
        match self {
            BasketEvent::BasketStarted { .. } => "BasketStarted",
            BasketEvent::BasketItemAdded { .. } => "BasketItemAdded",
            BasketEvent::BasketItemRemoved { .. } => "BasketItemRemoved",
            BasketEvent::BasketCanceled => "BasketCanceled",
            BasketEvent::BasketCheckedOut { .. } => "BasketCheckedOut",
        }
    }
}

impl Aggregate for Basket {
    const STREAM_TYPE: &'static str = "Basket";
    type Event = BasketEvent;

    fn apply(&mut self, event: &BasketEvent) {
        match event {
            BasketEvent::BasketStarted { customer_id } => {
                self.customer_id = *customer_id;
                self.status = Some(BasketStatus::Open);
            }
            BasketEvent::BasketItemAdded { item } => {
                match self
                    .items
                    .iter_mut()
                    .find(|i| i.product_id == item.product_id)
                {
                    // The latest copy of names and price wins for the whole line.
                    Some(line) => {
                        let quantity = line.quantity + item.quantity;
                        *line = LineItem {
                            quantity,
                            ..item.clone()
                        };
                    }
                    None => self.items.push(item.clone()),
                }
            }
            BasketEvent::BasketItemRemoved {
                product_id,
                quantity,
            } => {
                if let Some(line) = self.items.iter_mut().find(|i| i.product_id == *product_id) {
                    line.quantity -= quantity;
                }
                self.items.retain(|i| i.quantity > 0);
            }
            BasketEvent::BasketCanceled => self.status = Some(BasketStatus::Canceled),
            BasketEvent::BasketCheckedOut {
                payment_id,
                order_id,
            } => {
                self.status = Some(BasketStatus::CheckedOut);
                self.payment_id = Some(*payment_id);
                self.order_id = Some(*order_id);
            }
        }
    }
}

type Decision = Result<Vec<BasketEvent>, BasketsError>;

fn positive(quantity: i32) -> Result<i32, BasketsError> {
    if quantity <= 0 {
        return Err(BasketsError::NonPositiveQuantity);
    }
    Ok(quantity)
}

impl Basket {
    fn open(&self) -> Result<&Self, BasketsError> {
        match self.status {
            None => Err(BasketsError::NotFound),
            Some(BasketStatus::Open) => Ok(self),
            Some(other) => Err(BasketsError::NotOpen(other.as_str())),
        }
    }

    fn held(&self, product_id: Uuid) -> i32 {
        self.items
            .iter()
            .find(|i| i.product_id == product_id)
            .map_or(0, |i| i.quantity)
    }

    pub fn start(&self, customer_id: Uuid) -> Decision {
        if self.status.is_some() {
            return Err(BasketsError::AlreadyStarted);
        }
        Ok(vec![BasketEvent::BasketStarted { customer_id }])
    }

    /// Adds `n` of a product, as this module's cache knows it (`None`: unknown).
    pub fn add_item(
        &self,
        product: Option<&ProductView>,
        store: Option<&StoreView>,
        n: i32,
    ) -> Decision {
        self.open()?;
        let n = positive(n)?;
        let (Some(product), Some(store)) = (product, store) else {
            return Err(BasketsError::ProductNotFound);
        };
        if !store.participating {
            return Err(BasketsError::StoreNotParticipating(store.name.clone()));
        }
        if n > MAX_QUANTITY - self.held(product.product_id) {
            return Err(BasketsError::TooMany);
        }
        // Checked: whatever the cache says a price is, the total stays
        // within what a payment may be.
        let total = product
            .price
            .checked_mul(Decimal::from(n))
            .and_then(|added| added.checked_add(common::total(&self.items)))
            .filter(|total| *total <= common::MAX_MONEY);
        if total.is_none() {
            return Err(BasketsError::TotalTooHigh);
        }
        Ok(vec![BasketEvent::BasketItemAdded {
            item: LineItem {
                store_id: store.store_id,
                store_name: store.name.clone(),
                product_id: product.product_id,
                product_name: product.name.clone(),
                price: product.price,
                quantity: n,
            },
        }])
    }

    pub fn remove_item(&self, product_id: Uuid, n: i32) -> Decision {
        self.open()?;
        // Past what it holds, whatever the amount: that says more than the
        // most a basket may hold would.
        let n = positive(n)?;
        match self.held(product_id) {
            0 => Err(BasketsError::NotInBasket),
            held if held < n => Err(BasketsError::RemovingMoreThanHeld(held)),
            _ => Ok(vec![BasketEvent::BasketItemRemoved {
                product_id,
                quantity: n,
            }]),
        }
    }

    pub fn cancel(&self) -> Decision {
        self.open()?;
        Ok(vec![BasketEvent::BasketCanceled])
    }

    /// Checks out at the prices the items were added at, if every one is
    /// still sold by a store that takes orders (`on_sale`): the catalog may
    /// have changed since they went into the basket.
    pub fn checkout(&self, payment_id: Uuid, order_id: Uuid, on_sale: &OnSale) -> Decision {
        self.open()?;
        if self.items.is_empty() {
            return Err(BasketsError::Empty);
        }
        if payment_id.is_nil() {
            return Err(BasketsError::NoPayment);
        }
        for item in &self.items {
            if !on_sale.products.contains_key(&item.product_id) {
                return Err(BasketsError::NoLongerSold(item.product_name.clone()));
            }
            match on_sale.stores.get(&item.store_id) {
                Some(store) if store.participating => {}
                Some(store) => return Err(BasketsError::StoreNotParticipating(store.name.clone())),
                None => return Err(BasketsError::StoreNotParticipating(item.store_name.clone())),
            }
        }
        Ok(vec![BasketEvent::BasketCheckedOut {
            payment_id,
            order_id,
        }])
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use mallbots_platform::testing::given;
    use rust_decimal::Decimal;

    use super::*;

    fn started() -> BasketEvent {
        BasketEvent::BasketStarted {
            customer_id: Uuid::nil(),
        }
    }

    fn catalog(participating: bool) -> (ProductView, StoreView) {
        let store_id = Uuid::now_v7();
        let product = ProductView {
            product_id: Uuid::now_v7(),
            store_id,
            name: "Pen".into(),
            description: String::new(),
            sku: "P-1".into(),
            price: Decimal::new(250, 2),
            occurred_at: Utc::now(),
        };
        let store = StoreView {
            store_id,
            name: "Waldorf Books".into(),
            location: "Upper level".into(),
            participating,
            occurred_at: Utc::now(),
        };
        (product, store)
    }

    /// The line `quantity` of `p` adds, as the domain copies it.
    fn line(p: &ProductView, s: &StoreView, quantity: i32) -> BasketEvent {
        BasketEvent::BasketItemAdded {
            item: LineItem {
                store_id: s.store_id,
                store_name: s.name.clone(),
                product_id: p.product_id,
                product_name: p.name.clone(),
                price: p.price,
                quantity,
            },
        }
    }

    #[test]
    fn adding_copies_names_and_price_and_merges_lines() {
        let (p, s) = catalog(true);
        let b = given::<Basket>([started()])
            .when(|b| b.add_item(Some(&p), Some(&s), 2))
            .then([line(&p, &s, 2)])
            .when(|b| b.add_item(Some(&p), Some(&s), 2))
            .then([line(&p, &s, 2)]);
        let items = &b.state().items;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].quantity, 4);
        assert_eq!(items[0].store_name, "Waldorf Books");
        assert_eq!(items[0].total(), Decimal::new(1000, 2));
    }

    #[test]
    fn unknown_products_and_bad_quantities_are_refused() {
        let (p, s) = catalog(true);
        let (q, closed) = catalog(false);
        given::<Basket>([started()])
            .when(|b| b.add_item(None, None, 1))
            .then_refused(BasketsError::ProductNotFound)
            .when(|b| b.add_item(Some(&p), Some(&s), 0))
            .then_refused(BasketsError::NonPositiveQuantity)
            .when(|b| b.add_item(Some(&p), Some(&s), -3))
            .then_refused(BasketsError::NonPositiveQuantity)
            .when(|b| b.add_item(Some(&q), Some(&closed), 1))
            .then_refused(BasketsError::StoreNotParticipating("Waldorf Books".into()));
    }

    #[test]
    fn a_basket_total_stays_within_what_a_payment_may_be() {
        let (mut p, s) = catalog(true);
        p.price = Decimal::new(40_000_000, 2); // 400,000.00
        given::<Basket>([started()])
            .when(|b| b.add_item(Some(&p), Some(&s), 2))
            .then([line(&p, &s, 2)])
            .when(|b| b.add_item(Some(&p), Some(&s), 1))
            .then_refused(BasketsError::TotalTooHigh);
        p.price = Decimal::MAX;
        given::<Basket>([started()])
            .when(|b| b.add_item(Some(&p), Some(&s), 2))
            .then_refused(BasketsError::TotalTooHigh);
    }

    #[test]
    fn only_open_non_empty_baskets_check_out() {
        let (p, s) = catalog(true);
        given::<Basket>([started()])
            .when(|b| b.checkout(Uuid::now_v7(), Uuid::now_v7(), &OnSale::default()))
            .then_refused(BasketsError::Empty);
        given::<Basket>([started(), BasketEvent::BasketCanceled])
            .when(Basket::cancel)
            .then_refused(BasketsError::NotOpen("canceled"))
            .when(|b| b.add_item(Some(&p), Some(&s), 1))
            .then_refused(BasketsError::NotOpen("canceled"));
        given::<Basket>([])
            .when(Basket::cancel)
            .then_refused(BasketsError::NotFound);
    }

    /// The catalog may change between adding and checking out: a product
    /// removed since, or a store that stopped taking orders, stops it.
    #[test]
    fn a_checkout_needs_every_item_still_on_sale() {
        let (p, s) = catalog(true);
        let (payment, order) = (Uuid::now_v7(), Uuid::now_v7());
        let basket = given::<Basket>([started(), line(&p, &s, 2)]);
        let sold = |participating: bool, product: bool| OnSale {
            stores: [(
                s.store_id,
                StoreView {
                    participating,
                    ..s.clone()
                },
            )]
            .into(),
            products: if product {
                [(p.product_id, p.clone())].into()
            } else {
                HashMap::new()
            },
        };
        basket
            .when(|b| b.checkout(payment, order, &sold(true, false)))
            .then_refused(BasketsError::NoLongerSold("Pen".into()))
            .when(|b| b.checkout(payment, order, &sold(false, true)))
            .then_refused(BasketsError::StoreNotParticipating("Waldorf Books".into()))
            .when(|b| {
                b.checkout(
                    payment,
                    order,
                    &OnSale {
                        stores: HashMap::new(),
                        ..sold(true, true)
                    },
                )
            })
            .then_refused(BasketsError::StoreNotParticipating("Waldorf Books".into()))
            .when(|b| b.checkout(payment, order, &sold(true, true)))
            .then([BasketEvent::BasketCheckedOut {
                payment_id: payment,
                order_id: order,
            }]);
    }

    #[test]
    fn removing_never_goes_below_zero() {
        let (p, s) = catalog(true);
        let emptied = given::<Basket>([started(), line(&p, &s, 2)])
            .when(|b| b.remove_item(p.product_id, 3))
            .then_refused(BasketsError::RemovingMoreThanHeld(2))
            .when(|b| b.remove_item(p.product_id, i32::MAX))
            .then_refused(BasketsError::RemovingMoreThanHeld(2))
            .when(|b| b.remove_item(p.product_id, 2))
            .then([BasketEvent::BasketItemRemoved {
                product_id: p.product_id,
                quantity: 2,
            }]);
        assert!(emptied.state().items.is_empty());
        emptied
            .when(|b| b.remove_item(p.product_id, 1))
            .then_refused(BasketsError::NotInBasket);
    }
}
