//! Pure: the TMI collaboration WebSocket protocol as serde types. No IO, no session state.
//!
//! Contract: `api/tmi-asyncapi.yml` (every example in it round-trips through these
//! types, see the tests), amended by tmi-compat.md §5.3 and Part B §4 where the real web client
//! (tmi-ux) needs more. Every frame is one JSON object whose `message_type` selects the variant.
//! Inbound frames go through [`ClientMessage::from_json`], which sorts failures into the cases
//! the server answers differently ([`ClientMessageError::error_code`]); outbound frames are
//! [`ServerMessage`] values serialized with `serde_json`.
//!
//! Parsing is lenient wherever the session, not the parser, owns the answer: unknown fields are
//! ignored (as upstream's Go decoder does), and a diagram operation with an unknown operation
//! type, a missing `data` or no cells still parses, so that the session can reply with the
//! documented `operation_rejected` reason instead of dropping the frame. Output is strict by
//! construction: optional fields are omitted when absent, as in the AsyncAPI examples.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

/// One diagram cell (node or edge) as the REST API stores it.
///
/// The AsyncAPI delegates the cell shape to the REST `Node`/`Edge` schemas, so the protocol keeps
/// it as a JSON object; the diagram layer validates and normalizes it. `update` operations may
/// carry a partial object (the AsyncAPI example has neither `id` nor `shape`).
pub type Cell = Map<String, Value>;

/// Everything a client may send (AsyncAPI operation `sendDiagramOperation`).
///
/// Server-only types (`diagram_operation_event`, `participants_update`, ...) do not parse as a
/// `ClientMessage`: [`ClientMessage::from_json`] reports them as
/// [`ClientMessageError::ServerOnly`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// `diagram_operation_request`: add, update or remove cells (writer or better).
    DiagramOperationRequest(DiagramOperationRequest),
    /// `presenter_request`: the sender asks to become presenter.
    PresenterRequest,
    /// `presenter_denied_request`: the host denies someone's presenter request.
    PresenterDeniedRequest(PresenterDeniedRequest),
    /// `change_presenter_request`: the host hands presenter mode to someone (or takes it back).
    ChangePresenterRequest(ChangePresenterRequest),
    /// `presenter_cursor`: the presenter's cursor, relayed to the other participants.
    PresenterCursor(PresenterCursor),
    /// `presenter_selection`: the presenter's selection, relayed to the other participants.
    PresenterSelection(PresenterSelection),
    /// `sync_status_request`: asks for the current `update_vector` only.
    SyncStatusRequest,
    /// `sync_request`: asks for the full diagram state unless the client is current.
    SyncRequest(SyncRequest),
    /// `undo_request`: undo the session's last operation (writer or better).
    UndoRequest,
    /// `redo_request`: redo the session's last undone operation (writer or better).
    RedoRequest,
    /// `remove_participant_request`: the host removes (and bans) a participant.
    RemoveParticipantRequest(RemoveParticipantRequest),
}

impl ClientMessage {
    /// Every `message_type` a client may send, in declaration order.
    pub const TYPES: &'static [&'static str] = &[
        "diagram_operation_request",
        "presenter_request",
        "presenter_denied_request",
        "change_presenter_request",
        "presenter_cursor",
        "presenter_selection",
        "sync_status_request",
        "sync_request",
        "undo_request",
        "redo_request",
        "remove_participant_request",
    ];

    /// The wire `message_type` of this message.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::DiagramOperationRequest(_) => "diagram_operation_request",
            Self::PresenterRequest => "presenter_request",
            Self::PresenterDeniedRequest(_) => "presenter_denied_request",
            Self::ChangePresenterRequest(_) => "change_presenter_request",
            Self::PresenterCursor(_) => "presenter_cursor",
            Self::PresenterSelection(_) => "presenter_selection",
            Self::SyncStatusRequest => "sync_status_request",
            Self::SyncRequest(_) => "sync_request",
            Self::UndoRequest => "undo_request",
            Self::RedoRequest => "redo_request",
            Self::RemoveParticipantRequest(_) => "remove_participant_request",
        }
    }

    /// Parses one inbound text frame, classifying failures (tmi-compat.md §5.3).
    ///
    /// The happy path is a single `serde_json` pass; only a failed frame is parsed a second time,
    /// as a plain object, to find out why it failed.
    pub fn from_json(text: &str) -> Result<Self, ClientMessageError> {
        let err = match serde_json::from_str::<Self>(text) {
            Ok(msg) => return Ok(msg),
            Err(err) => err,
        };
        let object = match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(object) => object,
            Err(not_an_object) => return Err(ClientMessageError::Malformed(not_an_object)),
        };
        let message_type = match object.get("message_type") {
            Some(Value::String(t)) => t.as_str(),
            _ => "",
        };
        if let Some(known) = Self::TYPES.iter().find(|t| **t == message_type) {
            Err(ClientMessageError::InvalidPayload {
                message_type: known,
                source: err,
            })
        } else if ServerMessage::TYPES.contains(&message_type) {
            Err(ClientMessageError::ServerOnly(message_type.to_owned()))
        } else {
            Err(ClientMessageError::Unsupported(message_type.to_owned()))
        }
    }
}

