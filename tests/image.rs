//! The container image, built and run here with podman: the runtime image made from the binary
//! these tests run (Dockerfile `--target prebuilt`) on a Debian bookworm base made by
//! mmdebstrap (no registry is reachable), then run as the exported task definition runs it (its
//! user, working folder and environment) against the AWS emulator on loopback: `--version`,
//! `validate`, `run --all` over s3:// with Glue, `status`, and `model serve` answering from the
//! container. Its tables equal those of a run of the same drops outside the container. And the
//! task definition is checked against the Dockerfile.
//!
//! `make test` installs podman, runc and mmdebstrap (Debian's packages). Where podman cannot run
//! containers at all, the container test says so and stops; the task-definition check runs
//! everywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::REPO;
use common::moto::{REGION, moto, unique};

/// This machine runs containers with Debian's runc (crun's `setrlimit` is refused here) and
/// within the limits the sandbox lets a container set.
const RUNTIME: &[&str] = &["--runtime", "runc"];
const LIMITS: &[&str] = &["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"];
const BASE: &str = "localhost/bookworm-base";

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(RUNTIME);
    c
}

fn run_ok(c: &mut Command, what: &str) -> String {
    let out = c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The base root file system: made once by mmdebstrap into the cache, imported when podman does
/// not have it.
fn ensure_base() {
    if podman().args(["image", "exists", BASE]).status().is_ok_and(|s| s.success()) {
        return;
    }
    let cache = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/runner/image");
    std::fs::create_dir_all(&cache).unwrap();
    let tar = cache.join("bookworm-base.tar");
    if !tar.exists() {
        let partial = cache.join("bookworm-base.tar.partial");
        run_ok(
            Command::new("mmdebstrap")
                // The format said, not guessed from the name (`.partial` would make a folder).
                .args(["--quiet", "--variant=minbase", "--format=tar", "--include=ca-certificates", "bookworm"])
                .arg(&partial),
            "mmdebstrap (make test installs it)",
        );
        std::fs::rename(&partial, &tar).unwrap();
    }
    run_ok(podman().args(["import"]).arg(&tar).arg(BASE), "podman import");
}

/// Why podman cannot run a container here, if it cannot.
fn podman_unusable() -> Option<String> {
    match Command::new("podman").arg("--version").output() {
        Err(e) => return Some(format!("podman is not installed ({e}); `make test` installs it with apt-get")),
        Ok(o) if !o.status.success() => return Some(format!("podman --version failed: {}", text(&o.stderr))),
        Ok(_) => {}
    }
    ensure_base();
    let out = podman().args(["run", "--rm"]).args(LIMITS).args([BASE, "true"]).output().unwrap();
    (!out.status.success()).then(|| format!("podman cannot run a container here: {}", text(&out.stderr)))
}

/// Builds the runtime image from the binary under test, in a build context of its own.
fn build_image(tag: &str) {
    let ctx = tempfile::tempdir().unwrap();
    for f in ["Dockerfile", "runner.toml", ".dockerignore"] {
        std::fs::copy(Path::new(REPO).join(f), ctx.path().join(f)).unwrap();
    }
    for d in ["jobs", "sql", "schemas", "scheduler", "data/model"] {
        copy_dir(&Path::new(REPO).join(d), &ctx.path().join(d));
    }
    std::fs::create_dir_all(ctx.path().join(".image")).unwrap();
    std::fs::copy(common::BIN, ctx.path().join(".image/runner")).unwrap();
    run_ok(
        podman()
            .arg("build")
            .args(LIMITS)
            .args(["--build-arg", &format!("RUNTIME_IMAGE={BASE}"), "--target", "prebuilt", "-t", tag])
            .arg(ctx.path()),
        "podman build",
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &dest) } else { std::fs::copy(&p, &dest).map(|_| ()).unwrap() }
    }
}

/// The exported task definition's container.
fn task_container() -> serde_json::Value {
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(REPO).join("scheduler/export/cloudformation.json")).unwrap()).unwrap();
    t["Resources"]["RunnerTaskDefinition"]["Properties"]["ContainerDefinitions"][0].clone()
}

