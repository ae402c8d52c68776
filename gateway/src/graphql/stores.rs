//! The stores part of the API: queries from the stores read model, mutations
//! as commands over the broker, and `catalogChanged` from the live feed.

use super::money::Money;
use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, InputObject, Object, Result, Subscription};
use futures_util::Stream;
use mallbots_contracts::stores as msg;
use mallbots_contracts::{Affected, ErrorCode, Message, Role};
use mallbots_stores::{ProductRecord, StoreRecord};
use uuid::Uuid;

use super::authz;
use super::dispatch::{id_for, parse_id, send, state};
use super::errors::{ApiError, read_back};
use super::follow::{Audience, follow};
use super::pagination;
use crate::live::{About, LiveChange, Route};
use mallbots_contracts::search::{ChangeBody, TOPIC_CATALOG};

pub struct Store(StoreRecord);

#[Object]
impl Store {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn location(&self) -> &str {
        &self.0.location
    }
    /// Whether the store takes orders in the mall.
    async fn participating(&self) -> bool {
        self.0.participating
    }
    /// The store's products, in the order they were added.
    #[graphql(complexity = "pagination::cost(first, child_complexity)")]
    async fn catalog(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Product, EmptyFields, EmptyFields>> {
        Ok(catalog_page(ctx, self.0.id, first, after).await?)
    }
}

pub struct Product(ProductRecord);

#[Object]
impl Product {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn store_id(&self) -> ID {
        ID(self.0.store_id.to_string())
    }
    async fn store(&self, ctx: &Context<'_>) -> Result<Option<Store>> {
        let app = state(ctx)?;
        Ok(app
            .queries
            .stores
            .store(self.0.store_id)
            .await
            .map_err(ApiError::from)?
            .map(Store))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    async fn price(&self) -> Money {
        Money(self.0.price)
    }
}

async fn catalog_page(
    ctx: &Context<'_>,
    store_id: Uuid,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, Product, EmptyFields, EmptyFields>, ApiError> {
    let stores = &state(ctx)?.queries.stores;
    let fetch = |n, after| stores.catalog(store_id, n, after);
    pagination::page(ctx, first, after, fetch, Product).await
}

/// Store `id` as it is now (none: not known).
async fn find_store(ctx: &Context<'_>, id: Uuid) -> Result<Option<Store>, ApiError> {
    let found = state(ctx)?.queries.stores.store(id).await?;
    Ok(found.map(Store))
}

/// Product `id` as it is now (none: not known, or removed).
async fn find_product(ctx: &Context<'_>, id: Uuid) -> Result<Option<Product>, ApiError> {
    let found = state(ctx)?.queries.stores.product(id).await?;
    Ok(found.map(Product))
}

#[derive(Default)]
pub struct StoresQuery;

#[Object]
impl StoresQuery {
    async fn store(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Store>> {
        let id = parse_id(&id, "id")?;
        Ok(find_store(ctx, id).await?)
    }

    /// The mall's stores, optionally only those (not) participating.
    #[graphql(complexity = "pagination::cost(first, child_complexity)")]
    async fn stores(
        &self,
        ctx: &Context<'_>,
        participating: Option<bool>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Store, EmptyFields, EmptyFields>> {
        let stores = &state(ctx)?.queries.stores;
        let fetch = |n, after| stores.stores(participating, n, after);
        Ok(pagination::page(ctx, first, after, fetch, Store).await?)
    }

    async fn product(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Product>> {
        let id = parse_id(&id, "id")?;
        Ok(find_product(ctx, id).await?)
    }

    /// A store's products.
    #[graphql(complexity = "pagination::cost(first, child_complexity)")]
    async fn catalog(
        &self,
        ctx: &Context<'_>,
        store_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Product, EmptyFields, EmptyFields>> {
        let store_id = parse_id(&store_id, "storeId")?;
        Ok(catalog_page(ctx, store_id, first, after).await?)
    }
}

#[derive(InputObject)]
pub struct CreateStoreInput {
    pub name: String,
    pub location: String,
}

#[derive(InputObject)]
pub struct AddProductInput {
    pub store_id: ID,
    pub name: String,
    #[graphql(default)]
    pub description: String,
    #[graphql(default)]
    pub sku: String,
    pub price: Money,
}

/// The result of a store mutation.
pub struct StorePayload {
    id: Uuid,
    token: String,
}

#[Object]
impl StorePayload {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    /// The store as it is now.
    async fn store(&self, ctx: &Context<'_>) -> Result<Option<Store>> {
        Ok(find_store(ctx, self.id).await.map_err(read_back)?)
    }
    /// Send as header `consistency-token` to read this write.
    async fn consistency_token(&self) -> &str {
        &self.token
    }
}

/// The result of a product mutation.
pub struct ProductPayload {
    id: Uuid,
    store_id: Option<Uuid>,
    token: String,
}

#[Object]
impl ProductPayload {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    async fn store_id(&self) -> Option<ID> {
        self.store_id.map(|id| ID(id.to_string()))
    }
    /// The product as it is now (null once removed).
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>> {
        Ok(find_product(ctx, self.id).await.map_err(read_back)?)
    }
    /// Send as header `consistency-token` to read this write.
    async fn consistency_token(&self) -> &str {
        &self.token
    }
}

async fn store_command<M: Message>(
    ctx: &Context<'_>,
    id: Uuid,
    command: M,
) -> Result<StorePayload> {
    // Store owners (and operators); the stores module checks whose store.
    authz::require(ctx, &[Role::StoreOwner])?;
    let sent = send(ctx, command).await?;
    Ok(StorePayload {
        id,
        token: sent.token,
    })
}

async fn product_command<M: Message>(
    ctx: &Context<'_>,
    id: Uuid,
    command: M,
) -> Result<ProductPayload> {
    authz::require(ctx, &[Role::StoreOwner])?;
    let sent = send(ctx, command).await?;
    Ok(ProductPayload {
        id,
        store_id: match sent.result {
            Affected::Product { store_id, .. } => Some(store_id),
            _ => None,
        },
        token: sent.token,
    })
}

#[derive(Default)]
pub struct StoresMutation;

#[Object]
impl StoresMutation {
    async fn create_store(
        &self,
        ctx: &Context<'_>,
        input: CreateStoreInput,
    ) -> Result<StorePayload> {
        let store_id = id_for(ctx, "store");
        let command = msg::CreateStore {
            store_id,
            name: input.name,
            location: input.location,
        };
        store_command(ctx, store_id, command).await
    }

    async fn enable_participation(&self, ctx: &Context<'_>, store_id: ID) -> Result<StorePayload> {
        let store_id = parse_id(&store_id, "storeId")?;
        store_command(ctx, store_id, msg::EnableParticipation { store_id }).await
    }

    async fn disable_participation(&self, ctx: &Context<'_>, store_id: ID) -> Result<StorePayload> {
        let store_id = parse_id(&store_id, "storeId")?;
        store_command(ctx, store_id, msg::DisableParticipation { store_id }).await
    }

    async fn rebrand_store(
        &self,
        ctx: &Context<'_>,
        store_id: ID,
        name: String,
    ) -> Result<StorePayload> {
        let store_id = parse_id(&store_id, "storeId")?;
        store_command(ctx, store_id, msg::RebrandStore { store_id, name }).await
    }

    async fn add_product(
        &self,
        ctx: &Context<'_>,
        input: AddProductInput,
    ) -> Result<ProductPayload> {
        let store_id = parse_id(&input.store_id, "storeId")?;
        let product_id = id_for(ctx, "product");
        let command = msg::AddProduct {
            product_id,
            store_id,
            name: input.name,
            description: input.description,
            sku: input.sku,
            price: input.price.0,
        };
        product_command(ctx, product_id, command).await
    }

    async fn rebrand_product(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        name: String,
        description: String,
    ) -> Result<ProductPayload> {
        let product_id = parse_id(&product_id, "productId")?;
        let command = msg::RebrandProduct {
            product_id,
            name,
            description,
        };
        product_command(ctx, product_id, command).await
    }

    async fn increase_product_price(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        delta: Money,
    ) -> Result<ProductPayload> {
        let product_id = parse_id(&product_id, "productId")?;
        product_command(
            ctx,
            product_id,
            msg::IncreaseProductPrice {
                product_id,
                delta: delta.0,
            },
        )
        .await
    }

    async fn decrease_product_price(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        delta: Money,
    ) -> Result<ProductPayload> {
        let product_id = parse_id(&product_id, "productId")?;
        product_command(
            ctx,
            product_id,
            msg::DecreaseProductPrice {
                product_id,
                delta: delta.0,
            },
        )
        .await
    }

    async fn remove_product(&self, ctx: &Context<'_>, product_id: ID) -> Result<ProductPayload> {
        let product_id = parse_id(&product_id, "productId")?;
        product_command(ctx, product_id, msg::RemoveProduct { product_id }).await
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum CatalogChangeKind {
    Added,
    Rebranded,
    PriceIncreased,
    PriceDecreased,
    Removed,
}

/// A change to a store's catalog, with the product as it is after it.
pub struct CatalogChange {
    cursor: String,
    kind: CatalogChangeKind,
    product: ProductRecord,
}

#[Object]
impl CatalogChange {
    /// Pass back as `after` to resume right after this change.
    async fn cursor(&self) -> &str {
        &self.cursor
    }
    async fn kind(&self) -> CatalogChangeKind {
        self.kind
    }
    async fn product(&self) -> Product {
        Product(self.product.clone())
    }
}

fn record(view: msg::ProductView) -> ProductRecord {
    ProductRecord {
        id: view.product_id,
        store_id: view.store_id,
        name: view.name,
        description: view.description,
        sku: view.sku,
        price: view.price,
        created_at: view.occurred_at,
        updated_at: view.occurred_at,
    }
}

/// The catalog change a logged change is, when it is one of `store_id`'s.
fn catalog_change(change: &LiveChange, body: &ChangeBody, store_id: &str) -> Option<CatalogChange> {
    use mallbots_contracts::search::CatalogChangeKind as Change;
    let ChangeBody::Catalog(catalog) = body else {
        return None;
    };
    if change.key != store_id {
        return None;
    }
    let kind = match catalog.change {
        Change::ProductAdded => CatalogChangeKind::Added,
        Change::ProductRebranded => CatalogChangeKind::Rebranded,
        Change::ProductPriceIncreased => CatalogChangeKind::PriceIncreased,
        Change::ProductPriceDecreased => CatalogChangeKind::PriceDecreased,
        Change::ProductRemoved => CatalogChangeKind::Removed,
    };
    Some(CatalogChange {
        cursor: change.position.to_string(),
        kind,
        product: record(catalog.product.clone()),
    })
}

#[derive(Default)]
pub struct StoresSubscription;

#[Subscription]
impl StoresSubscription {
    /// Every product added, rebranded, repriced or removed in the store;
    /// with `after`, first every such change since that cursor.
    async fn catalog_changed(
        &self,
        ctx: &Context<'_>,
        store_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<CatalogChange>> + use<>> {
        let id = parse_id(&store_id, "storeId")?;
        // Stores are never removed, and one is in its read model once its
        // creation is answered: a catalog nobody can make would never
        // deliver anything.
        if find_store(ctx, id).await?.is_none() {
            let missing = ApiError::new(ErrorCode::NotFound, "the store was not found");
            return Err(missing.into());
        }
        let store_id = id.to_string();
        let route = Route {
            topic: TOPIC_CATALOG,
            about: About::Key(store_id.clone()),
        };
        Ok(follow(
            ctx,
            "catalogChanged",
            route,
            after,
            // A catalog is public: the same whoever watches it.
            Audience::Anyone,
            move |change, body| catalog_change(change, body, &store_id),
        )?)
    }
}
