//! The pure domain: payments and invoices. No I/O, no async.

use mallbots_contracts::payments::InvoiceStatus;
use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentsError {
    #[error("the amount must be greater than zero")]
    NonPositiveAmount,
    #[error("an amount cannot have more than 2 decimal places")]
    TooPrecise,
    #[error("an amount cannot exceed {}", mallbots_contracts::common::MAX_MONEY)]
    TooHigh,
    #[error("the payment already exists")]
    PaymentExists,
    #[error("the payment was not found")]
    PaymentNotFound,
    #[error("the payment belongs to another customer")]
    NotTheCustomersPayment,
    #[error("the payment amount {authorized} does not match the order total {total}")]
    AmountMismatch { authorized: Decimal, total: Decimal },
    #[error("the payment was already used")]
    PaymentUsed,
    #[error("the invoice already exists")]
    InvoiceExists,
    #[error("the invoice was not found")]
    InvoiceNotFound,
    #[error("the invoice is {0} and can no longer change")]
    InvoiceClosed(&'static str),
}

/// A positive amount of money in cents.
pub fn parse_amount(amount: Decimal) -> Result<Decimal, PaymentsError> {
    if amount <= Decimal::ZERO {
        return Err(PaymentsError::NonPositiveAmount);
    }
    if amount > mallbots_contracts::common::MAX_MONEY {
        return Err(PaymentsError::TooHigh);
    }
    if amount.normalize().scale() > 2 {
        return Err(PaymentsError::TooPrecise);
    }
    Ok(amount)
}

type Decision<E> = Result<Vec<E>, PaymentsError>;

/// A payment authorized for one checkout. `Default`: not authorized yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub authorized: bool,
    pub customer_id: Uuid,
    pub amount: Decimal,
    pub confirmed: bool,
    /// The order it is confirmed for (unknown for a confirmation sent
    /// without one, before orders were named).
    pub used_by: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PaymentEvent {
    PaymentAuthorized {
        customer_id: Uuid,
        amount: Decimal,
    },
    PaymentConfirmed {
        /// Absent from events stored before it was recorded.
        #[serde(default)]
        order_id: Option<Uuid>,
    },
    PaymentReleased,
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            PaymentEvent::PaymentAuthorized { .. } => "PaymentAuthorized",
            PaymentEvent::PaymentConfirmed { .. } => "PaymentConfirmed",
            PaymentEvent::PaymentReleased => "PaymentReleased",
        }
    }
}

impl Aggregate for Payment {
    const STREAM_TYPE: &'static str = "Payment";
    type Event = PaymentEvent;

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::PaymentAuthorized {
                customer_id,
                amount,
            } => {
                self.authorized = true;
                self.customer_id = *customer_id;
                self.amount = *amount;
            }
            PaymentEvent::PaymentConfirmed { order_id } => {
                self.confirmed = true;
                self.used_by = *order_id;
            }
            PaymentEvent::PaymentReleased => {
                self.confirmed = false;
                self.used_by = None;
            }
        }
    }
}

impl Payment {
    pub fn authorize(&self, customer_id: Uuid, amount: Decimal) -> Decision<PaymentEvent> {
        if self.authorized {
            return Err(PaymentsError::PaymentExists);
        }
        let amount = parse_amount(amount)?;
        Ok(vec![PaymentEvent::PaymentAuthorized {
            customer_id,
            amount,
        }])
    }

    /// The saga's check that the payment covers exactly the order.
    pub fn confirm(
        &self,
        customer_id: Uuid,
        total: Decimal,
        order_id: Option<Uuid>,
    ) -> Decision<PaymentEvent> {
        if !self.authorized {
            return Err(PaymentsError::PaymentNotFound);
        }
        if self.customer_id != customer_id {
            return Err(PaymentsError::NotTheCustomersPayment);
        }
        if self.amount != total {
            return Err(PaymentsError::AmountMismatch {
                authorized: self.amount,
                total,
            });
        }
        if self.confirmed {
            return Err(PaymentsError::PaymentUsed);
        }
        Ok(vec![PaymentEvent::PaymentConfirmed { order_id }])
    }