/// The last value of `instruction` in the Dockerfile's stages.
fn dockerfile(instruction: &str) -> String {
    let text = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .next_back()
        .unwrap_or_else(|| panic!("the Dockerfile has no {instruction}"))
        .trim()
        .to_string()
}

#[test]
fn the_task_definition_runs_the_image_the_way_the_image_is_built() {
    let c = task_container();
    assert_eq!(c["Name"], "runner");
    let entrypoint: serde_json::Value = serde_json::from_str(&dockerfile("ENTRYPOINT")).unwrap();
    assert_eq!(c["EntryPoint"], entrypoint, "EntryPoint");
    assert_eq!(c["User"], dockerfile("USER"), "User");
    assert_eq!(c["WorkingDirectory"], dockerfile("WORKDIR"), "WorkingDirectory");
    // The image's user is the one the Dockerfile creates.
    let file = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    assert!(file.contains(&format!("--shell /usr/sbin/nologin {}", dockerfile("USER"))), "useradd ... {}", dockerfile("USER"));
    // Every variable the task sets is one the runner reads: the image's runner.toml with them
    // set (to values of the right shape) loads and takes them, and a misspelt one is refused.
    let names: Vec<String> =
        c["Environment"].as_array().unwrap().iter().map(|e| e["Name"].as_str().unwrap().to_string()).collect();
    assert!(names.iter().any(|n| n == "RUNNER__WAREHOUSE"), "{names:?}");
    let vars: Vec<(String, String)> =
        env_values(&names, "bucket", "db", "http://127.0.0.1:9").into_iter().filter(|(k, _)| k.starts_with("RUNNER__")).collect();
    let path = Path::new(REPO).join("runner.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    let cfg = runner::config::Config::from_parts(Some(path.clone()), &toml, &vars).unwrap();
    assert_eq!(cfg.warehouse, "s3://bucket/warehouse/");
    for stream in ["companies", "bigdatajobs"] {
        assert_eq!(cfg.source(stream).unwrap(), format!("s3://bucket/raw/{stream}/"), "{stream}");
    }
    let mut misspelt = vars.clone();
    misspelt.push(("RUNNER__CATALOG__DATABSE".into(), "db".into()));
    assert!(runner::config::Config::from_parts(Some(path), &toml, &misspelt).is_err());
}

/// Values for the task definition's variables (by name) pointing at `bucket` and database `db`.
fn env_values(names: &[String], bucket: &str, db: &str, endpoint: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let v = match n.as_str() {
                "RUNNER__WAREHOUSE" => format!("s3://{bucket}/warehouse"),
                "RUNNER__CATALOG__KIND" => "glue".into(),
                "RUNNER__CATALOG__DATABASE" => db.into(),
                "RUNNER__ATHENA__WORKGROUP" => "primary".into(),
                "AWS_REGION" => REGION.into(),
                s if s.starts_with("RUNNER__SOURCES__") && s.ends_with("__URL") => {
                    let stream = s.trim_start_matches("RUNNER__SOURCES__").trim_end_matches("__URL").to_ascii_lowercase();
                    format!("s3://{bucket}/raw/{stream}/")
                }
                other => panic!("the task definition sets {other}: give it a test value here"),
            };
            (n.clone(), v)
        })
        .collect();
    // What the task role and the VPC give a real task: credentials and the endpoint.
    out.extend(
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    out
}

