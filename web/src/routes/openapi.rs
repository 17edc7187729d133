//! The OpenAPI 3.1 document of the REST API, written out by hand from the routes in `mod.rs`
//! (kept next to them; the end-to-end tests check each documented path answers).

use axum::Json;
use serde_json::{Value, json};

/// One operation: summary, whether it needs auth, an optional JSON body schema, and the response.
fn op(summary: &str, auth: bool, body: Option<Value>, response: Value) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": response}}},
            "503": {"description": "The transport daemon is unreachable", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    });
    if auth {
        o["security"] = json!([{"bearer": []}, {"session": []}]);
        o["responses"]["401"] = json!({"description": "Missing or wrong credential"});
    }
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    o
}

fn peer_param() -> Value {
    json!([{"name": "peer_id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

pub fn build() -> Value {
    let obj = json!({"type": "object"});
    let arr = json!({"type": "array", "items": {"type": "object"}});
    let mut peer = op("One peer", true, None, obj.clone());
    peer["parameters"] = peer_param();
    let mut disconnect = op("Close every connection to a peer", true, None, obj.clone());
    disconnect["parameters"] = peer_param();
    let mut pin = op(
        "Pin or unpin a peer (pinned peers are redialled)",
        true,
        Some(json!({"type": "object", "properties": {"pinned": {"type": "boolean", "default": true}}})),
        obj.clone(),
    );
    pin["parameters"] = peer_param();
    let mut peers = op("Peers", true, None, arr.clone());
    peers["parameters"] =
        json!([{"name": "filter", "in": "query", "schema": {"enum": ["connected", "known", "pinned"]}}]);
    let mut history = op("Connection history, newest first", true, None, arr.clone());
    history["parameters"] = json!([
        {"name": "peer", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    ]);
    let transfer_op = |summary: &str, body: Option<Value>| {
        let mut o = op(summary, true, body, obj.clone());
        o["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
        o
    };
    let mut transfers_list = op("Transfers, newest first", true, None, arr.clone());
    transfers_list["parameters"] =
        json!([{"name": "filter", "in": "query", "schema": {"enum": ["all", "outgoing", "incoming", "active"]}}]);
    let mut transfer_create = op("Send documents to a peer (streamed upload)", true, None, obj.clone());
    transfer_create["requestBody"] = json!({"required": true, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["peer", "size", "file"],
        "description": "Fields in order: `peer`, optional `message`, then per document `size` (its byte count), \
                        optional `mime`, and the `file` part itself. Bytes are streamed into the daemon, never buffered whole.",
        "properties": {"peer": {"type": "string"}, "message": {"type": "string"}, "size": {"type": "integer"},
                       "mime": {"type": "string"}, "file": {"type": "string", "format": "binary"}}}}}});
    let mut download = json!({"summary": "A document's bytes (attachment, application/octet-stream, streamed)",
        "security": [{"bearer": []}, {"session": []}, {"ticket": []}],
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                       {"name": "doc_id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The document", "content": {"application/octet-stream": {}}},
                      "404": {"description": "No such transfer or document"},
                      "503": {"description": "Not arrived complete and verified yet, or the daemon is unreachable"}}});
    download["responses"]["401"] = json!({"description": "Missing or wrong credential"});
    let text = json!({"description": "Prometheus text", "content": {"text/plain": {}}});
    let ws = |summary: &str, description: &str| {
        json!({"get": {"summary": summary, "description": description,
                       "security": [{"bearer": []}, {"session": []}, {"ticket": []}],
                       "responses": {"101": {"description": "Switching Protocols"}}}})
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "firma-web", "version": env!("CARGO_PKG_VERSION"),
                 "description": "REST and WebSocket bridge of firma-transportd. Loopback only by default; \
                                 state-changing requests need a same-origin Origin or a bearer token."},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The 256-bit token in web.token"},
                "session": {"type": "http", "scheme": "bearer",
                            "description": "A browser session id from POST /login, sent the same way (never a cookie)"},
                "ticket": {"type": "apiKey", "in": "query", "name": "ticket",
                           "description": "Single-use, 30 s, from POST /api/tickets; WebSocket upgrades and downloads only"},
            },
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}, "code": {"type": "string"}}}},
        },
        "paths": {
            "/health": {"get": op("ok or degraded (503), upstream's shape; details are in /api/info", false, None, obj.clone())},
            "/login": {"get": {"summary": "The single-use login link: sends the browser to /#login=<nonce>, where the page redeems it",
                               "parameters": [{"name": "nonce", "in": "query", "required": true, "schema": {"type": "string"}}],
                               "responses": {"303": {"description": "To the page"}, "400": {"description": "Not a login link"}}},
                       "post": {"summary": "Redeem a login nonce (same origin): {session, expires_at_ms}",
                                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                                    "type": "object", "required": ["nonce"], "properties": {"nonce": {"type": "string"}}}}}},
                                "responses": {"200": {"description": "Signed in"}, "403": {"description": "Invalid, expired or used link"}}}},
            "/logout": {"post": op("End the calling session everywhere, and close its sockets", true, None, obj.clone())},
            "/api/tickets": {"post": op("A single-use ticket (30 s) for one WebSocket upgrade or download: {ticket, expires_in_ms}", true, None, obj.clone())},
            "/api/openapi.json": {"get": op("This document", false, None, obj.clone())},
            "/api/info": {"get": op("Server info (upstream shape) with daemon reachability, PeerId, socket and instance_id", true, None, obj.clone())},
            "/api/transports/available": {"get": op("Available transports (upstream shape)", true, None, obj.clone())},
            "/api/status": {"get": op("The daemon's status", true, None, obj.clone())},
            "/api/peers": {"get": peers},
            "/api/peers/connect": {"post": op("Dial a multiaddr or known peer id", true,
                Some(json!({"type": "object", "required": ["target"], "properties": {"target": {"type": "string"}}})), obj.clone())},
            "/api/peers/{peer_id}": {"get": peer},
            "/api/peers/{peer_id}/disconnect": {"post": disconnect},
            "/api/peers/{peer_id}/pin": {"post": pin},
            "/api/connections": {"get": op("Open connections", true, None, arr.clone())},
            "/api/history": {"get": history},
            "/api/discovery": {
                "get": op("Discovery state", true, None, obj.clone()),
                "post": op("Change discovery", true, Some(json!({"type": "object", "properties": {
                    "mdns": {"type": "boolean"}, "bootstrap_now": {"type": "boolean"}}})), obj.clone()),
            },
            "/api/topology": {"get": op("Local view of the network", true, None, obj.clone())},
            "/api/transfers": {
                "get": transfers_list,
                "post": transfer_create,
            },
            "/api/transfers/{id}": {"get": transfer_op("One transfer", None)},
            "/api/transfers/{id}/cancel": {"post": transfer_op("Cancel an outgoing transfer", None)},
            "/api/transfers/{id}/accept": {"post": transfer_op("Accept an incoming transfer waiting in the inbox", None)},
            "/api/transfers/{id}/reject": {"post": transfer_op("Reject an incoming transfer",
                Some(json!({"type": "object", "properties": {"reason": {"type": "string"}}})))},
            "/api/transfers/{id}/documents/{doc_id}": {"get": download},
            "/metrics": {"get": {"summary": "Prometheus metrics (daemon and web tier)",
                                 "security": [{"bearer": []}, {"session": []}], "responses": {"200": text}}},
            "/ws": ws("Event stream: snapshot, then events with seq; ?since=N resumes",
                "Server to client: `snapshot`, events `{seq, at_ms, type, ...}`, `resync {reason}`, `pong`, `error`, and \
                 `transport:status` whose `status` is this stream's own `online | offline` (the daemon reachable or not). \
                 Client to server: `ping`. A client's close (1000) is answered with a close frame; the server closes \
                 with 1012 on reload (reconnect with ?since) and 1001 on stop."),
            "/explorer": ws("Upstream Peer Explorer socket",
                "Upstream Firma-Sign's ExplorerWebSocket protocol. Client to server: `subscribe`/`unsubscribe {peerId}`, \
                 `ping`, `join_group`/`leave_group {groupId}`, `message {groupId, content}`. Server to client: `connected`, \
                 `subscribed`, `unsubscribed`, `joined_group`, `left_group`, `message:sent`, `message:received` (to the \
                 group's other members on this server), `pong`, `error`; `peer:status`, `transfer:sent`, \
                 `transfer:received` to subscribers of the peer; `peer:discovered {peer: EnhancedPeer}` and \
                 `transport:status` to everyone. `transport:status` uses upstream's values `active | inactive | error | \
                 connecting` with `details.connections` (peers with an open P2P connection) and `details.error` when \
                 `error`. Bounds per client: 1024 subscriptions, 32 groups, 256 members per group, group names of 128 \
                 bytes, messages of 16 KiB, 20 messages at once then 5 per second. A message to a `peerId` is refused \
                 (no P2P message protocol). A client's close (1000) is answered with a close frame."),
        },
    })
}

pub async fn document() -> Json<Value> {
    Json(build())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    #[test]
    fn document_lists_the_api() {
        let doc = super::build();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/health",
            "/api/info",
            "/api/peers/{peer_id}/pin",
            "/ws",
            "/explorer",
            "/metrics",
            "/api/transfers",
            "/api/transfers/{id}/documents/{doc_id}",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
    }
}
