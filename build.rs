// The migrations are embedded by `sqlx::migrate!`; rebuild when they change.
//
// The dashboard's files (web/app/) and the SDK's (clients/js/src/, served at /app/sdk/) are
// compiled into the binary: this writes a table of them, each with its content type and an
// `include_bytes!`, to `$OUT_DIR/web_assets.rs` (see src/api/dashboard.rs), and reruns when a file in
// either folder is added, changed or removed.
//
// It also decides, when the integration tests are built, which of them can run here, so
// that a test that cannot run is reported as ignored, with the reason, instead of passing
// without having run: the PostgreSQL tests need `TEST_DATABASE_URL`, the browser tests
// Debian's Chromium, the proxy tests Debian's nginx. `TIDINGS_TEST_REQUIRE_POSTGRES`,
// `TIDINGS_TEST_REQUIRE_BROWSER` and `TIDINGS_TEST_REQUIRE_NGINX` (as CI sets them) make a
// missing one an error instead.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const CHROMIUM: &str = "/usr/bin/chromium";
const NGINX: &str = "/usr/sbin/nginx";

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    embed_web_assets();
    println!("cargo::rustc-check-cfg=cfg(tidings_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(tidings_no_browser)");
    println!("cargo::rustc-check-cfg=cfg(tidings_no_nginx)");
    for var in [
        "TEST_DATABASE_URL",
        "TIDINGS_TEST_REQUIRE_POSTGRES",
        "TIDINGS_TEST_REQUIRE_BROWSER",
        "TIDINGS_TEST_REQUIRE_NGINX",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // The folders, not the files: a file that is missing would rerun this on every build.
    println!("cargo:rerun-if-changed=/usr/bin");
    println!("cargo:rerun-if-changed=/usr/sbin");

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
    if !Path::new(NGINX).exists() {
        assert!(
            std::env::var_os("TIDINGS_TEST_REQUIRE_NGINX").is_none(),
            "TIDINGS_TEST_REQUIRE_NGINX is set but {NGINX} is missing"
        );
        println!("cargo::rustc-cfg=tidings_no_nginx");
    }
}

/// The dashboard's folder, served at `/app/`.
const DASHBOARD: &str = "web/app";
/// The SDK's sources, served at `/app/sdk/`.
const SDK: &str = "clients/js/src";

/// Writes `$OUT_DIR/web_assets.rs`: `static ASSETS: &[Asset]`, every file to serve with
/// its URL path below `/app/`, its content type and its bytes. Every file of the
/// dashboard's folder is served (one of a type not in [`content_type`] fails the build);
/// of the SDK's, the JavaScript modules a browser imports (its `.d.ts` files are for tsc).
fn embed_web_assets() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // A folder: cargo scans it for any change, so an added or removed file reruns this.
    println!("cargo:rerun-if-changed={DASHBOARD}");
    println!("cargo:rerun-if-changed={SDK}");
    let mut files = Vec::new();
    collect(&root.join(DASHBOARD), "", &mut |_| true, &mut files);
    let sdk = root.join(SDK);
    assert!(
        sdk.join("index.js").is_file(),
        "the dashboard needs the SDK: {SDK}/index.js is missing"
    );
    collect(
        &sdk,
        "sdk/",
        &mut |name| name.ends_with(".js") || name.ends_with(".mjs"),
        &mut files,
    );
    files.sort();
    if let Some(pair) = files.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        panic!(
            "{} and {} would both be /app/{}",
            pair[0].1, pair[1].1, pair[0].0
        );
    }
    let mut out = String::from("static ASSETS: &[Asset] = &[\n");
    for (url, path) in files {
        let content_type = content_type(&url).unwrap_or_else(|| {
            panic!("{path}: no content type for this extension (build.rs, content_type)")
        });
        writeln!(
            out,
            "    Asset {{ path: {url:?}, content_type: {content_type:?}, bytes: include_bytes!({path:?}) }},"
        )
        .unwrap();
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out_dir.join("web_assets.rs"), out).expect("OUT_DIR is writable");
}

/// The `Content-Type` of a file served at `/app/`, by its extension.
fn content_type(path: &str) -> Option<&'static str> {
    let extension = path.rsplit_once('.')?.1;
    Some(match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "webmanifest" => "application/manifest+json",
        _ => return None,
    })
}

/// Every file under `dir` whose name `keep` accepts, as (URL path, file path); dot files
/// (editor droppings, `.DS_Store`) are left out.
fn collect(
    dir: &Path,
    prefix: &str,
    keep: &mut dyn FnMut(&str) -> bool,
    files: &mut Vec<(String, String)>,
) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("a readable folder");
        let name = entry.file_name().into_string().expect("UTF-8 file names");
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect(&path, &format!("{prefix}{name}/"), keep, files);
        } else if keep(&name) {
            let path = path.to_str().expect("a UTF-8 path").to_owned();
            files.push((format!("{prefix}{name}"), path));
        }
    }
}
