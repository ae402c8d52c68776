//! The saga's message handling: an order created starts it, each reply to
//! one of its commands moves it.

use async_trait::async_trait;
use mallbots_contracts::ordering::OrderCreated;
use mallbots_contracts::{CommandReply, Message};
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::saga::{self, SagaEngine, SagaRecord};
use mallbots_platform::{Envelope, PlatformError};
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use uuid::Uuid;

use crate::domain::{CreateOrderData, CreateOrderSaga};

pub(crate) struct CosecHandler {
    pub(crate) engine: SagaEngine<CreateOrderSaga>,
}

#[async_trait]
impl CommandHandler for CosecHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        message: &Envelope,
    ) -> Result<Accepted, CommandError> {
        match message.message_type.as_str() {
            OrderCreated::TYPE => {
                let order = message.decode::<OrderCreated>()?.0;
                let data = CreateOrderData {
                    order_id: order.order_id,
                    customer_id: order.customer_id,
                    payment_id: order.payment_id,
                    items: order.items,
                    total: order.total,
                    shopping_list_id: None,
                };
                self.engine
                    .start(txn, outbox, message, order.order_id, data)
                    .await?;
            }
            CommandReply::TYPE => {
                if !self.engine.on_reply(txn, outbox, message).await? {
                    tracing::debug!(causation = %message.causation_id, "reply to no pending saga step ignored");
                }
            }
            other => return Err(PlatformError::unknown_message(other).into()),
        }
        Ok(Accepted::default())
    }
}

/// Where each order's saga is.
#[derive(Clone)]
pub struct CosecQueries {
    db: DatabaseConnection,
}

impl CosecQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        CosecQueries { db }
    }

    /// The create-order saga of `order_id`.
    pub async fn saga(
        &self,
        order_id: Uuid,
    ) -> Result<Option<SagaRecord<CreateOrderData>>, PlatformError> {
        saga::find::<CreateOrderSaga, _>(&self.db, order_id).await
    }
}
