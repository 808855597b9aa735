"""The labeling web app: a FastAPI application over a :class:`~datascout.campaign.Campaign`.

Endpoints (documented at ``/docs``): ``GET /api/batch``, ``POST /api/labels``, ``GET /api/stats``,
``GET /api/export``, ``GET /api/config``, ``GET /api/items/{id}/image``. Every error is a 4xx JSON
``{"error": "..."}`` and changes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import mimetypes
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from datascout.campaign import Campaign, ConflictError, NotFoundError
from datascout.campaign.core import MAX_BATCH
from datascout.exceptions import DatascoutError, ValidationError

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 256 * 1024
TOKEN_ENV = "DATASCOUT_TOKEN"


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=512)
    label: str | None = Field(description="a class name, or null to skip the item")


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotator: str = Field(min_length=1, max_length=64)
    labels: list[LabelIn] = Field(min_length=1, max_length=10 * MAX_BATCH)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise ValidationError(f"binding {host!r} (beyond localhost) needs a token: pass --token or set ${TOKEN_ENV}")


def create_app(directory, *, token: str | None = None, select_in: str = "process") -> FastAPI:
    """The labeling app of the campaign in ``directory``. Rounds are selected in a separate
    process by default (``select_in="process"``), so training never competes with the requests
    for the interpreter; ``"thread"`` keeps it in this process."""
    campaign = Campaign(directory, select_in=select_in)

    @asynccontextmanager
    async def lifespan(app):
        campaign.maybe_advance()  # a round that completed just before a crash selects its successor
        yield
        campaign.wait_idle(30.0)

    app = FastAPI(title="datascout labeling", version="1", lifespan=lifespan,
                  description="Label the items the active-learning campaign selects.")
    app.state.campaign = campaign

    def err(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return err(413, f"request body must be at most {MAX_BODY_BYTES} bytes but is {length}")
        if request.method == "POST" and length is None:
            body = await request.body()  # chunked upload: measure it
            if len(body) > MAX_BODY_BYTES:
                return err(413, f"request body must be at most {MAX_BODY_BYTES} bytes but is {len(body)}")
        if token and request.url.path.startswith("/api/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return err(401, "a valid token is required (header 'Authorization: Bearer TOKEN')")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return err(422, f"{where or 'request'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(DatascoutError)
    async def user_error(request, exc: DatascoutError):
        status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else 400
        return err(status, str(exc))

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/config", summary="Classes, keyboard shortcuts and campaign settings")
    def config():
        cfg = campaign.config
        return {"classes": cfg["classes"], "positive_class": cfg["positive_class"],
                "strategy": cfg["strategy"], "batch_size": cfg["batch_size"],
                "keys": {str(i + 1): c for i, c in enumerate(cfg["classes"][:9])},
                "name": campaign.directory.name}

    @app.get("/api/batch", summary="Lease up to n items of the current round to an annotator")
    def batch(annotator: str = Query(min_length=1, max_length=64),
              n: int = Query(10, ge=1, le=MAX_BATCH)):
        return campaign.lease_batch(annotator, n)

    @app.post("/api/labels", summary="Record labels (null = skip); committed before the answer")
    def labels(body: LabelsIn):
        return campaign.submit(body.annotator, [(x.id, x.label) for x in body.labels])

    @app.get("/api/stats", summary="Rounds, labels, class counts, positives, disagreements, model quality")
    def stats():
        return campaign.stats()

    @app.get("/api/export", summary="Labels as CSV, JSONL or Label Studio tasks (with predictions)")
    def export(format: str = Query("jsonl", pattern="^(csv|jsonl|label-studio)$")):
        text = campaign.export(format)
        media = {"csv": "text/csv", "jsonl": "application/x-ndjson", "label-studio": "application/json"}[format]
        ext = {"csv": "csv", "jsonl": "jsonl", "label-studio": "json"}[format]
        return Response(text, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="labels.{ext}"'})

    # ``:path`` so that ids holding "/" (``train/cat/001.png``, common for images) route too;
    # the id only selects a row, the file served is the path registered for it at init
    @app.get("/api/items/{item_id:path}/image", summary="The image of an image item registered in the campaign")
    def image(item_id: str):
        row = campaign.con.execute("SELECT kind, payload FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None or row[0] != "image":
            raise NotFoundError(f"no image item {item_id!r} in this campaign")
        media = mimetypes.guess_type(row[1])[0] or "application/octet-stream"
        if not media.startswith("image/"):
            raise NotFoundError(f"item {item_id!r} is not an image file")
        if not Path(row[1]).is_file():
            raise NotFoundError(f"the image file of item {item_id!r} is missing on the server")
        return FileResponse(row[1], media_type=media)

    return app
