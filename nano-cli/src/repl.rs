//! `repl`: an interactive shell with history and route completion; reads plain lines from
//! stdin when it is not a terminal (scripts, tests).
//!
//! Lines: `request ROUTE [JSON]`, `notify ROUTE [JSON]`, `routes`, `help`, `quit`.
//! Responses print as JSON, error responses as `error {…}`, pushes as they arrive as
//! `push {"route":…,"body":…}`.

use std::io::{BufRead, IsTerminal};
use std::sync::mpsc as std_mpsc;

use nano::{Client, ClientError, Serializer};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, ExternalPrinter, Helper};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{connect, error_json, Failure, Setup};

const COMMANDS: [&str; 5] = ["request", "notify", "routes", "help", "quit"];

const HELP: &str = "commands: request ROUTE [JSON] | notify ROUTE [JSON] | routes | help | quit";

/// Completes command words, then route names from the handshake dictionary.
struct RouteCompleter {
    routes: Vec<String>,
}

/// What to complete at `pos` in `line`: the start of the word and the candidates.
fn candidates(routes: &[String], line: &str, pos: usize) -> (usize, Vec<String>) {
    let before = line.get(..pos).unwrap_or(line);
    let start = before.rfind(' ').map_or(0, |i| i + 1);
    let word = &before[start..];
    let words_before: Vec<&str> = before[..start].split_whitespace().collect();
    let pool: Vec<&str> = match words_before.as_slice() {
        [] => COMMANDS.to_vec(),
        ["request" | "notify"] => routes.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let found = pool
        .into_iter()
        .filter(|c| c.starts_with(word))
        .map(str::to_owned)
        .collect();
    (start, found)
}

impl Completer for RouteCompleter {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = candidates(&self.routes, line, pos);
        let pairs = found
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: format!("{c} "),
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for RouteCompleter {
    type Hint = String;
}
impl Highlighter for RouteCompleter {}
impl Validator for RouteCompleter {}
impl Helper for RouteCompleter {}

/// Sends pushes to the terminal without breaking the prompt, or to stdout.
enum Printer {
    Stdout,
    Terminal(Box<dyn ExternalPrinter + Send>),
}

impl Printer {
    fn print(&mut self, line: String) {
        match self {
            Printer::Stdout => println!("{line}"),
            Printer::Terminal(p) => {
                if p.print(format!("{line}\n")).is_err() {
                    println!("{line}");
                }
            }
        }
    }
}

/// Reads lines on a thread of its own: each line is sent with a channel to report back when
/// it has been handled (so the prompt comes after the answer).
fn spawn_reader(routes: Vec<String>) -> (mpsc::Receiver<(String, std_mpsc::Sender<()>)>, Printer) {
    let (tx, rx) = mpsc::channel(1);
    let (printer_tx, printer_rx) = std_mpsc::channel::<Printer>();
    std::thread::spawn(move || {
        if std::io::stdin().is_terminal() {
            terminal_loop(routes, &tx, &printer_tx);
        } else {
            let _ = printer_tx.send(Printer::Stdout);
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if !send_and_wait(&tx, line) {
                    break;
                }
            }
        }
    });
    let printer = printer_rx.recv().unwrap_or(Printer::Stdout);
    (rx, printer)
}

/// Sends a line to the shell and waits until it was handled; `false` once the shell is gone.
fn send_and_wait(tx: &mpsc::Sender<(String, std_mpsc::Sender<()>)>, line: String) -> bool {
    let (done_tx, done_rx) = std_mpsc::channel();
    tx.blocking_send((line, done_tx)).is_ok() && done_rx.recv().is_ok()
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".nano_cli_history"))
}

