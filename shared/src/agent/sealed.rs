//! An MCP source's auth header at rest: sealed with AES-256-GCM under `AGENT_MCP_ENCRYPTION_KEY`
//! (32 bytes as 64 hex digits, read like the other secrets), bound to its agent (the agent's id
//! is the additional data, so a sealed header copied to another agent's row does not open).
//! Stored as `1 || nonce (12 bytes) || ciphertext and tag`.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

const VERSION: u8 = 1;

/// Why a header could not be sealed or opened (never showing it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("AGENT_MCP_ENCRYPTION_KEY must be 64 hexadecimal digits (32 bytes)")]
    BadKey,
    #[error("no random nonce could be drawn")]
    Random,
    #[error("the sealed header is not one this key sealed for this agent")]
    Open,
}

/// The key that seals and opens auth headers.
pub struct SealKey(LessSafeKey);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<set>)")
    }
}

impl SealKey {
    /// The key written as 64 hex digits.
    pub fn from_hex(hex_key: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| SealError::BadKey)?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// `plain` sealed for `agent`.
    pub fn seal(&self, agent: Uuid, plain: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut data = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(agent.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + data.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&data);
        Ok(sealed)
    }

    /// What [`Self::seal`] sealed for `agent`.
    pub fn open(&self, agent: Uuid, sealed: &[u8]) -> Result<String, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Open)?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, data) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = data.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(agent.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_header_opens_for_its_agent_only_and_hides_its_text() {
        let key = SealKey::from_hex(KEY).unwrap();
        let agent = Uuid::new_v4();
        let sealed = key.seal(agent, "Bearer s3cr3t-token").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(key.open(agent, &sealed).unwrap(), "Bearer s3cr3t-token");
        assert_eq!(key.open(Uuid::new_v4(), &sealed), Err(SealError::Open));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(agent, &tampered), Err(SealError::Open));
        assert_ne!(
            key.seal(agent, "Bearer s3cr3t-token").unwrap(),
            sealed,
            "a fresh nonce each time"
        );
    }

    #[test]
    fn keys_other_than_32_bytes_of_hex_are_refused() {
        assert_eq!(SealKey::from_hex("abcd").unwrap_err(), SealError::BadKey);
        assert_eq!(SealKey::from_hex(&"zz".repeat(32)).unwrap_err(), SealError::BadKey);
        let other = SealKey::from_hex(&"11".repeat(32)).unwrap();
        let sealed = SealKey::from_hex(KEY).unwrap().seal(Uuid::nil(), "x").unwrap();
        assert_eq!(other.open(Uuid::nil(), &sealed), Err(SealError::Open));
        assert_eq!(other.open(Uuid::nil(), &[]), Err(SealError::Open));
    }
}
