//! Batch signatures: how an enrolled agent proves that a batch body came from it, even after the
//! body has passed through a broker.
//!
//! The agent signs, with its Ed25519 private key, a domain-separated message that binds the agent
//! id to the batch body's sha256 ([`message`]): `"kho/v1/batch-signature\0" || agent id || "\0"
//! || digest (32 bytes)`. The hub verifies it against the public key stored at enrollment. The
//! digest covers the compressed body as sent (the codec checks it before decompressing), so a
//! tampered body fails the digest check and a body with a recomputed digest fails the signature;
//! a signature made for agent A does not verify under B's key nor for B's id. Over HTTPS the
//! signature travels in [`SIGNATURE_HEADER`], over MQTT in the envelope header's `signature`
//! field; both as lowercase hex of the 64-byte signature.
//!
//! ring (already in the tree as rustls's provider) does the cryptography; verifying is pure.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// HTTP header carrying the batch signature (hex).
pub const SIGNATURE_HEADER: &str = "x-kho-signature";
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Domain separation: a batch signature can never be mistaken for a signature over anything else.
const DOMAIN: &[u8] = b"kho/v1/batch-signature\0";
/// Domain of key-rotation proofs (`kho-agent rotate-key`).
const ROTATION_DOMAIN: &[u8] = b"kho/v1/key-rotation\0";

/// Why a signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("batch signature missing (this agent is enrolled with a key and must sign its batches)")]
    Missing,
    #[error("batch signature is not {SIGNATURE_LEN} bytes of hex")]
    Encoding,
    #[error("batch digest is not 32 bytes of hex")]
    Digest,
    #[error("batch signature does not verify against agent {0}'s public key")]
    Invalid(String),
    #[error("signing key is not a valid Ed25519 PKCS#8 key: {0}")]
    Key(String),
}

/// The bytes that are signed for `agent`'s batch with body digest `digest_hex`.
pub fn message(agent: &str, digest_hex: &str) -> Result<Vec<u8>, SignatureError> {
    let digest = hex::decode(digest_hex.trim()).map_err(|_| SignatureError::Digest)?;
    if digest.len() != 32 {
        return Err(SignatureError::Digest);
    }
    let mut out = Vec::with_capacity(DOMAIN.len() + agent.len() + 1 + 32);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(agent.as_bytes());
    out.push(0);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Checks `signature_hex` over `agent`'s batch with body digest `digest_hex` against `public_key`.
pub fn verify(
    public_key: &[u8],
    agent: &str,
    digest_hex: &str,
    signature_hex: Option<&str>,
) -> Result<(), SignatureError> {
    let signature_hex = signature_hex.ok_or(SignatureError::Missing)?;
    let signature = hex::decode(signature_hex.trim()).map_err(|_| SignatureError::Encoding)?;
    if signature.len() != SIGNATURE_LEN {
        return Err(SignatureError::Encoding);
    }
    let message = message(agent, digest_hex)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&message, &signature)
        .map_err(|_| SignatureError::Invalid(agent.to_string()))
}

/// The bytes signed — by the old key and by the new one — to move `agent` to `new_public_key_hex`.
pub fn rotation_message(agent: &str, new_public_key_hex: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROTATION_DOMAIN.len() + agent.len() + 1 + new_public_key_hex.len());
    out.extend_from_slice(ROTATION_DOMAIN);
    out.extend_from_slice(agent.as_bytes());
    out.push(0);
    out.extend_from_slice(new_public_key_hex.trim().to_ascii_lowercase().as_bytes());
    out
}

/// Checks a rotation proof `signature_hex` made with `public_key` for `agent` moving to
/// `new_public_key_hex`.
pub fn verify_rotation(
    public_key: &[u8],
    agent: &str,
    new_public_key_hex: &str,
    signature_hex: &str,
) -> Result<(), SignatureError> {
    let signature = hex::decode(signature_hex.trim()).map_err(|_| SignatureError::Encoding)?;
    if signature.len() != SIGNATURE_LEN {
        return Err(SignatureError::Encoding);
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&rotation_message(agent, new_public_key_hex), &signature)
        .map_err(|_| SignatureError::Invalid(agent.to_string()))
}

/// An agent's signing key (the private half never leaves the agent's machine).
pub struct Signer {
    agent: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("Signer").field("agent", &self.agent).field("public_key", &self.public_key_hex()).finish()
    }
}

