//! Command handling, the catalog cache, and the module's queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::depot::{self as msg, ShoppingListStatus, ShoppingListView};
use mallbots_contracts::ordering::{OrderCanceled, OrderStarted};
use mallbots_contracts::{Affected, ErrorCode, Message, Role};
use mallbots_platform::commands::{
    self, Accepted, CommandError, CommandHandler, DomainError, Owned,
};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::{Document, Recorded, execute, execute_owned};
use mallbots_platform::views::{self, Page};
use mallbots_platform::{Envelope, Outgoing, PlatformError, catalog_cache};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};
use uuid::Uuid;

use crate::domain::{DepotError, MallMap, ShoppingList, ShoppingListEvent};

impl DomainError for DepotError {
    fn code(&self) -> ErrorCode {
        match self {
            DepotError::NotFound | DepotError::StoreNotFound(_) => ErrorCode::NotFound,
            DepotError::NoItems | DepotError::NoBot => ErrorCode::BadUserInput,
            DepotError::AlreadyExists | DepotError::WrongStatus(..) | DepotError::NotStarted => {
                ErrorCode::Conflict
            }
        }
    }
}

const VIEW: &str = "shopping_list";

impl Recorded for ShoppingList {
    type View = ShoppingListView;

    fn view(id: Uuid, l: &Self, at: DateTime<Utc>) -> ShoppingListView {
        ShoppingListView {
            shopping_list_id: id,
            order_id: l.order_id,
            stops: l.stops.clone(),
            status: l.status.unwrap_or(ShoppingListStatus::Pending),
            bot_id: l.bot_id,
            occurred_at: at,
        }
    }

    fn document(state: &Self, view: &ShoppingListView) -> Option<Document> {
        Some(Document {
            kind: VIEW,
            ref_id: Some(state.order_id),
            status: Some(view.status.as_str()),
        })
    }

    fn result(id: Uuid, state: &Self) -> Affected {
        Affected::ShoppingList {
            shopping_list_id: id,
            order_id: state.order_id,
        }
    }

    fn announce(
        event: &ShoppingListEvent,
        v: Self::View,
    ) -> Result<Option<Outgoing>, PlatformError> {
        use ShoppingListEvent::*;
        Outgoing::of_some(match event {
            ShoppingListCreated { .. } => Outgoing::of(&msg::ShoppingListCreated(v)),
            ShoppingListCanceled => Outgoing::of(&msg::ShoppingListCanceled(v)),
            ShoppingListInitiated => Outgoing::of(&msg::ShoppingListInitiated(v)),
            ShoppingListAssigned { .. } => Outgoing::of(&msg::ShoppingListAssigned(v)),
            ShoppingListActivated => Outgoing::of(&msg::ShoppingListActivated(v)),
            ShoppingListCompleted => Outgoing::of(&msg::ShoppingListCompleted(v)),
        })
    }
}

/// The cached stores and products `items` mention.
async fn mall_map<C: ConnectionTrait>(
    conn: &C,
    items: &[mallbots_contracts::common::LineItem],
) -> Result<MallMap, PlatformError> {
    let (stores, products) = catalog_cache::known(conn, items).await?;
    Ok(MallMap { stores, products })
}

impl Owned for ShoppingList {
    const OWNER: (Role, &'static str) = (Role::Bot, "the shopping list");
    fn exists(&self) -> bool {
        self.status.is_some()
    }
    fn owner(&self) -> Option<Uuid> {
        self.bot_id
    }
}

pub(crate) struct DepotHandler;

/// Applies `decide` to each list of `order`: what ordering decided about
/// the order, onto its shopping.
async fn for_each_list(
    t: &DatabaseTransaction,
    o: &Outbox,
    c: &Envelope,
    order: Uuid,
    decide: fn(&ShoppingList) -> Result<Vec<ShoppingListEvent>, DepotError>,
) -> Result<Accepted, CommandError> {
    let lists: Vec<ShoppingListView> = views::by_ref(t, VIEW, order).await?;
    let mut accepted = Accepted::default();
    for list in lists {
        accepted = execute::<ShoppingList, _>(t, o, c, list.shopping_list_id, decide).await?;
    }
    Ok(accepted)
}

#[async_trait]
impl CommandHandler for DepotHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        message: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let (t, o, c) = (txn, outbox, message);
        match message.message_type.as_str() {
            msg::CreateShoppingList::TYPE => {
                let m: msg::CreateShoppingList = c.decode()?;
                let map = mall_map(t, &m.items).await?;
                let id = Uuid::now_v7();
                execute::<ShoppingList, _>(t, o, c, id, |l| l.create(m.order_id, &m.items, &map))
                    .await
            }
            msg::CancelShoppingList::TYPE => {
                let m: msg::CancelShoppingList = c.decode()?;
                execute::<ShoppingList, _>(t, o, c, m.shopping_list_id, ShoppingList::cancel).await
            }
            msg::InitiateShopping::TYPE => {
                let m: msg::InitiateShopping = c.decode()?;
                execute::<ShoppingList, _>(t, o, c, m.shopping_list_id, ShoppingList::initiate)
                    .await
            }
            msg::AssignShoppingList::TYPE => {
                let m: msg::AssignShoppingList = c.decode()?;
                // A bot takes a list for itself; an operator for any bot.
                commands::authorize(&commands::actor(c)?, Role::Bot, Some(m.bot_id), "the bot")?;
                execute::<ShoppingList, _>(t, o, c, m.shopping_list_id, |l| l.assign(m.bot_id))
                    .await
            }
            msg::CompleteShoppingList::TYPE => {
                let m: msg::CompleteShoppingList = c.decode()?;
                // Only the bot the list is assigned to completes it.
                let list = m.shopping_list_id;
                execute_owned::<ShoppingList, _>(t, o, c, list, ShoppingList::complete).await
            }
            // A canceled order's list is canceled too, a bot's included.
            OrderCanceled::TYPE => {
                let order = c.decode::<OrderCanceled>()?.0.order_id;
                for_each_list(t, o, c, order, ShoppingList::cancel).await
            }
            // A started order's list becomes active: its bot may complete it.
            OrderStarted::TYPE => {
                let order = c.decode::<OrderStarted>()?.0.order_id;
                for_each_list(t, o, c, order, ShoppingList::activate).await
            }
            other => {
                if catalog_cache::apply(t, c).await? {
                    return Ok(Accepted::default());
                }
                Err(PlatformError::unknown_message(other).into())
            }
        }
    }
}

/// The depot read side.
#[derive(Clone)]
pub struct DepotQueries {
    db: DatabaseConnection,
}

impl DepotQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        DepotQueries { db }
    }

    pub async fn shopping_list(&self, id: Uuid) -> Result<Option<ShoppingListView>, PlatformError> {
        views::get(&self.db, VIEW, id).await
    }

    /// Lists (with `status`, when given) in creation order.
    pub async fn shopping_lists(
        &self,
        status: Option<ShoppingListStatus>,
        first: u64,
        after: Option<Uuid>,
    ) -> Result<Page<ShoppingListView>, PlatformError> {
        views::page(&self.db, VIEW, status.map(|s| s.as_str()), first, after).await
    }
}
