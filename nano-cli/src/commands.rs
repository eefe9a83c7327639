//! The one-shot commands: `request`, `notify`, `listen`.

use nano::Serializer;
use serde_json::json;

use crate::{connect, Failure, Setup};

/// `request`: prints the response as JSON.
pub async fn request<S: Serializer>(
    setup: &Setup,
    route: &str,
    json: Option<&str>,
) -> Result<(), Failure> {
    let payload = setup.codec.encode(json)?;
    let client = connect::<S>(setup).await?;
    let response = client.request_raw(route, &payload).await?;
    println!("{}", setup.codec.decode_response(&response));
    client.close().await;
    Ok(())
}

/// `notify`: sends it and closes the connection once it is written.
pub async fn notify<S: Serializer>(
    setup: &Setup,
    route: &str,
    json: Option<&str>,
) -> Result<(), Failure> {
    let payload = setup.codec.encode(json)?;
    let client = connect::<S>(setup).await?;
    client.notify_raw(route, &payload).await?;
    client.close().await;
    Ok(())
}

/// `listen`: prints pushes as JSON lines until Ctrl-C, the end of the connection or `count`.
pub async fn listen<S: Serializer>(
    setup: &Setup,
    routes: &[String],
    request: Option<&[String]>,
    count: Option<u64>,
) -> Result<(), Failure> {
    let first = match request {
        Some([route, body]) => Some((route.as_str(), setup.codec.encode(Some(body))?)),
        _ => None,
    };
    let client = connect::<S>(setup).await?;
    // Subscribe before the request so the pushes it triggers are not missed.
    let mut pushes = client.on_any();
    if let Some((route, payload)) = first {
        let response = client.request_raw(route, &payload).await?;
        eprintln!("{}", setup.codec.decode_response(&response));
    }
    let mut seen = 0u64;
    if count == Some(0) {
        return Ok(());
    }
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some((route, body)) = push else {
                    eprintln!("nano-cli: connection ended: {:?}", client.closed().await);
                    return Ok(());
                };
                if !routes.is_empty() && !routes.contains(&route) {
                    continue;
                }
                println!("{}", json!({"route": route, "body": setup.codec.decode_push(&body)}));
                seen += 1;
                if Some(seen) == count {
                    client.close().await;
                    return Ok(());
                }
            }
            _ = tokio::signal::ctrl_c() => {
                client.close().await;
                return Ok(());
            }
        }
    }
}
