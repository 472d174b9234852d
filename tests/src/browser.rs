//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: one WebSocket to
//! the browser, pages attached in flat mode, the network events of a page recorded. A dozen CDP
//! methods are all the browser test needs, so this is a small client over tokio-tungstenite
//! rather than a generated binding of the whole protocol (minutes of compiling in every CI run).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;
/// Per page session: (request id, what was sent), in order.
type Network = Arc<Mutex<HashMap<String, Vec<(String, Sent)>>>>;

/// A request the page sent, as the browser saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub url: String,
    pub method: String,
    pub body: Option<String>,
    pub status: Option<u16>,
}

pub struct Browser {
    _child: tokio::process::Child,
    _profile: tempdir::Dir,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next: AtomicU64,
    /// Network events by session id: request id → what was sent.
    network: Network,
}

/// A throwaway profile directory, removed when dropped.
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The browser binary: `CHROMIUM` or Debian's.
pub fn chromium_binary() -> Option<String> {
    std::env::var("CHROMIUM").ok().or_else(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(str::to_string)
    })
}

impl Browser {
    /// Starts headless Chromium on a loopback debugging port and connects to it.
    pub async fn launch() -> Result<Browser, String> {
        let binary = chromium_binary().ok_or("chromium is not installed (scripts/tools installs it)")?;
        let profile = tempdir::Dir(std::env::temp_dir().join(format!("cdp-{}", uuid::Uuid::new_v4())));
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start chromium: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await
        .map_err(|_| "chromium did not open its debugging port within 30 s".to_string())?
        .ok_or("chromium exited before opening its debugging port")?;
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| format!("connect to {url}: {e}"))?;
        let (mut sink, mut stream) = socket.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = outgoing.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let network: Network = Arc::default();
        let (p, n) = (pending.clone(), network.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = v["id"].as_u64() {
                    if let Some(tx) = p.lock().unwrap().remove(&id) {
                        let result = match v.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(v["result"].clone()),
                        };
                        let _ = tx.send(result);
                    }
                } else {
                    record_network(&n, &v);
                }
            }
            // The browser is gone: every command waiting for an answer fails now, not at its bound.
            p.lock().unwrap().clear();
        });
        Ok(Browser {
            _child: child,
            _profile: profile,
            out,
            pending,
            next: AtomicU64::new(1),
            network,
        })
    }

    /// One CDP command, for the browser (`session: None`) or a page, bounded at 30 s.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = s.into();
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out
            .send(Message::Text(message.to_string()))
            .map_err(|_| "the browser connection is closed".to_string())?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| format!("{method}: no answer within 30 s"))?
            .map_err(|_| format!("{method}: the browser connection closed"))?
            .map_err(|e| format!("{method}: {e}"))
    }

    /// A new tab, attached, with the network, page and runtime domains on.
    pub async fn new_page(&self) -> Result<Page<'_>, String> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target = target["targetId"].as_str().ok_or("no targetId")?.to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await?;
        let session = attached["sessionId"].as_str().ok_or("no sessionId")?.to_string();
        for domain in ["Network.enable", "Page.enable", "Runtime.enable"] {
            self.call(Some(&session), domain, json!({})).await?;
        }
        Ok(Page { browser: self, session })
    }
}

fn record_network(network: &Network, v: &Value) {
    let Some(session) = v["sessionId"].as_str() else { return };
    let p = &v["params"];
    let mut all = network.lock().unwrap();
    let requests = all.entry(session.to_string()).or_default();
    match v["method"].as_str() {
        Some("Network.requestWillBeSent") => {
            let r = &p["request"];
            requests.push((
                p["requestId"].as_str().unwrap_or_default().to_string(),
                Sent {
                    url: r["url"].as_str().unwrap_or_default().to_string(),
                    method: r["method"].as_str().unwrap_or_default().to_string(),
                    body: r["postData"].as_str().map(str::to_string),
                    status: None,
                },
            ));
        }
        Some("Network.responseReceived") => {
            let id = p["requestId"].as_str().unwrap_or_default();
            let status = p["response"]["status"].as_u64().and_then(|s| u16::try_from(s).ok());
            // The last request with that id (a preflight and its request share none).
            if let Some((_, sent)) = requests.iter_mut().rev().find(|(rid, _)| rid == id) {
                sent.status = status;
            }
        }
        _ => {}
    }
}

pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.browser.call(Some(&self.session), method, params).await
    }

    pub async fn navigate(&self, url: &str) -> Result<(), String> {
        self.call("Page.navigate", json!({"url": url})).await.map(|_| ())
    }

    /// A hard reload: the cache bypassed, as Ctrl-Shift-R.
    pub async fn hard_reload(&self) -> Result<(), String> {
        self.call("Page.reload", json!({"ignoreCache": true})).await.map(|_| ())
    }

    /// The value of a JavaScript expression (promises awaited).
    pub async fn eval(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `condition` (a JavaScript expression) is true, polling every 100 ms up to `bound`.
    pub async fn wait_for(&self, condition: &str, bound: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + bound;
        loop {
            if self.eval(condition).await.ok().and_then(|v| v.as_bool()) == Some(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                return Err(format!("not true within {bound:?}: {condition}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the element `selector` as keyboard input would.
    pub async fn type_into(&self, selector: &str, text: &str) -> Result<(), String> {
        self.eval(&format!("document.querySelector({selector:?}).focus(), true"))
            .await?;
        self.call("Input.insertText", json!({"text": text})).await.map(|_| ())
    }

    /// Clicks the element `selector` (its `click()`, after scrolling it into view).
    pub async fn click(&self, selector: &str) -> Result<(), String> {
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); e.scrollIntoView(); e.click(); return true; }})()"
        ))
        .await
        .map(|_| ())
    }

    /// The requests this page sent so far, in order.
    pub fn requests(&self) -> Vec<Sent> {
        self.browser
            .network
            .lock()
            .unwrap()
            .get(&self.session)
            .map(|r| r.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default()
    }

    /// A PNG of the page, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        std::fs::write(path, data).map_err(|e| e.to_string())
    }
}
