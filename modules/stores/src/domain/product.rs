use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::StoresError;
use super::store::Store;
use super::values::{MAX_PRICE, Price, PriceDelta, ProductName, Text};

/// A product a store sells. `Default` is a product not added yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub created: bool,
    pub removed: bool,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ProductEvent {
    ProductAdded {
        store_id: Uuid,
        name: String,
        description: String,
        sku: String,
        price: Decimal,
    },
    ProductRebranded {
        name: String,
        description: String,
    },
    ProductPriceIncreased {
        delta: Decimal,
    },
    ProductPriceDecreased {
        delta: Decimal,
    },
    ProductRemoved,
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ProductEvent::ProductAdded { .. } => "ProductAdded",
            ProductEvent::ProductRebranded { .. } => "ProductRebranded",
            ProductEvent::ProductPriceIncreased { .. } => "ProductPriceIncreased",
            ProductEvent::ProductPriceDecreased { .. } => "ProductPriceDecreased",
            ProductEvent::ProductRemoved => "ProductRemoved",
        }
    }
}

impl Aggregate for Product {
    const STREAM_TYPE: &'static str = "Product";
    type Event = ProductEvent;

    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductAdded {
                store_id,
                name,
                description,
                sku,
                price,
            } => {
                self.created = true;
                self.store_id = *store_id;
                self.name = name.clone();
                self.description = description.clone();
                self.sku = sku.clone();
                self.price = *price;
            }
            ProductEvent::ProductRebranded { name, description } => {
                self.name = name.clone();
                self.description = description.clone();
            }
            // Saturating: events are checked when decided; replaying one
            // recorded under other rules must still not panic.
            ProductEvent::ProductPriceIncreased { delta } => {
                self.price = self.price.saturating_add(*delta)
            }
            ProductEvent::ProductPriceDecreased { delta } => {
                self.price = self.price.saturating_sub(*delta)
            }
            ProductEvent::ProductRemoved => self.removed = true,
        }
    }
}

/// What AddProduct carries, before validation.
#[derive(Clone, Debug)]
pub struct NewProduct<'a> {
    pub store_id: Uuid,
    pub name: &'a str,
    pub description: &'a str,
    pub sku: &'a str,
    pub price: Decimal,
}

impl Product {
    fn live(&self) -> Result<&Self, StoresError> {
        if !self.created {
            Err(StoresError::ProductNotFound)
        } else if self.removed {
            Err(StoresError::ProductRemoved)
        } else {
            Ok(self)
        }
    }

    pub fn add(
        &self,
        store: &Store,
        new: NewProduct<'_>,
    ) -> Result<Vec<ProductEvent>, StoresError> {
        let name = ProductName::parse(new.name)?;
        let description = Text::parse(new.description, "description")?;
        let sku = Text::parse(new.sku, "sku")?;
        let price = Price::parse(new.price)?;
        if !store.created {
            return Err(StoresError::StoreNotFound);
        }
        if self.created {
            return Err(StoresError::ProductExists);
        }
        Ok(vec![ProductEvent::ProductAdded {
            store_id: new.store_id,
            name: name.as_str().to_owned(),
            description: description.as_str().to_owned(),
            sku: sku.as_str().to_owned(),
            price: price.value(),
        }])
    }

    pub fn rebrand(&self, name: &str, description: &str) -> Result<Vec<ProductEvent>, StoresError> {
        let name = ProductName::parse(name)?;
        let description = Text::parse(description, "description")?;
        let product = self.live()?;
        if product.name == name.as_str() && product.description == description.as_str() {
            return Ok(vec![]);
        }
        Ok(vec![ProductEvent::ProductRebranded {
            name: name.as_str().to_owned(),
            description: description.as_str().to_owned(),
        }])
    }

    pub fn increase_price(&self, delta: Decimal) -> Result<Vec<ProductEvent>, StoresError> {
        let delta = PriceDelta::parse(delta)?;
        let product = self.live()?;
        if product
            .price
            .checked_add(delta.value())
            .is_none_or(|raised| raised > MAX_PRICE)
        {
            return Err(StoresError::PriceTooHigh);
        }
        Ok(vec![ProductEvent::ProductPriceIncreased {
            delta: delta.value(),
        }])
    }

    pub fn decrease_price(&self, delta: Decimal) -> Result<Vec<ProductEvent>, StoresError> {
        let delta = PriceDelta::parse(delta)?;
        let product = self.live()?;
        if product.price <= delta.value() {
            return Err(StoresError::PriceWouldDropToZero);
        }
        Ok(vec![ProductEvent::ProductPriceDecreased {
            delta: delta.value(),
        }])
    }

    pub fn remove(&self) -> Result<Vec<ProductEvent>, StoresError> {
        self.live()?;
        Ok(vec![ProductEvent::ProductRemoved])
    }
}
