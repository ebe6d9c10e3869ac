//! WeCom callback crypto (`WXBizMsgCrypt`): signature, AES-256-CBC envelope and the outer XML.
//!
//! Protocol: `shared/wecom/callback.md` §1. Decrypted plaintext layout:
//! `random(16) | msg_len(u32 BE) | msg | receive_id`, padded PKCS#7-style to a multiple of 32.

use std::fmt;

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;

/// WeCom pads to 32 bytes, not to the AES block size (§1.3).
const PAD_BLOCK: usize = 32;
const AES_BLOCK: usize = 16;
const RANDOM_LEN: usize = 16;
/// random prefix + u32 length field
const HEADER_LEN: usize = RANDOM_LEN + 4;
const ENCODING_AES_KEY_LEN: usize = 43;

/// The official EncodingAESKeys leave non-zero bits in the last base64 symbol, which the strict
/// `STANDARD` engine rejects (§1.9); the other SDKs' decoders are lenient, so this one is too.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("EncodingAESKey must be 43 characters of [A-Za-z0-9] decoding to 32 bytes.")]
    IllegalAesKey,
    #[error("Signature does not match.")]
    InvalidSignature,
    #[error("Ciphertext is not valid base64.")]
    Base64,
    #[error("Ciphertext length is not a non-zero multiple of 16 bytes.")]
    CiphertextLength,
    #[error("Decrypted data has invalid padding.")]
    BadPadding,
    #[error("Decrypted data is shorter than its 20-byte header.")]
    BufferTooShort,
    #[error("Message length field exceeds the decrypted data.")]
    LengthOutOfRange,
    #[error("Receive id mismatch: expected {expected:?}, got {got:?}.")]
    ReceiveIdMismatch { expected: String, got: String },
    #[error("Decrypted data is not valid UTF-8.")]
    NotUtf8,
    #[error("Callback envelope is not valid XML: {0}")]
    ParseXml(String),
}

/// Per-app crypto context. Cheap to clone; share one per configured callback endpoint.
#[derive(Clone)]
pub struct Crypto {
    token: String,
    key: [u8; 32],
    receive_id: String,
}

impl fmt::Debug for Crypto {
    // Token and key authenticate and decrypt every callback: keep them out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypto")
            .field("token", &"<redacted>")
            .field("key", &"<redacted>")
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

/// The result of [`Crypto::decrypt`]: the message bytes and the receive id found after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub msg: Vec<u8>,
    pub receive_id: String,
}

/// Outer POST envelope (§1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub to_user_name: Option<String>,
    pub encrypt: String,
    pub agent_id: Option<String>,
}

