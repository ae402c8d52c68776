//! `mallbots dead-letters`: what an operator does with messages that could
//! not be handled. It works on the dead-letter store; a replay is carried
//! out by the running system (whichever process runs the gateway), within a
//! second.

use std::fmt::Write;

use mallbots_platform::dead_letters::{self, DeadLetter, Selection};

use crate::config::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// One line per dead letter, oldest first: id, state, queue, type,
    /// when, why. A page at a time: the last line says how to go on.
    List {
        /// Only those that failed on this queue (e.g. stores.commands).
        #[arg(long)]
        queue: Option<String>,
        /// Start after this id (the next page).
        #[arg(long)]
        after: Option<i64>,
        /// At most this many lines.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        limit: u64,
    },
    /// One dead letter whole: its reason, headers and body.
    Show { id: i64 },
    /// Send dead letters back to the queue they failed on (after a fix).
    /// They keep their message id, so a consumer that handled one after all
    /// ignores it.
    Replay {
        /// The dead letter to send back (a dead or an expired one).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every one still dead (of --queue, when given). Not the expired
        /// ones: their senders answered `TIMEOUT` and may have retried.
        #[arg(long)]
        all: bool,
        #[arg(long, requires = "all")]
        queue: Option<String>,
    },
    /// Delete dead letters (not those waiting to be replayed).
    Purge {
        #[arg(long)]
        queue: Option<String>,
    },
}

/// Carries out `action`; what to print.
pub async fn run(settings: &Settings, action: Action) -> anyhow::Result<String> {
    let db = crate::app::dead_letters(settings).await?;
    let mut out = String::new();
    match action {
        Action::List {
            queue,
            after,
            limit,
        } => {
            // One more than asked says whether there is a next page.
            let listing = dead_letters::Listing {
                queue: queue.as_deref(),
                after,
                limit: limit + 1,
            };
            let mut letters = dead_letters::list(&db, &listing).await?;
            let more = letters.len() as u64 > limit;
            letters.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            if letters.is_empty() {
                out.push_str("no dead letters\n");
            }
            for letter in &letters {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    letter.id,
                    letter.state,
                    letter.queue,
                    letter.message_type.as_deref().unwrap_or("-"),
                    letter.dead_at.to_rfc3339(),
                    letter.reason
                );
            }
            if let (true, Some(last)) = (more, letters.last()) {
                let queue = queue.map(|q| format!(" --queue {q}")).unwrap_or_default();
                let _ = writeln!(out, "more: dead-letters list{queue} --after {}", last.id);
            }
        }
        Action::Show { id } => match dead_letters::show(&db, id).await? {
            Some(letter) => describe(&mut out, &letter),
            None => anyhow::bail!("no dead letter {id}"),
        },
        Action::Replay { id, all, queue } => {
            let which = match (id, all) {
                (Some(id), _) => Selection::One(id),
                (None, _) => Selection::All { queue },
            };
            let n = dead_letters::request_replay(&db, which).await?;
            let _ = writeln!(
                out,
                "{n} dead letter(s) to replay: the running system sends them back within a second"
            );
        }
        Action::Purge { queue } => {
            let n = dead_letters::purge(&db, queue.as_deref()).await?;
            let _ = writeln!(out, "{n} dead letter(s) deleted");
        }
    }
    Ok(out)
}

fn describe(out: &mut String, letter: &DeadLetter) {
    let _ = writeln!(out, "id:          {}", letter.id);
    let _ = writeln!(out, "state:       {}", letter.state);
    let _ = writeln!(out, "queue:       {}", letter.queue);
    let _ = writeln!(out, "reason:      {}", letter.reason);
    let _ = writeln!(out, "dead at:     {}", letter.dead_at.to_rfc3339());
    if let Some(at) = letter.replayed_at {
        let _ = writeln!(out, "replayed at: {}", at.to_rfc3339());
    }
    let m = &letter.message;
    let _ = writeln!(
        out,
        "message id:  {}",
        m.message_id.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "type:        {}",
        m.message_type.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "correlation: {}",
        m.correlation_id.as_deref().unwrap_or("-")
    );
    for (name, value) in &m.headers {
        let (name, value) = (printable(name.as_bytes()), printable(value.as_bytes()));
        let _ = writeln!(out, "header:      {name}: {value}");
    }
    let body = match serde_json::from_slice::<serde_json::Value>(&m.body) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        Err(_) => printable(&m.body),
    };
    let _ = writeln!(out, "body:\n{body}");
}

/// `bytes` as text a terminal shows as it is: escaped (`\xff`, `\x1b`)
/// unless they are UTF-8 without control characters but line breaks and
/// tabs. A message from anywhere must not drive the operator's terminal.
fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text)
            if !text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
        {
            text.to_owned()
        }
        _ => bytes.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_is_not_plain_text_is_shown_escaped() {
        assert_eq!(
            super::printable("plain\ttext\n".as_bytes()),
            "plain\ttext\n"
        );
        assert_eq!(super::printable(b"\x00\xff\x1b[2J"), "\\x00\\xff\\x1b[2J");
    }
}
