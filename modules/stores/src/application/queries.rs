//! The stores read side, as the gateway queries it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseConnection, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::infrastructure::ModuleError;
use crate::infrastructure::read_model::{products, stores};

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

/// One page of a keyset-paginated list, in id order (ids are time-ordered
/// UUIDv7s, so this is creation order).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next: bool,
}

#[derive(Clone)]
pub struct StoresQueries {
    db: DatabaseConnection,
}

fn corrupt(what: &str, value: &str) -> ModuleError {
    ModuleError::Unexpected(format!("stored {what} {value:?} is not valid"))
}

fn uuid(value: &str) -> Result<Uuid, ModuleError> {
    Uuid::parse_str(value).map_err(|_| corrupt("id", value))
}

fn store_record(row: stores::Model) -> Result<StoreRecord, ModuleError> {
    Ok(StoreRecord {
        id: uuid(&row.id)?,
        name: row.name,
        location: row.location,
        participating: row.participating,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn product_record(row: products::Model) -> Result<ProductRecord, ModuleError> {
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

fn page<R, T>(
    mut rows: Vec<R>,
    first: u64,
    convert: impl Fn(R) -> Result<T, ModuleError>,
) -> Result<Page<T>, ModuleError> {
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

    pub async fn store(&self, id: Uuid) -> Result<Option<StoreRecord>, ModuleError> {
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
    ) -> Result<Page<StoreRecord>, ModuleError> {
        let mut query = stores::Entity::find().order_by_asc(stores::Column::Id);
        if let Some(p) = participating {
            query = query.filter(stores::Column::Participating.eq(p));
        }
        if let Some(after) = after {
            query = query.filter(stores::Column::Id.gt(after.to_string()));
        }
        let rows = query.limit(first + 1).all(&self.db).await?;
        page(rows, first, store_record)
    }

    /// The ids of the stores `owner` owns.
    pub async fn owned_by(&self, owner: Uuid) -> Result<Vec<Uuid>, ModuleError> {
        let ids: Vec<String> = stores::Entity::find()
            .select_only()
            .column(stores::Column::Id)
            .filter(stores::Column::OwnerId.eq(owner.to_string()))
            .into_tuple()
            .all(&self.db)
            .await?;
        ids.iter().map(|id| uuid(id)).collect()
    }

    pub async fn product(&self, id: Uuid) -> Result<Option<ProductRecord>, ModuleError> {
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
    ) -> Result<Page<ProductRecord>, ModuleError> {
        let mut query = products::Entity::find()
            .filter(products::Column::StoreId.eq(store_id.to_string()))
            .order_by_asc(products::Column::Id);
        if let Some(after) = after {
            query = query.filter(products::Column::Id.gt(after.to_string()));
        }
        let rows = query.limit(first + 1).all(&self.db).await?;
        page(rows, first, product_record)
    }
}
