"""The HTTP API (Litestar): `create_app(settings)` and its handlers. Nothing else imports Litestar."""