impl Crypto {
    pub fn new(
        token: &str,
        encoding_aes_key: &str,
        receive_id: &str,
    ) -> Result<Crypto, CryptoError> {
        if encoding_aes_key.len() != ENCODING_AES_KEY_LEN
            || !encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(CryptoError::IllegalAesKey);
        }
        let decoded = KEY_ENGINE
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| CryptoError::IllegalAesKey)?;
        let key: [u8; 32] = decoded.try_into().map_err(|_| CryptoError::IllegalAesKey)?;
        Ok(Crypto {
            token: token.to_owned(),
            key,
            receive_id: receive_id.to_owned(),
        })
    }

    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// Lower-hex SHA1 of token, timestamp, nonce and encrypt, sorted and concatenated (§1.2).
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        let mut parts = [self.token.as_str(), timestamp, nonce, encrypt];
        parts.sort_unstable();
        let mut hasher = Sha1::new();
        for part in parts {
            hasher.update(part.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// Constant-time, so a forger cannot learn the expected signature byte by byte.
    pub fn verify_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptoError> {
        let expected = self.signature(timestamp, nonce, encrypt);
        if bool::from(expected.as_bytes().ct_eq(msg_signature.as_bytes())) {
            Ok(())
        } else {
            Err(CryptoError::InvalidSignature)
        }
    }

    /// Decrypts `encrypt` (the base64 `<Encrypt>` text or the URL-decoded echostr).
    ///
    /// Does not check the receive id: it is returned so the caller can accept a set of ids
    /// (corpid, suite_id, empty) as §1.5 requires. A receive id that is not UTF-8 is
    /// reported as [`CryptoError::NotUtf8`].
    pub fn decrypt(&self, encrypt: &str) -> Result<Decrypted, CryptoError> {
        let mut buf = STANDARD
            .decode(encrypt.as_bytes())
            .map_err(|_| CryptoError::Base64)?;
        if buf.is_empty() || buf.len() % AES_BLOCK != 0 {
            return Err(CryptoError::CiphertextLength);
        }
        let plain = self
            .decryptor()
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::CiphertextLength)?;
        let unpadded = unpad(plain)?;
        let (msg, receive_id) = split_plaintext(unpadded)?;
        let receive_id = std::str::from_utf8(receive_id).map_err(|_| CryptoError::NotUtf8)?;
        Ok(Decrypted {
            msg: msg.to_vec(),
            receive_id: receive_id.to_owned(),
        })
    }

    /// [`Crypto::decrypt`], then the receive id must equal the configured one and the message
    /// must be UTF-8. An empty configured id only matches an empty id.
    pub fn decrypt_checked(&self, encrypt: &str) -> Result<String, CryptoError> {
        let Decrypted { msg, receive_id } = self.decrypt(encrypt)?;
        if receive_id != self.receive_id {
            return Err(CryptoError::ReceiveIdMismatch {
                expected: self.receive_id.clone(),
                got: receive_id,
            });
        }
        String::from_utf8(msg).map_err(|_| CryptoError::NotUtf8)
    }

    /// Encrypts with a fresh alphanumeric 16-byte prefix, as the official SDKs do.
    pub fn encrypt(&self, msg: &[u8]) -> String {
        let mut rng = rand::thread_rng();
        let mut random = [0u8; RANDOM_LEN];
        for b in &mut random {
            *b = rng.sample(Alphanumeric);
        }
        self.encrypt_with_random(&random, msg)
    }

    /// Deterministic encryption for known-answer tests.
    ///
    /// # Panics
    /// If `msg` is longer than `u32::MAX` bytes, which the length field cannot express.
    pub fn encrypt_with_random(&self, random: &[u8; 16], msg: &[u8]) -> String {
        let msg_len = u32::try_from(msg.len()).expect("message longer than 4 GiB");
        let mut buf =
            Vec::with_capacity(HEADER_LEN + msg.len() + self.receive_id.len() + PAD_BLOCK);
        buf.extend_from_slice(random);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.receive_id.as_bytes());
        // A full block of 32 is added when already aligned, so the pad is never empty.
        let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
        buf.resize(buf.len() + pad, pad as u8);

        let mut encryptor = self.encryptor();
        for block in buf.chunks_exact_mut(AES_BLOCK) {
            encryptor.encrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        STANDARD.encode(&buf)
    }

    /// The encrypted passive reply of §1.7, element for element as the official samples emit it.
    pub fn encrypted_reply(&self, reply_plaintext: &str, timestamp: &str, nonce: &str) -> String {
        let encrypt = self.encrypt(reply_plaintext.as_bytes());
        let signature = self.signature(timestamp, nonce, &encrypt);
        format!(
            "<xml>\n<Encrypt>{}</Encrypt>\n<MsgSignature>{}</MsgSignature>\n<TimeStamp>{}</TimeStamp>\n<Nonce>{}</Nonce>\n</xml>",
            cdata(&encrypt),
            cdata(&signature),
            quick_xml::escape::escape(timestamp),
            cdata(nonce),
        )
    }

    /// What WeCom itself would POST: `(msg_signature, body_xml)`.
    pub fn seal_callback(
        &self,
        plaintext_xml: &str,
        agent_id: &str,
        timestamp: &str,
        nonce: &str,
    ) -> (String, String) {
        let encrypt = self.encrypt(plaintext_xml.as_bytes());
        let signature = self.signature(timestamp, nonce, &encrypt);
        let body = format!(
            "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt><AgentID>{}</AgentID></xml>",
            cdata(&self.receive_id),
            cdata(&encrypt),
            cdata(agent_id),
        );
        (signature, body)
    }

    fn decryptor(&self) -> Aes256CbcDec {
        // WeCom uses a fixed IV: the first 16 key bytes (§1.3).
        Aes256CbcDec::new(
            GenericArray::from_slice(&self.key),
            GenericArray::from_slice(&self.key[..AES_BLOCK]),
        )
    }

    fn encryptor(&self) -> Aes256CbcEnc {
        Aes256CbcEnc::new(
            GenericArray::from_slice(&self.key),
            GenericArray::from_slice(&self.key[..AES_BLOCK]),
        )
    }
}

