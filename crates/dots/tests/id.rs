//! `dots id`, run as the real binary: the command-line contract that operators
//! and scripts rely on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dots-id-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `dots id ARGS` with no stdin (as CI has none) unless `input` is given,
/// and with DOTS_WALLET_PASSPHRASE set only when `passphrase` is.
fn dots_id(args: &[&str], passphrase: Option<&str>, input: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dots"));
    cmd.arg("id")
        .args(args)
        .env_remove("DOTS_WALLET_PASSPHRASE");
    if let Some(p) = passphrase {
        cmd.env("DOTS_WALLET_PASSPHRASE", p);
    }
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run dots");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn new_show_export_import() {
    let dir = Scratch::new("plain");
    let a = dir.path("alice.wallet");
    let b = dir.path("copy.wallet");

    let out = ok(
        dots_id(&["new", "--wallet", s(&a), "--name", "alice"], None, None),
        "dots id new",
    );
    let did = first_line(&out).to_string();
    assert!(did.starts_with("did:key:z6Mk"), "{out}");
    assert_eq!(did.split_whitespace().count(), 1, "{did}");
    assert_eq!(mode(&a), 0o600);

    let out = ok(
        dots_id(&["show", "--wallet", s(&a)], None, None),
        "dots id show",
    );
    assert_eq!(first_line(&out), did);
    assert!(out.contains("alice"), "{out}");
    assert!(out.contains("not encrypted"), "{out}");

    // A second `new` on the same path must not destroy the identity.
    let again = dots_id(&["new", "--wallet", s(&a)], None, None);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("refusing to overwrite"),
        "{}",
        stderr(&again)
    );
    let out = ok(
        dots_id(&["show", "--wallet", s(&a)], None, None),
        "dots id show",
    );
    assert_eq!(first_line(&out), did);

    let text = ok(
        dots_id(&["export", "--wallet", s(&a)], None, None),
        "dots id export",
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("dots-wallet-v1:"), "{text}");

    ok(
        dots_id(&["import", "--wallet", s(&b)], None, Some(&text)),
        "dots id import",
    );
    assert_eq!(mode(&b), 0o600);
    let out = ok(
        dots_id(&["show", "--wallet", s(&b)], None, None),
        "dots id show",
    );
    assert_eq!(first_line(&out), did);
    assert!(out.contains("alice"), "{out}");

    // --from, and an import never replaces a wallet.
    let t = dir.path("export.txt");
    std::fs::write(&t, &text).unwrap();
    let c = dir.path("from.wallet");
    ok(
        dots_id(&["import", "--wallet", s(&c), "--from", s(&t)], None, None),
        "dots id import --from",
    );
    let out = ok(
        dots_id(&["show", "--wallet", s(&c)], None, None),
        "dots id show",
    );
    assert_eq!(first_line(&out), did);
    let twice = dots_id(&["import", "--wallet", s(&c), "--from", s(&t)], None, None);
    assert!(!twice.status.success());

    // Garbage in says what to feed it instead.
    let bad = dots_id(
        &["import", "--wallet", s(&dir.path("x"))],
        None,
        Some("hello\n"),
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("dots id export"), "{}", stderr(&bad));
    // No stdin at all (as in CI): an error, not a hang or a prompt.
    let none = dots_id(&["import", "--wallet", s(&dir.path("y"))], None, None);
    assert!(!none.status.success());
    // A missing wallet says how to make one.
    let missing = dots_id(&["show", "--wallet", s(&dir.path("nope"))], None, None);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("dots id new"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn encrypted_wallet() {
    let dir = Scratch::new("enc");
    let a = dir.path("alice.wallet");
    let b = dir.path("copy.wallet");
    let pw = "correct horse battery staple";

    let out = ok(
        dots_id(&["new", "--wallet", s(&a)], Some(pw), None),
        "dots id new (encrypted)",
    );
    let did = first_line(&out).to_string();
    assert!(did.starts_with("did:key:z6Mk"), "{out}");
    assert_eq!(mode(&a), 0o600);
    let file = std::fs::read_to_string(&a).unwrap();
    assert!(
        file.contains("argon2id") && !file.contains("\"secret\""),
        "{file}"
    );

    let out = ok(
        dots_id(&["show", "--wallet", s(&a)], Some(pw), None),
        "dots id show",
    );
    assert_eq!(first_line(&out), did);
    assert!(
        out.contains("encrypted") && out.contains("passphrase checked"),
        "{out}"
    );

    // Wrong passphrase: non-zero exit and a message that says so.
    let wrong = dots_id(&["show", "--wallet", s(&a)], Some("not it"), None);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("wrong passphrase"),
        "{}",
        stderr(&wrong)
    );
    assert!(stdout(&wrong).is_empty(), "{}", stdout(&wrong));

    // The same through --passphrase-file.
    let pf = dir.path("pass.txt");
    std::fs::write(&pf, format!("{pw}\n")).unwrap();
    let out = ok(
        dots_id(
            &["show", "--wallet", s(&a), "--passphrase-file", s(&pf)],
            None,
            None,
        ),
        "dots id show --passphrase-file",
    );
    assert_eq!(first_line(&out), did);

    // Export needs no passphrase and stays encrypted; the import checks it.
    let text = ok(
        dots_id(&["export", "--wallet", s(&a)], None, None),
        "dots id export",
    );
    assert!(text.starts_with("dots-wallet-v1:"));
    let wrong = dots_id(&["import", "--wallet", s(&b)], Some("not it"), Some(&text));
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("wrong passphrase"),
        "{}",
        stderr(&wrong)
    );
    assert!(!b.exists(), "a failed import left a file");
    ok(
        dots_id(&["import", "--wallet", s(&b)], Some(pw), Some(&text)),
        "dots id import",
    );
    assert_eq!(mode(&b), 0o600);
    let out = ok(
        dots_id(&["show", "--wallet", s(&b)], Some(pw), None),
        "dots id show",
    );
    assert_eq!(first_line(&out), did);
}
