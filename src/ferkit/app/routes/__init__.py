"""The app's routers: ``api`` (predict, health) and ``live`` (camera frames over a WebSocket)."""