/// Why an inbound frame is not a [`ClientMessage`].
#[derive(Debug, thiserror::Error)]
pub enum ClientMessageError {
    /// Not JSON, or JSON but not an object. Upstream drops such frames silently.
    #[error("frame is not a JSON object: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A `message_type` only the server sends (e.g. `diagram_operation_event`).
    #[error("message_type {0:?} is sent by the server, not by clients")]
    ServerOnly(String),
    /// An unknown `message_type`; empty when the field is missing or not a string.
    #[error("unsupported message_type {0:?}")]
    Unsupported(String),
    /// A known client `message_type` whose payload does not match its schema.
    #[error("invalid {message_type} message: {source}")]
    InvalidPayload {
        /// The (valid) `message_type` of the frame.
        message_type: &'static str,
        /// What serde found wrong with the payload.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientMessageError {
    /// The `error` code of the [`ErrorPayload`] the server answers with, or `None` when the
    /// frame is dropped without an answer (tmi-compat.md §5.3).
    ///
    /// `InvalidPayload` is not covered by the compat notes; it maps to `validation_error`, one of
    /// the three codes tmi-ux treats as non-fatal (Part B §4.5), so a bad frame does not end the
    /// client's session.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::Malformed(_) => None,
            Self::ServerOnly(_) => Some("invalid_message_type"),
            Self::Unsupported(_) => Some("unsupported_message_type"),
            Self::InvalidPayload { .. } => Some("validation_error"),
        }
    }
}

/// Everything the server sends (AsyncAPI operation `receiveDiagramEvents`, plus
/// `presenter_request_event` and upstream's `history_operation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message_type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// `diagram_operation_event`: an applied operation (or undo/redo), broadcast to the others.
    DiagramOperationEvent(DiagramOperationEvent),
    /// `diagram_state`: the full diagram, sent on join and on a stale `sync_request`.
    DiagramState(DiagramState),
    /// `sync_status_response`: the current `update_vector` only.
    SyncStatusResponse(SyncStatusResponse),
    /// `participants_update`: the complete participant list, after every join, leave or change.
    ParticipantsUpdate(ParticipantsUpdate),
    /// `presenter_request_event`: tells the host that someone asks to present.
    ///
    /// Listed among the channel's messages but missing from the AsyncAPI `receiveDiagramEvents`
    /// operation; its title and description make it server → host.
    PresenterRequestEvent(PresenterRequestEvent),
    /// `presenter_denied_event`: tells a requester that the host said no.
    PresenterDeniedEvent(PresenterDeniedEvent),
    /// `presenter_cursor`: the presenter's cursor, relayed unchanged.
    PresenterCursor(PresenterCursor),
    /// `presenter_selection`: the presenter's selection, relayed unchanged.
    PresenterSelection(PresenterSelection),
    /// `authorization_denied`: the sender lacks the permission for what it asked.
    AuthorizationDenied(AuthorizationDenied),
    /// `operation_rejected`: the sender's diagram operation was not applied (originator only).
    OperationRejected(OperationRejected),
    /// `error`: a session-level error; most codes end the client's session.
    Error(ErrorPayload),
    /// `history_operation`: undo/redo had nothing to do.
    ///
    /// Not in the AsyncAPI; upstream sends it (tmi-compat.md §5.3) and tmi-ux ignores it.
    HistoryOperation(HistoryOperation),
}

