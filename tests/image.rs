//! The container image `make image` builds: its OCI archive unpacked layer by layer into a root
//! filesystem, and `tmc` run from it inside a chroot (so with nothing but what the image holds:
//! a binary that needed a shared library would not start). Needs `TMC_IMAGE_ARCHIVE`, which
//! `make test` sets after building the image.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn archive() -> PathBuf {
    let Some(path) = std::env::var_os("TMC_IMAGE_ARCHIVE") else {
        panic!(
            "TMC_IMAGE_ARCHIVE is not set: run `make image`, then set it to target/image/kcp-tmc.oci.tar (`make test` does both)"
        );
    };
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{} does not exist: run `make image`", path.display());
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    layout.join("blobs/sha256").join(hex)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The image's config and its root filesystem, unpacked under `dir`.
fn unpack(dir: &Path) -> (Value, PathBuf) {
    let (layout, rootfs) = (dir.join("layout"), dir.join("rootfs"));
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar").arg("-xf").arg(archive()).arg("-C").arg(&layout));
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index.json lists manifests");
    assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
    let manifest = json(&blob(&layout, manifests[0]["digest"].as_str().unwrap()));
    let config = json(&blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
    for layer in manifest["layers"].as_array().expect("layers") {
        // GNU tar recognises a gzip layer by itself.
        run(Command::new("tar")
            .arg("-xf")
            .arg(blob(&layout, layer["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(&rootfs));
    }
    (config, rootfs)
}

/// `tmc <args>` inside a chroot of `rootfs`, as the image's user 65532 when the test runs as
/// root (a user namespace makes the chroot possible otherwise).
fn tmc_in(rootfs: &Path, args: &[&str]) -> String {
    let mut cmd = if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n") {
        let mut c = Command::new("chroot");
        c.arg("--userspec=65532:65532");
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "chroot"]);
        c
    };
    // No TMC_* variable of the test run reaches the binary; PATH only finds chroot itself.
    run(cmd.arg(rootfs).arg("/usr/local/bin/tmc").args(args).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

#[test]
fn image_runs_tmc_as_a_non_root_user_with_nothing_else_inside() {
    let dir = tempfile::tempdir().unwrap();
    let (config, rootfs) = unpack(dir.path());

    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/tmc"]), "{config}");
    assert_eq!(config["os"], "linux");

    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("tmc:x:65532:65532:")), "{passwd}");
    let cas = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(cas.matches("BEGIN CERTIFICATE").count() > 10, "the CA bundle holds few certificates");
    // Nothing but the binary, its user and the CA bundle: no shell, no libc.
    for absent in ["bin/sh", "lib", "lib64", "usr/lib"] {
        assert!(!rootfs.join(absent).exists(), "{absent} is in the image");
    }

    let version = tmc_in(&rootfs, &["--version"]);
    assert_eq!(version.trim(), format!("tmc {}", env!("CARGO_PKG_VERSION")));
    let help = tmc_in(&rootfs, &["manager", "--help"]);
    for flag in ["--workspace", "--leader-elect", "--cluster-address-deny"] {
        assert!(help.contains(flag), "`tmc manager --help` from the image lacks {flag}:\n{help}");
    }
}