/// Strips the 1..=32 pad. RustCrypto's `Pkcs7` only accepts pads up to 16 (§1.9).
fn unpad(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let &last = plain.last().ok_or(CryptoError::BadPadding)?;
    let n = usize::from(last);
    if n == 0 || n > PAD_BLOCK || n > plain.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, pad) = plain.split_at(plain.len() - n);
    if pad.iter().any(|&b| b != last) {
        return Err(CryptoError::BadPadding);
    }
    Ok(body)
}

/// Splits `random | len | msg | receive_id` into `(msg, receive_id)` without decoding text,
/// because the random prefix may be binary.
fn split_plaintext(unpadded: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let rest = unpadded
        .get(RANDOM_LEN..)
        .ok_or(CryptoError::BufferTooShort)?;
    let (len_bytes, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(CryptoError::BufferTooShort)?;
    let msg_len = usize::try_from(u32::from_be_bytes(*len_bytes))
        .map_err(|_| CryptoError::LengthOutOfRange)?;
    if msg_len > rest.len() {
        return Err(CryptoError::LengthOutOfRange);
    }
    Ok(rest.split_at(msg_len))
}

/// Wraps text in CDATA; a `]]>` inside is split across two sections so it cannot end the first.
fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "ToUserName")]
    to_user_name: Option<String>,
    #[serde(rename = "Encrypt")]
    encrypt: Option<String>,
    #[serde(rename = "AgentID")]
    agent_id: Option<String>,
}

/// Parses the outer POST body. Elements may be CDATA or plain text, in any order, with
/// whitespace between them; other elements are ignored. Empty `ToUserName`/`AgentID` become
/// `None` (third-party instruction callbacks send an empty AgentID).
pub fn parse_envelope(body: &str) -> Result<Envelope, CryptoError> {
    let raw: RawEnvelope =
        quick_xml::de::from_str(body).map_err(|e| CryptoError::ParseXml(e.to_string()))?;
    let encrypt = raw
        .encrypt
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CryptoError::ParseXml("missing or empty Encrypt element".to_owned()))?;
    Ok(Envelope {
        to_user_name: raw.to_user_name.filter(|s| !s.is_empty()),
        encrypt,
        agent_id: raw.agent_id.filter(|s| !s.is_empty()),
    })
}

#[derive(serde::Deserialize)]
struct RawReply {
    #[serde(rename = "Encrypt")]
    encrypt: Option<String>,
    #[serde(rename = "MsgSignature")]
    msg_signature: Option<String>,
    #[serde(rename = "TimeStamp")]
    timestamp: Option<String>,
    #[serde(rename = "Nonce")]
    nonce: Option<String>,
}

