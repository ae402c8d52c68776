//! The pure domain: the ShoppingList aggregate. No I/O, no async.

use std::collections::HashMap;

use mallbots_contracts::common::LineItem;
use mallbots_contracts::depot::{ShoppingListStatus, Stop, StopItem};
use mallbots_contracts::stores::{ProductView, StoreView};
use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DepotError {
    #[error("the shopping list was not found")]
    NotFound,
    #[error("the shopping list already exists")]
    AlreadyExists,
    #[error("a shopping list needs at least one item")]
    NoItems,
    #[error("the store {0} was not found")]
    StoreNotFound(Uuid),
    #[error("the shopping list is {0} and cannot be {1}")]
    WrongStatus(&'static str, &'static str),
    #[error("a bot id is required")]
    NoBot,
    #[error("the order has not started yet: complete the list once it is ACTIVE")]
    NotStarted,
}

/// What depot knows of the mall, from its cache.
#[derive(Default)]
pub struct MallMap {
    pub stores: HashMap<Uuid, StoreView>,
    pub products: HashMap<Uuid, ProductView>,
}

/// The stops for `items`: one per store, in the order the stores first
/// appear. Names come from the cache; a product gone from the catalog since
/// it was bought keeps the name it was bought under.
pub fn plan(items: &[LineItem], map: &MallMap) -> Result<Vec<Stop>, DepotError> {
    let mut stops: Vec<Stop> = Vec::new();
    for item in items {
        let store = map
            .stores
            .get(&item.store_id)
            .ok_or(DepotError::StoreNotFound(item.store_id))?;
        let product_name = map
            .products
            .get(&item.product_id)
            .map_or_else(|| item.product_name.clone(), |p| p.name.clone());
        let line = StopItem {
            product_id: item.product_id,
            product_name,
            quantity: item.quantity,
        };
        match stops.iter_mut().find(|s| s.store_id == store.store_id) {
            Some(stop) => stop.items.push(line),
            None => stops.push(Stop {
                store_id: store.store_id,
                store_name: store.name.clone(),
                location: store.location.clone(),
                items: vec![line],
            }),
        }
    }
    Ok(stops)
}

/// `Default`: a list not created yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShoppingList {
    pub order_id: Uuid,
    pub stops: Vec<Stop>,
    pub status: Option<ShoppingListStatus>,
    pub bot_id: Option<Uuid>,
    /// Assigned under the rule that the order must start before the list
    /// is completed. Lists assigned before that rule (stored events without
    /// the flag) are completed from ASSIGNED, as they were then.
    #[serde(default)]
    pub awaits_start: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ShoppingListEvent {
    ShoppingListCreated {
        order_id: Uuid,
        stops: Vec<Stop>,
    },
    ShoppingListCanceled,
    ShoppingListInitiated,
    ShoppingListAssigned {
        bot_id: Uuid,
        #[serde(default)]
        awaits_start: bool,
    },
    ShoppingListActivated,
    ShoppingListCompleted,
}

impl DomainEvent for ShoppingListEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ShoppingListEvent::ShoppingListCreated { .. } => "ShoppingListCreated",
            ShoppingListEvent::ShoppingListCanceled => "ShoppingListCanceled",
            ShoppingListEvent::ShoppingListInitiated => "ShoppingListInitiated",
            ShoppingListEvent::ShoppingListAssigned { .. } => "ShoppingListAssigned",
            ShoppingListEvent::ShoppingListActivated => "ShoppingListActivated",
            ShoppingListEvent::ShoppingListCompleted => "ShoppingListCompleted",
        }
    }
}

impl Aggregate for ShoppingList {
    const STREAM_TYPE: &'static str = "ShoppingList";
    type Event = ShoppingListEvent;

