//! The pure domain: the Customer aggregate and its rules. No I/O, no async.

use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CustomersError {
    #[error("the customer name cannot be blank")]
    BlankName,
    #[error("the customer name cannot be longer than 100 characters")]
    NameTooLong,
    #[error("the customer name cannot hold control or text-direction characters")]
    UnsafeName,
    #[error("the sms number must be 7 to 15 digits, optionally starting with +")]
    InvalidSmsNumber,
    #[error("the customer already exists")]
    AlreadyRegistered,
    #[error("the customer was not found")]
    NotFound,
    #[error("the customer is disabled")]
    Disabled,
}

/// A name as given, trimmed, non-blank and bounded.
fn parse_name(name: &str) -> Result<String, CustomersError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CustomersError::BlankName);
    }
    if name.chars().count() > 100 {
        return Err(CustomersError::NameTooLong);
    }
    if name
        .chars()
        .any(mallbots_contracts::common::is_unsafe_in_names)
    {
        return Err(CustomersError::UnsafeName);
    }
    Ok(name.to_owned())
}

/// An SMS number: spaces and dashes dropped, an optional `+`, 7 to 15 digits.
pub fn parse_sms_number(sms: &str) -> Result<String, CustomersError> {
    let compact: String = sms
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    if !(7..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(CustomersError::InvalidSmsNumber);
    }
    Ok(compact)
}

/// `Default` is a customer not registered yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub registered: bool,
    pub name: String,
    pub sms_number: String,
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CustomerEvent {
    CustomerRegistered { name: String, sms_number: String },
    CustomerSmsChanged { sms_number: String },
    CustomerEnabled,
    CustomerDisabled,
    CustomerAuthorized,
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerRegistered { .. } => "CustomerRegistered",
            CustomerEvent::CustomerSmsChanged { .. } => "CustomerSmsChanged",
            CustomerEvent::CustomerEnabled => "CustomerEnabled",
            CustomerEvent::CustomerDisabled => "CustomerDisabled",
            CustomerEvent::CustomerAuthorized => "CustomerAuthorized",
        }
    }
}

impl Aggregate for Customer {
    const STREAM_TYPE: &'static str = "Customer";
    type Event = CustomerEvent;

    fn apply(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::CustomerRegistered { name, sms_number } => {
                self.registered = true;
                self.enabled = true;
                self.name = name.clone();
                self.sms_number = sms_number.clone();
            }
            CustomerEvent::CustomerSmsChanged { sms_number } => {
                self.sms_number = sms_number.clone()
            }
            CustomerEvent::CustomerEnabled => self.enabled = true,
            CustomerEvent::CustomerDisabled => self.enabled = false,
            CustomerEvent::CustomerAuthorized => {}
        }
    }
}

type Decision = Result<Vec<CustomerEvent>, CustomersError>;

impl Customer {
    fn existing(&self) -> Result<&Self, CustomersError> {
        if self.registered {
            Ok(self)
        } else {
            Err(CustomersError::NotFound)
        }
    }

    /// A new customer may order at once.
    pub fn register(&self, name: &str, sms_number: &str) -> Decision {
        if self.registered {
            return Err(CustomersError::AlreadyRegistered);
        }
        Ok(vec![CustomerEvent::CustomerRegistered {
            name: parse_name(name)?,
            sms_number: parse_sms_number(sms_number)?,
        }])
    }

    pub fn change_sms_number(&self, sms_number: &str) -> Decision {
        let sms_number = parse_sms_number(sms_number)?;
        if self.existing()?.sms_number == sms_number {
            return Ok(vec![]);
        }
        Ok(vec![CustomerEvent::CustomerSmsChanged { sms_number }])
    }

    pub fn enable(&self) -> Decision {
        Ok(match self.existing()?.enabled {
            true => vec![],
            false => vec![CustomerEvent::CustomerEnabled],
        })
    }

    pub fn disable(&self) -> Decision {
        Ok(match self.existing()?.enabled {
            true => vec![CustomerEvent::CustomerDisabled],
            false => vec![],
        })
    }

    /// May this customer order? Unknown and disabled customers may not.
    pub fn authorize(&self) -> Decision {
        if !self.existing()?.enabled {
            return Err(CustomersError::Disabled);
        }
        Ok(vec![CustomerEvent::CustomerAuthorized])
    }
}

#[cfg(test)]
mod tests {
    use mallbots_platform::testing::given;

    use super::*;

    fn registered() -> CustomerEvent {
        CustomerEvent::CustomerRegistered {
            name: "Ada".into(),
            sms_number: "+442079460958".into(),
        }
    }

    #[test]
    fn registering_keeps_a_compact_sms_number_and_enables() {
        let ada = given::<Customer>([])
            .when(|c| c.register("Ada", "+44 20 7946 0958"))
            .then([registered()]);
        assert!(ada.state().enabled);
        ada.when(|c| c.register("Ada", "5550100"))
            .then_refused(CustomersError::AlreadyRegistered);
    }

    #[test]
    fn bad_names_and_numbers_are_refused() {
        let refused = |name: &str, sms: &str, why: CustomersError| {
            given::<Customer>([])
                .when(|c| c.register(name, sms))
                .then_refused(why);
        };
        refused("  ", "5550100", CustomersError::BlankName);
        refused("Ada", "12ab567", CustomersError::InvalidSmsNumber);
        refused("Ada", "123", CustomersError::InvalidSmsNumber);
        for name in [
            "Ada\0",
            "Ada\u{1b}[31m",
            "Ada\r\nBob",
            "evil\u{202E}txt.exe",
        ] {
            refused(name, "5550100", CustomersError::UnsafeName);
        }
        given::<Customer>([])
            .when(|c| c.register("Zoë 中村", "5550100"))
            .then([CustomerEvent::CustomerRegistered {
                name: "Zoë 中村".into(),
                sms_number: "5550100".into(),
            }]);
    }

    #[test]
    fn a_disabled_or_unknown_customer_is_not_authorized() {
        given::<Customer>([registered()])
            .when(Customer::authorize)
            .then([CustomerEvent::CustomerAuthorized])
            .when(Customer::disable)
            .then([CustomerEvent::CustomerDisabled])
            .when(Customer::authorize)
            .then_refused(CustomersError::Disabled)
            .when(Customer::disable)
            .then([]);
        given::<Customer>([])
            .when(Customer::authorize)
            .then_refused(CustomersError::NotFound);
    }

    #[test]
    fn unknown_customers_cannot_change() {
        given::<Customer>([])
            .when(Customer::enable)
            .then_refused(CustomersError::NotFound)
            .when(|c| c.change_sms_number("5550100"))
            .then_refused(CustomersError::NotFound);
    }
}