impl Crypto {
    /// What WeCom does with a passive reply (§1.7): verify `MsgSignature` over its `TimeStamp`,
    /// `Nonce` and `Encrypt`, then decrypt. Returns the reply's plaintext XML.
    pub fn open_passive_reply(&self, body: &str) -> Result<String, CryptoError> {
        let raw: RawReply =
            quick_xml::de::from_str(body).map_err(|e| CryptoError::ParseXml(e.to_string()))?;
        let field = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| CryptoError::ParseXml(format!("missing or empty {name} element")))
        };
        let encrypt = field(raw.encrypt, "Encrypt")?;
        let signature = field(raw.msg_signature, "MsgSignature")?;
        let timestamp = field(raw.timestamp, "TimeStamp")?;
        let nonce = field(raw.nonce, "Nonce")?;
        self.verify_signature(&signature, &timestamp, &nonce, &encrypt)?;
        self.decrypt_checked(&encrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngCore, SeedableRng};

    const V1_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const V1_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    const V1_KEY_HEX: &str = "eaa91d32babaf274ca76ece72583b5037ed6da8120a64314be4b6d453a2a854b";
    const V1_RECEIVE_ID: &str = "ww1436e0e65a779aee";
    const V1B_ENCRYPT: &str = "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+";
    const V1B_PLAINTEXT: &str = "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName><CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>";
    const V3_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    const V3_KEY_HEX: &str = "8d69989bbaabe67328014c194631ad0719b3dca035b64023df292447aab60760";

    fn v1() -> Crypto {
        Crypto::new(V1_TOKEN, V1_KEY, V1_RECEIVE_ID).unwrap()
    }

    /// Encrypts an arbitrary plaintext buffer (no framing, no padding added) with the V1 key,
    /// to build inputs the normal encrypt path never produces.
    fn encrypt_raw(crypto: &Crypto, plain: &[u8]) -> String {
        assert_eq!(plain.len() % AES_BLOCK, 0, "test helper needs whole blocks");
        let mut buf = plain.to_vec();
        let mut enc = crypto.encryptor();
        for block in buf.chunks_exact_mut(AES_BLOCK) {
            enc.encrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        STANDARD.encode(&buf)
    }

    /// random | len | msg | receive_id, padded to 32 with a correct pad.
    fn frame(declared_len: u32, msg: &[u8], receive_id: &[u8]) -> Vec<u8> {
        let mut buf = b"0123456789abcdef".to_vec();
        buf.extend_from_slice(&declared_len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(receive_id);
        let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
        buf.resize(buf.len() + pad, pad as u8);
        buf
    }

    #[test]
    fn decodes_official_keys_with_trailing_bits() {
        assert_eq!(hex::encode(v1().key), V1_KEY_HEX);
        assert_eq!(
            hex::encode(Crypto::new("t", V3_KEY, "").unwrap().key),
            V3_KEY_HEX
        );
    }

    #[test]
    fn rejects_malformed_keys() {
        for key in [
            &V1_KEY[..42],
            "",
            "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUtX",
            "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhU-",
            "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhU+",
            "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhU=",
            "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqh中",
        ] {
            assert_eq!(
                Crypto::new(V1_TOKEN, key, V1_RECEIVE_ID).unwrap_err(),
                CryptoError::IllegalAesKey,
                "{key:?}"
            );
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let debug = format!("{:?}", v1());
        assert!(!debug.contains(V1_TOKEN));
        assert!(!debug.contains(V1_KEY_HEX));
        // 0xea, 0xa9: the first key bytes as `[u8]` Debug would print them.
        assert!(!debug.contains("234, 169"), "{debug}");
        assert!(debug.contains(V1_RECEIVE_ID));
    }

    #[test]
    fn error_messages_do_not_leak_secrets() {
        let crypto = v1();
        let mut errors = vec![
            Crypto::new(V1_TOKEN, &V1_KEY[..42], "").unwrap_err(),
            crypto
                .verify_signature("0", "1", "2", V1B_ENCRYPT)
                .unwrap_err(),
            crypto.decrypt("!!").unwrap_err(),
        ];
        errors.push(
            Crypto::new("t", V1_KEY, "other")
                .unwrap()
                .decrypt_checked(V1B_ENCRYPT)
                .unwrap_err(),
        );
        for error in errors {
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(!text.contains(V1_TOKEN) && !text.contains(V1_KEY), "{text}");
            }
        }
    }

    #[test]
    fn wrong_key_is_an_error_not_a_panic() {
        let other = Crypto::new(V1_TOKEN, V3_KEY, V1_RECEIVE_ID).unwrap();
        assert!(other.decrypt(V1B_ENCRYPT).is_err());
        // A one-symbol change in the key changes the AES key completely.
        let near = format!("{}A", &V1_KEY[..42]);
        let near = Crypto::new(V1_TOKEN, &near, V1_RECEIVE_ID).unwrap();
        assert_ne!(near.key, v1().key);
        assert!(near.decrypt_checked(V1B_ENCRYPT).is_err());
    }

    #[test]
    fn signature_rejects_tampering() {
        let crypto = v1();
        let sig = crypto.signature("1476422779", "1597212914", V1B_ENCRYPT);
        assert_eq!(sig, "0c3914025cb4b4d68103f6bfc8db550f79dcf48e");
        assert_eq!(
            crypto.verify_signature(&sig, "1476422779", "1597212914", V1B_ENCRYPT),
            Ok(())
        );
        for (sig, ts, nonce) in [
            (sig.as_str(), "1476422780", "1597212914"),
            (sig.as_str(), "1476422779", "1597212915"),
            (&sig[..39], "1476422779", "1597212914"),
            ("", "1476422779", "1597212914"),
            (
                "0C3914025CB4B4D68103F6BFC8DB550F79DCF48E",
                "1476422779",
                "1597212914",
            ),
        ] {
            assert_eq!(
                crypto.verify_signature(sig, ts, nonce, V1B_ENCRYPT),
                Err(CryptoError::InvalidSignature)
            );
        }
    }

    #[test]
    fn bad_base64_is_typed() {
        let crypto = v1();
        for input in ["not base64!", "Kl7k jo==", "Kl7kjoSf6DMD1zh7rtrHjF=", "é"] {
            assert_eq!(crypto.decrypt(input), Err(CryptoError::Base64), "{input:?}");
        }
    }

    #[test]
    fn ciphertext_length_must_be_whole_blocks() {
        let crypto = v1();
        for len in [0usize, 15, 17, 31, 33] {
            let encoded = STANDARD.encode(vec![7u8; len]);
            assert_eq!(
                crypto.decrypt(&encoded),
                Err(CryptoError::CiphertextLength),
                "{len}"
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let crypto = v1();
        let bytes = STANDARD.decode(V1B_ENCRYPT).unwrap();
        for len in 0..bytes.len() {
            let truncated = STANDARD.encode(&bytes[..len]);
            assert!(crypto.decrypt(&truncated).is_err(), "length {len}");
        }
        // Truncating the base64 text itself, not just the bytes.
        for len in 0..V1B_ENCRYPT.len() {
            assert!(
                crypto.decrypt(&V1B_ENCRYPT[..len]).is_err(),
                "text length {len}"
            );
        }
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let crypto = v1();
        let bytes = STANDARD.decode(V1B_ENCRYPT).unwrap();
        for pos in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[pos] ^= mask;
                // Either outcome is fine; only a panic fails the test.
                let _ = crypto.decrypt(&STANDARD.encode(&flipped));
                let _ = crypto.decrypt_checked(&STANDARD.encode(&flipped));
            }
        }
        // The last block carries the padding: corrupting it must be caught.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        assert!(crypto.decrypt_checked(&STANDARD.encode(&flipped)).is_err());
    }

    #[test]
    fn padding_is_validated() {
        let crypto = v1();
        let mut good = frame(3, b"abc", b"id");
        assert_eq!(good.len(), 32);
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &good)),
            Ok(Decrypted {
                msg: b"abc".to_vec(),
                receive_id: "id".to_owned()
            })
        );
        // pad byte 0
        let mut zero = good.clone();
        *zero.last_mut().unwrap() = 0;
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &zero)),
            Err(CryptoError::BadPadding)
        );
        // pad value above 32
        let mut big = vec![33u8; 64];
        big[..32].copy_from_slice(&good);
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &big)),
            Err(CryptoError::BadPadding)
        );
        // pad bytes not all equal
        let last = good.len() - 1;
        good[last - 1] ^= 1;
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &good)),
            Err(CryptoError::BadPadding)
        );
        // a valid pad that consumes the whole buffer leaves no header
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &[16u8; 16])),
            Err(CryptoError::BufferTooShort)
        );
        // a 17-byte pad on a 16-byte buffer
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &[17u8; 16])),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn full_block_of_padding_when_aligned() {
        let crypto = Crypto::new("t", V1_KEY, "").unwrap();
        // 20 header + 12 msg = 32 bytes: a whole extra block of 32s must follow.
        let encrypt = crypto.encrypt_with_random(b"0123456789abcdef", b"twelve bytes");
        assert_eq!(STANDARD.decode(&encrypt).unwrap().len(), 64);
        assert_eq!(crypto.decrypt_checked(&encrypt).unwrap(), "twelve bytes");
    }

    #[test]
    fn short_buffer_is_typed() {
        let crypto = v1();
        // 19 bytes of content + 13 bytes of pad: no room for the length field.
        let mut plain = vec![b'x'; 19];
        plain.resize(32, 13);
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &plain)),
            Err(CryptoError::BufferTooShort)
        );
    }

    #[test]
    fn length_field_beyond_buffer() {
        let crypto = v1();
        for declared in [4u32, 100, u32::MAX] {
            let plain = frame(declared, b"abc", b"");
            assert_eq!(
                crypto.decrypt(&encrypt_raw(&crypto, &plain)),
                Err(CryptoError::LengthOutOfRange),
                "{declared}"
            );
        }
        // Exactly the remaining bytes: the receive id is empty, which is valid.
        let plain = frame(5, b"abcde", b"");
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &plain)),
            Ok(Decrypted {
                msg: b"abcde".to_vec(),
                receive_id: String::new()
            })
        );
    }

    #[test]
    fn binary_random_prefix_is_accepted() {
        let crypto = v1();
        let mut plain = frame(2, b"hi", V1_RECEIVE_ID.as_bytes());
        plain[..16].copy_from_slice(&[0xff; 16]);
        assert_eq!(
            crypto
                .decrypt_checked(&encrypt_raw(&crypto, &plain))
                .unwrap(),
            "hi"
        );
    }

    #[test]
    fn receive_id_mismatch() {
        let other = Crypto::new(V1_TOKEN, V1_KEY, "wwsomeoneelse").unwrap();
        assert_eq!(
            other.decrypt_checked(V1B_ENCRYPT),
            Err(CryptoError::ReceiveIdMismatch {
                expected: "wwsomeoneelse".to_owned(),
                got: V1_RECEIVE_ID.to_owned(),
            })
        );
        let empty = Crypto::new(V1_TOKEN, V1_KEY, "").unwrap();
        assert!(matches!(
            empty.decrypt_checked(V1B_ENCRYPT),
            Err(CryptoError::ReceiveIdMismatch { .. })
        ));
        // decrypt itself does not judge the id.
        assert_eq!(
            other.decrypt(V1B_ENCRYPT).unwrap().receive_id,
            V1_RECEIVE_ID
        );
    }

    #[test]
    fn empty_receive_id_round_trips() {
        let crypto = Crypto::new("t", V1_KEY, "").unwrap();
        let encrypt = crypto.encrypt(b"personal");
        assert_eq!(crypto.decrypt_checked(&encrypt).unwrap(), "personal");
    }

    #[test]
    fn non_utf8_message() {
        let crypto = v1();
        let plain = frame(2, &[0xc3, 0x28], V1_RECEIVE_ID.as_bytes());
        let encrypt = encrypt_raw(&crypto, &plain);
        assert_eq!(crypto.decrypt(&encrypt).unwrap().msg, vec![0xc3, 0x28]);
        assert_eq!(crypto.decrypt_checked(&encrypt), Err(CryptoError::NotUtf8));
        // A receive id that is not UTF-8 cannot be returned as a String.
        let plain = frame(2, b"ok", &[0xff, 0xfe]);
        assert_eq!(
            crypto.decrypt(&encrypt_raw(&crypto, &plain)),
            Err(CryptoError::NotUtf8)
        );
    }

    #[test]
    fn random_inputs_never_panic() {
        let crypto = v1();
        let mut rng = StdRng::seed_from_u64(0x5159_0001);
        for i in 0..4000 {
            let len = rng.gen_range(0..200);
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            // Half valid base64 of random bytes (reaches AES and unpadding), half raw text.
            let input = if i % 2 == 0 {
                STANDARD.encode(&bytes)
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            };
            let _ = crypto.decrypt(&input);
            let _ = crypto.decrypt_checked(&input);
            let _ = crypto.verify_signature(&input, &input, &input, &input);
            let _ = parse_envelope(&input);
        }
        // Whole blocks of random ciphertext, so the framing checks run on random plaintext.
        for _ in 0..4000 {
            let blocks = rng.gen_range(1..6);
            let mut bytes = vec![0u8; blocks * AES_BLOCK];
            rng.fill_bytes(&mut bytes);
            let _ = crypto.decrypt_checked(&STANDARD.encode(&bytes));
        }
    }

    #[test]
    fn random_prefix_is_fresh_and_alphanumeric() {
        let crypto = v1();
        let a = crypto.encrypt(b"same");
        let b = crypto.encrypt(b"same");
        assert_ne!(a, b);
        for encrypt in [a, b] {
            let mut buf = STANDARD.decode(&encrypt).unwrap();
            let plain = crypto
                .decryptor()
                .decrypt_padded_mut::<NoPadding>(&mut buf)
                .unwrap();
            assert!(plain[..16].iter().all(u8::is_ascii_alphanumeric));
            assert_eq!(crypto.decrypt_checked(&encrypt).unwrap(), "same");
        }
    }

    #[test]
    fn a_passive_reply_opens_as_wecom_opens_it_and_a_tampered_one_does_not() {
        let crypto = v1();
        let body = crypto.encrypted_reply(
            "<xml><Content>你好</Content></xml>",
            "1476422779",
            "1597212914",
        );
        assert_eq!(
            crypto.open_passive_reply(&body).unwrap(),
            "<xml><Content>你好</Content></xml>"
        );
        let tampered = body.replace("<Nonce><![CDATA[1597212914", "<Nonce><![CDATA[1597212915");
        assert_eq!(
            crypto.open_passive_reply(&tampered),
            Err(CryptoError::InvalidSignature)
        );
        assert!(crypto.open_passive_reply("not xml").is_err());
    }

    #[test]
    fn encrypted_reply_verifies_and_decrypts() {
        let crypto = v1();
        let reply = "<xml><ToUserName><![CDATA[zhangsan]]></ToUserName><FromUserName><![CDATA[ww1436e0e65a779aee]]></FromUserName><CreateTime>1476422779</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[收到]]></Content></xml>";
        let xml = crypto.encrypted_reply(reply, "1476422779", "1597212914");
        assert!(xml.starts_with("<xml>\n<Encrypt><![CDATA["), "{xml}");
        assert!(
            xml.contains("]]></Encrypt>\n<MsgSignature><![CDATA["),
            "{xml}"
        );
        assert!(xml.ends_with("]]></MsgSignature>\n<TimeStamp>1476422779</TimeStamp>\n<Nonce><![CDATA[1597212914]]></Nonce>\n</xml>"), "{xml}");

        #[derive(Deserialize)]
        struct Reply {
            #[serde(rename = "Encrypt")]
            encrypt: String,
            #[serde(rename = "MsgSignature")]
            msg_signature: String,
            #[serde(rename = "TimeStamp")]
            timestamp: String,
            #[serde(rename = "Nonce")]
            nonce: String,
        }
        let parsed: Reply = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(parsed.timestamp, "1476422779");
        assert_eq!(parsed.nonce, "1597212914");
        assert_eq!(
            crypto.verify_signature(
                &parsed.msg_signature,
                &parsed.timestamp,
                &parsed.nonce,
                &parsed.encrypt
            ),
            Ok(())
        );
        assert_eq!(crypto.decrypt_checked(&parsed.encrypt).unwrap(), reply);
    }

    #[test]
    fn seal_callback_opens_like_a_real_post() {
        let crypto = v1();
        let (sig, body) =
            crypto.seal_callback(V1B_PLAINTEXT, "1000002", "1476422779", "1597212914");
        let envelope = parse_envelope(&body).unwrap();
        assert_eq!(envelope.to_user_name.as_deref(), Some(V1_RECEIVE_ID));
        assert_eq!(envelope.agent_id.as_deref(), Some("1000002"));
        assert_eq!(
            crypto.verify_signature(&sig, "1476422779", "1597212914", &envelope.encrypt),
            Ok(())
        );
        assert_eq!(
            crypto.decrypt_checked(&envelope.encrypt).unwrap(),
            V1B_PLAINTEXT
        );
        assert!(body.starts_with(
            "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><Encrypt><![CDATA["
        ));
        assert!(body.ends_with("]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"));
    }

    #[test]
    fn cdata_cannot_be_closed_early() {
        assert_eq!(cdata("a]]>b"), "<![CDATA[a]]]]><![CDATA[>b]]>");
        #[derive(Deserialize)]
        struct Nonce {
            #[serde(rename = "Nonce")]
            nonce: String,
        }
        let xml = v1().encrypted_reply("x", "1", "n]]><Evil/>");
        let parsed: Nonce = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(parsed.nonce, "n]]><Evil/>");
    }

    #[test]
    fn envelope_from_the_spec() {
        let body = format!(
            "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><Encrypt><![CDATA[{V1B_ENCRYPT}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"
        );
        assert_eq!(
            parse_envelope(&body).unwrap(),
            Envelope {
                to_user_name: Some(V1_RECEIVE_ID.to_owned()),
                encrypt: V1B_ENCRYPT.to_owned(),
                agent_id: Some("1000002".to_owned()),
            }
        );
    }

    #[test]
    fn envelope_without_cdata_with_newlines_and_reordered() {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml>\n  <AgentID>1000002</AgentID>\n  <Encrypt>{V1B_ENCRYPT}</Encrypt>\n  <ToUserName>ww1436e0e65a779aee</ToUserName>\n  <Extra>ignored</Extra>\n</xml>\n"
        );
        let envelope = parse_envelope(&body).unwrap();
        assert_eq!(envelope.encrypt, V1B_ENCRYPT);
        assert_eq!(envelope.to_user_name.as_deref(), Some(V1_RECEIVE_ID));
        assert_eq!(envelope.agent_id.as_deref(), Some("1000002"));
        assert_eq!(
            v1().decrypt_checked(&envelope.encrypt).unwrap(),
            V1B_PLAINTEXT
        );
    }

    #[test]
    fn envelope_with_empty_agent_id() {
        let envelope = parse_envelope(
            "<xml><ToUserName><![CDATA[wwsuite]]></ToUserName><Encrypt><![CDATA[abcd]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>",
        )
        .unwrap();
        assert_eq!(envelope.agent_id, None);
        assert_eq!(envelope.encrypt, "abcd");
    }

    #[test]
    fn envelope_garbage_is_an_error() {
        for body in [
            "",
            "garbage",
            "{\"encrypt\":\"abc\"}",
            "<xml>",
            "<xml><Encrypt>abc</Encrypt>",
            "<xml><Encrypt>abc</Wrong></xml>",
            "<xml><ToUserName>ww</ToUserName></xml>",
            "<xml><Encrypt></Encrypt></xml>",
            "<xml><Encrypt><![CDATA[]]></Encrypt></xml>",
            "<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>",
            "<xml><Encrypt><Nested>a</Nested></Encrypt></xml>",
            "\u{0}\u{1}\u{2}",
        ] {
            assert!(
                matches!(parse_envelope(body), Err(CryptoError::ParseXml(_))),
                "{body:?} -> {:?}",
                parse_envelope(body)
            );
        }
    }
}