    /// Frees the payment of `order_id`, an order that will not be (canceled,
    /// or its saga compensated): it may be used again. One not in use by that
    /// order stays as it is: free already (the cancel and the compensation
    /// may both ask), or used by another order (one canceled before its
    /// saga reached the payment must not free a payment its customer used
    /// elsewhere).
    pub fn release(&self, order_id: Uuid) -> Decision<PaymentEvent> {
        if !self.authorized {
            return Err(PaymentsError::PaymentNotFound);
        }
        if !self.confirmed || self.used_by != Some(order_id) {
            return Ok(vec![]);
        }
        Ok(vec![PaymentEvent::PaymentReleased])
    }
}

/// The invoice of a ready order. `Default`: not created yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub order_id: Option<Uuid>,
    /// The order's customer: who may pay it.
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    pub amount: Decimal,
    pub status: Option<InvoiceStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum InvoiceEvent {
    InvoiceCreated {
        order_id: Uuid,
        amount: Decimal,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        customer_id: Option<Uuid>,
    },
    InvoiceAdjusted {
        amount: Decimal,
    },
    InvoicePaid,
    InvoiceCanceled,
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> &'static str {
        match self {
            InvoiceEvent::InvoiceCreated { .. } => "InvoiceCreated",
            InvoiceEvent::InvoiceAdjusted { .. } => "InvoiceAdjusted",
            InvoiceEvent::InvoicePaid => "InvoicePaid",
            InvoiceEvent::InvoiceCanceled => "InvoiceCanceled",
        }
    }
}

impl Aggregate for Invoice {
    const STREAM_TYPE: &'static str = "Invoice";
    type Event = InvoiceEvent;

    fn apply(&mut self, event: &InvoiceEvent) {
        match event {
            InvoiceEvent::InvoiceCreated {
                order_id,
                amount,
                customer_id,
            } => {
                self.order_id = Some(*order_id);
                self.customer_id = *customer_id;
                self.amount = *amount;
                self.status = Some(InvoiceStatus::Pending);
            }
            InvoiceEvent::InvoiceAdjusted { amount } => self.amount = *amount,
            InvoiceEvent::InvoicePaid => self.status = Some(InvoiceStatus::Paid),
            InvoiceEvent::InvoiceCanceled => self.status = Some(InvoiceStatus::Canceled),
        }
    }
}

impl Invoice {
    fn pending(&self) -> Result<(), PaymentsError> {
        match self.status {
            None => Err(PaymentsError::InvoiceNotFound),
            Some(InvoiceStatus::Pending) => Ok(()),
            Some(closed) => Err(PaymentsError::InvoiceClosed(closed.as_str())),
        }
    }

    pub fn create(
        &self,
        order_id: Uuid,
        customer_id: Uuid,
        amount: Decimal,
    ) -> Decision<InvoiceEvent> {
        if self.status.is_some() {
            return Err(PaymentsError::InvoiceExists);
        }
        let amount = parse_amount(amount)?;
        Ok(vec![InvoiceEvent::InvoiceCreated {
            order_id,
            amount,
            customer_id: Some(customer_id),
        }])
    }

    pub fn adjust(&self, amount: Decimal) -> Decision<InvoiceEvent> {
        self.pending()?;
        let amount = parse_amount(amount)?;
        Ok(vec![InvoiceEvent::InvoiceAdjusted { amount }])
    }

    pub fn pay(&self) -> Decision<InvoiceEvent> {
        self.pending()?;
        Ok(vec![InvoiceEvent::InvoicePaid])
    }

    pub fn cancel(&self) -> Decision<InvoiceEvent> {
        self.pending()?;
        Ok(vec![InvoiceEvent::InvoiceCanceled])
    }
}

#[cfg(test)]
mod tests {
    use mallbots_platform::testing::given;

    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn authorized(customer_id: Uuid, amount: &str) -> PaymentEvent {
        PaymentEvent::PaymentAuthorized {
            customer_id,
            amount: dec(amount),
        }
    }