impl Signer {
    /// A signer for `agent` from a PKCS#8 v2 document (what `kho-agent enroll` writes).
    pub fn from_pkcs8(agent: &str, pkcs8: &[u8]) -> Result<Signer, SignatureError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| SignatureError::Key(e.to_string()))?;
        Ok(Signer { agent: agent.to_string(), key })
    }

    /// The public key, lowercase hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.public_key().as_ref())
    }

    /// The rotation proof (hex) for moving this agent to `new_public_key_hex`.
    pub fn sign_rotation(&self, new_public_key_hex: &str) -> String {
        hex::encode(self.key.sign(&rotation_message(&self.agent, new_public_key_hex)).as_ref())
    }

    /// The signature (hex) of this agent's batch whose body has digest `digest_hex`.
    pub fn sign(&self, digest_hex: &str) -> Result<String, SignatureError> {
        let message = message(&self.agent, digest_hex)?;
        Ok(hex::encode(self.key.sign(&message).as_ref()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn pair(agent: &str, seed: u8) -> Signer {
        let key = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
        Signer { agent: agent.into(), key }
    }

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_signature_verifies_only_for_its_agent_key_and_digest() {
        let a = pair("a", 1);
        let b = pair("b", 2);
        let sig = a.sign(DIGEST).unwrap();
        let pk_a = hex::decode(a.public_key_hex()).unwrap();
        let pk_b = hex::decode(b.public_key_hex()).unwrap();
        assert_eq!(verify(&pk_a, "a", DIGEST, Some(&sig)), Ok(()));
        // Another agent's key, another agent's id, another digest: all refused.
        assert_eq!(verify(&pk_b, "a", DIGEST, Some(&sig)), Err(SignatureError::Invalid("a".into())));
        assert_eq!(verify(&pk_a, "b", DIGEST, Some(&sig)), Err(SignatureError::Invalid("b".into())));
        let other = DIGEST.replace('9', "8");
        assert_eq!(verify(&pk_a, "a", &other, Some(&sig)), Err(SignatureError::Invalid("a".into())));
        assert_eq!(verify(&pk_a, "a", DIGEST, None), Err(SignatureError::Missing));
        assert_eq!(verify(&pk_a, "a", DIGEST, Some("zz")), Err(SignatureError::Encoding));
        assert_eq!(verify(&pk_a, "a", "abc", Some(&sig)), Err(SignatureError::Digest));
        assert!(format!("{a:?}").contains(&a.public_key_hex()));
    }

    #[test]
    fn rotation_proofs_bind_agent_and_new_key() {
        let (old, new) = (pair("a", 1), pair("a", 2));
        let pk_old = hex::decode(old.public_key_hex()).unwrap();
        let proof = old.sign_rotation(&new.public_key_hex());
        assert_eq!(verify_rotation(&pk_old, "a", &new.public_key_hex(), &proof), Ok(()));
        assert!(verify_rotation(&pk_old, "b", &new.public_key_hex(), &proof).is_err());
        assert!(verify_rotation(&pk_old, "a", &old.public_key_hex(), &proof).is_err());
        // A batch signature is never a rotation proof (domains differ).
        let batch_sig = old.sign(DIGEST).unwrap();
        assert!(verify_rotation(&pk_old, "a", DIGEST, &batch_sig).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// Flipping any bit of the signature or the digest makes it fail; arbitrary input never panics.
        #[test]
        fn tampering_never_verifies(bit in 0usize..(64 * 8), dbit in 0usize..(32 * 8), junk in ".{0,200}") {
            let a = pair("agent-x", 7);
            let pk = hex::decode(a.public_key_hex()).unwrap();
            let sig = hex::decode(a.sign(DIGEST).unwrap()).unwrap();
            let mut bad = sig.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify(&pk, "agent-x", DIGEST, Some(&hex::encode(&bad))).is_err());
            let mut digest = hex::decode(DIGEST).unwrap();
            digest[dbit / 8] ^= 1 << (dbit % 8);
            prop_assert!(verify(&pk, "agent-x", &hex::encode(&digest), Some(&hex::encode(&sig))).is_err());
            prop_assert!(verify(&pk, "agent-x", DIGEST, Some(&junk)).is_err());
            prop_assert!(verify(junk.as_bytes(), "agent-x", DIGEST, Some(&hex::encode(&sig))).is_err());
        }
    }
}
