//! A webhook receiver for alert tests that run the real hub binaries: records every JSON body
//! POSTed to `/hook`, answering 200.

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A running receiver; it serves until the runtime it was started on stops.
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Binds a free loopback port and serves on the current tokio runtime.
    pub async fn start() -> Receiver {
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let r = Arc::clone(&received);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let r = Arc::clone(&r);
                async move {
                    let v: Value = serde_json::from_slice(&body)
                        .unwrap_or_else(|_| serde_json::json!({"raw": String::from_utf8_lossy(&body)}));
                    r.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url: format!("http://127.0.0.1:{port}/hook"), received }
    }

    /// Every alert so far as `kind:agent-or-dataset`, in arrival order.
    pub fn kinds(&self) -> Vec<String> {
        let got = self.received.lock().unwrap_or_else(|p| p.into_inner());
        got.iter()
            .map(|a| {
                let subject = a["agent"].as_str().or(a["dataset"].as_str()).unwrap_or("");
                format!("{}:{subject}", a["kind"].as_str().unwrap_or("?"))
            })
            .collect()
    }

    /// How many alerts `kind:subject` arrived.
    pub fn count(&self, kind: &str, subject: &str) -> usize {
        let want = format!("{kind}:{subject}");
        self.kinds().iter().filter(|k| **k == want).count()
    }
}
