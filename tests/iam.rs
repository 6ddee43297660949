//! The task role grants what the code calls, nothing more: every AWS SDK operation and every
//! object-store call in `src/` is in `aws::OPERATIONS`, and every entry there is still called;
//! the exported policy grants exactly those actions, none with a wildcard; the README's IAM
//! section lists exactly them; and the exported stack passes `cfn-lint`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{REPO, text};
use runner::aws::OPERATIONS;
use serde_json::Value;

/// Every `.rs` file under src/, whitespace removed (so chains split over lines read as one).
fn sources() -> Vec<(String, String)> {
    common::walk(&Path::new(REPO).join("src"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p.display().to_string(), t.split_whitespace().collect::<String>())
        })
        .collect()
}

fn ident_at(s: &str) -> String {
    s.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect()
}

/// The AWS SDK operations the code sends: `client.<operation>()` ... `.send()`.
fn sdk_calls() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (_, src) in sources() {
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".send()") {
            let before = &rest[..i];
            let start = before.rfind([';', '{', '}']).map_or(0, |j| j + 1);
            let chain = &before[start..];
            if let Some(k) = chain.rfind("client.") {
                let op = ident_at(&chain[k + "client.".len()..]);
                if chain[k + "client.".len() + op.len()..].starts_with("()") {
                    found.insert(op);
                }
            }
            rest = &rest[i + ".send()".len()..];
        }
    }
    found
}

/// The object-store methods the code calls on a store (the counting wrapper and the file cache
/// only forward; the cache's prefetch is a `get`, which the code calls elsewhere too).
fn store_calls() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (file, src) in sources() {
        if file.ends_with("store/counting.rs") || file.ends_with("store/ranges.rs") {
            continue;
        }
        for (i, _) in src.match_indices("store.") {
            let m = ident_at(&src[i + "store.".len()..]);
            let called = src[i + "store.".len() + m.len()..].starts_with('(');
            if called && !["clone", "child", "url", "root", "join"].contains(&m.as_str()) && !m.is_empty() {
                found.insert(format!("store.{m}"));
            }
        }
    }
    found
}

#[test]
fn the_operations_list_is_exactly_what_the_code_calls() {
    let listed: BTreeSet<String> =
        OPERATIONS.iter().map(|o| o.call.to_string()).filter(|c| !c.starts_with("store.") && c.contains('_')).collect();
    assert_eq!(sdk_calls(), listed, "SDK operations in src/ against aws::OPERATIONS");
    let stores: BTreeSet<String> =
        OPERATIONS.iter().filter(|o| o.call.starts_with("store.")).map(|o| o.call.to_string()).collect();
    assert_eq!(store_calls(), stores, "object-store calls in src/ against aws::OPERATIONS");
    // The signed API Gateway call is an HTTP request, not an SDK operation.
    assert!(sources().iter().any(|(f, s)| f.contains("score") && s.contains("\"execute-api\"")));
    // Sanity: the scan sees the calls it must see.
    assert!(sdk_calls().contains("batch_create_partition") && sdk_calls().contains("invoke_endpoint"));
}

/// Every action granted anywhere in `v`.
fn actions(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "Action" {
                    for a in x.as_array().cloned().unwrap_or_else(|| vec![x.clone()]) {
                        out.insert(a.as_str().unwrap().to_string());
                    }
                } else {
                    actions(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| actions(x, out)),
        _ => {}
    }
}

#[test]
fn the_policy_and_the_readme_grant_exactly_those_actions() {
    let wanted: BTreeSet<String> = OPERATIONS.iter().map(|o| o.action.to_string()).collect();
    let policy = runner::schedule::deploy::task_policy(&["bigdatajobs".into(), "companies".into()]);
    let mut granted = BTreeSet::new();
    actions(&policy, &mut granted);
    assert_eq!(granted, wanted, "the task role's policy");

    // The committed stack: the task role's policy is that one, and no action anywhere is a wildcard.
    let stack: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(REPO).join("scheduler/export/cloudformation.json")).unwrap())
            .unwrap();
    let role = &stack["Resources"]["RunnerTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"];
    let mut in_stack = BTreeSet::new();
    actions(role, &mut in_stack);
    assert_eq!(in_stack, wanted);
    let mut all = BTreeSet::new();
    actions(&stack, &mut all);
    for a in &all {
        assert!(!a.contains('*'), "wildcard action {a}");
    }

    // The README's IAM section names exactly the task role's actions.
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let start = readme.find("### IAM").expect("a README section `### IAM`");
    let section = &readme[start..readme[start + 4..].find("\n#").map_or(readme.len(), |j| start + 4 + j)];
    let named: BTreeSet<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            t.split_once(':').is_some_and(|(s, a)| {
                !s.is_empty()
                    && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && a.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            })
        })
        .map(String::from)
        .collect();
    assert_eq!(named, wanted, "README ### IAM against aws::OPERATIONS");
}

#[test]
fn the_exported_stack_passes_cfn_lint() {
    let py = common::python_with(&["cfnlint"]);
    let lint = Command::new(&py)
        .args(["-c", "import sys; from cfnlint.runner import main; sys.argv = ['cfn-lint'] + sys.argv[1:]; sys.exit(main())"])
        .arg(Path::new(REPO).join("scheduler/export/cloudformation.json"))
        .output()
        .unwrap();
    assert!(lint.status.success(), "cfn-lint: {}{}", text(&lint.stdout), text(&lint.stderr));
}
