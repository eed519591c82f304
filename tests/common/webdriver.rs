//! A minimal W3C WebDriver client for the browser test: chromedriver on a loopback port, one
//! session, and the handful of commands the test needs (navigate, find, read, click, type,
//! frames, cookies, scripts, screenshots, the browser's console log).
//!
//! Plain JSON over HTTP/1.1 with the HTTP client the other tests already use, so it adds no
//! crates to the build. Every command is bounded by [`COMMAND_TIMEOUT`] (a new session by
//! [`NEW_SESSION_TIMEOUT`]).

use std::fmt;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Longest any one WebDriver command may take (chromedriver's own page-load timeout, set in
/// [`Session::new`], is shorter).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest starting the browser may take.
pub const NEW_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest chromedriver may take to say which port it listens on.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The key of an element reference in W3C WebDriver JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Why a command failed: no answer, or a WebDriver error (`no such element`, ...).
#[derive(Debug, Clone)]
pub enum Error {
    Transport(String),
    WebDriver {
        status: u16,
        error: String,
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(reason) => write!(f, "{reason}"),
            Error::WebDriver {
                status,
                error,
                message,
            } => {
                // chromedriver appends a long native stack to some messages: keep the first line.
                let first_line = message.lines().next().unwrap_or_default();
                write!(f, "{error} ({status}): {first_line}")
            }
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

// === chromedriver ===

/// A chromedriver process on a loopback port, in a process group of its own so that the
/// browser it starts ends with it. Dropping it ends the group.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Start `chromedriver` on a free loopback port (it picks one and prints it) and wait,
    /// bounded, until it says it listens.
    pub fn start(chromedriver: &Path) -> Driver {
        let mut child = Command::new(chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {} failed: {error}", chromedriver.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (port_tx, port_rx) = mpsc::channel();
        // Read the announcement, then keep draining so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = announced_port(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                    continue;
                }
                eprintln!("chromedriver: {line}");
            }
        });
        let mut driver = Driver {
            child,
            url: String::new(),
        };
        match port_rx.recv_timeout(DRIVER_START_TIMEOUT) {
            Ok(port) => driver.url = format!("http://127.0.0.1:{port}"),
            // The drop ends the process.
            Err(_) => panic!(
                "chromedriver did not announce its port within {DRIVER_START_TIMEOUT:?} (or exited)"
            ),
        }
        driver
    }

    /// `http://127.0.0.1:PORT` of chromedriver.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The port in chromedriver's "ChromeDriver was started successfully on port 43269." line.
fn announced_port(line: &str) -> Option<u16> {
    let rest = line.split("started successfully on port ").nth(1)?;
    rest.trim_end_matches(['.', ' ']).parse().ok()
}

impl Drop for Driver {
    fn drop(&mut self) {
        // End the whole group (chromedriver and any browser it left running), then make sure
        // chromedriver itself is gone and reaped.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Killed below if it has not exited by then: no panic in a drop.
        let _ = crate::common::poll_until_blocking(
            "chromedriver to exit after SIGTERM",
            Duration::from_secs(5),
            || !matches!(self.child.try_wait(), Ok(None)),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === session ===

/// One browser session. Cheap to clone; [`Session::delete`] ends the browser.
#[derive(Clone)]
pub struct Session {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://127.0.0.1:PORT/session/ID`
    base: String,
}

/// A reference to an element of the current browsing context.
#[derive(Clone)]
pub struct Element {
    session: Session,
    id: String,
}

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Element({})", self.id)
    }
}

impl Session {
    /// Start a browser through chromedriver at `driver_url` with `capabilities` (the
    /// `alwaysMatch` object). Page loads time out after 20 s, scripts after 10 s.
    pub async fn new(driver_url: &str, mut capabilities: Value) -> Result<Session> {
        capabilities["timeouts"] = json!({ "implicit": 0, "pageLoad": 20_000, "script": 10_000 });
        let client = Client::builder(TokioExecutor::new()).build_http();
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let url = format!("{driver_url}/session");
        let value = request(&client, Method::POST, &url, Some(body), NEW_SESSION_TIMEOUT).await?;
        let id = value["sessionId"].as_str().ok_or_else(|| {
            Error::Transport(format!("new session answered without an id: {value}"))
        })?;
        Ok(Session {
            client,
            base: format!("{url}/{id}"),
        })
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        request(&self.client, Method::GET, &url, None, COMMAND_TIMEOUT).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        request(
            &self.client,
            Method::POST,
            &url,
            Some(body),
            COMMAND_TIMEOUT,
        )
        .await
    }

    /// Navigate and wait for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    pub async fn current_url(&self) -> Result<String> {
        string(self.get("/url").await?)
    }

    pub async fn refresh(&self) -> Result<()> {
        self.post("/refresh", json!({})).await.map(drop)
    }

    pub async fn title(&self) -> Result<String> {
        string(self.get("/title").await?)
    }

    /// The first element matching a CSS selector (`no such element` if none does).
    pub async fn find(&self, css: &str) -> Result<Element> {
        let value = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await?;
        self.element(&value)
    }