fn terminal_loop(
    routes: Vec<String>,
    tx: &mpsc::Sender<(String, std_mpsc::Sender<()>)>,
    printer_tx: &std_mpsc::Sender<Printer>,
) {
    let mut editor = match rustyline::Editor::<RouteCompleter, _>::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("nano-cli: cannot open the terminal: {e}");
            let _ = printer_tx.send(Printer::Stdout);
            return;
        }
    };
    editor.set_helper(Some(RouteCompleter { routes }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let printer = match editor.create_external_printer() {
        Ok(p) => Printer::Terminal(Box::new(p)),
        Err(_) => Printer::Stdout,
    };
    let _ = printer_tx.send(printer);
    eprintln!("{HELP}");
    loop {
        match editor.readline("nano> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if !send_and_wait(tx, line) {
                    break;
                }
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("nano-cli: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
}

/// Whether the shell goes on after a line.
enum Flow {
    Continue,
    Quit,
}

async fn handle<S: Serializer>(setup: &Setup, client: &Client<S>, line: &str) -> Flow {
    let line = line.trim();
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let (route, body) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    match cmd {
        "" => {}
        "quit" | "exit" => return Flow::Quit,
        "help" => println!("{HELP}"),
        "routes" => {
            for r in routes(client) {
                println!("{r}");
            }
        }
        "request" | "notify" if route.is_empty() => println!("error: {cmd} needs a ROUTE"),
        "request" => match setup.codec.encode(Some(body)) {
            Err(e) => println!("error: {e}"),
            Ok(payload) => match client.request_raw(route, &payload).await {
                Ok(r) => println!("{}", setup.codec.decode_response(&r)),
                Err(ClientError::Server(e)) => println!("error {}", error_json(&e)),
                Err(e) => println!("error: {e}"),
            },
        },
        "notify" => match setup.codec.encode(Some(body)) {
            Err(e) => println!("error: {e}"),
            Ok(payload) => match client.notify_raw(route, &payload).await {
                Ok(()) => println!("ok"),
                Err(e) => println!("error: {e}"),
            },
        },
        other => println!("error: unknown command {other:?}; {HELP}"),
    }
    Flow::Continue
}

fn routes<S: Serializer>(client: &Client<S>) -> Vec<String> {
    let mut routes: Vec<String> = client
        .handshake()
        .dict
        .as_ref()
        .map(|d| d.iter().map(|(r, _)| r.to_owned()).collect())
        .unwrap_or_default();
    routes.sort();
    routes
}

fn push_line(setup: &Setup, route: &str, body: &[u8]) -> String {
    format!(
        "push {}",
        json!({"route": route, "body": setup.codec.decode_push(body)})
    )
}

/// `repl`: runs the shell until `quit`, end of input or the end of the connection.
pub async fn run<S: Serializer>(setup: &Setup) -> Result<(), Failure> {
    let client = connect::<S>(setup).await?;
    let mut pushes = client.on_any();
    let (mut lines, mut printer) = spawn_reader(routes(&client));
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some((line, done)) = line else { break };
                let flow = handle(setup, &client, &line).await;
                // Pushes that arrived with the answer print before the next prompt.
                while let Ok((route, body)) = pushes.try_recv() {
                    printer.print(push_line(setup, &route, &body));
                }
                let _ = done.send(());
                if let Flow::Quit = flow {
                    break;
                }
            }
            push = pushes.recv() => {
                let Some((route, body)) = push else {
                    eprintln!("nano-cli: connection ended: {:?}", client.closed().await);
                    break;
                };
                printer.print(push_line(setup, &route, &body));
            }
        }
    }
    client.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_commands_then_routes() {
        let routes = vec![
            "Room.Join".to_owned(),
            "Room.Leave".to_owned(),
            "X.Y".to_owned(),
        ];
        assert_eq!(
            candidates(&routes, "re", 2),
            (0, vec!["request".to_owned()])
        );
        assert_eq!(
            candidates(&routes, "request Ro", 10),
            (8, vec!["Room.Join".to_owned(), "Room.Leave".to_owned()])
        );
        assert_eq!(
            candidates(&routes, "request Room.Join {", 19).1,
            Vec::<String>::new()
        );
        assert_eq!(candidates(&routes, "routes ", 7).1, Vec::<String>::new());
    }
}
