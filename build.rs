// The migrations are embedded by `sqlx::migrate!`; rebuild when they change.
//
// It also decides, when the integration tests are built, which of them can run here, so
// that a test that cannot run is reported as ignored, with the reason, instead of passing
// without having run: the PostgreSQL tests need `TEST_DATABASE_URL`, the browser tests
// Debian's Chromium. `TIDINGS_TEST_REQUIRE_POSTGRES` and `TIDINGS_TEST_REQUIRE_BROWSER`
// (as CI sets them) make a missing one an error instead.
use std::path::Path;

const CHROMIUM: &str = "/usr/bin/chromium";

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo::rustc-check-cfg=cfg(tidings_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(tidings_no_browser)");
    for var in [
        "TEST_DATABASE_URL",
        "TIDINGS_TEST_REQUIRE_POSTGRES",
        "TIDINGS_TEST_REQUIRE_BROWSER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // The folder, not the file: a file that is missing would rerun this on every build.
    println!("cargo:rerun-if-changed=/usr/bin");

    let postgres = std::env::var("TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty());
    if !postgres {
        assert!(
            std::env::var_os("TIDINGS_TEST_REQUIRE_POSTGRES").is_none(),
            "TIDINGS_TEST_REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not"
        );
        println!("cargo::rustc-cfg=tidings_no_postgres");
    }
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("TIDINGS_TEST_REQUIRE_BROWSER").is_none(),
            "TIDINGS_TEST_REQUIRE_BROWSER is set but {CHROMIUM} is missing"
        );
        println!("cargo::rustc-cfg=tidings_no_browser");
    }
}
