//! Given events, when a command, then events or an error.

use mallbots_platform::aggregate::Aggregate;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;

fn given<A: Aggregate>(events: &[A::Event]) -> A {
    let mut state = A::default();
    for e in events {
        state.apply(e);
    }
    state
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn created() -> StoreEvent {
    StoreEvent::StoreCreated {
        name: "Waldorf Books".into(),
        location: "Upper level".into(),
        owner: None,
    }
}

fn added(price: &str) -> ProductEvent {
    ProductEvent::ProductAdded {
        store_id: Uuid::nil(),
        name: "Pen".into(),
        description: String::new(),
        sku: "P-1".into(),
        price: dec(price),
    }
}

fn new_product(price: &str) -> NewProduct<'static> {
    NewProduct {
        store_id: Uuid::nil(),
        name: "Pen",
        description: "",
        sku: "P-1",
        price: dec(price),
    }
}

#[test]
fn a_store_is_created_with_a_trimmed_name() {
    let events = Store::default()
        .create("  Waldorf Books ", "Upper level", None)
        .unwrap();
    assert_eq!(events, vec![created()]);
}

#[test]
fn a_store_name_cannot_be_blank() {
    assert_eq!(
        Store::default().create("   ", "Upper level", None),
        Err(StoresError::BlankStoreName)
    );
    let store: Store = given(&[created()]);
    assert_eq!(store.rebrand(""), Err(StoresError::BlankStoreName));
}

#[test]
fn a_store_name_is_bounded() {
    let long = "x".repeat(101);
    assert_eq!(
        Store::default().create(&long, "Upper level", None),
        Err(StoresError::TooLong {
            field: "store name",
            max: 100
        })
    );
}

#[test]
fn names_and_texts_refuse_hidden_characters() {
    for name in [
        "Books\0",
        "Books\u{1b}[2J",
        "Books\r\nInjected",
        "koob\u{202E}s",
    ] {
        assert_eq!(
            Store::default().create(name, "Upper level", None),
            Err(StoresError::UnsafeText {
                field: "store name"
            }),
            "{name:?}"
        );
    }
    let store: Store = given(&[created()]);
    let mut product = new_product("1.00");
    product.description = "line one\nline two\tend";
    assert!(Product::default().add(&store, product.clone()).is_ok());
    product.description = "hidden\u{200B}mark";
    assert_eq!(
        Product::default().add(&store, product),
        Err(StoresError::UnsafeText {
            field: "description"
        })
    );
}

#[test]
fn a_store_is_created_once() {
    let store: Store = given(&[created()]);
    assert_eq!(
        store.create("Again", "Here", None),
        Err(StoresError::StoreExists)
    );
}

#[test]
fn participation_toggles_and_repeats_change_nothing() {
    let store: Store = given(&[created()]);
    assert_eq!(
        store.enable_participation().unwrap(),
        vec![StoreEvent::StoreParticipationEnabled]
    );
    let participating: Store = given(&[created(), StoreEvent::StoreParticipationEnabled]);
    assert!(participating.participating);
    assert_eq!(participating.enable_participation().unwrap(), vec![]);
    assert_eq!(
        participating.disable_participation().unwrap(),
        vec![StoreEvent::StoreParticipationDisabled]
    );
    assert_eq!(store.disable_participation().unwrap(), vec![]);
}

#[test]
fn unknown_stores_are_errors() {
    let none = Store::default();
    assert_eq!(none.enable_participation(), Err(StoresError::StoreNotFound));
    assert_eq!(none.rebrand("New"), Err(StoresError::StoreNotFound));
    assert_eq!(
        Product::default().add(&none, new_product("1")),
        Err(StoresError::StoreNotFound)
    );
}

#[test]
fn a_product_needs_a_name_and_a_positive_price() {
    let store: Store = given(&[created()]);
    let product = Product::default();
    assert_eq!(
        product.add(&store, new_product("9.99")).unwrap(),
        vec![added("9.99")]
    );
    let mut nameless = new_product("1");
    nameless.name = " ";
    assert_eq!(
        product.add(&store, nameless),
        Err(StoresError::BlankProductName)
    );
    assert_eq!(
        product.add(&store, new_product("0")),
        Err(StoresError::NonPositivePrice)
    );
    assert_eq!(
        product.add(&store, new_product("-1")),
        Err(StoresError::NonPositivePrice)
    );
    assert_eq!(
        product.add(&store, new_product("1.001")),
        Err(StoresError::TooPrecise)
    );
}

