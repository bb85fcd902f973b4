//! `tidings seed`: a demo catalog, users of each role and some orders, written through the
//! same services as the API (so every change leaves its events).

use anyhow::Context;
use uuid::Uuid;

use crate::domain::{Email, NewPassword, Role};
use crate::service::accounts::{self, Accounts, CurrentUser};
use crate::service::{Actor, orders, products};
use crate::store::orders::OrderStatus;
use crate::store::products::{NewProduct, ProductQuery};
use crate::store::users;

/// The demo users: email and role.
pub const USERS: [(&str, Role); 5] = [
    ("admin@example.com", Role::Admin),
    ("staff@example.com", Role::Staff),
    ("alice@example.com", Role::Customer),
    ("bob@example.com", Role::Customer),
    ("carol@example.com", Role::Customer),
];

/// The demo catalog: SKU, name, price in cents, stock, low-stock threshold.
const CATALOG: [(&str, &str, i64, i64, i64); 16] = [
    ("TEE-BLK-M", "Black Tee (M)", 1999, 40, 5),
    ("TEE-WHT-M", "White Tee (M)", 1999, 35, 5),
    ("HOOD-GRY-L", "Grey Hoodie (L)", 4999, 12, 3),
    ("CAP-NVY", "Navy Cap", 1499, 25, 5),
    ("MUG-CER", "Ceramic Mug", 1299, 60, 10),
    ("BTL-STL", "Steel Bottle", 2499, 18, 4),
    ("TOTE-CNV", "Canvas Tote", 1599, 30, 5),
    ("NOTE-A5", "A5 Notebook", 899, 80, 15),
    ("PEN-GEL", "Gel Pen (3 pack)", 499, 150, 20),
    ("STK-PCK", "Sticker Pack", 399, 200, 25),
    ("SOCK-STR", "Striped Socks", 999, 45, 8),
    ("BEAN-KNT", "Knit Beanie", 1899, 9, 3),
    ("UMB-CMP", "Compact Umbrella", 2999, 7, 2),
    ("KEY-LTH", "Leather Keyring", 1199, 22, 4),
    ("PST-A3", "A3 Poster", 1499, 15, 3),
    ("PIN-ENM", "Enamel Pin", 699, 3, 2),
];

/// What seeding did.
#[derive(Debug, Default)]
pub struct Seeded {
    pub users: usize,
    pub products: usize,
    pub orders: usize,
}

/// Seeds what is missing; running it again adds nothing twice.
pub async fn run(accounts: &Accounts, password: &str) -> anyhow::Result<Seeded> {
    let mut seeded = Seeded::default();
    let mut people = Vec::new();
    for (email, role) in USERS {
        let email = Email::parse(email).map_err(|e| anyhow::anyhow!("{email} {e}"))?;
        let user = match users::credentials_by_email(&accounts.db, &email).await? {
            Some(existing) => existing.user,
            None => {
                let password = NewPassword::parse(password.to_owned(), Some(&email))
                    .map_err(|e| anyhow::anyhow!("the password {e}"))?;
                seeded.users += 1;
                accounts::register(accounts, &email, &password, role)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            }
        };
        people.push(Actor {
            user: CurrentUser {
                id: user.id,
                email: user.email,
                role: user.role,
                token_version: user.token_version,
                expires_at: i64::MAX,
            },
            request_id: Some("seed".into()),
        });
    }
    let staff = people[1].clone();

    let existing = crate::store::products::list(
        &accounts.db,
        &ProductQuery {
            include_deleted: true,
            ..Default::default()
        },
        None,
        1000,
    )
    .await
    .context("could not read the catalog")?;
    let mut catalog: Vec<Uuid> = existing.iter().map(|p| p.id).collect();
    for (sku, name, unit_amount, stock, low_stock_threshold) in CATALOG {
        if existing.iter().any(|p| p.sku == sku) {
            continue;
        }
        let new = NewProduct {
            sku,
            name,
            description: "",
            unit_amount,
            currency: "EUR",
            stock,
            low_stock_threshold,
        };
        let product = products::create(&accounts.db, &staff, &new)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        catalog.push(product.id);
        seeded.products += 1;
    }

    // Orders only on a fresh seed, so that running it twice does not drain the stock.
    if seeded.products == CATALOG.len() {
        let book = orders::PriceBook::default();
        for (n, customer) in people[2..].iter().enumerate() {
            for k in 0..2 {
                let items = [
                    (catalog[(n * 3 + k) % catalog.len()], 1 + k as i64),
                    (catalog[(n * 5 + k + 7) % catalog.len()], 1),
                ];
                let placed = orders::place(&accounts.db, &book, customer, &items, None)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let orders::Placed::Created(order) = placed else {
                    continue;
                };
                seeded.orders += 1;
                for status in [OrderStatus::Paid, OrderStatus::Shipped].iter().take(n) {
                    orders::set_status(&accounts.db, &staff, order.id, *status)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
    }
    Ok(seeded)
}
