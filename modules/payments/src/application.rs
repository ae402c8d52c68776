//! Command handling, the reaction to ready orders, and the module's queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::ordering::{OrderCanceled, OrderReadied};
use mallbots_contracts::payments::{self as msg, InvoiceStatus, InvoiceView, PaymentView};
use mallbots_contracts::{Affected, ErrorCode, Message, Role};
use mallbots_platform::commands::{
    self, Accepted, CommandError, CommandHandler, DomainError, Owned,
};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::{Document, Recorded, execute, execute_owned};
use mallbots_platform::views::{self};
use mallbots_platform::{Envelope, Outgoing, PlatformError};
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use uuid::Uuid;

use crate::domain::{Invoice, InvoiceEvent, Payment, PaymentEvent, PaymentsError};

impl DomainError for PaymentsError {
    fn code(&self) -> ErrorCode {
        use PaymentsError::*;
        match self {
            NonPositiveAmount | TooPrecise | TooHigh => ErrorCode::BadUserInput,
            PaymentNotFound | InvoiceNotFound => ErrorCode::NotFound,
            NotTheCustomersPayment => ErrorCode::Forbidden,
            PaymentExists
            | AmountMismatch { .. }
            | PaymentUsed
            | InvoiceExists
            | InvoiceClosed(_) => ErrorCode::Conflict,
        }
    }
}

const PAYMENT: &str = "payment";
const INVOICE: &str = "invoice";

impl Recorded for Payment {
    type View = PaymentView;

    fn view(id: Uuid, p: &Self, at: DateTime<Utc>) -> PaymentView {
        PaymentView {
            payment_id: id,
            customer_id: p.customer_id,
            amount: p.amount,
            confirmed: p.confirmed,
            occurred_at: at,
        }
    }

    fn document(state: &Self, _view: &PaymentView) -> Option<Document> {
        Some(Document {
            kind: PAYMENT,
            ref_id: Some(state.customer_id),
            status: None,
        })
    }

    fn result(id: Uuid, _: &Self) -> Affected {
        Affected::Payment { payment_id: id }
    }

    fn announce(event: &PaymentEvent, v: Self::View) -> Result<Option<Outgoing>, PlatformError> {
        Outgoing::of_some(match event {
            PaymentEvent::PaymentAuthorized { .. } => Outgoing::of(&msg::PaymentAuthorized(v)),
            PaymentEvent::PaymentConfirmed { .. } => Outgoing::of(&msg::PaymentConfirmed(v)),
            PaymentEvent::PaymentReleased => Outgoing::of(&msg::PaymentReleased(v)),
        })
    }
}

impl Recorded for Invoice {
    type View = InvoiceView;

    fn view(id: Uuid, i: &Self, at: DateTime<Utc>) -> InvoiceView {
        InvoiceView {
            invoice_id: id,
            order_id: i.order_id.unwrap_or_default(),
            amount: i.amount,
            status: i.status.unwrap_or(InvoiceStatus::Pending),
            occurred_at: at,
        }
    }

    fn document(state: &Self, view: &InvoiceView) -> Option<Document> {
        Some(Document {
            kind: INVOICE,
            ref_id: state.order_id,
            status: Some(view.status.as_str()),
        })
    }

    fn result(id: Uuid, state: &Self) -> Affected {
        Affected::Invoice {
            invoice_id: id,
            order_id: state.order_id,
        }
    }

    fn announce(event: &InvoiceEvent, v: Self::View) -> Result<Option<Outgoing>, PlatformError> {
        Outgoing::of_some(match event {
            InvoiceEvent::InvoiceCreated { .. } => Outgoing::of(&msg::InvoiceCreated(v)),
            InvoiceEvent::InvoiceAdjusted { .. } => Outgoing::of(&msg::InvoiceAdjusted(v)),
            InvoiceEvent::InvoicePaid => Outgoing::of(&msg::InvoicePaid(v)),
            InvoiceEvent::InvoiceCanceled => Outgoing::of(&msg::InvoiceCanceled(v)),
        })
    }
}

impl Owned for Invoice {
    const OWNER: (Role, &'static str) = (Role::Customer, "the invoice");
    fn exists(&self) -> bool {
        self.status.is_some()
    }
    fn owner(&self) -> Option<Uuid> {
        self.customer_id
    }
}

pub(crate) struct PaymentsHandler;

#[async_trait]
impl CommandHandler for PaymentsHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        command: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let (t, o, c) = (txn, outbox, command);
        match command.message_type.as_str() {
            msg::AuthorizePayment::TYPE => {
                let m: msg::AuthorizePayment = c.decode()?;
                let actor = commands::actor(c)?;
                commands::authorize(&actor, Role::Customer, Some(m.customer_id), "the customer")?;
                execute::<Payment, _>(t, o, c, m.payment_id, |p| {
                    p.authorize(m.customer_id, m.amount)
                })
                .await
            }
            msg::ConfirmPayment::TYPE => {
                let m: msg::ConfirmPayment = c.decode()?;
                execute::<Payment, _>(t, o, c, m.payment_id, |p| {
                    p.confirm(m.customer_id, m.amount, m.order_id)
                })
                .await
            }
            msg::ReleasePayment::TYPE => {
                let m: msg::ReleasePayment = c.decode()?;
                execute::<Payment, _>(t, o, c, m.payment_id, |p| p.release(m.order_id)).await
            }
            // A canceled order's payment may be used again.
            OrderCanceled::TYPE => {
                let order = c.decode::<OrderCanceled>()?.0;
                execute::<Payment, _>(t, o, c, order.payment_id, |p| p.release(order.order_id))
                    .await
            }
            msg::AdjustInvoice::TYPE => {
                let m: msg::AdjustInvoice = c.decode()?;
                execute::<Invoice, _>(t, o, c, m.invoice_id, |i| i.adjust(m.amount)).await
            }
            msg::PayInvoice::TYPE => {
                let m: msg::PayInvoice = c.decode()?;
                execute_owned::<Invoice, _>(t, o, c, m.invoice_id, Invoice::pay).await
            }
            msg::CancelInvoice::TYPE => {
                let m: msg::CancelInvoice = c.decode()?;
                execute::<Invoice, _>(t, o, c, m.invoice_id, Invoice::cancel).await
            }
            // A ready order is invoiced (CreateInvoice); redelivery is absorbed
            // by the inbox, so one order gets one invoice.
            OrderReadied::TYPE => {
                let order = c.decode::<OrderReadied>()?.0;
                let invoice_id = Uuid::now_v7();
                execute::<Invoice, _>(t, o, c, invoice_id, |i| {
                    i.create(order.order_id, order.customer_id, order.total)
                })
                .await
            }
            other => Err(PlatformError::unknown_message(other).into()),
        }
    }
}

/// The payments read side.
#[derive(Clone)]
pub struct PaymentsQueries {
    db: DatabaseConnection,
}

impl PaymentsQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        PaymentsQueries { db }
    }

    pub async fn payment(&self, id: Uuid) -> Result<Option<PaymentView>, PlatformError> {
        views::get(&self.db, PAYMENT, id).await
    }

    pub async fn invoice(&self, id: Uuid) -> Result<Option<InvoiceView>, PlatformError> {
        views::get(&self.db, INVOICE, id).await
    }

    /// The invoice of `order_id`, once the order is ready.
    pub async fn invoice_of_order(
        &self,
        order_id: Uuid,
    ) -> Result<Option<InvoiceView>, PlatformError> {
        let invoices: Vec<InvoiceView> = views::by_ref(&self.db, INVOICE, order_id).await?;
        Ok(invoices.into_iter().next())
    }
}
