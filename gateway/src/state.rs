//! What the gateway's request handlers and resolvers share: built at
//! start-up (`app`), which depends on it, never the other way round.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use mallbots_baskets::BasketsQueries;
use mallbots_cosec::CosecQueries;
use mallbots_customers::CustomersQueries;
use mallbots_depot::DepotQueries;
use mallbots_notifications::NotificationsQueries;
use mallbots_ordering::OrderingQueries;
use mallbots_payments::PaymentsQueries;
use mallbots_platform::commands::CommandBus;
use mallbots_platform::{Broker, Shutdown};
use mallbots_search::SearchQueries;
use mallbots_stores::StoresQueries;
use sea_orm::DatabaseConnection;

use crate::config::Settings;
use crate::consistency::Readers;
use crate::live::LiveFeed;
use crate::metrics::Metrics;

/// Change-log topics kept whatever their age: the archive of integration
/// events that `mallbots rebuild` replays.
pub const ARCHIVE: &[&str] = &[mallbots_contracts::search::TOPIC_EVENT];

/// Every module's read side, as the gateway queries it.
#[derive(Clone)]
pub struct Queries {
    pub stores: StoresQueries,
    pub customers: CustomersQueries,
    pub baskets: BasketsQueries,
    pub payments: PaymentsQueries,
    pub ordering: OrderingQueries,
    pub depot: DepotQueries,
    pub cosec: CosecQueries,
    pub search: SearchQueries,
    pub notifications: NotificationsQueries,
}

/// What every request handler and resolver can reach.
#[derive(Clone)]
pub struct AppState {
    pub bus: CommandBus,
    pub queries: Queries,
    pub live: LiveFeed,
    pub metrics: Arc<Metrics>,
    pub broker: Arc<dyn Broker>,
    /// Every module's database, by module name.
    pub databases: Vec<(&'static str, DatabaseConnection)>,
    /// Which read models follow which module's events (read-your-writes).
    pub readers: Arc<Readers>,
    pub settings: Arc<Settings>,
    /// Verifies bearer tokens (or lets everyone in, when open).
    pub auth: Arc<crate::identity::Auth>,
    /// Fires when the gateway stops serving: subscriptions end with their
    /// cursors, websockets close.
    pub stopping: Shutdown,
    /// Set from the first moment of a shutdown: `/readyz` says 503.
    pub draining: Arc<AtomicBool>,
}