    #[test]
    fn amounts_are_positive_cents_up_to_a_million() {
        let customer = Uuid::now_v7();
        let refused = |amount: Decimal, why: PaymentsError| {
            given::<Payment>([])
                .when(|p| p.authorize(customer, amount))
                .then_refused(why);
        };
        given::<Payment>([])
            .when(|p| p.authorize(customer, dec("1000000.00")))
            .then([authorized(customer, "1000000.00")]);
        refused(dec("1000000.01"), PaymentsError::TooHigh);
        refused(Decimal::MAX, PaymentsError::TooHigh);
        refused(dec("0.001"), PaymentsError::TooPrecise);
    }

    #[test]
    fn amounts_must_be_positive_cents() {
        let refused = |amount: &str, why: PaymentsError| {
            given::<Payment>([])
                .when(|p| p.authorize(Uuid::nil(), dec(amount)))
                .then_refused(why);
        };
        refused("0", PaymentsError::NonPositiveAmount);
        refused("1.001", PaymentsError::TooPrecise);
    }

    #[test]
    fn a_payment_confirms_only_its_customers_exact_amount_once() {
        let customer = Uuid::now_v7();
        given::<Payment>([authorized(customer, "12.50")])
            .when(|p| p.confirm(customer, dec("12.00"), None))
            .then_refused(PaymentsError::AmountMismatch {
                authorized: dec("12.50"),
                total: dec("12.00"),
            })
            .when(|p| p.confirm(Uuid::now_v7(), dec("12.50"), None))
            .then_refused(PaymentsError::NotTheCustomersPayment)
            .when(|p| p.confirm(customer, dec("12.5"), None))
            .then([PaymentEvent::PaymentConfirmed { order_id: None }])
            .when(|p| p.confirm(customer, dec("12.50"), None))
            .then_refused(PaymentsError::PaymentUsed);
        given::<Payment>([])
            .when(|p| p.confirm(customer, dec("1"), None))
            .then_refused(PaymentsError::PaymentNotFound);
    }

    #[test]
    fn a_released_payment_may_be_used_again() {
        let customer = Uuid::now_v7();
        let (order, other) = (Uuid::now_v7(), Uuid::now_v7());
        let confirmed = |order| PaymentEvent::PaymentConfirmed {
            order_id: Some(order),
        };
        given::<Payment>([])
            .when(|p| p.release(order))
            .then_refused(PaymentsError::PaymentNotFound);
        given::<Payment>([authorized(customer, "3.00")])
            .when(|p| p.release(order))
            .then([])
            .when(|p| p.confirm(customer, dec("3.00"), Some(order)))
            .then([confirmed(order)])
            // Another order's cancel leaves it in use.
            .when(|p| p.release(other))
            .then([])
            .when(|p| p.confirm(customer, dec("3.00"), Some(other)))
            .then_refused(PaymentsError::PaymentUsed)
            .when(|p| p.release(order))
            .then([PaymentEvent::PaymentReleased])
            .when(|p| p.release(order))
            .then([])
            .when(|p| p.confirm(customer, dec("3.00"), Some(other)))
            .then([confirmed(other)]);
    }

    /// Events stored before confirmations named their order still read.
    #[test]
    fn a_confirmation_stored_without_its_order_reads() {
        let old: PaymentEvent = serde_json::from_str(r#"{"type":"PaymentConfirmed"}"#).unwrap();
        assert_eq!(old, PaymentEvent::PaymentConfirmed { order_id: None });
    }

    #[test]
    fn a_paid_invoice_is_closed() {
        let order = Uuid::now_v7();
        given::<Invoice>([])
            .when(Invoice::pay)
            .then_refused(PaymentsError::InvoiceNotFound)
            .when(|i| i.create(order, Uuid::nil(), dec("9.99")))
            .then([InvoiceEvent::InvoiceCreated {
                order_id: order,
                amount: dec("9.99"),
                customer_id: Some(Uuid::nil()),
            }])
            .when(Invoice::pay)
            .then([InvoiceEvent::InvoicePaid])
            .when(Invoice::pay)
            .then_refused(PaymentsError::InvoiceClosed("paid"))
            .when(Invoice::cancel)
            .then_refused(PaymentsError::InvoiceClosed("paid"));
    }
}