    fn apply(&mut self, event: &ShoppingListEvent) {
        use ShoppingListStatus::*;
        match event {
            ShoppingListEvent::ShoppingListCreated { order_id, stops } => {
                self.order_id = *order_id;
                self.stops = stops.clone();
                self.status = Some(Pending);
            }
            ShoppingListEvent::ShoppingListCanceled => self.status = Some(Canceled),
            ShoppingListEvent::ShoppingListInitiated => self.status = Some(Available),
            ShoppingListEvent::ShoppingListAssigned {
                bot_id,
                awaits_start,
            } => {
                self.status = Some(Assigned);
                self.bot_id = Some(*bot_id);
                self.awaits_start = *awaits_start;
            }
            ShoppingListEvent::ShoppingListActivated => self.status = Some(Active),
            ShoppingListEvent::ShoppingListCompleted => self.status = Some(Completed),
        }
    }
}

type Decision = Result<Vec<ShoppingListEvent>, DepotError>;

impl ShoppingList {
    fn expect(
        &self,
        allowed: &[ShoppingListStatus],
        becoming: &'static str,
    ) -> Result<(), DepotError> {
        match self.status {
            None => Err(DepotError::NotFound),
            Some(s) if allowed.contains(&s) => Ok(()),
            Some(s) => Err(DepotError::WrongStatus(s.as_str(), becoming)),
        }
    }

    pub fn create(&self, order_id: Uuid, items: &[LineItem], map: &MallMap) -> Decision {
        if self.status.is_some() {
            return Err(DepotError::AlreadyExists);
        }
        if items.is_empty() {
            return Err(DepotError::NoItems);
        }
        Ok(vec![ShoppingListEvent::ShoppingListCreated {
            order_id,
            stops: plan(items, map)?,
        }])
    }

    /// Withdraws the list, a bot's too: its order was canceled (before it
    /// started) or its saga compensated (a bot may have taken the list
    /// before the order's approval failed). Nobody shops for an order that
    /// will not be. An active list's order has started and stays.
    pub fn cancel(&self) -> Decision {
        use ShoppingListStatus::*;
        self.expect(&[Pending, Available, Assigned], "canceled")?;
        Ok(vec![ShoppingListEvent::ShoppingListCanceled])
    }

    pub fn initiate(&self) -> Decision {
        self.expect(&[ShoppingListStatus::Pending], "initiated")?;
        Ok(vec![ShoppingListEvent::ShoppingListInitiated])
    }

    pub fn assign(&self, bot_id: Uuid) -> Decision {
        if bot_id.is_nil() {
            return Err(DepotError::NoBot);
        }
        self.expect(&[ShoppingListStatus::Available], "assigned")?;
        Ok(vec![ShoppingListEvent::ShoppingListAssigned {
            bot_id,
            awaits_start: true,
        }])
    }

    /// Its order started: ordering decided that it can no longer be
    /// canceled, so the shopping done for it will count.
    pub fn activate(&self) -> Decision {
        self.expect(&[ShoppingListStatus::Assigned], "active")?;
        Ok(vec![ShoppingListEvent::ShoppingListActivated])
    }