impl ServerMessage {
    /// Every `message_type` the server may send, in declaration order.
    pub const TYPES: &'static [&'static str] = &[
        "diagram_operation_event",
        "diagram_state",
        "sync_status_response",
        "participants_update",
        "presenter_request_event",
        "presenter_denied_event",
        "presenter_cursor",
        "presenter_selection",
        "authorization_denied",
        "operation_rejected",
        "error",
        "history_operation",
    ];

    /// The wire `message_type` of this message.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::DiagramOperationEvent(_) => "diagram_operation_event",
            Self::DiagramState(_) => "diagram_state",
            Self::SyncStatusResponse(_) => "sync_status_response",
            Self::ParticipantsUpdate(_) => "participants_update",
            Self::PresenterRequestEvent(_) => "presenter_request_event",
            Self::PresenterDeniedEvent(_) => "presenter_denied_event",
            Self::PresenterCursor(_) => "presenter_cursor",
            Self::PresenterSelection(_) => "presenter_selection",
            Self::AuthorizationDenied(_) => "authorization_denied",
            Self::OperationRejected(_) => "operation_rejected",
            Self::Error(_) => "error",
            Self::HistoryOperation(_) => "history_operation",
        }
    }
}

/// A user as the protocol names one: taken from the authenticated socket, never from the client's
/// own assertion (AsyncAPI `User`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Always `user`.
    pub principal_type: PrincipalType,
    /// Identity provider id, e.g. `google` or `tmi`.
    pub provider: String,
    /// The provider's subject (`sub`) for this user; the preferred match key.
    pub provider_id: String,
    /// E-mail address; the fallback match key. tmi-ux also uses it to spot its own events.
    pub email: String,
    /// Display name.
    pub display_name: String,
}

/// The `principal_type` of a [`User`]; the protocol knows only users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalType {
    /// `user`.
    User,
}

/// Payload of `diagram_operation_request` (client → server). The server fills in who sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagramOperationRequest {
    /// Client-generated id, echoed in the resulting event or rejection.
    pub operation_id: Uuid,
    /// The client's `update_vector` when it made the operation. Upstream parses but ignores it.
    pub base_vector: i64,
    /// The cell changes.
    pub operation: CellPatchOperation,
}

/// Payload of `diagram_operation_event` (server → clients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagramOperationEvent {
    /// Who made the operation (for undo/redo: who asked for it). tmi-ux ignores events whose
    /// `initiating_user.email` is its own.
    pub initiating_user: User,
    /// The originating request's `operation_id`.
    pub operation_id: Uuid,
    /// Per-session counter assigned on receipt.
    pub sequence_number: u64,
    /// The diagram's `update_vector` after this operation; clients adopt it.
    pub update_vector: i64,
    /// The cell changes as applied.
    pub operation: CellPatchOperation,
}

/// A batch of cell changes, mirroring the REST cell PATCH (AsyncAPI `CellPatchOperation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellPatchOperation {
    /// The wire field `type`; only `patch` is defined.
    #[serde(rename = "type")]
    pub kind: PatchKind,
    /// The changes, in order. The AsyncAPI requires at least one; an empty list parses so that
    /// the session can answer `operation_rejected` with `empty_operation`.
    pub cells: Vec<CellOperation>,
}

/// The `type` of a [`CellPatchOperation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchKind {
    /// `patch`, the only defined type.
    Patch,
    /// Anything else, kept so the session can reject it with `invalid_operation_type`.
    #[serde(untagged)]
    Other(String),
}

/// One change to one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellOperation {
    /// The cell id. A UUID for real clients, but the AsyncAPI examples use ids like
    /// `cell-uuid-1`, so the protocol keeps a string and the session validates it.
    pub id: String,
    /// What to do with the cell.
    pub operation: CellOperationKind,
    /// The cell for `add` and `update` (tmi-ux sends the whole cell on `update`); absent for
    /// `remove`. A missing `data` parses; the session rejects it with `validation_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Cell>,
}

/// The `operation` of a [`CellOperation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellOperationKind {
    /// `add`: create a cell that must not exist yet.
    Add,
    /// `update`: replace an existing cell.
    Update,
    /// `remove`: delete a cell.
    Remove,
    /// Anything else, kept so the session can reject it with `invalid_operation_type`.
    #[serde(untagged)]
    Other(String),
}

/// Payload of `presenter_request_event` (server → host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenterRequestEvent {
    /// Who asks to present.
    pub requesting_user: User,
}

/// Payload of `presenter_denied_request` (host → server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenterDeniedRequest {
    /// Whose request the host denies; checked against the connected participants.
    pub denied_user: User,
}

/// Payload of `presenter_denied_event` (server → the denied user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenterDeniedEvent {
    /// The denied user, from the server's view of that connection.
    pub denied_user: User,
}

/// Payload of `change_presenter_request` (host → server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangePresenterRequest {
    /// The new presenter. Required by the AsyncAPI, but tmi-ux omits it to clear the presenter
    /// (tmi-compat.md Part B §4.4), so it parses as `None` when absent or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_presenter: Option<User>,
}

