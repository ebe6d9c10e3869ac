//! Building blocks for the tests, the benchmarks and the demo: fresh callback secrets, settings
//! for a local siyu, and realistic events.

use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::config::{Secret, Settings};

/// A corp's callback settings, made up.
#[derive(Clone)]
pub struct CallbackSecrets {
    pub corp_id: String,
    pub token: String,
    pub encoding_aes_key: String,
}

impl CallbackSecrets {
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let mut alnum = |n: usize| -> String {
            (&mut rng)
                .sample_iter(&Alphanumeric)
                .take(n)
                .map(char::from)
                .collect()
        };
        CallbackSecrets {
            corp_id: format!("ww{}", alnum(16).to_lowercase()),
            token: alnum(32),
            encoding_aes_key: alnum(43),
        }
    }

    pub fn crypto(&self) -> crate::wecom::crypto::Crypto {
        crate::wecom::crypto::Crypto::new(&self.token, &self.encoding_aes_key, &self.corp_id)
            .expect("generated secrets are valid")
    }
}

pub const API_TOKEN: &str = "local-api-token";

/// Settings for a siyu on a random loopback port with the given database.
pub fn local_settings(database_url: &str, secrets: &CallbackSecrets) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".into();
    s.server.shutdown_grace_secs = 5;
    s.database.url = Secret::new(database_url);
    s.wecom.corp_id = secrets.corp_id.clone();
    s.wecom.agent_id = 1_000_002;
    s.wecom.callback_token = Secret::new(&secrets.token);
    s.wecom.encoding_aes_key = Secret::new(&secrets.encoding_aes_key);
    s.api.token = Secret::new(API_TOKEN);
    // Nothing listens there: a test that needs WeCom points this at the fake.
    s.wecom.api_base = "http://127.0.0.1:1".into();
    s.jobs.poll_interval_ms = 200;
    // The demo and the tests move their clock months on: nothing they made is pruned as old on
    // the way unless a test of retention asks for it.
    s.retention.inbox_days = 3650;
    s.retention.jobs_days = 3650;
    s.retention.sessions_days = 3650;
    s
}

/// A customer adding a staff member through a channel: a distinct event for every `n`.
pub fn add_contact_xml(corp_id: &str, n: u64, create_time: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
         <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wm{n:030}]]></ExternalUserID>\
         <State><![CDATA[douyin]]></State><WelcomeCode><![CDATA[WC{n:026}]]></WelcomeCode></xml>"
    )
}
