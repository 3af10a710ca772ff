//! The "no collaboration session open" rule: while a session edits a diagram, REST writes to that
//! diagram (PUT, PATCH, DELETE) and the deletion of its threat model answer 409, since they would
//! bypass the session (tmi-compat.md §5.1). The collaboration hub answers whether a session is
//! open through the `OpenSessions` trait, so this layer does not depend on the hub. IO: whatever
//! the `OpenSessions` implementation does (Redis or process memory).

use async_trait::async_trait;
use uuid::Uuid;

use super::kinds::Kind;
use crate::error::ApiError;

/// Whether collaboration sessions are open (implemented by `collab::hub::Hub`).
#[async_trait]
pub trait OpenSessions: Send + Sync {
    /// Whether a session is open on the diagram.
    async fn on_diagram(&self, diagram_id: Uuid) -> anyhow::Result<bool>;
    /// Whether a session is open on any diagram of the threat model.
    async fn on_threat_model(&self, threat_model_id: Uuid) -> anyhow::Result<bool>;
}

fn unavailable(e: anyhow::Error) -> ApiError {
    ApiError::ServiceUnavailable(format!("Collaboration state unavailable: {e}"))
}

/// 409 when the diagram is being edited in a session.
pub async fn ensure_none_on_diagram(sessions: &dyn OpenSessions, diagram_id: Uuid) -> Result<(), ApiError> {
    if sessions.on_diagram(diagram_id).await.map_err(unavailable)? {
        return Err(ApiError::Conflict(
            "The diagram has an active collaboration session; edit it through the session or end it first"
                .into(),
        ));
    }
    Ok(())
}

/// 409 when a write to this child would bypass an open session (diagrams only).
pub async fn ensure_none_on_child(
    sessions: &dyn OpenSessions,
    kind: &Kind,
    id: Uuid,
) -> Result<(), ApiError> {
    if kind.kind == "diagram" {
        ensure_none_on_diagram(sessions, id).await?;
    }
    Ok(())
}

/// 409 when any diagram of the threat model is being edited in a session.
pub async fn ensure_none_on_threat_model(sessions: &dyn OpenSessions, tm: Uuid) -> Result<(), ApiError> {
    if sessions.on_threat_model(tm).await.map_err(unavailable)? {
        return Err(ApiError::Conflict(
            "A diagram of this threat model has an active collaboration session".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::kinds;

    /// One open session, on `diagram` of `tm`.
    struct One {
        tm: Uuid,
        diagram: Uuid,
    }

    #[async_trait]
    impl OpenSessions for One {
        async fn on_diagram(&self, id: Uuid) -> anyhow::Result<bool> {
            Ok(id == self.diagram)
        }
        async fn on_threat_model(&self, id: Uuid) -> anyhow::Result<bool> {
            Ok(id == self.tm)
        }
    }

    struct Down;

    #[async_trait]
    impl OpenSessions for Down {
        async fn on_diagram(&self, _: Uuid) -> anyhow::Result<bool> {
            anyhow::bail!("redis down")
        }
        async fn on_threat_model(&self, _: Uuid) -> anyhow::Result<bool> {
            anyhow::bail!("redis down")
        }
    }

    fn status(r: Result<(), ApiError>) -> u16 {
        r.map_or_else(|e| e.status_and_code().0.as_u16(), |()| 200)
    }

    #[tokio::test]
    async fn an_open_session_blocks_writes_to_its_diagram_and_threat_model_only() {
        let s = One {
            tm: Uuid::new_v4(),
            diagram: Uuid::new_v4(),
        };
        let diagram = kinds::diagram();
        let threat = kinds::by_kind("threat").unwrap();
        assert_eq!(status(ensure_none_on_child(&s, diagram, s.diagram).await), 409);
        assert_eq!(
            status(ensure_none_on_child(&s, diagram, Uuid::new_v4()).await),
            200
        );
        // Only diagrams are edited in sessions: a threat with the same id is not blocked.
        assert_eq!(status(ensure_none_on_child(&s, threat, s.diagram).await), 200);
        assert_eq!(status(ensure_none_on_threat_model(&s, s.tm).await), 409);
        assert_eq!(status(ensure_none_on_threat_model(&s, Uuid::new_v4()).await), 200);
        // When the session state cannot be read, nothing is written.
        assert_eq!(status(ensure_none_on_diagram(&Down, s.diagram).await), 503);
    }
}
