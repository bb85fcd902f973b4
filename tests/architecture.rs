//! The layers point one way: every module of `src/` may use the modules declared before it
//! in `src/lib.rs`, and none declared after it. The order in `lib.rs` is the one truth;
//! this test reads it, then every `crate::` path in `src/`, and names each that points up.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The top-level modules in the order `lib.rs` declares them: the layers, bottom first.
fn layers(src: &Path) -> Vec<String> {
    fs::read_to_string(src.join("lib.rs"))
        .expect("src/lib.rs")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_owned())
        .collect()
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The top-level modules a line of code names through `crate::`: `crate::store::Db`,
/// and each of `crate::{error, store::Db}`.
fn named_modules(code: &str) -> Vec<String> {
    let mut named = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // `$crate::` in a macro is the macro's own crate, which is the same thing.
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            named.extend(group.split(',').map(|item| leading_ident(item.trim())));
        } else {
            named.push(leading_ident(rest));
        }
    }
    named.retain(|name| !name.is_empty());
    named
}

fn leading_ident(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Each `crate::` path in `src/` that names a module above its own, as `file:line: text`.
fn upward_imports(src: &Path) -> Vec<String> {
    let order = layers(src);
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("a file under src/");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs"))
            .expect("a file name");
        // lib.rs declares the layers and main.rs sits above them all.
        let Some(&own) = rank.get(top) else { continue };
        let text = fs::read_to_string(&file).expect("a readable source file");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for module in named_modules(code) {
                match rank.get(module.as_str()) {
                    Some(&theirs) if theirs > own => found.push(format!(
                        "{}:{}: {top} uses {module}, a layer above it: {}",
                        relative.display(),
                        number + 1,
                        line.trim()
                    )),
                    Some(_) => {}
                    // Anything else at the crate root would be shared by every layer and
                    // belong to none: the root holds the layers and a few re-exports only.
                    None => found.push(format!(
                        "{}:{}: {top} uses crate::{module}, which is not a layer: {}",
                        relative.display(),
                        number + 1,
                        line.trim()
                    )),
                }
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = layers(&src);
    assert!(
        order.len() >= 10,
        "src/lib.rs should declare the layers as `pub mod` lines, found {order:?}"
    );
    let upward = upward_imports(&src);
    assert!(
        upward.is_empty(),
        "the layers, bottom first, are {}; these point up:\n{}",
        order.join(" < "),
        upward.join("\n")
    );
}

/// The layers that know nothing of HTTP: they name no status and take no request, so that
/// a command, a test or another edge (a queue consumer, push delivery) can call them.
const BELOW_HTTP: [&str; 7] = [
    "domain", "store", "events", "mail", "service", "push", "realtime",
];

#[test]
fn the_layers_below_http_know_nothing_of_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for layer in BELOW_HTTP {
        rust_files(&src.join(layer), &mut files);
    }
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("a readable source file");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if ["axum::", "hyper::", "StatusCode"]
                .iter()
                .any(|http| code.contains(http))
            {
                found.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(&src).unwrap().display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} should not speak HTTP (a service returns a ServiceError; http::problem maps it \
         to a status):\n{}",
        BELOW_HTTP.join(", "),
        found.join("\n")
    );
}

#[test]
fn the_reader_sees_crate_paths_in_every_form() {
    assert_eq!(named_modules("use crate::store::Db;"), ["store"]);
    assert_eq!(
        named_modules("use crate::{error::ApiError, store};"),
        ["error", "store"]
    );
    assert_eq!(
        named_modules("x = crate::net::server::serve(a, crate::http::AppState)"),
        ["net", "http"]
    );
    assert_eq!(named_modules("$crate::store::Tx::Postgres(c)"), ["store"]);
    assert!(named_modules("no path here").is_empty());
}
