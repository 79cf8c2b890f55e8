//! The key-encryption key for secrets at rest: `HDLS_MASTER_KEY`, or a 0600 file in the data dir.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

/// 32 bytes of key material. Debug never prints it.
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    /// The raw key bytes, for the envelope-encryption code.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A random key that lives only as long as the process (tests and benchmarks, where nothing
    /// sealed must outlive the run).
    pub fn ephemeral() -> MasterKey {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        MasterKey(key)
    }

    /// Seals `plaintext` with AES-256-GCM: `nonce (12 bytes) || ciphertext+tag`. `context`
    /// is bound as associated data, so a sealed value moved to another purpose fails to open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> anyhow::Result<Vec<u8>> {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&self.0)
            .map_err(|_| anyhow::anyhow!("master key has the wrong length"))?;
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value made by [`MasterKey::seal`] with the same context.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> anyhow::Result<Vec<u8>> {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        anyhow::ensure!(sealed.len() > 12, "sealed value is too short");
        let (nonce, ciphertext) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&self.0)
            .map_err(|_| anyhow::anyhow!("master key has the wrong length"))?;
        cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| {
                anyhow::anyhow!("cannot open a sealed value: wrong master key or corrupted data")
            })
    }

    /// Loads `HDLS_MASTER_KEY` (64 hex chars) or `<data_dir>/master.key`, generating the file on first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<MasterKey> {
        if let Ok(hex_key) = std::env::var("HDLS_MASTER_KEY") {
            return parse(hex_key.trim())
                .context("HDLS_MASTER_KEY must be 64 hex characters (32 bytes)");
        }
        let path = data_dir.join("master.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse(text.trim())
                .with_context(|| format!("{} is not a valid master key", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::data_dir::ensure(data_dir)?;
                let mut key = [0u8; 32];
                rand::fill(&mut key);
                // create_new + mode 0600: never clobber an existing key, never readable by others.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                file.write_all(hex::encode(key).as_bytes())?;
                file.sync_all()?;
                Ok(MasterKey(key))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

fn parse(text: &str) -> anyhow::Result<MasterKey> {
    let bytes = hex::decode(text)?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("wrong length"))?;
    Ok(MasterKey(key))
}
