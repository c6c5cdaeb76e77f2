//! The container image under test: the repository's Dockerfile built with podman around the
//! binary this test run built (`--target prebuilt`), once per test process, and
//! containers of it in guards that remove them.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::output_text;

/// The tag the tests build, with a label that lets each build prune the previous one.
const TAG: &str = "localhost/lagscaler-test:latest";
const LABEL: &str = "lagscaler.test=image";

/// The repository's root.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The start of a `podman run` of a one-off container: removed when it exits, with a
/// read-only root filesystem, no network and no HEALTHCHECK timer.
pub const RUN_ONCE: [&str; 7] = [
    "run",
    "--rm",
    "--read-only",
    "--health-interval",
    "disable",
    "--network",
    "none",
];

/// `podman` with the repository's settings for these machines (scripts/podman).
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.env(
        "CONTAINERS_CONF",
        repo().join("scripts/podman/containers.conf"),
    );
    command
}

/// Runs `podman args`, failing the test with its output unless it succeeds.
pub fn podman_ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "podman {}: {}",
        args.join(" "),
        output_text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `podman args`.
pub fn run(args: &[&str]) -> Output {
    podman().args(args).output().expect("run podman")
}

/// The runtime image, built once per test process from the Dockerfile with this run's
/// binary (debug symbols stripped, as a release build has none), its base made from
/// Debian's packages by `scripts/image base` if it is missing.
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let base = Command::new(repo().join("scripts/image"))
            .arg("base")
            .output()
            .expect("run scripts/image base");
        assert!(base.status.success(), "{}", output_text(&base));
        let context = tempfile::tempdir().expect("build context");
        let binary = context.path().join("lagscaler");
        let strip = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(env!("CARGO_BIN_EXE_lagscaler"))
            .arg(&binary)
            .output()
            .expect("run objcopy");
        assert!(strip.status.success(), "{}", output_text(&strip));
        // The previous runs' images of this tag.
        let _ = run(&[
            "image",
            "prune",
            "--force",
            "--filter",
            &format!("label={LABEL}"),
        ]);
        let dockerfile = repo().join("Dockerfile");
        podman_ok(&[
            "build",
            "--quiet",
            "--format",
            "docker",
            "--network",
            "host",
            "--target",
            "prebuilt",
            "--label",
            LABEL,
            "--file",
            path(&dockerfile),
            "--tag",
            TAG,
            path(context.path()),
        ]);
    });
    TAG
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A container of the image, removed (with `podman rm --force`) when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// Starts `args` then the image, detached, on the host's network (loopback only:
    /// every port it listens on is given in `args`), with a read-only root filesystem, as
    /// the Helm chart runs it. The image's own timer for its HEALTHCHECK is left off
    /// (podman would ask systemd for it); `podman healthcheck run` runs the check.
    pub fn start(args: &[&str]) -> Container {
        Container::start_image(image(), args)
    }

    /// As [`Container::start`], of `image`.
    pub fn start_image(image: &str, args: &[&str]) -> Container {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "lagscaler-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let mut all = vec![
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            "host",
            "--read-only",
            "--health-interval",
            "disable",
        ];
        all.extend_from_slice(args);
        all.push(image);
        podman_ok(&all);
        Container { name }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        output_text(&run(&["logs", &self.name]))
    }

    /// `podman inspect --format <format>` of it.
    pub fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.name])
            .trim()
            .to_owned()
    }

    /// Stops it as Kubernetes does (SIGTERM, then SIGKILL after `grace`): how long that
    /// took and the exit code.
    pub fn stop(&self, grace: Duration) -> (Duration, i32) {
        let started = Instant::now();
        podman_ok(&["stop", "--time", &grace.as_secs().to_string(), &self.name]);
        let took = started.elapsed();
        let code = self.inspect("{{.State.ExitCode}}");
        (took, code.parse().expect("an exit code"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(&["rm", "--force", "--time", "0", &self.name]);
    }
}
