//! What the example servers share: logging to stderr, and serving until Ctrl-C / SIGTERM with
//! the bound addresses printed on stdout (tests read them to find ports chosen with `:0`).

use nano::{App, Serializer, Transport};

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// The `--admin ADDR` flag every example server takes: the admin listener (`/metrics`, the
/// monitor page `/debug/nano/node`, `/debug/nano/node.json`) on that address.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AdminArgs {
    /// Serve metrics and the monitor page on this address (e.g. 127.0.0.1:9250)
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
}

impl AdminArgs {
    /// `app` with its admin listener, when the flag was given.
    pub fn apply<S: Serializer>(&self, app: App<S>) -> App<S> {
        match &self.admin {
            Some(addr) => app.admin(addr.clone()),
            None => app,
        }
    }
}

/// The `--export-api DIR` flag: write the application's API (`api.json`) and its typed client
/// stubs (`api.js`, `api.d.ts`) into DIR instead of serving.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ApiArgs {
    /// Write the API description and TypeScript client stubs into DIR, then exit
    #[arg(long, value_name = "DIR")]
    pub export_api: Option<std::path::PathBuf>,
}

impl ApiArgs {
    /// With `--export-api DIR`: writes the API there and returns `None` (nothing to serve);
    /// else `app`, to serve.
    #[allow(dead_code)] // not every example exports its API
    pub fn export<S: Serializer>(&self, app: App<S>) -> std::io::Result<Option<App<S>>> {
        let Some(dir) = &self.export_api else {
            return Ok(Some(app));
        };
        let api = app.export_api(dir)?;
        println!(
            "api {} ({} routes, {} pushes)",
            dir.display(),
            api.routes.len(),
            api.pushes.len()
        );
        Ok(None)
    }
}

/// Starts `app` on a new runtime, prints where it listens, and serves until a shutdown signal.
///
/// Printed, in this order: `open http://ADDR/web/` when `page` is set, `tcp ADDR`,
/// `ws ws://ADDR<ws_path>`, `admin http://ADDR/debug/nano/node` with an admin listener.
#[allow(dead_code)] // the cluster example serves nodes only
pub fn serve<S: Serializer>(app: App<S>, page: bool, ws_path: &str) -> std::io::Result<()> {
    serve_then(app, page, ws_path, || {})
}

/// As [`serve`], with a cluster node: prints `cluster ADDR` (where other nodes reach it)
/// before the other lines.
#[allow(dead_code)] // not every example is a cluster node
pub fn serve_node<S: Serializer>(
    app: App<S>,
    node: std::sync::Arc<nano_cluster::node::Node<S>>,
    page: bool,
    ws_path: &str,
) -> std::io::Result<()> {
    serve_then(app, page, ws_path, move || {
        if let Some(addr) = node.local_addr() {
            println!("cluster {addr}");
        }
    })
}

fn serve_then<S: Serializer>(
    app: App<S>,
    page: bool,
    ws_path: &str,
    started: impl FnOnce(),
) -> std::io::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async move {
        let server = app.start().await?;
        started();
        let ws = server.addr(Transport::WebSocket);
        if let (true, Some(ws)) = (page, ws) {
            println!("open http://{ws}/web/");
        }
        if let Some(tcp) = server.addr(Transport::Tcp) {
            println!("tcp {tcp}");
        }
        if let Some(ws) = ws {
            println!("ws ws://{ws}{ws_path}");
        }
        if let Some(admin) = server.admin_addr() {
            println!("admin http://{admin}/debug/nano/node");
        }
        server.run_until_signal().await;
        Ok(())
    })
}

/// `node` registered in etcd at `url` under `prefix`, when built with `--features etcd`;
/// otherwise an error saying how to get it.
#[allow(dead_code)] // cluster examples only
pub fn etcd(
    node: nano_cluster::node::Cluster,
    url: &str,
    prefix: &str,
) -> std::io::Result<nano_cluster::node::Cluster> {
    #[cfg(feature = "etcd")]
    {
        Ok(node.etcd([url], prefix))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (node, prefix);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("--etcd {url}: this build has no etcd support; build with `--features etcd`"),
        ))
    }
}
