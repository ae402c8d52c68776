//! The payments module's commands and integration events.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{message, view_events};

pub const COMMANDS: &str = "payments.*";
pub const EVENTS: &str = "payments.#";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuthorizePayment {
    pub payment_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Decimal,
}
message!(AuthorizePayment, "payments.AuthorizePayment");

/// Saga command: the payment must exist, be the customer's, unused, and of
/// exactly `amount`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfirmPayment {
    pub payment_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Decimal,
    /// The order the payment is used by (only that order's cancel or
    /// compensation releases it). Absent from senders before it was added.
    #[serde(default)]
    pub order_id: Option<Uuid>,
}
message!(ConfirmPayment, "payments.ConfirmPayment");

/// Saga compensation: `order_id`, which the payment was confirmed for, will
/// not be, so the payment may be used again. A payment not in use by that
/// order stays as it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReleasePayment {
    pub payment_id: Uuid,
    pub order_id: Uuid,
}
message!(ReleasePayment, "payments.ReleasePayment");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AdjustInvoice {
    pub invoice_id: Uuid,
    pub amount: Decimal,
}
message!(AdjustInvoice, "payments.AdjustInvoice");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PayInvoice {
    pub invoice_id: Uuid,
}
message!(PayInvoice, "payments.PayInvoice");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelInvoice {
    pub invoice_id: Uuid,
}
message!(CancelInvoice, "payments.CancelInvoice");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PaymentView {
    pub payment_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Decimal,
    /// Used by an order (false again once that order was canceled or
    /// rejected).
    pub confirmed: bool,
    pub occurred_at: DateTime<Utc>,
}

view_events!(
    PaymentView,
    PaymentAuthorized = "payments.Payment.PaymentAuthorized",
    PaymentConfirmed = "payments.Payment.PaymentConfirmed",
    PaymentReleased = "payments.Payment.PaymentReleased",
);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Pending,
    Paid,
    Canceled,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Pending => "pending",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Canceled => "canceled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InvoiceView {
    pub invoice_id: Uuid,
    pub order_id: Uuid,
    pub amount: Decimal,
    pub status: InvoiceStatus,
    pub occurred_at: DateTime<Utc>,
}

view_events!(
    InvoiceView,
    InvoiceCreated = "payments.Invoice.InvoiceCreated",
    InvoiceAdjusted = "payments.Invoice.InvoiceAdjusted",
    InvoicePaid = "payments.Invoice.InvoicePaid",
    InvoiceCanceled = "payments.Invoice.InvoiceCanceled",
);
