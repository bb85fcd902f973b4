//! Validated values: once parsed at the edge, the rest of the code trusts them.

pub mod device;
mod email;
mod password;
mod role;
mod sku;
pub mod text;

pub use email::Email;
pub use password::NewPassword;
pub use role::Role;
pub use sku::{Currency, Sku};
