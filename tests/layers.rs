//! The layers written in `src/lib.rs` hold: every module imports only modules listed after it.
//! A new module must be placed in a layer; an upward import (the start of an import cycle) fails
//! here with the file that makes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The modules of the "# Layers" section of lib.rs's header, top to bottom, left to right.
fn layer_order(lib: &str) -> Vec<String> {
    let section: Vec<&str> = lib
        .lines()
        .skip_while(|l| l.trim() != "//! # Layers")
        .skip(1)
        .take_while(|l| !l.starts_with("//! # "))
        .filter(|l| l.trim_start_matches("//!").trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    let mut out = Vec::new();
    for line in section {
        // The modules are the backticked names after the colon.
        let Some((_, names)) = line.rsplit_once(": ") else { continue };
        out.extend(names.split('`').skip(1).step_by(2).map(str::to_string));
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            v.push(p);
        }
    }
    v
}

/// Top-level module of a source file (`src/ingest/parse.rs` is `ingest`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The crate's top-level modules a file names through `crate::` (in `use` lists too).
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find("};").or_else(|| list.find('}')).unwrap_or(list.len());
            for item in list[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if modules.contains(&name) {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if modules.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = Path::new(REPO).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order = layer_order(&lib);
    assert!(order.len() > 10, "lib.rs lists its layers under `//! # Layers`: {order:?}");
    let rank: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let declared: BTreeSet<String> =
        lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';').to_string()).collect();
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(declared, listed, "every `pub mod` of lib.rs is in exactly one layer of its header, and only those");

    let mut violations = Vec::new();
    for file in rust_files(&src) {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        for imported in imports(&text, &declared) {
            if imported != module && rank[imported.as_str()] <= rank[module.as_str()] {
                violations.push(format!(
                    "{}: `{module}` imports `{imported}`, which is not below it",
                    file.strip_prefix(REPO).unwrap().display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that go up a layer (move the code down, or the module up):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_use_lists_and_paths() {
    let modules: BTreeSet<String> = ["engine", "job", "store"].map(String::from).into();
    let text = "use crate::{engine::session, job::Job};\nfn f() { crate::store::encode_parquet(x); }\n// crate::nothing";
    assert_eq!(imports(text, &modules), modules);
    let lib = "//! # Layers\n//!\n//! 1. top: `a`\n//! 2. bottom: `b`, `c`\n//!\n//! # Other\n//! 3. not: `d`\n";
    assert_eq!(layer_order(lib), ["a", "b", "c"]);
}