/// Payload of `remove_participant_request` (host → server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveParticipantRequest {
    /// Whom to disconnect and ban from this session.
    pub removed_user: User,
}

/// Payload of `presenter_cursor` (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenterCursor {
    /// Where the presenter's cursor is, in graph coordinates.
    pub cursor_position: CursorPosition,
}

/// A cursor position.
///
/// The coordinates stay `serde_json::Number`, not `f64`, so that a relayed cursor is
/// byte-for-byte what the presenter sent (`100` would otherwise come back as `100.0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CursorPosition {
    /// X coordinate.
    pub x: Number,
    /// Y coordinate.
    pub y: Number,
}

/// Payload of `presenter_selection` (both directions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenterSelection {
    /// Selected cell ids; empty clears the selection.
    pub selected_cells: Vec<String>,
}

/// Payload of `sync_request` (client → server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The client's `update_vector`: if it equals the server's, the answer is
    /// `sync_status_response`; if it differs or is absent/`null`, `diagram_state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_vector: Option<i64>,
}

/// Payload of `sync_status_response` (server → client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatusResponse {
    /// The diagram's current `update_vector`.
    pub update_vector: i64,
}

/// Payload of `diagram_state` (server → client): the whole diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagramState {
    /// The diagram.
    pub diagram_id: Uuid,
    /// Its current `update_vector`.
    pub update_vector: i64,
    /// Every cell, nodes and edges; empty for a new diagram.
    pub cells: Vec<Cell>,
    /// The diagram's custom colour palette, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_palette: Option<Vec<PaletteColor>>,
}

/// One entry of a diagram's colour palette (at most 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaletteColor {
    /// Display position, 1 to 8.
    pub position: u8,
    /// Lower-case `#rrggbb`.
    pub color: String,
}

/// Payload of `participants_update` (server → all participants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantsUpdate {
    /// Who caused the change. Not in the AsyncAPI, but part of the shape tmi-ux reads
    /// (tmi-compat.md Part B §4.3); omitted when `None`, matching the AsyncAPI examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiating_user: Option<User>,
    /// Every connected participant.
    pub participants: Vec<Participant>,
    /// The session host.
    pub host: User,
    /// The current presenter; always serialized, as `null` when there is none.
    #[serde(default)]
    pub current_presenter: Option<User>,
}

/// One entry of [`ParticipantsUpdate::participants`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// The participant.
    pub user: User,
    /// What the participant may do in the session; tmi-ux grants editing on `writer`.
    pub permissions: ParticipantPermissions,
    /// When the participant was last active.
    pub last_activity: DateTime<Utc>,
}

/// A participant's permissions in a collaboration session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantPermissions {
    /// `reader`: may watch, not edit.
    Reader,
    /// `writer`: may edit (threat-model writers and owners).
    Writer,
}

/// Payload of `authorization_denied` (server → sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationDenied {
    /// The denied request's `operation_id`. A string, not a `Uuid`: requests without an id
    /// (undo/redo) are denied with `""`, as upstream does.
    pub original_operation_id: String,
    /// Why.
    pub reason: AuthorizationDeniedReason,
}

/// The `reason` of an [`AuthorizationDenied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationDeniedReason {
    /// `insufficient_permissions`: the sender's role does not allow the request.
    InsufficientPermissions,
    /// `read_only_user`: the sender is a reader.
    ReadOnlyUser,
    /// `invalid_user`: the sender could not be identified.
    InvalidUser,
}

/// Payload of `operation_rejected` (server → originator only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRejected {
    /// The rejected request's `operation_id`.
    pub operation_id: Uuid,
    /// The sequence number, if one was assigned before the rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    /// The server's `update_vector` at rejection time.
    pub update_vector: i64,
    /// Structured reason.
    pub reason: RejectionReason,
    /// Human-readable description.
    pub message: String,
    /// Optional technical details, e.g. upstream's finer code (`cell_already_exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// The cells the rejected operation touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected_cells: Option<Vec<String>>,
    /// `true` when the client's state may be stale (conflicts), `false` for validation
    /// failures and no-ops.
    pub requires_resync: bool,
    /// When the rejection happened.
    pub timestamp: DateTime<Utc>,
}

