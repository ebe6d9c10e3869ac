//! Known-answer vectors from `shared/wecom/vectors.json` (callback.md §2).

use serde::Deserialize;
use siyu::wecom::crypto::{Crypto, Decrypted};

#[derive(Debug, Deserialize)]
struct Vector {
    id: String,
    token: String,
    encoding_aes_key: String,
    receive_id: String,
    timestamp: String,
    nonce: String,
    msg_signature: String,
    encrypt: String,
    plaintext: String,
    random_ascii: Option<String>,
}

fn vectors() -> Vec<Vector> {
    let vectors: Vec<Vector> =
        serde_json::from_str(include_str!("fixtures/vectors.json")).expect("vectors.json parses");
    assert_eq!(vectors.len(), 7, "every vector is exercised");
    vectors
}

fn vector(prefix: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.id.starts_with(prefix))
        .unwrap_or_else(|| panic!("no vector {prefix}"))
}

fn crypto(v: &Vector) -> Crypto {
    Crypto::new(&v.token, &v.encoding_aes_key, &v.receive_id)
        .unwrap_or_else(|e| panic!("{}: {e}", v.id))
}

/// application/x-www-form-urlencoded decoding of one query, as a web framework does it
/// (`+` is a space, `%XX` a byte); a malformed escape is kept literally.
fn form_decode(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut bytes = s.bytes();
        while let Some(b) = bytes.next() {
            match b {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex: Vec<u8> = bytes.clone().take(2).collect();
                    let valid = hex.len() == 2 && hex.iter().all(u8::is_ascii_hexdigit);
                    match std::str::from_utf8(&hex)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(byte) if valid => {
                            out.push(byte);
                            bytes.nth(1);
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
        }
        String::from_utf8(out).expect("query decodes to UTF-8")
    }
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[test]
fn form_decode_helper() {
    assert_eq!(
        form_decode("a=%2B%2f+x%3D&b=100%&c=%+1"),
        vec![
            ("a".to_owned(), "+/ x=".to_owned()),
            ("b".to_owned(), "100%".to_owned()),
            ("c".to_owned(), "% 1".to_owned()),
        ]
    );
}

#[test]
fn signatures_match() {
    for v in vectors() {
        let c = crypto(&v);
        assert_eq!(
            c.signature(&v.timestamp, &v.nonce, &v.encrypt),
            v.msg_signature,
            "{}",
            v.id
        );
        assert_eq!(
            c.verify_signature(&v.msg_signature, &v.timestamp, &v.nonce, &v.encrypt),
            Ok(()),
            "{}",
            v.id
        );
        assert!(
            c.verify_signature(&v.msg_signature, &v.timestamp, &v.nonce, &v.encrypt[1..])
                .is_err()
        );
    }
}

#[test]
fn decrypts_to_plaintext_and_receive_id() {
    for v in vectors() {
        let c = crypto(&v);
        // As bytes first: V2's plaintext is malformed JSON and must not be interpreted.
        assert_eq!(
            c.decrypt(&v.encrypt),
            Ok(Decrypted {
                msg: v.plaintext.as_bytes().to_vec(),
                receive_id: v.receive_id.clone()
            }),
            "{}",
            v.id
        );
        assert_eq!(
            c.decrypt_checked(&v.encrypt).as_deref(),
            Ok(v.plaintext.as_str()),
            "{}",
            v.id
        );
    }
}

#[test]
fn v3a_query_form_decodes_to_encrypt() {
    let v = vector("V3a");
    let query = "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589&nonce=263014780&echostr=P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D";
    let params = form_decode(query);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    assert_eq!(get("echostr"), v.encrypt);
    assert_eq!(get("msg_signature"), v.msg_signature);
    let c = crypto(&v);
    assert_eq!(
        c.verify_signature(
            get("msg_signature"),
            get("timestamp"),
            get("nonce"),
            get("echostr")
        ),
        Ok(())
    );
    assert_eq!(
        c.decrypt_checked(get("echostr")).unwrap(),
        "1616140317555161061"
    );
}

#[test]
fn encrypt_with_fixed_random_is_byte_exact() {
    let mut checked = 0;
    for v in vectors() {
        let Some(random) = &v.random_ascii else {
            continue;
        };
        let random: [u8; 16] = random.as_bytes().try_into().expect("16-byte random prefix");
        let c = crypto(&v);
        assert_eq!(
            c.encrypt_with_random(&random, v.plaintext.as_bytes()),
            v.encrypt,
            "{}",
            v.id
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "V4a and V7");
}

#[test]
fn round_trip_for_every_key() {
    for v in vectors() {
        let c = crypto(&v);
        for msg in ["", "x", "0123456789ab", &v.plaintext, &"长".repeat(100)] {
            let encrypt = c.encrypt(msg.as_bytes());
            assert_eq!(c.decrypt_checked(&encrypt).as_deref(), Ok(msg), "{}", v.id);
        }
        // Also through the envelope a real POST would carry.
        let (sig, body) = c.seal_callback(&v.plaintext, "1000002", &v.timestamp, &v.nonce);
        let envelope = siyu::wecom::crypto::parse_envelope(&body).unwrap();
        assert_eq!(
            c.verify_signature(&sig, &v.timestamp, &v.nonce, &envelope.encrypt),
            Ok(())
        );
        assert_eq!(c.decrypt_checked(&envelope.encrypt).unwrap(), v.plaintext);
    }
}
