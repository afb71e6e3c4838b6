//! A minimal W3C WebDriver client over plain HTTP (reqwest), driving Debian's headless Chromium
//! through `chromedriver`: enough to log in, click, read attributes and take screenshots.
//!
//! [`Browser::start`] returns `None` (after a loud message) only when chromium or chromedriver is
//! not installed and `KHO_REQUIRE_BROWSER` is unset; CI (`.ci/run`) installs both and sets it, so
//! there a missing browser fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::procs::{free_port, wait_for};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one browser session.
pub struct Browser {
    driver: Child,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    session: String,
    pub screenshots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a 1366×768 window (self-signed
    /// certificates accepted). Screenshots go to `screenshots`.
    pub fn start(profile: &Path, screenshots: &Path) -> Option<Browser> {
        if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
            let msg = format!(
                "\n\n!!!!! BROWSER TEST SKIPPED: {CHROMIUM} or {CHROMEDRIVER} is missing \
                 (apt-get install chromium chromium-driver) !!!!!\n"
            );
            assert!(std::env::var_os("KHO_REQUIRE_BROWSER").is_none(), "{msg}");
            eprintln!("{msg}");
            return None;
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser { driver, rt, http, base, session: String::new(), screenshots: screenshots.to_path_buf() };
        wait_for(Duration::from_secs(20), "chromedriver to be ready", String::new, || {
            b.call("GET", "/status", None).ok().is_some_and(|v| v["ready"] == true)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1366,768", "--lang=vi", format!("--user-data-dir={}", profile.display()),
            ]},
        }}});
        let created = b.call("POST", "/session", Some(caps)).expect("create a browser session");
        b.session = created["sessionId"].as_str().expect("sessionId").to_string();
        std::fs::create_dir_all(&b.screenshots).expect("screenshot dir");
        Some(b)
    }

    /// One WebDriver command; the response's `value`, or its error message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let req = match method {
                "GET" => self.http.get(url),
                "DELETE" => self.http.delete(url),
                _ => self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.unwrap_or_else(|| json!({})).to_string()),
            };
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let ok = resp.status().is_success();
            let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
            let doc: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if ok { Ok(doc["value"].clone()) } else { Err(doc["value"].to_string()) }
        })
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url}))).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub fn current_url(&self) -> String {
        self.session_call("GET", "/url", None).expect("url").as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = self.session_call("POST", "/element", Some(json!({"using": "css selector", "value": css}))).ok()?;
        v[ELEMENT].as_str().map(str::to_string)
    }

    pub fn element(&self, css: &str) -> String {
        self.find(css).unwrap_or_else(|| panic!("no element {css} on {}\n{}", self.current_url(), self.text("body")))
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.element(css);
        self.session_call("POST", &format!("/element/{el}/value"), Some(json!({"text": text}))).expect("type");
    }

    pub fn click(&self, css: &str) {
        let el = self.element(css);
        self.session_call("POST", &format!("/element/{el}/click"), None).expect("click");
    }

    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let el = self.find(css)?;
        let v = self
            .session_call("GET", &format!("/element/{el}/attribute/{name}"), None)
            .map_err(|e| eprintln!("attribute {name} of {css}: {e}"))
            .ok()?;
        v.as_str().map(str::to_string)
    }

    /// The visible text of the first element matching `css` (empty if none).
    pub fn text(&self, css: &str) -> String {
        let Some(el) = self.find(css) else { return String::new() };
        self.session_call("GET", &format!("/element/{el}/text"), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits (up to 15 s) until the first element matching `css` contains `needle`: a click that
    /// submits a form or follows a link returns before the next page has loaded.
    pub fn wait_text(&self, css: &str, needle: &str) {
        wait_for(
            Duration::from_secs(15),
            &format!("{css} to contain {needle:?}"),
            || self.text("body"),
            || self.text(css).contains(needle),
        );
    }

    /// Waits (up to 15 s) until the current URL ends with `suffix`.
    pub fn wait_url(&self, suffix: &str) {
        wait_for(
            Duration::from_secs(15),
            &format!("the URL to end with {suffix}"),
            || self.current_url(),
            || self.current_url().ends_with(suffix),
        );
    }

    /// Resizes the browser window (e.g. to an IOC wall screen's 1920×1080).
    pub fn set_window(&self, width: u32, height: u32) {
        self.session_call("POST", "/window/rect", Some(json!({"width": width, "height": height}))).expect("resize");
    }

    /// Runs a script in the page and returns its result.
    pub fn script(&self, js: &str) -> Value {
        self.session_call("POST", "/execute/sync", Some(json!({"script": js, "args": []}))).expect("script")
    }

    /// Saves a PNG screenshot as `<screenshots>/<name>.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.session_call("GET", "/screenshot", None).expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).expect("base64");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