    /// Every element matching a CSS selector, in document order (maybe none).
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let value = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        value
            .as_array()
            .ok_or_else(|| Error::Transport(format!("find elements answered {value}")))?
            .iter()
            .map(|reference| self.element(reference))
            .collect()
    }

    fn element(&self, reference: &Value) -> Result<Element> {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| Error::Transport(format!("not an element reference: {reference}")))?;
        Ok(Element {
            session: self.clone(),
            id: id.to_owned(),
        })
    }

    /// Make `frame` (an `<iframe>` element) the current browsing context.
    pub async fn enter_frame(&self, frame: &Element) -> Result<()> {
        self.post("/frame", json!({ "id": { ELEMENT_KEY: frame.id } }))
            .await
            .map(drop)
    }

    /// Back to the parent of the current frame.
    pub async fn leave_frame(&self) -> Result<()> {
        self.post("/frame/parent", json!({})).await.map(drop)
    }

    /// Back to the top-level document.
    pub async fn top_frame(&self) -> Result<()> {
        self.post("/frame", json!({ "id": null })).await.map(drop)
    }

    /// Add a cookie for the current page's host, path `/`.
    pub async fn add_cookie(&self, name: &str, value: &str) -> Result<()> {
        let cookie = json!({ "name": name, "value": value, "path": "/", "httpOnly": true });
        self.post("/cookie", json!({ "cookie": cookie }))
            .await
            .map(drop)
    }

    /// Run `script` (a function body; `arguments` holds `args`) and return what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Run `script` (a function body; `arguments` holds `args`, then the callback) until it
    /// calls its callback, the last of `arguments`, and return what it passed. Bounded by the
    /// session's script timeout (10 s): the script must call back sooner.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let encoded = string(self.get("/screenshot").await?)?;
        STANDARD
            .decode(encoded)
            .map_err(|error| Error::Transport(format!("screenshot is not base64: {error}")))
    }

    /// The browser's console entries since the last call (chromedriver's log extension; needs
    /// `goog:loggingPrefs: {browser: ...}` in the capabilities).
    pub async fn browser_log(&self) -> Result<Vec<Value>> {
        let value = self.post("/se/log", json!({ "type": "browser" })).await?;
        Ok(value.as_array().cloned().unwrap_or_default())
    }

    /// End the session, which closes the browser.
    pub async fn delete(&self) -> Result<()> {
        request(
            &self.client,
            Method::DELETE,
            &self.base,
            None,
            COMMAND_TIMEOUT,
        )
        .await
        .map(drop)
    }
}

impl Element {
    fn path(&self, command: &str) -> String {
        format!("/element/{}/{command}", self.id)
    }

    /// The rendered text (what a reader sees; empty for hidden elements).
    pub async fn text(&self) -> Result<String> {
        string(self.session.get(&self.path("text")).await?)
    }

    /// A DOM property (`value`, `href`, ...), `null` if unset.
    pub async fn property(&self, name: &str) -> Result<Value> {
        self.session
            .get(&self.path(&format!("property/{name}")))
            .await
    }

    /// An HTML attribute as written in the markup, if present.
    pub async fn attribute(&self, name: &str) -> Result<Option<String>> {
        let value = self
            .session
            .get(&self.path(&format!("attribute/{name}")))
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Whether it is rendered (not `hidden`, not `display: none`, ...).
    pub async fn is_displayed(&self) -> Result<bool> {
        let value = self.session.get(&self.path("displayed")).await?;
        value
            .as_bool()
            .ok_or_else(|| Error::Transport(format!("displayed answered {value}")))
    }

    pub async fn click(&self) -> Result<()> {
        self.session
            .post(&self.path("click"), json!({}))
            .await
            .map(drop)
    }

    pub async fn clear(&self) -> Result<()> {
        self.session
            .post(&self.path("clear"), json!({}))
            .await
            .map(drop)
    }

    /// Type `text` into it.
    pub async fn send_keys(&self, text: &str) -> Result<()> {
        self.session
            .post(&self.path("value"), json!({ "text": text }))
            .await
            .map(drop)
    }
}

fn string(value: Value) -> Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Transport(format!("expected a string, got {value}")))
}

/// One command: the request with a JSON body (if any), the answer's `value`, or the error
/// it carries.
async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    body: Option<Value>,
    limit: Duration,
) -> Result<Value> {
    let what = format!("{method} {url}");
    let mut builder = Request::builder().method(method).uri(url);
    let body = match body {
        Some(body) => {
            builder = builder.header("content-type", "application/json; charset=utf-8");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = builder
        .body(Full::new(body))
        .map_err(|error| Error::Transport(format!("{what} does not build: {error}")))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| Error::Transport(format!("{what} failed: {error}")))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| Error::Transport(format!("{what}: unreadable answer: {error}")))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            Error::Transport(format!(
                "{what}: answer is not JSON ({status}): {}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(Error::WebDriver {
            status: status.as_u16(),
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        })
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Transport(format!(
                "{what} took longer than {limit:?}"
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::announced_port;

    #[test]
    fn the_port_is_read_from_chromedriver_s_announcement() {
        assert_eq!(
            announced_port("ChromeDriver was started successfully on port 43269."),
            Some(43269)
        );
        assert_eq!(announced_port("Only local connections are allowed."), None);
    }
}