#[test]
fn prices_move_by_positive_deltas_and_never_to_zero() {
    let product: Product = given(&[added("5.00")]);
    assert_eq!(
        product.increase_price(dec("1.50")).unwrap(),
        vec![ProductEvent::ProductPriceIncreased { delta: dec("1.5") }]
    );
    assert_eq!(
        product.increase_price(dec("0")),
        Err(StoresError::NonPositiveDelta)
    );
    assert_eq!(
        product.decrease_price(dec("-1")),
        Err(StoresError::NonPositiveDelta)
    );
    assert_eq!(
        product.decrease_price(dec("5")),
        Err(StoresError::PriceWouldDropToZero)
    );
    assert_eq!(
        product.decrease_price(dec("4.99")).unwrap(),
        vec![ProductEvent::ProductPriceDecreased { delta: dec("4.99") }]
    );
    let cheaper: Product = given(&[
        added("5.00"),
        ProductEvent::ProductPriceDecreased { delta: dec("4.99") },
    ]);
    assert_eq!(cheaper.price, dec("0.01"));
}

#[test]
fn prices_are_bounded_and_no_value_overflows() {
    let store: Store = given(&[created()]);
    let huge = "79228162514264337593543950335";
    for price in ["1000000.01", huge] {
        assert_eq!(
            Product::default().add(&store, new_product(price)),
            Err(StoresError::PriceTooHigh),
            "{price}"
        );
    }
    assert!(
        Product::default()
            .add(&store, new_product("1000000.00"))
            .is_ok()
    );
    let product: Product = given(&[added("999999.00")]);
    assert_eq!(
        product.increase_price(dec("1.01")),
        Err(StoresError::PriceTooHigh)
    );
    assert_eq!(
        product.increase_price(dec(huge)),
        Err(StoresError::DeltaTooHigh)
    );
    assert_eq!(
        product.decrease_price(dec(huge)),
        Err(StoresError::DeltaTooHigh)
    );
    assert!(product.increase_price(dec("1.00")).is_ok());
    // Replaying events recorded under looser rules saturates, never panics.
    let replayed: Product = given(&[
        added("999999.00"),
        ProductEvent::ProductPriceIncreased { delta: dec(huge) },
        ProductEvent::ProductPriceIncreased { delta: dec(huge) },
    ]);
    assert_eq!(replayed.price, Decimal::MAX);
}

#[test]
fn removed_and_unknown_products_are_errors() {
    let removed: Product = given(&[added("1"), ProductEvent::ProductRemoved]);
    assert_eq!(removed.remove(), Err(StoresError::ProductRemoved));
    assert_eq!(removed.rebrand("x", ""), Err(StoresError::ProductRemoved));
    assert_eq!(
        removed.increase_price(dec("1")),
        Err(StoresError::ProductRemoved)
    );
    let unknown = Product::default();
    assert_eq!(unknown.remove(), Err(StoresError::ProductNotFound));
    assert_eq!(
        unknown.decrease_price(dec("1")),
        Err(StoresError::ProductNotFound)
    );
}

#[test]
fn a_product_is_rebranded_only_when_something_changes() {
    let product: Product = given(&[added("1")]);
    assert_eq!(product.rebrand("Pen", "").unwrap(), vec![]);
    assert_eq!(
        product.rebrand("Blue pen", "writes blue").unwrap(),
        vec![ProductEvent::ProductRebranded {
            name: "Blue pen".into(),
            description: "writes blue".into()
        }]
    );
}

#[test]
fn refusals_map_to_api_classes() {
    assert_eq!(StoresError::BlankStoreName.refusal(), Refusal::BadInput);
    assert_eq!(StoresError::StoreNotFound.refusal(), Refusal::NotFound);
    assert_eq!(StoresError::ProductRemoved.refusal(), Refusal::Conflict);
}
