//! Given events, when a command, then events or an error.

use mallbots_platform::testing::given;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;

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

/// The store every product test adds to.
fn store() -> Store {
    given::<Store>([created()]).0
}

#[test]
fn a_store_is_created_with_a_trimmed_name() {
    given::<Store>([])
        .when(|s| s.create("  Waldorf Books ", "Upper level", None))
        .then([created()]);
}

#[test]
fn a_store_name_cannot_be_blank() {
    given::<Store>([])
        .when(|s| s.create("   ", "Upper level", None))
        .then_refused(StoresError::BlankStoreName);
    given::<Store>([created()])
        .when(|s| s.rebrand(""))
        .then_refused(StoresError::BlankStoreName);
}

#[test]
fn a_store_name_is_bounded() {
    let long = "x".repeat(101);
    given::<Store>([])
        .when(|s| s.create(&long, "Upper level", None))
        .then_refused(StoresError::TooLong {
            field: "store name",
            max: 100,
        });
}

#[test]
fn names_and_texts_refuse_hidden_characters() {
    for name in [
        "Books\0",
        "Books\u{1b}[2J",
        "Books\r\nInjected",
        "koob\u{202E}s",
    ] {
        given::<Store>([])
            .when(|s| s.create(name, "Upper level", None))
            .then_refused(StoresError::UnsafeText {
                field: "store name",
            });
    }
    let store = store();
    let mut product = new_product("1.00");
    product.description = "line one\nline two\tend";
    given::<Product>([])
        .when(|p| p.add(&store, product.clone()))
        .then_accepted();
    product.description = "hidden\u{200B}mark";
    given::<Product>([])
        .when(|p| p.add(&store, product))
        .then_refused(StoresError::UnsafeText {
            field: "description",
        });
}

#[test]
fn a_store_is_created_once() {
    given::<Store>([created()])
        .when(|s| s.create("Again", "Here", None))
        .then_refused(StoresError::StoreExists);
}

#[test]
fn participation_toggles_and_repeats_change_nothing() {
    let participating = given::<Store>([created()])
        .when(Store::disable_participation)
        .then([])
        .when(Store::enable_participation)
        .then([StoreEvent::StoreParticipationEnabled]);
    assert!(participating.state().participating);
    participating
        .when(Store::enable_participation)
        .then([])
        .when(Store::disable_participation)
        .then([StoreEvent::StoreParticipationDisabled]);
}

#[test]
fn unknown_stores_are_errors() {
    given::<Store>([])
        .when(Store::enable_participation)
        .then_refused(StoresError::StoreNotFound)
        .when(|s| s.rebrand("New"))
        .then_refused(StoresError::StoreNotFound);
    given::<Product>([])
        .when(|p| p.add(&Store::default(), new_product("1")))
        .then_refused(StoresError::StoreNotFound);
}

#[test]
fn a_product_needs_a_name_and_a_positive_price() {
    let store = store();
    let add = |product: NewProduct<'_>| given::<Product>([]).when(|p| p.add(&store, product));
    add(new_product("9.99")).then([added("9.99")]);
    let mut nameless = new_product("1");
    nameless.name = " ";
    add(nameless).then_refused(StoresError::BlankProductName);
    add(new_product("0")).then_refused(StoresError::NonPositivePrice);
    add(new_product("-1")).then_refused(StoresError::NonPositivePrice);
    add(new_product("1.001")).then_refused(StoresError::TooPrecise);
}

#[test]
fn prices_move_by_positive_deltas_and_never_to_zero() {
    let cheaper = given::<Product>([added("5.00")])
        .when(|p| p.increase_price(dec("0")))
        .then_refused(StoresError::NonPositiveDelta)
        .when(|p| p.decrease_price(dec("-1")))
        .then_refused(StoresError::NonPositiveDelta)
        .when(|p| p.decrease_price(dec("5")))
        .then_refused(StoresError::PriceWouldDropToZero)
        .when(|p| p.decrease_price(dec("4.99")))
        .then([ProductEvent::ProductPriceDecreased { delta: dec("4.99") }]);
    assert_eq!(cheaper.state().price, dec("0.01"));
    given::<Product>([added("5.00")])
        .when(|p| p.increase_price(dec("1.50")))
        .then([ProductEvent::ProductPriceIncreased { delta: dec("1.5") }]);
}

#[test]
fn prices_are_bounded_and_no_value_overflows() {
    let store = store();
    let huge = "79228162514264337593543950335";
    for price in ["1000000.01", huge] {
        given::<Product>([])
            .when(|p| p.add(&store, new_product(price)))
            .then_refused(StoresError::PriceTooHigh);
    }
    given::<Product>([])
        .when(|p| p.add(&store, new_product("1000000.00")))
        .then_accepted();
    given::<Product>([added("999999.00")])
        .when(|p| p.increase_price(dec("1.01")))
        .then_refused(StoresError::PriceTooHigh)
        .when(|p| p.increase_price(dec(huge)))
        .then_refused(StoresError::DeltaTooHigh)
        .when(|p| p.decrease_price(dec(huge)))
        .then_refused(StoresError::DeltaTooHigh)
        .when(|p| p.increase_price(dec("1.00")))
        .then([ProductEvent::ProductPriceIncreased { delta: dec("1.00") }]);
    // Replaying events recorded under looser rules saturates, never panics.
    let replayed = given::<Product>([
        added("999999.00"),
        ProductEvent::ProductPriceIncreased { delta: dec(huge) },
        ProductEvent::ProductPriceIncreased { delta: dec(huge) },
    ]);
    assert_eq!(replayed.state().price, Decimal::MAX);
}

#[test]
fn removed_and_unknown_products_are_errors() {
    given::<Product>([added("1"), ProductEvent::ProductRemoved])
        .when(Product::remove)
        .then_refused(StoresError::ProductRemoved)
        .when(|p| p.rebrand("x", ""))
        .then_refused(StoresError::ProductRemoved)
        .when(|p| p.increase_price(dec("1")))
        .then_refused(StoresError::ProductRemoved);
    given::<Product>([])
        .when(Product::remove)
        .then_refused(StoresError::ProductNotFound)
        .when(|p| p.decrease_price(dec("1")))
        .then_refused(StoresError::ProductNotFound);
}

#[test]
fn a_product_is_rebranded_only_when_something_changes() {
    given::<Product>([added("1")])
        .when(|p| p.rebrand("Pen", ""))
        .then([])
        .when(|p| p.rebrand("Blue pen", "writes blue"))
        .then([ProductEvent::ProductRebranded {
            name: "Blue pen".into(),
            description: "writes blue".into(),
        }]);
}

#[test]
fn refusals_map_to_api_classes() {
    assert_eq!(StoresError::BlankStoreName.refusal(), Refusal::BadInput);
    assert_eq!(StoresError::StoreNotFound.refusal(), Refusal::NotFound);
    assert_eq!(StoresError::ProductRemoved.refusal(), Refusal::Conflict);
}
