//! Validated values: parse, don't validate. Holding one means it is valid.

use mallbots_contracts::common::is_unsafe_in_names;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::error::StoresError;

const MAX_NAME: usize = 100;
const MAX_TEXT: usize = 2000;

fn non_blank(
    raw: &str,
    blank: StoresError,
    field: &'static str,
    max: usize,
) -> Result<String, StoresError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(blank);
    }
    if trimmed.chars().count() > max {
        return Err(StoresError::TooLong { field, max });
    }
    if trimmed.chars().any(is_unsafe_in_names) {
        return Err(StoresError::UnsafeText { field });
    }
    Ok(trimmed.to_owned())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreName(String);

impl StoreName {
    pub fn parse(raw: &str) -> Result<Self, StoresError> {
        non_blank(raw, StoresError::BlankStoreName, "store name", MAX_NAME).map(StoreName)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreLocation(String);

impl StoreLocation {
    pub fn parse(raw: &str) -> Result<Self, StoresError> {
        non_blank(raw, StoresError::BlankLocation, "store location", MAX_NAME).map(StoreLocation)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(raw: &str) -> Result<Self, StoresError> {
        non_blank(raw, StoresError::BlankProductName, "product name", MAX_NAME).map(ProductName)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text that may be empty (a description, a SKU), bounded in length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text(String);

impl Text {
    pub fn parse(raw: &str, field: &'static str) -> Result<Self, StoresError> {
        let trimmed = raw.trim();
        if trimmed.chars().count() > MAX_TEXT {
            return Err(StoresError::TooLong {
                field,
                max: MAX_TEXT,
            });
        }
        // Free text may break lines; nothing else hidden.
        if trimmed
            .chars()
            .any(|c| c != '\n' && c != '\t' && is_unsafe_in_names(c))
        {
            return Err(StoresError::UnsafeText { field });
        }
        Ok(Text(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The largest price (and price change): 1,000,000.00.
pub const MAX_PRICE: Decimal = Decimal::from_parts(100_000_000, 0, 0, false, 2);

fn money(raw: Decimal, non_positive: StoresError) -> Result<Decimal, StoresError> {
    if raw <= Decimal::ZERO {
        return Err(non_positive);
    }
    if raw > MAX_PRICE {
        return Err(StoresError::PriceTooHigh);
    }
    let mut cents = raw.normalize();
    if cents.scale() > 2 {
        return Err(StoresError::TooPrecise);
    }
    // Money is shown in cents everywhere: "40.00", not "40".
    cents.rescale(2);
    Ok(cents)
}

/// A price: exact, greater than zero, in cents at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Serialize, Deserialize)]
pub struct Price(Decimal);

impl Price {
    pub fn parse(raw: Decimal) -> Result<Self, StoresError> {
        money(raw, StoresError::NonPositivePrice).map(Price)
    }
    pub fn value(self) -> Decimal {
        self.0
    }
}

/// A price change: exact, greater than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceDelta(Decimal);

impl PriceDelta {
    pub fn parse(raw: Decimal) -> Result<Self, StoresError> {
        match money(raw, StoresError::NonPositiveDelta) {
            Err(StoresError::PriceTooHigh) => Err(StoresError::DeltaTooHigh),
            other => other.map(PriceDelta),
        }
    }
    pub fn value(self) -> Decimal {
        self.0
    }
}
