//! `streamgate hash-password` and `streamgate hash-api-key`: credentials for the policy file.

use anyhow::{Context, anyhow};

pub(super) fn hash_password() -> anyhow::Result<()> {
    use std::io::Read;
    let mut input = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut input)
        .context("cannot read the password from stdin")?;
    let password = input
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&input);
    let hash = crate::identity::basic::hash_password(password).map_err(|e| anyhow!(e))?;
    println!("{hash}");
    Ok(())
}

pub(super) fn hash_api_key(name: &str) -> anyhow::Result<()> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system random number generator failed"))?;
    let key = format!(
        "sg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = crate::identity::hash_api_key(&key);
    println!("key: {key}");
    println!("  (shown once: give it to the client; only its SHA-256 goes in the config)");
    println!();
    println!("api_keys:");
    println!("  - name: {name}");
    println!("    sha256: {digest}");
    Ok(())
}
