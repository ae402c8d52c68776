use thiserror::Error;

/// Everything the stores domain can refuse, in the domain's words.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StoresError {
    #[error("the store name cannot be blank")]
    BlankStoreName,
    #[error("the store location cannot be blank")]
    BlankLocation,
    #[error("the product name cannot be blank")]
    BlankProductName,
    #[error("the {field} cannot be longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("the {field} cannot hold control or text-direction characters")]
    UnsafeText { field: &'static str },
    #[error("the product price must be greater than zero")]
    NonPositivePrice,
    #[error("the price change must be greater than zero")]
    NonPositiveDelta,
    #[error("a price cannot have more than 2 decimal places")]
    TooPrecise,
    #[error("a price decrease cannot take the price to zero or below")]
    PriceWouldDropToZero,
    #[error("a price cannot be more than 1000000.00")]
    PriceTooHigh,
    #[error("a price change cannot be more than 1000000.00")]
    DeltaTooHigh,
    #[error("the store was not found")]
    StoreNotFound,
    #[error("the product was not found")]
    ProductNotFound,
    #[error("the product has been removed")]
    ProductRemoved,
    #[error("the store already exists")]
    StoreExists,
    #[error("the product already exists")]
    ProductExists,
}

/// How a refusal is reported: the API's error classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    BadInput,
    NotFound,
    Conflict,
}

impl StoresError {
    pub fn refusal(&self) -> Refusal {
        use StoresError::*;
        match self {
            BlankStoreName
            | BlankLocation
            | BlankProductName
            | TooLong { .. }
            | UnsafeText { .. }
            | NonPositivePrice
            | NonPositiveDelta
            | TooPrecise
            | PriceWouldDropToZero
            | PriceTooHigh
            | DeltaTooHigh => Refusal::BadInput,
            StoreNotFound | ProductNotFound => Refusal::NotFound,
            ProductRemoved | StoreExists | ProductExists => Refusal::Conflict,
        }
    }
}
