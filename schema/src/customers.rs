//! The customers module's commands and integration events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{message, view_events};

pub const COMMANDS: &str = "customers.*";
pub const EVENTS: &str = "customers.#";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegisterCustomer {
    pub customer_id: Uuid,
    pub name: String,
    pub sms_number: String,
}
message!(RegisterCustomer, "customers.RegisterCustomer");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeSmsNumber {
    pub customer_id: Uuid,
    pub sms_number: String,
}
message!(ChangeSmsNumber, "customers.ChangeSmsNumber");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnableCustomer {
    pub customer_id: Uuid,
}
message!(EnableCustomer, "customers.EnableCustomer");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DisableCustomer {
    pub customer_id: Uuid,
}
message!(DisableCustomer, "customers.DisableCustomer");

/// Saga command: succeeds only for a known, enabled customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuthorizeCustomer {
    pub customer_id: Uuid,
}
message!(AuthorizeCustomer, "customers.AuthorizeCustomer");

/// A customer's full state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CustomerView {
    pub customer_id: Uuid,
    pub name: String,
    pub sms_number: String,
    pub enabled: bool,
    pub occurred_at: DateTime<Utc>,
}

view_events!(
    CustomerView,
    CustomerRegistered = "customers.Customer.CustomerRegistered",
    CustomerSmsChanged = "customers.Customer.CustomerSmsChanged",
    CustomerEnabled = "customers.Customer.CustomerEnabled",
    CustomerDisabled = "customers.Customer.CustomerDisabled",
    CustomerAuthorized = "customers.Customer.CustomerAuthorized",
);
