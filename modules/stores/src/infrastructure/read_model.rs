//! The stores read model: one row per store and per live product, written in
//! the same transaction as the events (so it is never behind them).

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait};
use uuid::Uuid;

use crate::domain::{Product, Store};

pub(crate) mod stores {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "stores")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub location: String,
        pub participating: bool,
        pub owner_id: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod products {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "products")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub store_id: String,
        pub name: String,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        pub sku: String,
        /// Exact decimal as text.
        pub price: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) async fn save_store<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    store: &Store,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = stores::ActiveModel {
        id: Set(id.to_string()),
        name: Set(store.name.clone()),
        location: Set(store.location.clone()),
        participating: Set(store.participating),
        owner_id: Set(store.owner.map(|o| o.to_string())),
        created_at: Set(at),
        updated_at: Set(at),
    };
    stores::Entity::insert(row)
        .on_conflict(
            OnConflict::column(stores::Column::Id)
                .update_columns([
                    stores::Column::Name,
                    stores::Column::Location,
                    stores::Column::Participating,
                    stores::Column::OwnerId,
                    stores::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(conn)
        .await?;
    Ok(())
}

pub(crate) async fn save_product<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    product: &Product,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    if product.removed {
        products::Entity::delete_by_id(id.to_string())
            .exec(conn)
            .await?;
        return Ok(());
    }
    let row = products::ActiveModel {
        id: Set(id.to_string()),
        store_id: Set(product.store_id.to_string()),
        name: Set(product.name.clone()),
        description: Set(product.description.clone()),
        sku: Set(product.sku.clone()),
        price: Set(product.price.to_string()),
        created_at: Set(at),
        updated_at: Set(at),
    };
    products::Entity::insert(row)
        .on_conflict(
            OnConflict::column(products::Column::Id)
                .update_columns([
                    products::Column::Name,
                    products::Column::Description,
                    products::Column::Sku,
                    products::Column::Price,
                    products::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(conn)
        .await?;
    Ok(())
}