/// The `reason` of an [`OperationRejected`]: exactly the AsyncAPI enum.
///
/// Upstream also emits finer, undocumented codes (`cell_already_exists`,
/// `update_nonexistent_cell`, `add_requires_cell_data`, `empty_cell_operations`, `save_failed`,
/// tmi-compat.md §5.4). The documented contract wins: the server maps those onto these reasons
/// and may put the finer code into `details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    /// `validation_failed`: the operation's structure or data is invalid.
    ValidationFailed,
    /// `conflict_detected`: the operation conflicts with the current diagram (add of an
    /// existing cell, update of a missing one).
    ConflictDetected,
    /// `no_state_change`: the operation would change nothing (e.g. remove of a missing cell).
    NoStateChange,
    /// `diagram_not_found`: the diagram no longer exists.
    DiagramNotFound,
    /// `permission_denied`: the sender may not make this operation.
    PermissionDenied,
    /// `invalid_operation_type`: the patch `type` or a cell `operation` is unknown.
    InvalidOperationType,
    /// `empty_operation`: the operation has no cell changes.
    EmptyOperation,
}

/// Payload of `error` (server → client).
///
/// Known `error` codes: `unauthorized`, `access_denied`, `session_invalid`,
/// `session_terminated`, `removed_from_session`, `invalid_message_type`,
/// `unsupported_message_type`, `SECURITY_VIOLATION`, `validation_error`. tmi-ux treats only
/// `invalid_participant`, `permission_denied` and `validation_error` as non-fatal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPayload {
    /// Error code.
    pub error: String,
    /// Human-readable message.
    pub message: String,
    /// Optional finer code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Optional free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
    /// When the error happened.
    pub timestamp: DateTime<Utc>,
}

/// Payload of `history_operation` (server → requester; upstream only, not in the AsyncAPI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOperation {
    /// Which request this answers.
    pub operation_type: HistoryOperationType,
    /// What happened instead.
    pub message: HistoryOutcome,
}

/// The `operation_type` of a [`HistoryOperation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOperationType {
    /// Answers `undo_request`.
    Undo,
    /// Answers `redo_request`.
    Redo,
}

