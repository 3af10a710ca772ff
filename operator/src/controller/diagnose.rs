//! Why an instance's server pods do not become ready, read from their status: pure (pods → an optional
//! [`ServerProblem`]). The controller lists the pods (IO) only while a rollout is incomplete.
//!
//! The server exits with one line naming what failed (`tmi-server: cannot connect to the database
//! (TMI_DATABASE_URL): …`), and its container's `terminationMessagePolicy: FallbackToLogsOnError` makes the
//! kubelet keep the tail of its log in `lastState.terminated.message`. That line becomes the condition's
//! message, with any credentials in a URL masked, so a wrong database URL shows up in `kubectl get tmi` and
//! not only as a CrashLoopBackOff.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Longest message taken from a pod (the rest is in `kubectl logs`).
const MAX_MESSAGE: usize = 300;

/// A reason the server pods are failing, for the Ready/Stalled conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProblem {
    /// CamelCase condition reason: `DatabaseUnreachable`, `MigrationFailed`, `ImagePullFailed`,
    /// `ServerCrashLooping`.
    pub reason: &'static str,
    /// Human-readable, credentials masked.
    pub message: String,
}

/// The first problem found among the server containers of `pods`, if any.
pub fn server_problem(pods: &[Pod]) -> Option<ServerProblem> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|c| c.name == "server" && !c.ready)
        .find_map(container_problem)
}

fn container_problem(c: &ContainerStatus) -> Option<ServerProblem> {
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
    if let Some(w) = waiting
        && matches!(
            w.reason.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull")
        )
    {
        return Some(ServerProblem {
            reason: "ImagePullFailed",
            message: format!(
                "the server image cannot be pulled: {}",
                clip(&redact(w.message.as_deref().unwrap_or("no details")))
            ),
        });
    }
    let terminated = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
        .filter(|t| t.exit_code != 0)?;
    let text = terminated.message.as_deref().unwrap_or_default();
    let line = last_line(text);
    let (reason, what) = if line.contains("cannot connect to the database") {
        ("DatabaseUnreachable", "the server cannot reach its database")
    } else if line.contains("database migration failed") {
        ("MigrationFailed", "the database migration failed")
    } else {
        ("ServerCrashLooping", "the server exits at start")
    };
    let detail = if line.is_empty() {
        format!("exit code {}; see kubectl logs --previous", terminated.exit_code)
    } else {
        clip(&redact(line))
    };
    Some(ServerProblem {
        reason,
        message: format!("{what} ({} restarts): {detail}", c.restart_count),
    })
}

/// The last non-empty line, without the `tmi-server: ` prefix the server prints errors with.
fn last_line(text: &str) -> &str {
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    line.strip_prefix("tmi-server: ").unwrap_or(line)
}

/// Masks the user information of every URL (`scheme://user:password@host` → `scheme://***@host`).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '\'' | ')' | ','))
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// The last non-empty line of a container's output, credentials masked and clipped: what a condition
/// message shows of it.
pub fn tail(text: &str) -> String {
    clip(&redact(last_line(text)))
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [status]}}))
            .unwrap()
    }

    fn crashed(message: &str) -> Pod {
        pod(
            json!({"name": "server", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "message": message}}}),
        )
    }

    #[test]
    fn an_unreachable_database_is_named_and_its_password_masked() {
        let log = "{\"level\":\"ERROR\"}\ntmi-server: cannot connect to the database (TMI_DATABASE_URL): \
                   error connecting to postgres://tmi:hunter2@db:5432/tmi: Connection refused (os error 111)\n";
        let p = server_problem(&[crashed(log)]).unwrap();
        assert_eq!(p.reason, "DatabaseUnreachable");
        assert!(
            p.message
                .starts_with("the server cannot reach its database (3 restarts): cannot connect"),
            "{}",
            p.message
        );
        assert!(p.message.contains("postgres://***@db:5432/tmi"), "{}", p.message);
        assert!(!p.message.contains("hunter2"), "{}", p.message);
    }

    #[test]
    fn other_failures_have_their_own_reasons() {
        assert_eq!(
            server_problem(&[crashed("tmi-server: database migration failed: boom")])
                .unwrap()
                .reason,
            "MigrationFailed"
        );
        let p = server_problem(&[crashed("tmi-server: TMI_JWT_SECRET is too short")]).unwrap();
        assert_eq!(p.reason, "ServerCrashLooping");
        assert!(
            p.message.ends_with("TMI_JWT_SECRET is too short"),
            "{}",
            p.message
        );
        let pull = pod(
            json!({"name": "server", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x:1\""}}}),
        );
        assert_eq!(server_problem(&[pull]).unwrap().reason, "ImagePullFailed");
    }

    #[test]
    fn ready_or_starting_pods_are_no_problem() {
        let ready = pod(
            json!({"name": "server", "ready": true, "restartCount": 1, "image": "i", "imageID": "",
            "lastState": {"terminated": {"exitCode": 1, "message": "tmi-server: cannot connect to the database"}}}),
        );
        let starting = pod(
            json!({"name": "server", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}),
        );
        let clean_exit = pod(
            json!({"name": "server", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": 0}}}),
        );
        assert_eq!(server_problem(&[ready, starting, clean_exit]), None);
    }

    #[test]
    fn redact_masks_user_information_only() {
        assert_eq!(
            redact("redis://:pw@r:6379/0 and http://h/x@y"),
            "redis://***@r:6379/0 and http://h/x@y"
        );
        assert_eq!(redact("no url"), "no url");
        assert_eq!(redact("a://b"), "a://b");
    }
}
