//! A real headless Chromium driven over WebDriver by chromedriver, for the browser tests.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::web_support::wait_until;

/// Chromium and chromedriver, or `None` (the test is skipped, saying so) when they are missing;
/// where `INFERMESH_REQUIRE_BROWSER` is set (CI) a missing browser fails instead.
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = find(
        "CHROME_BIN",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    );
    let chromedriver = find("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
    match (chromium, chromedriver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            assert!(
                std::env::var_os("INFERMESH_REQUIRE_BROWSER").is_none(),
                "chromium and chromedriver are required (INFERMESH_REQUIRE_BROWSER is set): run scripts/ci-browser"
            );
            eprintln!("SKIPPED: install chromium and chromium-driver (scripts/ci-browser) to run the browser test");
            None
        }
    }
}

pub fn find(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// chromedriver on a free port; killed when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(90))
        .no_proxy()
        .build()
        .unwrap()
}

impl Driver {
    pub fn start(driver: &PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_until(Duration::from_secs(30), "chromedriver ready", || {
            http()
                .get(format!("{}/status", d.url))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .filter(|v| v["value"]["ready"] == true)
                .map(|_| ())
        });
        d
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let req = match method {
            "GET" => http().get(url),
            "DELETE" => http().delete(url),
            _ => http().post(url).json(&body.unwrap_or(json!({}))),
        };
        let v: Value = req
            .send()
            .expect("webdriver request")
            .json()
            .expect("webdriver json");
        assert!(
            v["value"].get("error").is_none(),
            "webdriver {method} {path}: {v}"
        );
        v["value"].clone()
    }
}

pub struct Session<'a> {
    pub driver: &'a Driver,
    pub id: String,
}

impl Session<'_> {
    pub fn path(&self, p: &str) -> String {
        format!("/session/{}{p}", self.id)
    }

    pub fn goto(&self, url: &str) {
        self.driver
            .call("POST", &self.path("/url"), Some(json!({"url": url})));
    }

    pub fn eval(&self, script: &str) -> Value {
        self.driver.call(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The WebDriver element for a CSS selector.
    pub fn element(&self, css: &str) -> String {
        let v = self.driver.call(
            "POST",
            &self.path("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Types `text` into the element as a user's keyboard would.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.driver.call(
            "POST",
            &self.path(&format!("/element/{e}/value")),
            Some(json!({"text": text})),
        );
    }

    /// Clicks the element with the pointer.
    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.driver.call(
            "POST",
            &self.path(&format!("/element/{e}/click")),
            Some(json!({})),
        );
    }

    pub fn screenshot(&self, to: &std::path::Path) {
        let b64 = self.driver.call("GET", &self.path("/screenshot"), None);
        let png = base64_decode(b64.as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
    }

    pub fn console(&self) -> Vec<Value> {
        let v = self.driver.call(
            "POST",
            &self.path("/se/log"),
            Some(json!({"type": "browser"})),
        );
        v.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = http()
            .delete(format!("{}/session/{}", self.driver.url, self.id))
            .send();
    }
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

impl Driver {
    /// A headless browser session with its profile in `profile`.
    pub fn session(&self, chromium: &Path, profile: &Path) -> Session<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1200", "--hide-scrollbars",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let created = self.call("POST", "/session", Some(caps));
        Session {
            driver: self,
            id: created["sessionId"]
                .as_str()
                .expect("session id")
                .to_string(),
        }
    }
}
