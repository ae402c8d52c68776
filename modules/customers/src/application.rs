//! Command handling (each command one decision of the domain, recorded by the
//! platform's pipeline) and the module's queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::customers::{self as msg, CustomerView};
use mallbots_contracts::{Affected, ErrorCode, Message, Role};
use mallbots_platform::commands::{self, Accepted, CommandError, CommandHandler, DomainError};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::{Document, Recorded, execute};
use mallbots_platform::views::{self};
use mallbots_platform::{Envelope, Outgoing, PlatformError};
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use uuid::Uuid;

use crate::domain::{Customer, CustomerEvent, CustomersError};

impl DomainError for CustomersError {
    fn code(&self) -> ErrorCode {
        match self {
            CustomersError::BlankName
            | CustomersError::NameTooLong
            | CustomersError::UnsafeName
            | CustomersError::InvalidSmsNumber => ErrorCode::BadUserInput,
            CustomersError::AlreadyRegistered => ErrorCode::Conflict,
            CustomersError::NotFound => ErrorCode::NotFound,
            CustomersError::Disabled => ErrorCode::Forbidden,
        }
    }
}

const VIEW: &str = "customer";

impl Recorded for Customer {
    type View = CustomerView;

    fn view(id: Uuid, c: &Self, at: DateTime<Utc>) -> CustomerView {
        CustomerView {
            customer_id: id,
            name: c.name.clone(),
            sms_number: c.sms_number.clone(),
            enabled: c.enabled,
            occurred_at: at,
        }
    }

    fn document(state: &Self, _view: &CustomerView) -> Option<Document> {
        Some(Document {
            kind: VIEW,
            ref_id: None,
            status: Some(if state.enabled { "enabled" } else { "disabled" }),
        })
    }

    fn result(id: Uuid, _: &Self) -> Affected {
        Affected::Customer { customer_id: id }
    }

    fn announce(event: &CustomerEvent, v: Self::View) -> Result<Option<Outgoing>, PlatformError> {
        Outgoing::of_some(match event {
            CustomerEvent::CustomerRegistered { .. } => Outgoing::of(&msg::CustomerRegistered(v)),
            CustomerEvent::CustomerSmsChanged { .. } => Outgoing::of(&msg::CustomerSmsChanged(v)),
            CustomerEvent::CustomerEnabled => Outgoing::of(&msg::CustomerEnabled(v)),
            CustomerEvent::CustomerDisabled => Outgoing::of(&msg::CustomerDisabled(v)),
            CustomerEvent::CustomerAuthorized => Outgoing::of(&msg::CustomerAuthorized(v)),
        })
    }
}

pub(crate) struct CustomersHandler;

#[async_trait]
impl CommandHandler for CustomersHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        command: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let (t, o, c) = (txn, outbox, command);
        // A customer is its own token's subject: it registers and changes
        // itself; enabling and disabling is for operators.
        let itself = |id: Uuid| {
            commands::authorize(
                &commands::actor(c)?,
                Role::Customer,
                Some(id),
                "the customer",
            )
        };
        let operator = || commands::require_role(&commands::actor(c)?, &[]);
        match command.message_type.as_str() {
            msg::RegisterCustomer::TYPE => {
                let m: msg::RegisterCustomer = c.decode()?;
                itself(m.customer_id)?;
                execute::<Customer, _>(t, o, c, m.customer_id, |x| {
                    x.register(&m.name, &m.sms_number)
                })
                .await
            }
            msg::ChangeSmsNumber::TYPE => {
                let m: msg::ChangeSmsNumber = c.decode()?;
                itself(m.customer_id)?;
                execute::<Customer, _>(t, o, c, m.customer_id, |x| {
                    x.change_sms_number(&m.sms_number)
                })
                .await
            }
            msg::EnableCustomer::TYPE => {
                let m: msg::EnableCustomer = c.decode()?;
                operator()?;
                execute::<Customer, _>(t, o, c, m.customer_id, Customer::enable).await
            }
            msg::DisableCustomer::TYPE => {
                let m: msg::DisableCustomer = c.decode()?;
                operator()?;
                execute::<Customer, _>(t, o, c, m.customer_id, Customer::disable).await
            }
            msg::AuthorizeCustomer::TYPE => {
                let m: msg::AuthorizeCustomer = c.decode()?;
                execute::<Customer, _>(t, o, c, m.customer_id, Customer::authorize).await
            }
            other => Err(PlatformError::unknown_message(other).into()),
        }
    }
}

/// The customers read side.
#[derive(Clone)]
pub struct CustomersQueries {
    db: DatabaseConnection,
}

impl CustomersQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        CustomersQueries { db }
    }

    pub async fn customer(&self, id: Uuid) -> Result<Option<CustomerView>, PlatformError> {
        views::get(&self.db, VIEW, id).await
    }
}
