//! `infermesh keygen`: creates the operator's ed25519 key. Nodes list the public key in
//! `config.toml` `[[operator]]`; the CLI and the deck sign every admin change with the secret key.
//!
//! The key file holds the 32-byte seed as 64 hex digits and a newline, mode 0600.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;

/// Where the CLI and the deck look for the operator key when no path is given.
pub const KEY_ENV: &str = "INFERMESH_OPERATOR_KEY";

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the secret key [default: $XDG_CONFIG_HOME/infermesh/operator.key, else
    /// ~/.config/infermesh/operator.key].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Replace an existing key file (its old key stops working once nodes drop it).
    #[arg(long)]
    pub force: bool,
    /// Operator name for the config snippet and node logs [default: $USER@hostname].
    #[arg(long)]
    pub name: Option<String>,
}

/// `$XDG_CONFIG_HOME/infermesh/operator.key`, else `~/.config/infermesh/operator.key`.
pub fn default_key_path() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("infermesh")
        .join("operator.key")
}

fn default_name() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "operator".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// The `[[operator]]` entry a node's `config.toml` needs to accept `key`.
pub fn config_snippet(name: &str, key: &SigningKey) -> String {
    format!(
        "[[operator]]\nname = {}\npublic_key = \"{}\"\n",
        toml_string(name),
        hex::encode(key.verifying_key().as_bytes())
    )
}

fn toml_string(s: &str) -> String {
    // JSON string escaping is valid TOML basic-string escaping for everything JSON emits.
    serde_json::Value::String(s.to_string()).to_string()
}

/// Writes a new key to `path` (refusing to replace one unless `force`) and returns it.
pub fn generate(path: &Path, force: bool) -> Result<SigningKey> {
    if path.exists() && !force {
        bail!(
            "{} already exists; nodes may trust it. Use --force to replace it, or --out for another file",
            path.display()
        );
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let text = format!("{}\n", hex::encode(seed));
    crate::identity::write_atomic(path, text.as_bytes(), 0o600)?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn run(args: KeygenArgs) -> Result<()> {
    let path = args.out.unwrap_or_else(default_key_path);
    let key = generate(&path, args.force)?;
    let name = args.name.unwrap_or_else(default_name);
    let public = hex::encode(key.verifying_key().as_bytes());
    let key_id = infermesh_api::auth::key_id(&key.verifying_key());
    println!(
        "operator key written to {} (keep it secret)",
        path.display()
    );
    println!("public key: {public}");
    println!("key id: {key_id}");
    println!();
    println!("Add this to config.toml in the data dir of every node you operate, then restart it:");
    println!();
    print!("{}", config_snippet(&name, &key));
    Ok(())
}

/// The operator key: from `path`, else `$INFERMESH_OPERATOR_KEY`, else the default path.
/// `Ok(None)` only when no path was named and the default file does not exist (unsigned
/// requests then get the node's 401 with its reason). A named file that is missing, unreadable,
/// malformed or readable by others is an error.
pub fn load_operator_key(path: Option<&Path>) -> Result<Option<SigningKey>> {
    let env = std::env::var_os(KEY_ENV).map(PathBuf::from);
    let (path, named) = match (path, env) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(p)) => (p, true),
        (None, None) => (default_key_path(), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read operator key {} (create one with `infermesh keygen`)",
                    path.display()
                )
            })
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "operator key {} is readable by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
        anyhow::anyhow!(
            "operator key {} is not 64 hex digits; create a new one with `infermesh keygen --force`",
            path.display()
        )
    })?;
    Ok(Some(SigningKey::from_bytes(&seed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/operator.key");
        let key = generate(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = load_operator_key(Some(&path)).unwrap().unwrap();
        assert_eq!(loaded.to_bytes(), key.to_bytes());
        let err = generate(&path, false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        let replaced = generate(&path, true).unwrap();
        assert_ne!(replaced.to_bytes(), key.to_bytes());
    }

    #[test]
    fn bad_files_are_errors_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let err = load_operator_key(Some(&missing)).unwrap_err();
        assert!(format!("{err:#}").contains("infermesh keygen"), "{err:#}");
        let open = dir.path().join("open.key");
        std::fs::write(&open, format!("{}\n", "11".repeat(32))).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_operator_key(Some(&open)).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_operator_key(Some(&open)).unwrap().is_some());
        std::fs::write(&open, "zz").unwrap();
        let err = load_operator_key(Some(&open)).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn snippet_is_valid_config() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let snippet = config_snippet("al\"ice", &key);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), &snippet).unwrap();
        let cfg = infermesh_api::config::load(dir.path()).unwrap();
        assert_eq!(cfg.operators[0].name, "al\"ice");
        let reg = infermesh_api::auth::OperatorRegistry::from_config(&cfg.operators).unwrap();
        assert_eq!(reg.len(), 1);
    }
}