    /// Only once active. Between the bot taking the list and its order
    /// starting, the order may still be canceled (ordering decides which
    /// comes first); a list completed then could belong to a canceled order.
    pub fn complete(&self) -> Decision {
        use ShoppingListStatus::*;
        if self.status == Some(Assigned) && self.awaits_start {
            return Err(DepotError::NotStarted);
        }
        self.expect(&[Assigned, Active], "completed")?;
        Ok(vec![ShoppingListEvent::ShoppingListCompleted])
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use mallbots_platform::testing::{Given, given};
    use rust_decimal::Decimal;

    use super::*;

    fn store(name: &str) -> StoreView {
        StoreView {
            store_id: Uuid::now_v7(),
            name: name.into(),
            location: format!("{name} corner"),
            participating: true,
            occurred_at: Utc::now(),
        }
    }

    fn item(store: &StoreView, product: &str) -> LineItem {
        LineItem {
            store_id: store.store_id,
            store_name: store.name.clone(),
            product_id: Uuid::now_v7(),
            product_name: product.into(),
            price: Decimal::ONE,
            quantity: 2,
        }
    }

    #[test]
    fn stops_are_grouped_by_store_in_first_seen_order() {
        let (a, b) = (store("A"), store("B"));
        let items = [item(&a, "x"), item(&b, "y"), item(&a, "z")];
        let map = MallMap {
            stores: [(a.store_id, a.clone()), (b.store_id, b.clone())].into(),
            products: HashMap::new(),
        };
        let stops = plan(&items, &map).unwrap();
        assert_eq!(stops.len(), 2);
        assert_eq!(stops[0].location, "A corner");
        let names: Vec<_> = stops[0]
            .items
            .iter()
            .map(|i| i.product_name.as_str())
            .collect();
        assert_eq!(names, ["x", "z"]);
        let unknown = store("C");
        assert_eq!(
            plan(&[item(&unknown, "w")], &map),
            Err(DepotError::StoreNotFound(unknown.store_id))
        );
    }

    fn assigned(bot: Uuid) -> ShoppingListEvent {
        ShoppingListEvent::ShoppingListAssigned {
            bot_id: bot,
            awaits_start: true,
        }
    }

    /// A list assigned before the rule that its order starts first (its
    /// stored event has no flag) is completed as it was then.
    #[test]
    fn a_list_assigned_before_the_start_rule_completes_from_assigned() {
        let bot = Uuid::now_v7();
        let stored = serde_json::json!({ "type": "ShoppingListAssigned", "bot_id": bot });
        let legacy: ShoppingListEvent = serde_json::from_value(stored).unwrap();
        let (mut history, _) = created_list();
        history.extend([ShoppingListEvent::ShoppingListInitiated, legacy]);
        let list = given::<ShoppingList>(history);
        assert!(!list.state().awaits_start);
        list.when(ShoppingList::complete)
            .then([ShoppingListEvent::ShoppingListCompleted]);
    }

    /// A list of one item, as created: what creating it recorded, and it.
    fn created_list() -> (Vec<ShoppingListEvent>, Given<ShoppingList>) {
        let a = store("A");
        let map = MallMap {
            stores: [(a.store_id, a.clone())].into(),
            products: HashMap::new(),
        };
        let items = [item(&a, "x")];
        given::<ShoppingList>([])
            .when(|l| l.create(Uuid::nil(), &items, &map))
            .then_accepted()
    }

    #[test]
    fn a_list_a_bot_holds_can_be_canceled_and_then_not_completed() {
        let bot = Uuid::now_v7();
        let done = created_list()
            .1
            .when(ShoppingList::initiate)
            .then([ShoppingListEvent::ShoppingListInitiated])
            .when(|l| l.assign(bot))
            .then([assigned(bot)])
            .when(ShoppingList::complete)
            .then_refused(DepotError::NotStarted)
            .when(ShoppingList::cancel)
            .then([ShoppingListEvent::ShoppingListCanceled])
            .when(ShoppingList::complete)
            .then_refused(DepotError::WrongStatus("canceled", "completed"))
            .when(ShoppingList::activate)
            .then_refused(DepotError::WrongStatus("canceled", "active"))
            .when(ShoppingList::cancel)
            .then_refused(DepotError::WrongStatus("canceled", "canceled"));
        assert_eq!(done.state().status, Some(ShoppingListStatus::Canceled));
    }

    #[test]
    fn a_list_goes_pending_available_assigned_active_completed() {
        let bot = Uuid::now_v7();
        let (created, list) = created_list();
        assert!(
            matches!(&created[..], [ShoppingListEvent::ShoppingListCreated { stops, .. }] if stops.len() == 1)
        );
        let done = list
            .when(ShoppingList::complete)
            .then_refused(DepotError::WrongStatus("pending", "completed"))
            .when(ShoppingList::initiate)
            .then([ShoppingListEvent::ShoppingListInitiated])
            .when(ShoppingList::activate)
            .then_refused(DepotError::WrongStatus("available", "active"))
            .when(|l| l.assign(bot))
            .then([assigned(bot)])
            .when(ShoppingList::activate)
            .then([ShoppingListEvent::ShoppingListActivated])
            .when(ShoppingList::cancel)
            .then_refused(DepotError::WrongStatus("active", "canceled"))
            .when(ShoppingList::complete)
            .then([ShoppingListEvent::ShoppingListCompleted])
            .when(ShoppingList::cancel)
            .then_refused(DepotError::WrongStatus("completed", "canceled"));
        assert_eq!(done.state().status, Some(ShoppingListStatus::Completed));
    }
}
