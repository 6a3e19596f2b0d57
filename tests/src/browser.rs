//! A real headless Chromium for portal tests, driven through WebDriver: Debian's `chromedriver`
//! started on a free loopback port, one browser session per person (each its own profile, so
//! cookies never cross), screenshots into `$HUITONG_SCREENSHOTS` when it is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use fantoccini::{Client, ClientBuilder, Locator};

/// How long a page may take to show what a test waits for.
pub const PAGE_WAIT: Duration = Duration::from_secs(60);

/// A running chromedriver.
pub struct Driver {
    child: Child,
    url: String,
    _logs: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chromedriver binary (`$CHROMEDRIVER`, else Debian's).
fn chromedriver() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

impl Driver {
    /// Starts chromedriver and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Driver> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let logs = tempfile::tempdir()?;
        let child = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                logs.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (install Debian's chromium and chromium-driver: .ci/run does)",
                    chromedriver().display()
                )
            })?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _logs: logs,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not listen on port {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(driver)
    }

    /// A new browser (its own empty profile) downloading into `downloads`.
    pub async fn browser(&self, downloads: &Path) -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .map_err(|e| anyhow!("cannot open a Chromium session through chromedriver: {e}"))?;
        Ok(Browser {
            client,
            _profile: profile,
        })
    }
}

/// One person's browser.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens `url`.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .map_err(|e| anyhow!("cannot open {url}: {e}"))
    }

    /// The page's visible text.
    pub async fn text(&self) -> anyhow::Result<String> {
        let body = self.client.find(Locator::Css("body")).await?;
        Ok(body.text().await?)
    }

    /// Waits until the page (reloaded each time when `reload`) shows `needle`.
    pub async fn wait_text(&self, needle: &str, reload: bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let text = self.text().await.unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!(
                    "the page at {} did not show {needle:?} within {PAGE_WAIT:?}; it shows:\n{text}",
                    self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if reload {
                self.client.refresh().await?;
            }
        }
    }

    /// Types `text` into the field with CSS selector `css`.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|e| anyhow!("no field {css}: {e}"))?;
        e.clear().await?;
        e.send_keys(text).await?;
        Ok(())
    }

    /// Puts the file at `path` into the file input with CSS selector `css`.
    pub async fn attach(&self, css: &str, path: &Path) -> anyhow::Result<()> {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|e| anyhow!("no file input {css}: {e}"))?;
        e.send_keys(&path.display().to_string()).await?;
        Ok(())
    }

    /// Picks the option with `value` in the select list with CSS selector `css`.
    pub async fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        self.client
            .find(Locator::Css(css))
            .await
            .map_err(|e| anyhow!("no select list {css}: {e}"))?
            .select_by_value(value)
            .await
            .map_err(|e| anyhow!("{css} has no option {value:?}: {e}"))?;
        Ok(())
    }

    /// Accepts the confirmation dialog a destructive action opens, waiting for it to appear.
    pub async fn accept_dialog(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            match self.client.accept_alert().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!("no confirmation dialog appeared: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The text of the element with CSS selector `css`.
    pub async fn text_of(&self, css: &str) -> anyhow::Result<String> {
        Ok(self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|e| anyhow!("nothing at {css}: {e}"))?
            .text()
            .await?)
    }

    /// Clicks the element with CSS selector `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.client
            .find(Locator::Css(css))
            .await
            .map_err(|e| anyhow!("nothing to click at {css}: {e}"))?
            .click()
            .await?;
        Ok(())
    }

    /// Signs in at the portal `base` (e.g. `http://127.0.0.1:1234`).
    pub async fn sign_in(&self, base: &str, account: &str, password: &str) -> anyhow::Result<()> {
        self.open(&format!("{base}/login")).await?;
        self.fill("#account", account).await?;
        self.fill("#password", password).await?;
        self.click("#sign-in").await?;
        self.wait_text("退出", false)
            .await
            .with_context(|| format!("signing in as {account}"))?;
        Ok(())
    }

    /// Saves a screenshot as `<$HUITONG_SCREENSHOTS>/<name>.png` when that variable is set.
    pub async fn shot(&self, name: &str) -> anyhow::Result<()> {
        let Some(dir) = std::env::var_os("HUITONG_SCREENSHOTS") else {
            return Ok(());
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        let png = self.client.screenshot().await?;
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }
}
