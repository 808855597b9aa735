"""The labeling web app (FastAPI + uvicorn) over a campaign directory."""

from datascout.server.app import TOKEN_ENV, check_bind, create_app, is_loopback

__all__ = ["TOKEN_ENV", "check_bind", "create_app", "is_loopback", "serve"]


def serve(directory, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log_level: str = "warning") -> None:
    """Run the app with uvicorn until interrupted. Refuses a non-loopback host without a token."""
    import uvicorn

    check_bind(host, token)
    app = create_app(directory, token=token)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
