//! A real AWS API emulator for the AWS tests: moto's server, started once per test binary on
//! 127.0.0.1 from the Python in `RUNNER_TEST_PYTHON` (`make test` installs `moto[server]` there;
//! without one the tests fail saying so). Tests share it and keep apart by bucket and Glue
//! database names.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub endpoint: String,
    pub python: String,
}

/// The emulator, started on first use; it dies with the test process.
pub fn moto() -> &'static Moto {
    static M: OnceLock<Moto> = OnceLock::new();
    M.get_or_init(|| {
        let python = super::python_with(&["moto.server"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let py = python.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // The child is asked to die with the thread that started it (PR_SET_PDEATHSIG), so that
        // thread lives as long as the process.
        std::thread::spawn(move || {
            let mut cmd = Command::new(&py);
            cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            tx.send(child.map(|_| ()).map_err(|e| e.to_string())).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap().unwrap_or_else(|e| panic!("cannot start moto with {python}: {e} (make test installs it)"));
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Moto { endpoint, python };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not start on port {port} within 30 s");
    })
}

impl Moto {
    /// The environment a runner process (or boto3) needs to talk to the emulator and nothing else.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_DEFAULT_REGION", REGION);
    }

    /// Runs `tests/aws/moto_ops.py` with `args`; returns its stdout.
    pub fn ops(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.python);
        cmd.arg(format!("{}/tests/aws/moto_ops.py", super::REPO)).args(args);
        self.env(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "moto_ops {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// An SDK config for the emulator (for checks through the Glue API).
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await
    }
}

/// A name no other test uses (buckets and databases are shared in one emulator).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple()).chars().take(40).collect::<String>().to_ascii_lowercase()
}
