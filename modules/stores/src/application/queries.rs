//! The stores read side, as the gateway queries it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseConnection, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::infrastructure::read_model::{products, stores};
use mallbots_platform::PlatformError;
use mallbots_platform::views::Page;

#[derive(Clone, Debug, PartialEq)]
pub struct StoreRecord {
    pub id: Uuid,
    pub name: String,
    pub location: String,
    pub participating: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProductRecord {
    pub id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price: Decimal,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct StoresQueries {
    db: DatabaseConnection,
}

fn corrupt(what: &str, value: &str) -> PlatformError {
    PlatformError::Decode {
        what: format!("stored {what}"),
        reason: format!("{value:?} is not valid"),
    }
}

fn uuid(value: &str) -> Result<Uuid, PlatformError> {
    Uuid::parse_str(value).map_err(|_| corrupt("id", value))
}

fn store_record(row: stores::Model) -> Result<StoreRecord, PlatformError> {
    Ok(StoreRecord {
        id: uuid(&row.id)?,
        name: row.name,
        location: row.location,
        participating: row.participating,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn product_record(row: products::Model) -> Result<ProductRecord, PlatformError> {
    Ok(ProductRecord {
        id: uuid(&row.id)?,
        store_id: uuid(&row.store_id)?,
        price: row
            .price
            .parse::<Decimal>()
            .map_err(|_| corrupt("price", &row.price))?,
        name: row.name,
        description: row.description,
        sku: row.sku,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The first `first` of `rows` (fetched one over, to tell whether there is
/// a next page), each with its id.
fn page<R, T>(
    mut rows: Vec<R>,
    first: u64,
    convert: impl Fn(R) -> Result<(Uuid, T), PlatformError>,
) -> Result<Page<T>, PlatformError> {
    let has_next = rows.len() as u64 > first;
    rows.truncate(first as usize);
    Ok(Page {
        items: rows.into_iter().map(convert).collect::<Result<_, _>>()?,
        has_next,
    })
}

impl StoresQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        StoresQueries { db }
    }

    pub async fn store(&self, id: Uuid) -> Result<Option<StoreRecord>, PlatformError> {
        stores::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(store_record)
            .transpose()
    }

    /// Stores after `after` (exclusive), optionally only those (not) participating.
    pub async fn stores(
        &self,
        participating: Option<bool>,
        first: u64,
        after: Option<Uuid>,
    ) -> Result<Page<StoreRecord>, PlatformError> {
        let mut query = stores::Entity::find().order_by_asc(stores::Column::Id);
        if let Some(p) = participating {
            query = query.filter(stores::Column::Participating.eq(p));
        }
        if let Some(after) = after {
            query = query.filter(stores::Column::Id.gt(after.to_string()));
        }
        let rows = query.limit(first + 1).all(&self.db).await?;
        page(rows, first, |row| store_record(row).map(|s| (s.id, s)))
    }

    /// The ids of the stores `owner` owns.
    pub async fn owned_by(&self, owner: Uuid) -> Result<Vec<Uuid>, PlatformError> {
        let ids: Vec<String> = stores::Entity::find()
            .select_only()
            .column(stores::Column::Id)
            .filter(stores::Column::OwnerId.eq(owner.to_string()))
            .into_tuple()
            .all(&self.db)
            .await?;
        ids.iter().map(|id| uuid(id)).collect()
    }

    pub async fn product(&self, id: Uuid) -> Result<Option<ProductRecord>, PlatformError> {
        products::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(product_record)
            .transpose()
    }

    /// A store's live products after `after` (exclusive).
    pub async fn catalog(
        &self,
        store_id: Uuid,
        first: u64,
        after: Option<Uuid>,
    ) -> Result<Page<ProductRecord>, PlatformError> {
        let mut query = products::Entity::find()
            .filter(products::Column::StoreId.eq(store_id.to_string()))
            .order_by_asc(products::Column::Id);
        if let Some(after) = after {
            query = query.filter(products::Column::Id.gt(after.to_string()));
        }
        let rows = query.limit(first + 1).all(&self.db).await?;
        page(rows, first, |row| product_record(row).map(|p| (p.id, p)))
    }
}
