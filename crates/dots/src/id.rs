//! `dots id`: the user's identity, an Ed25519 key pair in a wallet file whose
//! public name is a did:key.
//!
//! The passphrase comes only from `--passphrase-file` or `DOTS_WALLET_PASSPHRASE`;
//! nothing here ever prompts, so scripts and CI (no stdin) behave the same as
//! a terminal. The first line printed by `new` and `show` is the DID alone.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use dots_identity::{
    check_name, KdfParams, Protection, Wallet, WalletError, WalletFile, MAX_FILE_LEN,
};

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
    println!("{}", wallet.did());
    println!("wallet: {}", args.wallet.display());
    println!("protection: {}", file.protection());
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
    println!("{}", file.did());
    if let Some(name) = file.name() {
        println!("name: {name}");
    }
    println!("protection: {}{checked}", file.protection());
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
    println!("{text}");
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
    println!("{}", file.did());
    println!("wallet: {}", args.wallet.display());
    println!(
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
