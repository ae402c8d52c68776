//! Reacting to customers' and orders' events, and the queries.

use std::sync::Arc;

use async_trait::async_trait;
use mallbots_contracts::customers::CustomerView;
use mallbots_contracts::module_of;
use mallbots_contracts::ordering::OrderView;
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::views::{self, Page, Row};
use mallbots_platform::{Envelope, PlatformError, changes};
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use uuid::Uuid;

use crate::domain::{Notification, message};

const CUSTOMER: &str = "cache.customer";
const NOTIFICATION: &str = "notification";

/// A contract's decoding of `envelope`, as the platform's error.
fn decoded<T>(envelope: &Envelope, view: Result<T, String>) -> Result<T, PlatformError> {
    view.map_err(|reason| PlatformError::Decode {
        what: envelope.message_type.clone(),
        reason,
    })
}

/// The port notifications go out through (adapters: infrastructure).
/// Delivers notifications. Every notification is recorded (and queryable)
/// whatever the sender; a sender failing makes the event be retried.
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    async fn send(&self, notification: &Notification) -> Result<(), String>;
}

pub(crate) struct NotificationsHandler {
    pub(crate) sender: Arc<dyn Sender>,
}

#[async_trait]
impl CommandHandler for NotificationsHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        _: &Outbox,
        envelope: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let position = envelope.position().unwrap_or(0);
        let (kind, version, payload) = (
            envelope.message_type.as_str(),
            envelope.schema_version,
            envelope.payload.raw(),
        );
        if let Some(customer) = CustomerView::from_event(kind, version, payload) {
            let customer = decoded(envelope, customer)?;
            let row = Row {
                kind: CUSTOMER,
                id: customer.customer_id,
                ref_id: None,
                status: None,
                body: &customer,
                position,
            };
            views::put(txn, row).await?;
        } else if let Some(order) = OrderView::from_event(kind, version, payload) {
            let order = decoded(envelope, order)?;
            let customer: Option<CustomerView> =
                views::get(txn, CUSTOMER, order.customer_id).await?;
            let name = customer.as_ref().map_or("", |c| c.name.as_str());
            if let Some((kind, text)) = message(order.status, name, order.order_id, order.total) {
                let notification = Notification {
                    notification_id: Uuid::now_v7(),
                    customer_id: order.customer_id,
                    order_id: order.order_id,
                    kind: kind.to_owned(),
                    sms_number: customer.map(|c| c.sms_number).unwrap_or_default(),
                    text,
                    sent_at: envelope.timestamp,
                };
                let row = Row {
                    kind: NOTIFICATION,
                    id: notification.notification_id,
                    ref_id: Some(notification.customer_id),
                    status: Some(kind),
                    body: &notification,
                    position,
                };
                views::put(txn, row).await?;
                // Delivered before the transaction commits: a failed delivery
                // rolls the record back and the event is retried (at least once).
                self.sender.send(&notification).await.map_err(|e| {
                    PlatformError::Unexpected(format!("notification not sent: {e}"))
                })?;
            }
        }
        if let Some(position) = envelope.position() {
            changes::advance(txn, module_of(kind), position).await?;
        }
        Ok(Accepted::default())
    }
}

/// The notifications read side.
#[derive(Clone)]
pub struct NotificationsQueries {
    db: DatabaseConnection,
}

impl NotificationsQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        NotificationsQueries { db }
    }

    /// A customer's notifications, oldest first.
    pub async fn of_customer(
        &self,
        customer_id: Uuid,
        first: u64,
        after: Option<Uuid>,
    ) -> Result<Page<Notification>, PlatformError> {
        let all: Vec<Notification> = views::by_ref(&self.db, NOTIFICATION, customer_id).await?;
        let mut items: Vec<(Uuid, Notification)> = all
            .into_iter()
            .filter(|n| after.is_none_or(|a| n.notification_id > a))
            .map(|n| (n.notification_id, n))
            .collect();
        let has_next = items.len() as u64 > first;
        items.truncate(first as usize);
        Ok(Page { items, has_next })
    }
}
