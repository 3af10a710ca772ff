//! The hub's server messages: the shared text frame, `diagram_state` from a stored diagram, `error`
//! messages, and the participant list with one entry per user. Pure.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use crate::collab::protocol::{
    Cell, DiagramState, ErrorPayload, Participant, ParticipantPermissions, ServerMessage,
};
use crate::collab::registry::{ParticipantRecord, user_key};
use crate::store::ChildRecord;

/// A message as the text frame every recipient shares.
pub fn text(message: &ServerMessage) -> Arc<str> {
    Arc::from(serde_json::to_string(message).unwrap_or_default())
}

/// A `diagram_state` from a stored diagram row.
pub fn state_message(diagram: &ChildRecord) -> ServerMessage {
    let cells: Vec<Cell> = diagram
        .doc
        .get("cells")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|c| c.as_object().cloned()).collect())
        .unwrap_or_default();
    let palette = diagram
        .doc
        .get("color_palette")
        .and_then(|p| serde_json::from_value(p.clone()).ok());
    ServerMessage::DiagramState(DiagramState {
        diagram_id: diagram.id,
        update_vector: vector_of(diagram),
        cells,
        color_palette: palette,
    })
}

/// The stored diagram's `update_vector` (0 when unset).
pub fn vector_of(diagram: &ChildRecord) -> i64 {
    diagram
        .doc
        .get("update_vector")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// An `error` message.
pub fn error_message(error: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error(ErrorPayload {
        error: error.to_owned(),
        message: message.into(),
        code: None,
        details: None,
        timestamp: Utc::now(),
    })
}

/// One entry per user (several tabs show once), with the best permission and latest activity.
pub fn dedupe(participants: Vec<ParticipantRecord>) -> Vec<Participant> {
    let mut out: Vec<Participant> = Vec::new();
    for p in participants {
        if let Some(existing) = out.iter_mut().find(|e| user_key(&e.user) == user_key(&p.user)) {
            if p.permissions == ParticipantPermissions::Writer {
                existing.permissions = ParticipantPermissions::Writer;
            }
            existing.last_activity = existing.last_activity.max(p.last_activity);
        } else {
            out.push(Participant {
                user: p.user,
                permissions: p.permissions,
                last_activity: p.last_activity,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::hub::testing::{diagram_row, user};
    use chrono::Duration;
    use serde_json::json;
    use uuid::Uuid;

    #[test]
    fn a_user_with_two_tabs_is_listed_once_with_the_best_permission() {
        let at = Utc::now();
        let tab = |permissions, ago| ParticipantRecord {
            conn_id: Uuid::new_v4(),
            user: user("alice"),
            permissions,
            replica: "r".into(),
            joined_at: at,
            last_activity: at - Duration::seconds(ago),
        };
        let bob = ParticipantRecord {
            user: user("bob"),
            ..tab(ParticipantPermissions::Reader, 0)
        };
        let list = dedupe(vec![
            tab(ParticipantPermissions::Reader, 0),
            tab(ParticipantPermissions::Writer, 10),
            bob,
        ]);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].permissions, ParticipantPermissions::Writer);
        assert_eq!(list[0].last_activity, at, "the latest activity of both tabs");
    }

    #[test]
    fn diagram_state_carries_the_stored_cells_and_vector() {
        let row = diagram_row(json!({"cells": [{"id": "a", "shape": "process"}, 7], "update_vector": 4}));
        let ServerMessage::DiagramState(state) = state_message(&row) else {
            panic!("not a diagram_state");
        };
        assert_eq!(state.update_vector, 4);
        assert_eq!(state.cells.len(), 1, "non-object cells are dropped");
        assert_eq!(vector_of(&diagram_row(json!({}))), 0);
    }
}