#[tokio::test]
#[allow(clippy::disallowed_macros)] // the skip message, where podman cannot run
async fn the_image_runs_the_pipeline_on_s3_and_glue_as_the_task_definition_does() {
    if let Some(why) = podman_unusable() {
        eprintln!("skipped: {why}");
        return;
    }
    let tag = format!("localhost/runner-test:{}", uuid::Uuid::new_v4().simple());
    build_image(&tag);
    let _cleanup = Cleanup(tag.clone());
    let m = moto();
    let bucket = unique("runner-image");
    let db = unique("img").replace('-', "_");

    // The same drops in S3 and in a local folder.
    let tmp = tempfile::tempdir().unwrap();
    let drops = tmp.path().join("drops");
    let o = common::bin()
        .args(["--quiet", "simulate", "--out"])
        .arg(&drops)
        .args(["--tenants", "4", "--users-per-tenant", "3", "--days", "5", "--end-date", "2026-11-20", "--seed", "11"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    for stream in ["companies", "bigdatajobs"] {
        m.ops(&["upload", &bucket, &format!("raw/{stream}"), drops.join("raw").join(stream).to_str().unwrap()]);
    }

    // In the container, as the task definition runs it: the image's user and working folder,
    // the task's variables (values for the emulator), the host's loopback.
    let names: Vec<String> =
        task_container()["Environment"].as_array().unwrap().iter().map(|e| e["Name"].as_str().unwrap().to_string()).collect();
    let env = env_values(&names, &bucket, &db, &m.endpoint);
    let container = |args: &[&str]| {
        let mut c = podman();
        c.args(["run", "--rm", "--network", "host"]).args(LIMITS);
        for (k, v) in &env {
            c.args(["-e", &format!("{k}={v}")]);
        }
        c.arg(&tag).args(args);
        c
    };
    let whoami = run_ok(&mut container(&["--version"]), "runner --version in the container");
    assert!(whoami.starts_with("runner "), "{whoami}");
    let user = run_ok(podman().args(["run", "--rm"]).args(LIMITS).args(["--entrypoint", "id", &tag, "-un"]), "the image's user");
    assert_eq!(user.trim(), task_container()["User"].as_str().unwrap());
    run_ok(&mut container(&["--quiet", "validate"]), "runner validate in the container");
    run_ok(&mut container(&["--quiet", "run", "--all", "--at", "2026-11-20"]), "runner run --all in the container");
    let status = run_ok(&mut container(&["--quiet", "status", "--format", "json"]), "runner status in the container");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status.as_array().unwrap().iter().any(|j| j["job"] == "tenants" && j["last_status"] == "succeeded"), "{status}");

    // Outside the container, the same drops into a local warehouse.
    let local_cfg = common::local_config(tmp.path());
    run_ok(&mut common::cmd_in(tmp.path(), &local_cfg, &["run", "--all", "--at", "2026-11-20"]), "the run outside");
    for q in [
        "SELECT * FROM job_events ORDER BY event_id",
        "SELECT * FROM tenant_events ORDER BY event_id",
        "SELECT * FROM tenant_activity_daily ORDER BY dt, \"companyID\"",
        "SELECT * FROM tenants ORDER BY \"companyID\"",
        "SELECT \"companyID\", dt, score, churn, status, out_of_range FROM churn_scores ORDER BY \"companyID\", dt",
    ] {
        let inside = run_ok(&mut container(&["--quiet", "query", q, "--format", "csv"]), q);
        let outside = run_ok(&mut common::cmd_in(tmp.path(), &local_cfg, &["query", q, "--format", "csv"]), q);
        let mask = |s: &str| {
            s.replace(&format!("s3://{bucket}/raw/"), "<source>/")
                .replace(&format!("file://{}/drops/raw/", tmp.path().display()), "<source>/")
        };
        assert!(inside.lines().count() > 4, "{q}: {inside}");
        assert_eq!(mask(&inside), mask(&outside), "{q}");
    }

    // The model server answers from the container.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let name = format!("runner-model-{}", uuid::Uuid::new_v4().simple());
    run_ok(
        podman().args(["run", "-d", "--rm", "--name", &name, "--network", "host"]).args(LIMITS).arg(&tag).args([
            "model",
            "serve",
            "--port",
            &port.to_string(),
        ]),
        "runner model serve in the container",
    );
    let _server = Stop(name);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("{url}/ping")).send().await.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the model server in the container did not answer /ping within 10 s");
    let seed = std::fs::read(Path::new(REPO).join("data/model/test-company.json")).unwrap();
    let r = http.post(format!("{url}/assessChurn")).body(seed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["churn"], true, "a retail company churns: {v}");
}

/// Removes the test's image.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "-f", &self.0]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// Stops a detached container.
struct Stop(String);
impl Drop for Stop {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "1", &self.0]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
