//! `dots id`: the user's identity, an Ed25519 key pair in a wallet file whose
//! public name is a did:key.
//!
//! The passphrase comes only from `--passphrase-file` or `DOTS_WALLET_PASSPHRASE`;
//! nothing here ever prompts, so scripts and CI (no stdin) behave the same as
//! a terminal. The first line printed by `new` and `show` is the DID alone.
//!
//! `dots id device add|list|revoke` manage device passwords at a node's
//! provider API by requests signed with the wallet's key (see
//! `dots_node::provider`).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use dots_identity::{
    check_name, new_nonce, sign_request, KdfParams, Protection, Wallet, WalletError, WalletFile,
    MAX_FILE_LEN,
};
use dots_node::provider::{self as api, AUTH_SCHEME};
use dots_records::Grant;
use serde_json::json;

/// Environment variable holding the wallet passphrase.
const PASSPHRASE_ENV: &str = "DOTS_WALLET_PASSPHRASE";

#[derive(Subcommand)]
pub enum IdCommand {
    /// Create a new identity in a new wallet file and print its DID. The key is
    /// encrypted when a passphrase is given (--passphrase-file or
    /// DOTS_WALLET_PASSPHRASE), stored in clear (mode 0600) otherwise.
    New {
        #[command(flatten)]
        wallet: WalletArgs,
        /// A name for this identity, shown by `dots id show`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Print the wallet's DID (first line), its name and how it is protected.
    /// With a passphrase, also check that it unlocks the key.
    Show {
        #[command(flatten)]
        wallet: WalletArgs,
    },
    /// Print the wallet as one line of portable text (dots-wallet-v1:…). With a
    /// passphrase the text is encrypted under it.
    Export {
        #[command(flatten)]
        wallet: WalletArgs,
    },
    /// Write a new wallet file from the text of `dots id export`, read from
    /// stdin or --from. With a passphrase the key is checked and the new file is
    /// encrypted under it.
    Import {
        #[command(flatten)]
        wallet: WalletArgs,
        /// Read the text from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Device passwords: SIP accounts for ordinary phones, created and revoked
    /// at a node by requests signed with your key.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Create a SIP account for a phone at the node and print its user name,
    /// password, domain and registrar (the password is shown only this once).
    Add {
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        node: NodeArgs,
        /// The device's name (e.g. phone, desk): lowercase letters, digits,
        /// '-', '_', '.'; the SIP user name is <handle>-<name>.
        #[arg(long)]
        name: String,
        /// Your handle at the node (alice in alice@node.example) [default: the
        /// wallet's name, else the handle you already have there].
        #[arg(long, value_name = "HANDLE")]
        user: Option<String>,
        /// How long the node may announce your presence on the overlay for
        /// this device (the grant signed for it), in days.
        #[arg(long, value_name = "DAYS", default_value_t = 365)]
        grant_days: u64,
    },
    /// List your devices at the node (never their passwords).
    List {
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Revoke a device's password: the node refuses it from now on.
    Revoke {
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        node: NodeArgs,
        /// The device's name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Args)]
pub struct NodeArgs {
    /// The node's HTTP address, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    node: String,
}

#[derive(Args)]
pub struct WalletArgs {
    /// The wallet file.
    #[arg(long, value_name = "FILE")]
    wallet: PathBuf,
    /// Read the passphrase from the first line of this file (otherwise from
    /// DOTS_WALLET_PASSPHRASE, if set).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// A passphrase and where it came from, for error messages.
struct Passphrase {
    text: String,
    source: String,
}

impl WalletArgs {
    /// Reads and unlocks the wallet, for commands that sign with it.
    pub(crate) fn load(&self) -> anyhow::Result<Wallet> {
        let passphrase = self.passphrase()?;
        let file = read(&self.wallet)?;
        unlock(&file, passphrase.as_ref(), &self.wallet)
    }

    fn passphrase(&self) -> anyhow::Result<Option<Passphrase>> {
        if let Some(path) = &self.passphrase_file {
            let content = std::fs::read_to_string(path)
                .with_context(|| format!("reading the passphrase file {}", path.display()))?;
            let text = content.lines().next().unwrap_or("").to_string();
            if text.is_empty() {
                bail!(
                    "the passphrase file {} is empty: write the passphrase on its first line",
                    path.display()
                );
            }
            return Ok(Some(Passphrase {
                text,
                source: format!("--passphrase-file {}", path.display()),
            }));
        }
        match std::env::var(PASSPHRASE_ENV) {
            Ok(text) if text.is_empty() => bail!(
                "{PASSPHRASE_ENV} is set but empty: unset it for an unencrypted wallet, or set a passphrase"
            ),
            Ok(text) => Ok(Some(Passphrase {
                text,
                source: PASSPHRASE_ENV.into(),
            })),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("{PASSPHRASE_ENV} is not valid UTF-8")
            }
        }
    }
}

pub fn run(cmd: IdCommand) -> anyhow::Result<()> {
    match cmd {
        IdCommand::New { wallet, name } => new(&wallet, name),
        IdCommand::Show { wallet } => show(&wallet),
        IdCommand::Export { wallet } => export(&wallet),
        IdCommand::Import { wallet, from } => import(&wallet, from.as_deref()),
        IdCommand::Device { command } => device(command),
    }
}

fn new(args: &WalletArgs, name: Option<String>) -> anyhow::Result<()> {
    if let Some(name) = &name {
        check_name(name)?;
    }
    let passphrase = args.passphrase()?;
    let wallet = Wallet::generate(name);
    let file = WalletFile::seal(&wallet, pass(&passphrase), KdfParams::default())?;
    write_new(&file, &args.wallet)?;
    outln!("{}", wallet.did());
    outln!("wallet: {}", args.wallet.display());
    outln!("protection: {}", file.protection());
    if passphrase.is_none() {
        eprintln!(
            "note: the key is stored unencrypted (file mode 0600); set {PASSPHRASE_ENV} or pass --passphrase-file to encrypt it"
        );
    }
    Ok(())
}

fn show(args: &WalletArgs) -> anyhow::Result<()> {
    let passphrase = args.passphrase()?;
    let file = read(&args.wallet)?;
    // Without a passphrase an encrypted wallet still shows its public header;
    // with one, the DID printed is the one the key really has.
    let checked = match (&passphrase, file.protection()) {
        (Some(p), Protection::Encrypted(_)) => {
            unlock(&file, Some(p), &args.wallet)?;
            "; passphrase checked"
        }
        (None, Protection::Encrypted(_)) => {
            "; passphrase not checked (set DOTS_WALLET_PASSPHRASE or pass --passphrase-file to check it)"
        }
        (_, Protection::Plain) => {
            unlock(&file, None, &args.wallet)?;
            ""
        }
    };
    outln!("{}", file.did());
    if let Some(name) = file.name() {
        outln!("name: {name}");
    }
    outln!("protection: {}{checked}", file.protection());
    Ok(())
}

fn export(args: &WalletArgs) -> anyhow::Result<()> {
    let passphrase = args.passphrase()?;
    let file = read(&args.wallet)?;
    let text = match &passphrase {
        // Re-sealed under the passphrase: a fresh salt and nonce, and a plain
        // wallet travels encrypted.
        Some(p) => {
            let wallet = unlock(&file, Some(p), &args.wallet)?;
            WalletFile::seal(&wallet, Some(&p.text), export_params(&file))?.export()
        }
        None => {
            if !file.is_encrypted() {
                unlock(&file, None, &args.wallet)?;
                eprintln!(
                    "warning: this text holds the secret key in clear; set {PASSPHRASE_ENV} or pass --passphrase-file to encrypt it"
                );
            }
            file.export()
        }
    };
    outln!("{text}");
    Ok(())
}

/// An encrypted wallet keeps its own KDF cost when exported; a plain one gets
/// the default.
fn export_params(file: &WalletFile) -> KdfParams {
    match file.protection() {
        Protection::Encrypted(params) => params,
        Protection::Plain => KdfParams::default(),
    }
}

fn import(args: &WalletArgs, from: Option<&Path>) -> anyhow::Result<()> {
    let passphrase = args.passphrase()?;
    let text = match from {
        Some(path) => read_limited(std::fs::File::open(path), path.display().to_string())?,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("paste the dots-wallet-v1: text, then press Ctrl-D");
            }
            read_limited(Ok(std::io::stdin()), "stdin".into())?
        }
    };
    let file = WalletFile::from_export(&text).map_err(|e| match e {
        WalletError::NotAnExport => anyhow!("{e}; produce it with `dots id export --wallet FILE`"),
        e => e.into(),
    })?;
    let (file, checked) = match &passphrase {
        Some(p) => {
            let wallet = unlock(&file, Some(p), &args.wallet)?;
            let params = export_params(&file);
            let sealed = if file.is_encrypted() {
                file
            } else {
                WalletFile::seal(&wallet, Some(&p.text), params)?
            };
            (sealed, true)
        }
        None if file.is_encrypted() => (file, false),
        None => {
            unlock(&file, None, &args.wallet)?;
            (file, true)
        }
    };
    write_new(&file, &args.wallet)?;
    outln!("{}", file.did());
    outln!("wallet: {}", args.wallet.display());
    outln!(
        "protection: {}{}",
        file.protection(),
        if checked {
            ""
        } else {
            "; passphrase not checked (set DOTS_WALLET_PASSPHRASE or pass --passphrase-file to check it)"
        }
    );
    Ok(())
}

fn pass(p: &Option<Passphrase>) -> Option<&str> {
    p.as_ref().map(|p| p.text.as_str())
}

fn read(path: &Path) -> anyhow::Result<WalletFile> {
    let file = WalletFile::read(path).map_err(|e| match e {
        WalletError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow!(
                "{}: no wallet there; create one with `dots id new --wallet {}`",
                path.display(),
                path.display()
            )
        }
        WalletError::Corrupt(why) => anyhow!("{}: corrupt wallet: {why}", path.display()),
        WalletError::UnknownVersion(_) => anyhow!("{}: {e}", path.display()),
        e => e.into(),
    })?;
    for warning in file.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(file)
}

fn unlock(
    file: &WalletFile,
    passphrase: Option<&Passphrase>,
    path: &Path,
) -> anyhow::Result<Wallet> {
    file.unlock(passphrase.map(|p| p.text.as_str()))
        .map_err(|e| match e {
            WalletError::PassphraseNeeded => anyhow!(
                "wallet {} is encrypted: set {PASSPHRASE_ENV} or pass --passphrase-file",
                path.display()
            ),
            WalletError::WrongPassphrase => anyhow!(
                "wrong passphrase for wallet {} (from {}); check the passphrase, or that the file was not altered",
                path.display(),
                passphrase.map_or("nowhere", |p| p.source.as_str())
            ),
            e => anyhow!("{}: {e}", path.display()),
        })
}

fn write_new(file: &WalletFile, path: &Path) -> anyhow::Result<()> {
    file.write(path, false).map_err(|e| match e {
        WalletError::Exists(_) => {
            anyhow!("{e}; choose another --wallet path, or move the existing wallet away first")
        }
        e => e.into(),
    })
}

fn read_limited(source: std::io::Result<impl Read>, what: String) -> anyhow::Result<String> {
    let mut text = String::new();
    source
        .and_then(|r| r.take(2 * MAX_FILE_LEN as u64).read_to_string(&mut text))
        .with_context(|| format!("reading the wallet text from {what}"))?;
    Ok(text)
}

// ---------------------------------------------------------------------------
// Device passwords
// ---------------------------------------------------------------------------

/// Path of the provider API's device collection.
const DEVICES_PATH: &str = "/api/v1/accounts/devices";

/// Reads and unlocks the wallet named by `args`.
fn load_wallet(args: &WalletArgs) -> anyhow::Result<Wallet> {
    args.load()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn device(cmd: DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Add {
            wallet,
            node,
            name,
            user,
            grant_days,
        } => device_add(&wallet, &node, &name, user, grant_days),
        DeviceCommand::List { wallet, node } => device_list(&wallet, &node),
        DeviceCommand::Revoke { wallet, node, name } => device_revoke(&wallet, &node, &name),
    }
}

fn device_add(
    args: &WalletArgs,
    node: &NodeArgs,
    name: &str,
    user: Option<String>,
    grant_days: u64,
) -> anyhow::Result<()> {
    let base = http::Url::parse(&node.node)?;
    api::check_name("device name", name).map_err(|e| anyhow!(e.message))?;
    let wallet = load_wallet(args)?;
    let user = match user {
        Some(u) => {
            api::check_name("handle", &u).map_err(|e| anyhow!(e.message))?;
            Some(u)
        }
        None => match wallet.name() {
            Some(n) if api::check_name("handle", n).is_ok() => Some(n.to_string()),
            Some(n) => bail!(
                "the wallet's name {n:?} cannot be a handle (1-{} lowercase letters, digits, '-', '_' or '.'): pass --user HANDLE",
                api::MAX_NAME_LEN
            ),
            None => None,
        },
    };
    if grant_days == 0 {
        bail!("--grant-days must be at least 1");
    }
    // The grant goes to nodes on the overlay, the only ones that publish
    // presence: GET /api/v1/node names their peer id, and is 404 elsewhere.
    let now = now_ms();
    let info = base.get("/api/v1/node")?;
    let grant = match info.status {
        200 => {
            let v = info.json()?;
            let peer_id = v["peer_id"]
                .as_str()
                .ok_or_else(|| anyhow!("GET /api/v1/node: no peer_id in the answer"))?;
            let peer: libp2p::PeerId = peer_id
                .parse()
                .with_context(|| format!("GET /api/v1/node: bad peer_id {peer_id:?}"))?;
            let until = now.saturating_add(grant_days.saturating_mul(86_400_000));
            Some(Grant::new_signed(
                &wallet.did(),
                &peer.to_bytes(),
                now,
                until,
                |m| wallet.sign(m),
            ))
        }
        404 => None,
        _ => bail!("GET /api/v1/node: {}", info.error_text()),
    };
    let mut body = json!({ "name": name });
    if let Some(u) = &user {
        body["user"] = json!(u);
    }
    if let Some(g) = &grant {
        body["grant"] = json!({
            "issued": g.issued,
            "until": g.until,
            "sig": b64url(&g.signature),
        });
    }
    let body = serde_json::to_vec(&body)?;
    let resp = base.signed(&wallet, "POST", DEVICES_PATH, &body)?;
    if resp.status != 201 {
        bail!("the node refused the device: {}", resp.error_text());
    }
    let v = resp.json()?;
    for key in [
        "username",
        "password",
        "domain",
        "registrar",
        "realm",
        "aor",
        "did",
    ] {
        let value = v[key]
            .as_str()
            .ok_or_else(|| anyhow!("the node's answer has no {key}"))?;
        outln!("{key}: {value}");
    }
    if let Some(until) = v["grant_until"].as_u64() {
        outln!("grant_until: {}", iso8601(until));
    }
    eprintln!(
        "note: the password is shown only now (the node keeps just its digest); set the phone's user name, password and domain as above, with the registrar as its SIP server or outbound proxy"
    );
    Ok(())
}

fn device_list(args: &WalletArgs, node: &NodeArgs) -> anyhow::Result<()> {
    let base = http::Url::parse(&node.node)?;
    let wallet = load_wallet(args)?;
    let resp = base.signed(&wallet, "GET", DEVICES_PATH, b"")?;
    if resp.status != 200 {
        bail!("the node refused the list: {}", resp.error_text());
    }
    let v = resp.json()?;
    let devices = v["devices"].as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        eprintln!("no devices at {} for {}", node.node, wallet.did());
    }
    // One device a line: name, user name, created, grant end ("-" if none).
    for d in devices {
        outln!(
            "{}\t{}\t{}\t{}",
            d["name"].as_str().unwrap_or("?"),
            d["username"].as_str().unwrap_or("?"),
            d["created"].as_u64().map(iso8601).unwrap_or_default(),
            d["grant_until"]
                .as_u64()
                .map(iso8601)
                .unwrap_or_else(|| "-".into()),
        );
    }
    Ok(())
}

fn device_revoke(args: &WalletArgs, node: &NodeArgs, name: &str) -> anyhow::Result<()> {
    let base = http::Url::parse(&node.node)?;
    api::check_name("device name", name).map_err(|e| anyhow!(e.message))?;
    let wallet = load_wallet(args)?;
    let resp = base.signed(&wallet, "DELETE", &format!("{DEVICES_PATH}/{name}"), b"")?;
    if resp.status != 200 {
        bail!("the node refused the revocation: {}", resp.error_text());
    }
    let v = resp.json()?;
    outln!("revoked: {}", v["username"].as_str().unwrap_or(name));
    Ok(())
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of ms since the UNIX epoch (UTC).
fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A minimal HTTP/1.1 client over std's TcpStream, for `http://` URLs only:
/// one request per connection (`Connection: close`), Content-Length or
/// chunked answers. The workspace's hyper comes with axum's server features
/// only; this is all the CLI needs to talk to a node's API, and a node
/// behind TLS is reached through its operator's reverse proxy.
mod http {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    use anyhow::{anyhow, bail, Context};
    use dots_identity::Wallet;
    use serde_json::Value;

    use super::{new_nonce, now_ms, sign_request, AUTH_SCHEME};

    /// Largest answer read.
    const MAX_RESPONSE: u64 = 1024 * 1024;
    const TIMEOUT: Duration = Duration::from_secs(30);

    /// `http://host:port/prefix`.
    pub struct Url {
        host: String,
        port: u16,
        /// Path prefix without a trailing '/' ("" for none).
        prefix: String,
    }

    pub struct Response {
        pub status: u16,
        pub body: Vec<u8>,
    }

    impl Response {
        pub fn json(&self) -> anyhow::Result<Value> {
            serde_json::from_slice(&self.body).with_context(|| {
                format!(
                    "the node's answer is not JSON: {}",
                    String::from_utf8_lossy(&self.body).trim()
                )
            })
        }

        /// "STATUS: message" from a `{"error": …}` body, else the body.
        pub fn error_text(&self) -> String {
            let text = serde_json::from_slice::<Value>(&self.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string());
            format!("{} {}", self.status, text)
        }
    }

    impl Url {
        pub fn parse(url: &str) -> anyhow::Result<Url> {
            let rest = if let Some(r) = url.strip_prefix("http://") {
                r
            } else if url.starts_with("https://") {
                bail!("{url}: https:// is not supported by this client yet; use the node's http:// address (e.g. http://127.0.0.1:8080)")
            } else {
                bail!("{url}: expected an http:// URL, e.g. http://127.0.0.1:8080")
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            if authority.is_empty() || authority.contains('@') {
                bail!("{url}: expected http://HOST:PORT");
            }
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                    let port = p.parse().map_err(|_| anyhow!("{url}: bad port {p:?}"))?;
                    (h, port)
                }
                _ => (authority, 80),
            };
            if host.is_empty() || host.contains(['?', '#']) || path.contains(['?', '#']) {
                bail!("{url}: expected http://HOST:PORT");
            }
            Ok(Url {
                host: host.to_string(),
                port,
                prefix: path.trim_end_matches('/').to_string(),
            })
        }

        pub fn get(&self, path: &str) -> anyhow::Result<Response> {
            self.send("GET", path, &[], b"")
        }

        /// A request signed with the wallet's key (`Authorization: DOTS-JWS`)
        /// for its path as the node sees it (prefix included).
        pub fn signed(
            &self,
            wallet: &Wallet,
            method: &str,
            path: &str,
            body: &[u8],
        ) -> anyhow::Result<Response> {
            let full = format!("{}{path}", self.prefix);
            let token = sign_request(wallet, method, &full, body, now_ms(), &new_nonce());
            let auth = format!("{AUTH_SCHEME} {token}");
            self.send(method, path, &[("Authorization", &auth)], body)
        }

        fn send(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> anyhow::Result<Response> {
            let what = format!("http://{}:{}{}{path}", self.host, self.port, self.prefix);
            let host = self.host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<_> = (host, self.port)
                .to_socket_addrs()
                .with_context(|| format!("{what}: cannot resolve {host}"))?
                .collect();
            let mut stream = None;
            let mut last_err = None;
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            let mut stream = stream.ok_or_else(|| {
                anyhow!(
                    "{what}: cannot connect ({}); is the node running, with --http on this address?",
                    last_err.map_or("no address".to_string(), |e| e.to_string())
                )
            })?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            let mut head = format!(
                "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: dots/{}\r\n",
                self.prefix,
                self.host,
                self.port,
                env!("CARGO_PKG_VERSION")
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            if !body.is_empty() || method == "POST" {
                head.push_str("Content-Type: application/json\r\n");
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(body))
                .with_context(|| format!("{what}: sending the request"))?;
            let mut raw = Vec::new();
            stream
                .take(MAX_RESPONSE)
                .read_to_end(&mut raw)
                .with_context(|| format!("{what}: reading the answer"))?;
            parse_response(&raw).with_context(|| format!("{what}: malformed HTTP answer"))
        }
    }

    /// Status and body of a whole HTTP/1.x response.
    pub fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow!("no end of headers"))?;
        let head = std::str::from_utf8(&raw[..split]).context("headers not UTF-8")?;
        let rest = &raw[split + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split(' ');
        let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
            bail!("bad status line {status_line:?}");
        };
        if !version.starts_with("HTTP/1.") {
            bail!("bad status line {status_line:?}");
        }
        let status: u16 = code
            .parse()
            .map_err(|_| anyhow!("bad status line {status_line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        let body = if chunked {
            dechunk(rest)?
        } else {
            match length {
                Some(n) if n <= rest.len() => rest[..n].to_vec(),
                Some(_) => bail!("body shorter than its Content-Length"),
                None => rest.to_vec(),
            }
        };
        Ok(Response { status, body })
    }

    fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let eol = data
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| anyhow!("truncated chunk"))?;
            let size = std::str::from_utf8(&data[..eol])?;
            let size = size.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).context("bad chunk size")?;
            data = &data[eol + 2..];
            if size == 0 {
                return Ok(out);
            }
            if data.len() < size + 2 {
                bail!("truncated chunk");
            }
            out.extend_from_slice(&data[..size]);
            data = &data[size + 2..];
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn urls() {
            let u = Url::parse("http://127.0.0.1:8080").unwrap();
            assert_eq!(
                (u.host.as_str(), u.port, u.prefix.as_str()),
                ("127.0.0.1", 8080, "")
            );
            let u = Url::parse("http://node.example/dots/").unwrap();
            assert_eq!(
                (u.host.as_str(), u.port, u.prefix.as_str()),
                ("node.example", 80, "/dots")
            );
            let u = Url::parse("http://[::1]:8080").unwrap();
            assert_eq!((u.host.as_str(), u.port), ("[::1]", 8080));
            for bad in [
                "https://x",
                "127.0.0.1:8080",
                "http://",
                "http://h:x",
                "http://h/?a",
            ] {
                assert!(Url::parse(bad).is_err(), "{bad}");
            }
        }

        #[test]
        fn responses() {
            let r =
                parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}xx").unwrap();
            assert_eq!((r.status, r.body.as_slice()), (201, &b"{}"[..]));
            let r = parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            )
            .unwrap();
            assert_eq!(r.body, b"abcde");
            let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
            assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
            assert!(parse_response(b"garbage").is_err());
            assert!(parse_response(b"SIP/2.0 200 OK\r\n\r\n").is_err());
            assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(4_102_444_799_000), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn base64url() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