/// The `message` of a [`HistoryOperation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOutcome {
    /// `no_operations_to_undo`.
    NoOperationsToUndo,
    /// `no_operations_to_redo`.
    NoOperationsToRedo,
    /// `resync_required`: the history could not be applied; the client should resync.
    ResyncRequired,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    /// The vendored AsyncAPI document (`api/README.md`).
    const ASYNCAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/api/tmi-asyncapi.yml");

    /// Messages that are in neither AsyncAPI operation, with the direction their description
    /// gives them. A new message in that situation fails the test until it is listed here.
    const UNLISTED_SERVER_MESSAGES: &[&str] = &["PresenterRequestEventMessage"];

    struct Example {
        message: String,
        name: String,
        payload: Value,
        client: bool,
        server: bool,
    }

    fn load_spec() -> Value {
        let text = std::fs::read_to_string(ASYNCAPI).expect("read tmi-asyncapi.yml");
        serde_yaml::from_str(&text).expect("tmi-asyncapi.yml is YAML")
    }

    /// Names of the messages an operation lists (`#/components/messages/<Name>`).
    fn operation_messages(spec: &Value, operation: &str) -> BTreeSet<String> {
        spec["operations"][operation]["messages"]
            .as_array()
            .expect("operation lists messages")
            .iter()
            .map(|m| {
                let r = m["$ref"].as_str().expect("message $ref");
                r.rsplit('/').next().expect("ref name").to_owned()
            })
            .collect()
    }

    fn examples() -> Vec<Example> {
        let spec = load_spec();
        let send = operation_messages(&spec, "sendDiagramOperation");
        let receive = operation_messages(&spec, "receiveDiagramEvents");
        let messages = spec["components"]["messages"]
            .as_object()
            .expect("components.messages");
        let mut out = Vec::new();
        for (message, def) in messages {
            let client = send.contains(message);
            let server = receive.contains(message) || UNLISTED_SERVER_MESSAGES.contains(&message.as_str());
            assert!(
                client || server,
                "{message} is in no operation: decide its direction"
            );
            let list = def["examples"]
                .as_array()
                .unwrap_or_else(|| panic!("{message} has no examples"));
            assert!(!list.is_empty(), "{message} has no examples");
            for ex in list {
                out.push(Example {
                    message: message.clone(),
                    name: ex["name"].as_str().unwrap_or("?").to_owned(),
                    payload: ex["payload"].clone(),
                    client,
                    server,
                });
            }
        }
        out
    }

    fn round_trip<T>(payload: &Value, what: &str) -> T
    where
        T: serde::de::DeserializeOwned + Serialize,
    {
        let text = payload.to_string();
        let parsed: T =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: does not parse: {e}\n{text}"));
        let back = serde_json::to_value(&parsed).expect("serialize");
        assert_eq!(&back, payload, "{what}: round trip changed the JSON");
        parsed
    }

    #[test]
    fn every_asyncapi_example_round_trips_in_its_direction() {
        let examples = examples();
        // 20 messages, 26 examples today; guards against the loader silently finding nothing.
        assert!(examples.len() >= 26, "only {} examples", examples.len());
        let mut seen = BTreeSet::new();
        for ex in &examples {
            let what = format!("{} / {}", ex.message, ex.name);
            let tag = ex.payload["message_type"].as_str().expect("message_type");
            seen.insert(tag.to_owned());
            let text = ex.payload.to_string();
            if ex.client {
                let msg = ClientMessage::from_json(&text)
                    .unwrap_or_else(|e| panic!("{what}: not a client message: {e}"));
                assert_eq!(msg.message_type(), tag, "{what}");
                let again: ClientMessage = round_trip(&ex.payload, &what);
                assert_eq!(again, msg, "{what}");
            } else {
                let err = ClientMessage::from_json(&text).expect_err(&what);
                assert!(
                    matches!(err, ClientMessageError::ServerOnly(ref t) if t == tag),
                    "{what}: {err:?}"
                );
                assert_eq!(err.error_code(), Some("invalid_message_type"), "{what}");
            }
            if ex.server {
                let msg: ServerMessage = round_trip(&ex.payload, &what);
                assert_eq!(msg.message_type(), tag, "{what}");
            } else {
                assert!(
                    serde_json::from_str::<ServerMessage>(&text).is_err(),
                    "{what}: a client-only type parsed as a server message"
                );
            }
        }
        // Every type the enums know is exercised by an example, except upstream's extension.
        let declared: BTreeSet<String> = ClientMessage::TYPES
            .iter()
            .chain(ServerMessage::TYPES)
            .map(|t| (*t).to_owned())
            .collect();
        let missing: Vec<_> = declared.difference(&seen).collect();
        assert_eq!(missing, ["history_operation"], "types without an example");
    }

    #[test]
    fn examples_keep_their_typed_values() {
        let msg = ClientMessage::from_json(
            &json!({
                "message_type": "diagram_operation_request",
                "operation_id": "123e4567-e89b-12d3-a456-426614174000",
                "base_vector": 42,
                "operation": {"type": "patch", "cells": [
                    {"id": "c1", "operation": "add", "data": {"id": "c1", "shape": "process"}},
                    {"id": "c2", "operation": "remove"}
                ]}
            })
            .to_string(),
        )
        .expect("parses");
        let ClientMessage::DiagramOperationRequest(req) = msg else {
            panic!("wrong variant: {msg:?}");
        };
        assert_eq!(req.base_vector, 42);
        assert_eq!(req.operation.kind, PatchKind::Patch);
        assert_eq!(req.operation.cells[0].operation, CellOperationKind::Add);
        assert_eq!(req.operation.cells[1].operation, CellOperationKind::Remove);
        assert_eq!(req.operation.cells[1].data, None);
    }

    #[test]
    fn invalid_json_is_malformed_and_dropped() {
        for text in [
            "",
            "{",
            "not json",
            "[1, 2]",
            "42",
            "\"presenter_request\"",
            "null",
        ] {
            let err = ClientMessage::from_json(text).expect_err(text);
            assert!(matches!(err, ClientMessageError::Malformed(_)), "{text}: {err:?}");
            assert_eq!(err.error_code(), None, "{text}");
        }
    }

    #[test]
    fn unknown_message_types_are_unsupported() {
        for (frame, expected) in [
            (json!({"message_type": "no_such_type"}), "no_such_type"),
            // Upstream's older names are not part of the contract.
            (json!({"message_type": "diagram_operation"}), "diagram_operation"),
            (json!({"message_type": "resync_request"}), "resync_request"),
            (json!({"message_type": "PRESENTER_REQUEST"}), "PRESENTER_REQUEST"),
            (json!({}), ""),
            (json!({"message_type": 7}), ""),
            (json!({"type": "presenter_request"}), ""),
        ] {
            let err = ClientMessage::from_json(&frame.to_string()).expect_err("rejected");
            assert!(
                matches!(err, ClientMessageError::Unsupported(ref t) if t == expected),
                "{frame}: {err:?}"
            );
            assert_eq!(err.error_code(), Some("unsupported_message_type"));
        }
    }

    #[test]
    fn server_only_types_are_rejected_from_clients() {
        let server_only: Vec<_> = ServerMessage::TYPES
            .iter()
            .filter(|t| !ClientMessage::TYPES.contains(t))
            .collect();
        assert_eq!(server_only.len(), 10);
        for t in server_only {
            // Even a bare tag: the type alone decides, whatever the payload.
            let err = ClientMessage::from_json(&json!({"message_type": t}).to_string()).expect_err(t);
            assert!(
                matches!(err, ClientMessageError::ServerOnly(ref s) if s == *t),
                "{t}: {err:?}"
            );
            assert_eq!(err.error_code(), Some("invalid_message_type"));
        }
    }

    #[test]
    fn known_types_with_bad_payloads_are_invalid_payloads() {
        for (frame, expected) in [
            (
                json!({"message_type": "diagram_operation_request", "base_vector": 1,
                       "operation": {"type": "patch", "cells": []}}),
                "diagram_operation_request",
            ),
            (
                json!({"message_type": "diagram_operation_request", "operation_id": "nope",
                       "base_vector": 1, "operation": {"type": "patch", "cells": []}}),
                "diagram_operation_request",
            ),
            (
                json!({"message_type": "presenter_cursor", "cursor_position": {"x": "1", "y": 2}}),
                "presenter_cursor",
            ),
            (
                json!({"message_type": "presenter_denied_request",
                       "denied_user": {"email": "a@example.com"}}),
                "presenter_denied_request",
            ),
            (
                json!({"message_type": "sync_request", "update_vector": "40"}),
                "sync_request",
            ),
        ] {
            let err = ClientMessage::from_json(&frame.to_string()).expect_err("rejected");
            assert!(
                matches!(err, ClientMessageError::InvalidPayload { message_type, .. }
                    if message_type == expected),
                "{frame}: {err:?}"
            );
            assert_eq!(err.error_code(), Some("validation_error"));
        }
    }

    #[test]
    fn semantic_errors_in_operations_parse_for_the_session_to_reject() {
        let frame = json!({
            "message_type": "diagram_operation_request",
            "operation_id": "123e4567-e89b-12d3-a456-426614174000",
            "base_vector": 0,
            "operation": {"type": "snapshot", "cells": [
                {"id": "c1", "operation": "move", "data": {"x": 1}},
                {"id": "c2", "operation": "add"}
            ]}
        });
        let msg = ClientMessage::from_json(&frame.to_string()).expect("parses");
        let ClientMessage::DiagramOperationRequest(req) = &msg else {
            panic!("wrong variant: {msg:?}");
        };
        assert_eq!(req.operation.kind, PatchKind::Other("snapshot".into()));
        assert_eq!(
            req.operation.cells[0].operation,
            CellOperationKind::Other("move".into())
        );
        assert_eq!(req.operation.cells[1].data, None);
        assert_eq!(serde_json::to_value(&msg).expect("serialize"), frame);

        let empty = json!({
            "message_type": "diagram_operation_request",
            "operation_id": "123e4567-e89b-12d3-a456-426614174000",
            "base_vector": 0,
            "operation": {"type": "patch", "cells": []}
        });
        assert!(ClientMessage::from_json(&empty.to_string()).is_ok());
    }

    #[test]
    fn client_frames_tolerate_extra_fields_like_upstream() {
        // Older tmi-ux builds send `user` with every request; Go ignores unknown fields.
        let user = json!({"user_id": "x", "email": "a@example.com", "displayName": "A"});
        for t in [
            "presenter_request",
            "undo_request",
            "redo_request",
            "sync_status_request",
        ] {
            let msg = ClientMessage::from_json(&json!({"message_type": t, "user": user}).to_string())
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(msg.message_type(), t);
        }
        let msg = ClientMessage::from_json(
            &json!({"message_type": "sync_request", "update_vector": null, "extra": 1}).to_string(),
        )
        .expect("parses");
        assert_eq!(
            msg,
            ClientMessage::SyncRequest(SyncRequest { update_vector: None })
        );
    }

    #[test]
    fn tmi_ux_shapes_beyond_the_asyncapi() {
        // change_presenter_request without new_presenter clears the presenter (Part B §4.4).
        let clear = json!({"message_type": "change_presenter_request"});
        let msg = ClientMessage::from_json(&clear.to_string()).expect("parses");
        assert_eq!(
            msg,
            ClientMessage::ChangePresenterRequest(ChangePresenterRequest { new_presenter: None })
        );
        assert_eq!(serde_json::to_value(&msg).expect("serialize"), clear);

        // participants_update may name who caused it (Part B §4.3); null presenter stays null.
        let alice = json!({"principal_type": "user", "provider": "tmi", "provider_id": "alice",
                           "email": "alice@tmi.local", "display_name": "Alice"});
        let update = json!({
            "message_type": "participants_update",
            "initiating_user": alice,
            "participants": [{"user": alice, "permissions": "writer",
                              "last_activity": "2024-01-15T10:30:00.123Z"}],
            "host": alice,
            "current_presenter": null
        });
        let msg: ServerMessage = round_trip(&update, "participants_update with initiating_user");
        let ServerMessage::ParticipantsUpdate(p) = msg else {
            panic!("wrong variant");
        };
        assert_eq!(p.participants[0].permissions, ParticipantPermissions::Writer);
        assert_eq!(p.current_presenter, None);

        // An absent current_presenter is serialized as null, never omitted.
        let absent = json!({"message_type": "participants_update", "participants": [],
                            "host": alice});
        let msg: ServerMessage = serde_json::from_value(absent).expect("parses");
        assert_eq!(
            serde_json::to_value(&msg).expect("serialize")["current_presenter"],
            Value::Null
        );

        // history_operation, upstream's answer to an undo/redo with nothing to do.
        let history = json!({"message_type": "history_operation", "operation_type": "undo",
                             "message": "no_operations_to_undo"});
        let msg: ServerMessage = round_trip(&history, "history_operation");
        assert_eq!(msg.message_type(), "history_operation");
        let err = ClientMessage::from_json(&history.to_string()).expect_err("server only");
        assert!(matches!(err, ClientMessageError::ServerOnly(_)));
    }

    #[test]
    fn server_messages_serialize_to_the_documented_shape() {
        let timestamp = DateTime::parse_from_rfc3339("2024-01-15T14:30:00Z")
            .expect("timestamp")
            .with_timezone(&Utc);
        let rejected = ServerMessage::OperationRejected(OperationRejected {
            operation_id: Uuid::nil(),
            sequence_number: None,
            update_vector: 3,
            reason: RejectionReason::EmptyOperation,
            message: "no cells".into(),
            details: None,
            affected_cells: None,
            requires_resync: false,
            timestamp,
        });
        assert_eq!(
            serde_json::to_value(&rejected).expect("serialize"),
            json!({
                "message_type": "operation_rejected",
                "operation_id": "00000000-0000-0000-0000-000000000000",
                "update_vector": 3,
                "reason": "empty_operation",
                "message": "no cells",
                "requires_resync": false,
                "timestamp": "2024-01-15T14:30:00Z"
            })
        );
        let error = ServerMessage::Error(ErrorPayload {
            error: "unsupported_message_type".into(),
            message: "unknown".into(),
            code: None,
            details: None,
            timestamp,
        });
        assert_eq!(
            serde_json::to_value(&error).expect("serialize"),
            json!({"message_type": "error", "error": "unsupported_message_type",
                   "message": "unknown", "timestamp": "2024-01-15T14:30:00Z"})
        );
        let denied = ServerMessage::AuthorizationDenied(AuthorizationDenied {
            original_operation_id: String::new(),
            reason: AuthorizationDeniedReason::ReadOnlyUser,
        });
        assert_eq!(
            serde_json::to_string(&denied).expect("serialize"),
            r#"{"message_type":"authorization_denied","original_operation_id":"","reason":"read_only_user"}"#
        );
        let state = ServerMessage::DiagramState(DiagramState {
            diagram_id: Uuid::nil(),
            update_vector: 0,
            cells: vec![],
            color_palette: Some(vec![PaletteColor {
                position: 1,
                color: "#d32f2f".into(),
            }]),
        });
        let value = serde_json::to_value(&state).expect("serialize");
        assert_eq!(
            value["color_palette"],
            json!([{"position": 1, "color": "#d32f2f"}])
        );
        assert_eq!(
            serde_json::from_value::<ServerMessage>(value).expect("parses"),
            state
        );
    }

    #[test]
    fn message_type_lists_have_no_duplicates() {
        for list in [ClientMessage::TYPES, ServerMessage::TYPES] {
            let set: BTreeSet<_> = list.iter().collect();
            assert_eq!(set.len(), list.len());
        }
        // Only the presenter relays travel both ways.
        let both: Vec<_> = ClientMessage::TYPES
            .iter()
            .filter(|t| ServerMessage::TYPES.contains(t))
            .collect();
        assert_eq!(both, [&"presenter_cursor", &"presenter_selection"]);
    }
}
