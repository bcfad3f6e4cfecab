//! wsline: a WebSocket library (RFC 6455, RFC 7692).
